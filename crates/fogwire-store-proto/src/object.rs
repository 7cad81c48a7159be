//! Object graphs: directories as typed nodes whose references are hashes,
//! so a whole tree is named, verified and fetched by one root hash.
//!
//! A node is a blob that starts with a header, big-endian throughout:
//!
//! ```text
//! magic "fwob" (4) | version u8 (1) | kind u8 | count u32 | items…
//!
//! kind 1, directory: count entries, sorted by name (bytewise, strictly):
//!   type u8 (0 file, 1 directory) | flags u8 (bit 0: executable)
//!   | size u64 (a file's bytes; a directory's total file bytes)
//!   | hash [32] | name length u8 (1..=255) | name (UTF-8)
//!
//! kind 2, directory index (a long directory as a Merkle tree): count
//! children, in name order, each naming a node (kind 1 or 2) that holds
//! a contiguous run of the entries:
//!   entries u64 (below it) | size u64 (file bytes below it) | hash [32]
//!   | first name length u8 | first name (its first entry's name)
//! ```
//!
//! A directory of at most [`NODE_ENTRIES_MAX`] entries is one kind-1 node;
//! a longer one is split into kind-1 nodes of that many entries under
//! kind-2 nodes of at most [`INDEX_CHILDREN_MAX`] children, as many levels
//! as needed. The same directory always yields the same nodes, so the same
//! root hash. Names are never empty, `.` or `..`, and contain no `/` or
//! NUL, so restoring a tree cannot write outside its target.

use crate::Hash;

pub const MAGIC: &[u8; 4] = b"fwob";
pub const VERSION: u8 = 1;
pub const KIND_DIRECTORY: u8 = 1;
pub const KIND_INDEX: u8 = 2;
const HEADER_LEN: usize = 4 + 1 + 1 + 4;
/// Entries in one directory node.
pub const NODE_ENTRIES_MAX: usize = 1024;
/// Children of one index node.
pub const INDEX_CHILDREN_MAX: usize = 1024;
/// Longest name, in bytes.
pub const NAME_LEN_MAX: usize = 255;
/// Largest node a decoder looks at: a full node of longest names.
pub const NODE_LEN_MAX: usize = HEADER_LEN + NODE_ENTRIES_MAX * (1 + 1 + 8 + 32 + 1 + NAME_LEN_MAX);

/// What an entry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryType {
    File,
    Directory,
}

/// One entry of a directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DirEntry {
    pub name: String,
    pub kind: EntryType,
    pub executable: bool,
    /// A file's bytes; a directory's total file bytes.
    pub size: u64,
    pub hash: Hash,
}

/// A child of an index node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexChild {
    pub first_name: String,
    pub entries: u64,
    pub size: u64,
    pub hash: Hash,
}

/// A decoded node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Directory(Vec<DirEntry>),
    Index(Vec<IndexChild>),
}

/// Why bytes are not a valid node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectError {
    #[error("not a fogwire object (no `fwob` header)")]
    NotAnObject,
    #[error("object version {0} is not supported")]
    Version(u8),
    #[error("malformed object: {0}")]
    Malformed(&'static str),
    #[error("`{0}` is not a name a directory entry may have")]
    BadName(String),
}

/// Checks a name: 1..=255 bytes, not `.` or `..`, no `/` or NUL.
pub fn check_name(name: &str) -> Result<(), ObjectError> {
    if name.is_empty()
        || name.len() > NAME_LEN_MAX
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\0')
    {
        return Err(ObjectError::BadName(name.chars().take(80).collect()));
    }
    Ok(())
}

/// Whether `bytes` start like an object (cheap; [`decode`] is the test).
pub fn looks_like_object(bytes: &[u8]) -> bool {
    bytes.len() >= HEADER_LEN && &bytes[..4] == MAGIC
}

fn header(kind: u8, count: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(&(count as u32).to_be_bytes());
    out
}

fn encode_directory(entries: &[DirEntry]) -> Vec<u8> {
    let mut out = header(KIND_DIRECTORY, entries.len());
    for entry in entries {
        out.push(match entry.kind {
            EntryType::File => 0,
            EntryType::Directory => 1,
        });
        out.push(u8::from(entry.executable));
        out.extend_from_slice(&entry.size.to_be_bytes());
        out.extend_from_slice(entry.hash.as_bytes());
        out.push(entry.name.len() as u8);
        out.extend_from_slice(entry.name.as_bytes());
    }
    out
}

fn encode_index(children: &[IndexChild]) -> Vec<u8> {
    let mut out = header(KIND_INDEX, children.len());
    for child in children {
        out.extend_from_slice(&child.entries.to_be_bytes());
        out.extend_from_slice(&child.size.to_be_bytes());
        out.extend_from_slice(child.hash.as_bytes());
        out.push(child.first_name.len() as u8);
        out.extend_from_slice(child.first_name.as_bytes());
    }
    out
}

/// The nodes of a directory, leaves first; the last is its root. Entries
/// are sorted here; names must be valid and distinct.
pub fn build_directory(mut entries: Vec<DirEntry>) -> Result<Vec<Vec<u8>>, ObjectError> {
    for entry in &entries {
        check_name(&entry.name)?;
    }
    entries.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    if entries.windows(2).any(|pair| pair[0].name == pair[1].name) {
        return Err(ObjectError::Malformed("two entries with one name"));
    }
    if entries.len() <= NODE_ENTRIES_MAX {
        return Ok(vec![encode_directory(&entries)]);
    }
    let mut nodes = Vec::new();
    let mut level: Vec<IndexChild> = entries
        .chunks(balanced_chunk(entries.len(), NODE_ENTRIES_MAX))
        .map(|chunk| {
            let node = encode_directory(chunk);
            let child = IndexChild {
                first_name: chunk[0].name.clone(),
                entries: chunk.len() as u64,
                size: chunk.iter().map(|e| e.size).sum(),
                hash: Hash::of(&node),
            };
            nodes.push(node);
            child
        })
        .collect();
    loop {
        if level.len() <= INDEX_CHILDREN_MAX {
            nodes.push(encode_index(&level));
            return Ok(nodes);
        }
        level = level
            .chunks(balanced_chunk(level.len(), INDEX_CHILDREN_MAX))
            .map(|chunk| {
                let node = encode_index(chunk);
                let child = IndexChild {
                    first_name: chunk[0].first_name.clone(),
                    entries: chunk.iter().map(|c| c.entries).sum(),
                    size: chunk.iter().map(|c| c.size).sum(),
                    hash: Hash::of(&node),
                };
                nodes.push(node);
                child
            })
            .collect();
    }
}

/// The chunk size that splits `count` items into as few chunks of at most
/// `max` as possible, all of nearly the same size: the last chunk is then
/// never a lone leftover, so no index node has a single child.
fn balanced_chunk(count: usize, max: usize) -> usize {
    let chunks = count.div_ceil(max);
    count.div_ceil(chunks)
}

struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], ObjectError> {
        let end = self
            .position
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len())
            .ok_or(ObjectError::Malformed("truncated"))?;
        let slice = &self.bytes[self.position..end];
        self.position = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, ObjectError> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, ObjectError> {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(bytes))
    }

    fn hash(&mut self) -> Result<Hash, ObjectError> {
        Hash::from_slice(self.take(32)?).ok_or(ObjectError::Malformed("hash"))
    }

    fn name(&mut self) -> Result<String, ObjectError> {
        let len = usize::from(self.u8()?);
        let name = std::str::from_utf8(self.take(len)?)
            .map_err(|_| ObjectError::Malformed("name is not UTF-8"))?
            .to_owned();
        check_name(&name)?;
        Ok(name)
    }
}

/// Decodes a node strictly: one valid encoding per directory, so that a
/// peer cannot make two roots for one tree, and bounded work per byte.
pub fn decode(bytes: &[u8]) -> Result<Node, ObjectError> {
    if !looks_like_object(bytes) {
        return Err(ObjectError::NotAnObject);
    }
    if bytes.len() > NODE_LEN_MAX {
        return Err(ObjectError::Malformed("larger than any node"));
    }
    if bytes[4] != VERSION {
        return Err(ObjectError::Version(bytes[4]));
    }
    let kind = bytes[5];
    let count = u32::from_be_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]) as usize;
    let mut reader = Reader {
        bytes,
        position: HEADER_LEN,
    };
    let node = match kind {
        KIND_DIRECTORY => {
            if count > NODE_ENTRIES_MAX {
                return Err(ObjectError::Malformed("too many entries"));
            }
            let mut entries = Vec::with_capacity(count);
            for _ in 0..count {
                let kind = match reader.u8()? {
                    0 => EntryType::File,
                    1 => EntryType::Directory,
                    _ => return Err(ObjectError::Malformed("entry type")),
                };
                let flags = reader.u8()?;
                if flags & !1 != 0 {
                    return Err(ObjectError::Malformed("entry flags"));
                }
                let size = reader.u64()?;
                let hash = reader.hash()?;
                let name = reader.name()?;
                entries.push(DirEntry {
                    name,
                    kind,
                    executable: flags & 1 == 1,
                    size,
                    hash,
                });
            }
            if entries
                .windows(2)
                .any(|pair| pair[0].name.as_bytes() >= pair[1].name.as_bytes())
            {
                return Err(ObjectError::Malformed("entries not in name order"));
            }
            Node::Directory(entries)
        }
        KIND_INDEX => {
            if !(2..=INDEX_CHILDREN_MAX).contains(&count) {
                return Err(ObjectError::Malformed("index child count"));
            }
            let mut children = Vec::with_capacity(count);
            for _ in 0..count {
                children.push(IndexChild {
                    entries: reader.u64()?,
                    size: reader.u64()?,
                    hash: reader.hash()?,
                    first_name: reader.name()?,
                });
            }
            if children
                .windows(2)
                .any(|pair| pair[0].first_name.as_bytes() >= pair[1].first_name.as_bytes())
            {
                return Err(ObjectError::Malformed("children not in name order"));
            }
            Node::Index(children)
        }
        _ => return Err(ObjectError::Malformed("unknown kind")),
    };
    if reader.position != bytes.len() {
        return Err(ObjectError::Malformed("bytes after the last item"));
    }
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(name: &str, n: u64) -> DirEntry {
        DirEntry {
            name: name.to_owned(),
            kind: if n.is_multiple_of(5) {
                EntryType::Directory
            } else {
                EntryType::File
            },
            executable: n.is_multiple_of(3),
            size: n * 100,
            hash: Hash::of(&n.to_be_bytes()),
        }
    }

    /// The entries below a root, by walking the nodes.
    fn walk(nodes: &[Vec<u8>], root: &[u8]) -> Vec<DirEntry> {
        let by_hash: std::collections::HashMap<Hash, &Vec<u8>> =
            nodes.iter().map(|n| (Hash::of(n), n)).collect();
        match decode(root).unwrap() {
            Node::Directory(entries) => entries,
            Node::Index(children) => children
                .iter()
                .flat_map(|child| walk(nodes, by_hash[&child.hash]))
                .collect(),
        }
    }

    #[test]
    fn a_directory_round_trips_in_name_order() {
        let entries = vec![entry("zeta", 1), entry("alpha", 2), entry("mid", 5)];
        let nodes = build_directory(entries.clone()).unwrap();
        assert_eq!(nodes.len(), 1);
        let mut sorted = entries;
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(decode(&nodes[0]).unwrap(), Node::Directory(sorted));
        // The same directory in another order: the same root.
        let again =
            build_directory(vec![entry("mid", 5), entry("zeta", 1), entry("alpha", 2)]).unwrap();
        assert_eq!(again, nodes);
    }

    #[test]
    fn chunks_are_balanced_so_no_index_has_one_child() {
        for count in [1025, 2048, 2049, 1024 * 1024 + 3, 5_000_000] {
            let size = balanced_chunk(count, 1024);
            let chunks = count.div_ceil(size);
            assert!(size <= 1024);
            assert_eq!(chunks, count.div_ceil(1024), "{count}");
            assert!(count - (chunks - 1) * size >= 2, "{count}");
        }
    }

    #[test]
    fn long_directories_become_merkle_trees() {
        let count = NODE_ENTRIES_MAX * 2 + 3;
        let entries: Vec<DirEntry> = (0..count as u64)
            .map(|n| entry(&format!("f{n:08}"), n))
            .collect();
        let nodes = build_directory(entries.clone()).unwrap();
        let root = nodes.last().unwrap();
        let Node::Index(children) = decode(root).unwrap() else {
            panic!("a long directory's root is an index");
        };
        assert_eq!(
            children.iter().map(|c| c.entries).sum::<u64>(),
            count as u64
        );
        assert_eq!(walk(&nodes, root), entries);
    }

    #[test]
    fn bad_names_and_non_canonical_encodings_are_refused() {
        for name in ["", ".", "..", "a/b", "nul\0", &"x".repeat(256)] {
            assert!(check_name(name).is_err(), "{name:?}");
        }
        assert!(build_directory(vec![entry("same", 1), entry("same", 2)]).is_err());
        let mut unsorted = encode_directory(&[entry("b", 1), entry("a", 2)]);
        assert!(decode(&unsorted).is_err());
        unsorted.truncate(HEADER_LEN);
        assert!(decode(&unsorted).is_err());
        let mut trailing = encode_directory(&[entry("a", 1)]);
        trailing.push(0);
        assert!(decode(&trailing).is_err());
        assert_eq!(decode(b"hello world"), Err(ObjectError::NotAnObject));
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut framed = MAGIC.to_vec();
            framed.extend_from_slice(&bytes);
            if let Ok(Node::Directory(entries)) = decode(&framed) {
                // What decodes re-encodes to the same bytes: canonical.
                prop_assert_eq!(encode_directory(&entries), framed);
            }
        }

        #[test]
        fn random_directories_round_trip(names in proptest::collection::btree_set("[a-z0-9._-]{1,12}", 0..40)) {
            let entries: Vec<DirEntry> = names
                .iter()
                .filter(|n| check_name(n).is_ok())
                .enumerate()
                .map(|(i, n)| entry(n, i as u64))
                .collect();
            let nodes = build_directory(entries.clone()).unwrap();
            let mut sorted = entries;
            sorted.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
            prop_assert_eq!(walk(&nodes, nodes.last().unwrap()), sorted);
        }
    }
}

//! Replication messages between neighbours, one per link message on the
//! link channel STORE (`0x0200`). Big-endian throughout:
//!
//! ```text
//! type u8 | request id u32 | body
//!
//! 0x01 HAS        count u16 (≤ 512) | hash [32] × count
//! 0x02 HAVE       count u16 (≤ 512) | entry × count:
//!                   hash [32] | state u8 (0 absent, 1 complete, 2 partial)
//!                   | (complete, partial) size u64
//!                   | (partial) groups
//! 0x03 GET        count u16 (1..=32) | item × count: hash [32] | groups
//! 0x04 DATA       item u16 | bytes (the rest): the next bytes of item's
//!                   verified-streaming encoding
//! 0x05 DONE       (nothing: the answer to the request is complete)
//! 0x06 ERROR      code u8
//! 0x07 CANCEL     (nothing: stop answering the request)
//! 0x08 FEED_GET   feed key [32]
//! 0x09 FEED_ROOT  present u8 | (present) root (186 bytes)
//! 0x0a ANNOUNCE   root (186 bytes) | (optional) holder node id [32];
//!                   request id 0
//! 0x0b PROVIDE    count u16 (1..=512) | hash [32] × count
//! 0x0c PROVIDED   taken u16 | ttl seconds u32
//! 0x0d FIND       hash [32]
//! 0x0e PROVIDERS  count u8 (≤ 20) | node id [32] × count
//!
//! groups: count u16 (1..=256) | (start u64, end u64) × count, ascending,
//!         disjoint, non-adjacent: chunk groups (16 KiB) start..end
//! ```
//!
//! A GET's answer is, for each item in order, the pre-order encoding of
//! the blob's tree restricted to the item's chunk groups (parent hash
//! pairs of 64 bytes and chunk groups, as bao-tree encodes), cut into
//! DATA messages, then DONE — or ERROR at any point. An item asks for at
//! most [`ITEM_GROUPS_MAX`] chunk groups.

use bytes::Bytes;
use range_collections::RangeSet2;

use crate::Hash;

/// Largest message: what a link message carries.
pub const MESSAGE_LEN_MAX: usize = 65_516;
/// Hashes one HAS may ask about.
pub const HAS_MAX: usize = 512;
/// Items in one GET.
pub const GET_ITEMS_MAX: usize = 32;
/// Ranges in one set of groups.
pub const RUNS_MAX: usize = 256;
/// Chunk groups one GET item may ask for (64 MiB).
pub const ITEM_GROUPS_MAX: u64 = 4096;
/// Bytes of encoding in one DATA message.
pub const DATA_LEN_MAX: usize = MESSAGE_LEN_MAX - 1 - 4 - 2;
/// Length of an encoded feed root.
pub const FEED_ROOT_LEN: usize = 186;

pub const TYPE_HAS: u8 = 0x01;
pub const TYPE_HAVE: u8 = 0x02;
pub const TYPE_GET: u8 = 0x03;
pub const TYPE_DATA: u8 = 0x04;
pub const TYPE_DONE: u8 = 0x05;
pub const TYPE_ERROR: u8 = 0x06;
pub const TYPE_CANCEL: u8 = 0x07;
pub const TYPE_FEED_GET: u8 = 0x08;
pub const TYPE_FEED_ROOT: u8 = 0x09;
pub const TYPE_ANNOUNCE: u8 = 0x0a;
pub const TYPE_PROVIDE: u8 = 0x0b;
pub const TYPE_PROVIDED: u8 = 0x0c;
pub const TYPE_FIND: u8 = 0x0d;
pub const TYPE_PROVIDERS: u8 = 0x0e;
/// Node ids one PROVIDERS answer names.
pub const PROVIDERS_MAX: usize = 20;

/// Sets of chunk-group indices.
pub type Groups = RangeSet2<u64>;

/// Error codes.
pub const ERROR_NOT_FOUND: u8 = 1;
pub const ERROR_NOT_HELD: u8 = 2;
pub const ERROR_BUSY: u8 = 3;
pub const ERROR_TOO_LARGE: u8 = 4;
pub const ERROR_CORRUPT: u8 = 5;

/// What a peer holds of a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HaveState {
    Absent,
    Complete {
        size: u64,
    },
    /// Part of the blob: these chunk groups, verified.
    Partial {
        size: u64,
        groups: Groups,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaveEntry {
    pub hash: Hash,
    pub state: HaveState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetItem {
    pub hash: Hash,
    pub groups: Groups,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Has {
        id: u32,
        hashes: Vec<Hash>,
    },
    Have {
        id: u32,
        entries: Vec<HaveEntry>,
    },
    Get {
        id: u32,
        items: Vec<GetItem>,
    },
    Data {
        id: u32,
        item: u16,
        bytes: Bytes,
    },
    Done {
        id: u32,
    },
    Error {
        id: u32,
        code: u8,
    },
    Cancel {
        id: u32,
    },
    FeedGet {
        id: u32,
        feed: [u8; 32],
    },
    FeedRoot {
        id: u32,
        root: Option<Bytes>,
    },
    /// A feed root, and perhaps a node that holds its content (a hint,
    /// for nodes whose neighbours do not: kept as it is when passed on).
    Announce {
        root: Bytes,
        holder: Option<[u8; 32]>,
    },
    /// "I hold these": provider records for the node that sends it, to a
    /// node that keeps them (§7 of store.md).
    Provide {
        id: u32,
        hashes: Vec<Hash>,
    },
    /// How many of a PROVIDE's records were taken, and for how long.
    Provided {
        id: u32,
        taken: u16,
        ttl_secs: u32,
    },
    /// "Who holds this?", to a node that keeps provider records.
    Find {
        id: u32,
        hash: Hash,
    },
    /// The holders a keeper knows of, freshest first.
    Providers {
        id: u32,
        nodes: Vec<[u8; 32]>,
    },
}

/// A message that does not parse, or breaks a bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    #[error("empty message")]
    Empty,
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    #[error("message of {0} bytes exceeds the limit")]
    TooLong(usize),
}

struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], MessageError> {
        let end = self
            .position
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len())
            .ok_or(MessageError::Malformed("truncated"))?;
        let slice = &self.bytes[self.position..end];
        self.position = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, MessageError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, MessageError> {
        Ok(u16::from_be_bytes([self.take(1)?[0], self.take(1)?[0]]))
    }

    fn u32(&mut self) -> Result<u32, MessageError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, MessageError> {
        let mut array = [0u8; 8];
        array.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(array))
    }

    fn hash(&mut self) -> Result<Hash, MessageError> {
        Hash::from_slice(self.take(32)?).ok_or(MessageError::Malformed("hash"))
    }

    fn count(&mut self, max: usize) -> Result<usize, MessageError> {
        let count = usize::from(self.u16()?);
        if count > max {
            return Err(MessageError::Malformed("count above its limit"));
        }
        Ok(count)
    }

    fn groups(&mut self) -> Result<Groups, MessageError> {
        let count = self.count(RUNS_MAX)?;
        if count == 0 {
            return Err(MessageError::Malformed("empty groups"));
        }
        let mut boundaries = Vec::with_capacity(count * 2);
        let mut last_end: Option<u64> = None;
        for _ in 0..count {
            let (start, end) = (self.u64()?, self.u64()?);
            // Canonical: ascending, non-empty, neither overlapping nor
            // touching, so one set has one encoding.
            if start >= end || last_end.is_some_and(|last| start <= last) {
                return Err(MessageError::Malformed("groups not canonical"));
            }
            boundaries.push(start);
            boundaries.push(end);
            last_end = Some(end);
        }
        Groups::new(boundaries.into()).ok_or(MessageError::Malformed("groups"))
    }

    fn end(&self) -> Result<(), MessageError> {
        if self.position == self.bytes.len() {
            Ok(())
        } else {
            Err(MessageError::Malformed("bytes after the last field"))
        }
    }
}

/// The (start, end) runs of a set of groups. Sets from the decoder and
/// the scheduler are always bounded (`start..end`).
pub fn runs(groups: &Groups) -> Vec<(u64, u64)> {
    groups
        .iter()
        .filter_map(|range| match range {
            range_collections::range_set::RangeSetRange::Range(r) => Some((*r.start, *r.end)),
            range_collections::range_set::RangeSetRange::RangeFrom(_) => None,
        })
        .collect()
}

/// How many chunk groups a set holds.
pub fn group_count(groups: &Groups) -> u64 {
    runs(groups).iter().map(|(start, end)| end - start).sum()
}

fn put_groups(out: &mut Vec<u8>, groups: &Groups) {
    let runs = runs(groups);
    out.extend_from_slice(&(runs.len() as u16).to_be_bytes());
    for (start, end) in runs {
        out.extend_from_slice(&start.to_be_bytes());
        out.extend_from_slice(&end.to_be_bytes());
    }
}

impl Message {
    pub fn decode(bytes: &Bytes) -> Result<Message, MessageError> {
        if bytes.len() > MESSAGE_LEN_MAX {
            return Err(MessageError::TooLong(bytes.len()));
        }
        let &kind = bytes.first().ok_or(MessageError::Empty)?;
        let mut reader = Reader { bytes, position: 1 };
        let id = reader.u32()?;
        let message = match kind {
            TYPE_HAS => {
                let count = reader.count(HAS_MAX)?;
                let hashes = (0..count)
                    .map(|_| reader.hash())
                    .collect::<Result<_, _>>()?;
                Message::Has { id, hashes }
            }
            TYPE_HAVE => {
                let count = reader.count(HAS_MAX)?;
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    let hash = reader.hash()?;
                    let state = match reader.u8()? {
                        0 => HaveState::Absent,
                        1 => HaveState::Complete {
                            size: reader.u64()?,
                        },
                        2 => HaveState::Partial {
                            size: reader.u64()?,
                            groups: reader.groups()?,
                        },
                        _ => return Err(MessageError::Malformed("have state")),
                    };
                    entries.push(HaveEntry { hash, state });
                }
                Message::Have { id, entries }
            }
            TYPE_GET => {
                let count = reader.count(GET_ITEMS_MAX)?;
                if count == 0 {
                    return Err(MessageError::Malformed("empty request"));
                }
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    let hash = reader.hash()?;
                    let groups = reader.groups()?;
                    if group_count(&groups) > ITEM_GROUPS_MAX {
                        return Err(MessageError::Malformed("item asks for too much"));
                    }
                    items.push(GetItem { hash, groups });
                }
                Message::Get { id, items }
            }
            TYPE_DATA => {
                let item = reader.u16()?;
                return Ok(Message::Data {
                    id,
                    item,
                    bytes: bytes.slice(reader.position..),
                });
            }
            TYPE_DONE => Message::Done { id },
            TYPE_ERROR => Message::Error {
                id,
                code: reader.u8()?,
            },
            TYPE_CANCEL => Message::Cancel { id },
            TYPE_FEED_GET => {
                let mut feed = [0u8; 32];
                feed.copy_from_slice(reader.take(32)?);
                Message::FeedGet { id, feed }
            }
            TYPE_FEED_ROOT => {
                let root = match reader.u8()? {
                    0 => None,
                    1 => {
                        let start = reader.position;
                        reader.take(FEED_ROOT_LEN)?;
                        Some(bytes.slice(start..start + FEED_ROOT_LEN))
                    }
                    _ => return Err(MessageError::Malformed("feed root flag")),
                };
                Message::FeedRoot { id, root }
            }
            TYPE_ANNOUNCE => {
                if id != 0 {
                    return Err(MessageError::Malformed("an announcement's request id is 0"));
                }
                let start = reader.position;
                reader.take(FEED_ROOT_LEN)?;
                let root = bytes.slice(start..start + FEED_ROOT_LEN);
                let holder = if reader.position < bytes.len() {
                    let mut holder = [0u8; 32];
                    holder.copy_from_slice(reader.take(32)?);
                    Some(holder)
                } else {
                    None
                };
                Message::Announce { root, holder }
            }
            TYPE_PROVIDE => {
                let count = reader.count(HAS_MAX)?;
                if count == 0 {
                    return Err(MessageError::Malformed("empty request"));
                }
                let hashes = (0..count)
                    .map(|_| reader.hash())
                    .collect::<Result<_, _>>()?;
                Message::Provide { id, hashes }
            }
            TYPE_PROVIDED => Message::Provided {
                id,
                taken: reader.u16()?,
                ttl_secs: reader.u32()?,
            },
            TYPE_FIND => Message::Find {
                id,
                hash: reader.hash()?,
            },
            TYPE_PROVIDERS => {
                let count = usize::from(reader.u8()?);
                if count > PROVIDERS_MAX {
                    return Err(MessageError::Malformed("count above its limit"));
                }
                let mut nodes = Vec::with_capacity(count);
                for _ in 0..count {
                    let mut node = [0u8; 32];
                    node.copy_from_slice(reader.take(32)?);
                    nodes.push(node);
                }
                Message::Providers { id, nodes }
            }
            other => return Err(MessageError::UnknownType(other)),
        };
        reader.end()?;
        Ok(message)
    }

    /// The wire form. The caller keeps within the bounds (they are checked
    /// again by every decoder).
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::new();
        let mut head = |kind: u8, id: u32| {
            out.push(kind);
            out.extend_from_slice(&id.to_be_bytes());
        };
        match self {
            Message::Has { id, hashes } => {
                head(TYPE_HAS, *id);
                out.extend_from_slice(&(hashes.len() as u16).to_be_bytes());
                for hash in hashes {
                    out.extend_from_slice(hash.as_bytes());
                }
            }
            Message::Have { id, entries } => {
                head(TYPE_HAVE, *id);
                out.extend_from_slice(&(entries.len() as u16).to_be_bytes());
                for entry in entries {
                    out.extend_from_slice(entry.hash.as_bytes());
                    match &entry.state {
                        HaveState::Absent => out.push(0),
                        HaveState::Complete { size } => {
                            out.push(1);
                            out.extend_from_slice(&size.to_be_bytes());
                        }
                        HaveState::Partial { size, groups } => {
                            out.push(2);
                            out.extend_from_slice(&size.to_be_bytes());
                            put_groups(&mut out, groups);
                        }
                    }
                }
            }
            Message::Get { id, items } => {
                head(TYPE_GET, *id);
                out.extend_from_slice(&(items.len() as u16).to_be_bytes());
                for item in items {
                    out.extend_from_slice(item.hash.as_bytes());
                    put_groups(&mut out, &item.groups);
                }
            }
            Message::Data { id, item, bytes } => {
                head(TYPE_DATA, *id);
                out.extend_from_slice(&item.to_be_bytes());
                out.extend_from_slice(bytes);
            }
            Message::Done { id } => head(TYPE_DONE, *id),
            Message::Error { id, code } => {
                head(TYPE_ERROR, *id);
                out.push(*code);
            }
            Message::Cancel { id } => head(TYPE_CANCEL, *id),
            Message::FeedGet { id, feed } => {
                head(TYPE_FEED_GET, *id);
                out.extend_from_slice(feed);
            }
            Message::FeedRoot { id, root } => {
                head(TYPE_FEED_ROOT, *id);
                match root {
                    None => out.push(0),
                    Some(root) => {
                        out.push(1);
                        out.extend_from_slice(root);
                    }
                }
            }
            Message::Announce { root, holder } => {
                head(TYPE_ANNOUNCE, 0);
                out.extend_from_slice(root);
                if let Some(holder) = holder {
                    out.extend_from_slice(holder);
                }
            }
            Message::Provide { id, hashes } => {
                head(TYPE_PROVIDE, *id);
                out.extend_from_slice(&(hashes.len() as u16).to_be_bytes());
                for hash in hashes {
                    out.extend_from_slice(hash.as_bytes());
                }
            }
            Message::Provided {
                id,
                taken,
                ttl_secs,
            } => {
                head(TYPE_PROVIDED, *id);
                out.extend_from_slice(&taken.to_be_bytes());
                out.extend_from_slice(&ttl_secs.to_be_bytes());
            }
            Message::Find { id, hash } => {
                head(TYPE_FIND, *id);
                out.extend_from_slice(hash.as_bytes());
            }
            Message::Providers { id, nodes } => {
                head(TYPE_PROVIDERS, *id);
                out.push(nodes.len() as u8);
                for node in nodes {
                    out.extend_from_slice(node);
                }
            }
        }
        Bytes::from(out)
    }
}

/// The header of a DATA message, to send it beside a shared body without
/// copying (see the link's prefixed messages).
pub fn data_header(id: u32, item: u16) -> [u8; 7] {
    let mut out = [0u8; 7];
    out[0] = TYPE_DATA;
    out[1..5].copy_from_slice(&id.to_be_bytes());
    out[5..].copy_from_slice(&item.to_be_bytes());
    out
}

/// On a route stream, each message goes as `length u16 | message`.
pub const FRAME_HEADER_LEN: usize = 2;

/// A frame on a route stream whose length is 0 or above
/// [`MESSAGE_LEN_MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a store frame of {0} bytes (1..={MESSAGE_LEN_MAX} allowed)")]
pub struct BadFrame(pub usize);

/// Takes the next whole message off the front of `buffer` (bytes read from
/// a route stream), if one is there.
pub fn next_frame(buffer: &mut bytes::BytesMut) -> Result<Option<Bytes>, BadFrame> {
    if buffer.len() < FRAME_HEADER_LEN {
        return Ok(None);
    }
    let len = usize::from(u16::from_be_bytes([buffer[0], buffer[1]]));
    if len == 0 || len > MESSAGE_LEN_MAX {
        return Err(BadFrame(len));
    }
    if buffer.len() < FRAME_HEADER_LEN + len {
        return Ok(None);
    }
    let _ = buffer.split_to(FRAME_HEADER_LEN);
    Ok(Some(buffer.split_to(len).freeze()))
}

/// Appends `message` (at most [`MESSAGE_LEN_MAX`] bytes, in two parts)
/// to `out` as a frame.
pub fn put_frame(out: &mut bytes::BytesMut, prefix: &[u8], body: &[u8]) {
    let len = prefix.len() + body.len();
    debug_assert!(len <= MESSAGE_LEN_MAX);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(prefix);
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_come_apart_whole_and_bad_lengths_are_refused() {
        let mut stream = bytes::BytesMut::new();
        put_frame(&mut stream, &[1, 2], &[3]);
        put_frame(&mut stream, &[], &[4; 300]);
        let mut buffer = bytes::BytesMut::new();
        let mut out = Vec::new();
        // Arriving a few bytes at a time.
        for piece in stream.chunks(7) {
            buffer.extend_from_slice(piece);
            while let Some(frame) = next_frame(&mut buffer).unwrap() {
                out.push(frame);
            }
        }
        assert_eq!(
            out,
            vec![Bytes::from_static(&[1, 2, 3]), Bytes::from(vec![4; 300])]
        );
        assert!(buffer.is_empty());
        for bad in [[0u8, 0], [0xff, 0xff]] {
            let mut buffer = bytes::BytesMut::from(&bad[..]);
            assert!(next_frame(&mut buffer).is_err());
        }
    }

    fn groups(runs: &[(u64, u64)]) -> Groups {
        let mut set = Groups::empty();
        for (start, end) in runs {
            set |= Groups::from(*start..*end);
        }
        set
    }

    #[test]
    fn every_message_round_trips() {
        let hash = Hash::of(b"x");
        let messages = [
            Message::Has {
                id: 1,
                hashes: vec![hash, Hash::of(b"y")],
            },
            Message::Have {
                id: 2,
                entries: vec![
                    HaveEntry {
                        hash,
                        state: HaveState::Absent,
                    },
                    HaveEntry {
                        hash,
                        state: HaveState::Complete { size: 9 },
                    },
                    HaveEntry {
                        hash,
                        state: HaveState::Partial {
                            size: 1 << 30,
                            groups: groups(&[(0, 10), (20, 30)]),
                        },
                    },
                ],
            },
            Message::Get {
                id: 3,
                items: vec![GetItem {
                    hash,
                    groups: groups(&[(5, 100)]),
                }],
            },
            Message::Data {
                id: 4,
                item: 1,
                bytes: Bytes::from_static(b"encoded"),
            },
            Message::Done { id: 5 },
            Message::Error {
                id: 6,
                code: ERROR_NOT_FOUND,
            },
            Message::Cancel { id: 7 },
            Message::FeedGet {
                id: 8,
                feed: [3; 32],
            },
            Message::FeedRoot { id: 9, root: None },
            Message::FeedRoot {
                id: 9,
                root: Some(Bytes::from(vec![7; FEED_ROOT_LEN])),
            },
            Message::Announce {
                root: Bytes::from(vec![8; FEED_ROOT_LEN]),
                holder: None,
            },
            Message::Announce {
                root: Bytes::from(vec![8; FEED_ROOT_LEN]),
                holder: Some([5; 32]),
            },
            Message::Provide {
                id: 10,
                hashes: vec![hash, Hash::of(b"z")],
            },
            Message::Provided {
                id: 10,
                taken: 2,
                ttl_secs: 7200,
            },
            Message::Find { id: 11, hash },
            Message::Providers {
                id: 11,
                nodes: vec![],
            },
            Message::Providers {
                id: 11,
                nodes: vec![[1; 32], [2; 32]],
            },
        ];
        for message in messages {
            assert_eq!(Message::decode(&message.encode()), Ok(message));
        }
        let header = data_header(4, 1);
        let mut data = header.to_vec();
        data.extend_from_slice(b"encoded");
        assert!(matches!(
            Message::decode(&Bytes::from(data)),
            Ok(Message::Data { id: 4, item: 1, .. })
        ));
    }

    #[test]
    fn bounds_and_non_canonical_groups_are_refused() {
        let hash = Hash::of(b"x");
        let too_many = Message::Has {
            id: 1,
            hashes: vec![hash; HAS_MAX + 1],
        };
        assert!(Message::decode(&too_many.encode()).is_err());
        let too_much = Message::Get {
            id: 1,
            items: vec![GetItem {
                hash,
                groups: groups(&[(0, ITEM_GROUPS_MAX + 1)]),
            }],
        };
        assert!(Message::decode(&too_much.encode()).is_err());
        // Touching runs have a shorter encoding: refused.
        let mut touching = vec![TYPE_GET, 0, 0, 0, 1, 0, 1];
        touching.extend_from_slice(hash.as_bytes());
        touching.extend_from_slice(&2u16.to_be_bytes());
        for value in [0u64, 5, 5, 9] {
            touching.extend_from_slice(&value.to_be_bytes());
        }
        assert!(Message::decode(&Bytes::from(touching)).is_err());
        assert!(Message::decode(&Bytes::from(vec![0u8; MESSAGE_LEN_MAX + 1])).is_err());
        let empty_provide = Message::Provide {
            id: 1,
            hashes: vec![],
        };
        assert!(Message::decode(&empty_provide.encode()).is_err());
        let too_many_providers = Message::Providers {
            id: 1,
            nodes: vec![[1; 32]; PROVIDERS_MAX + 1],
        };
        assert!(Message::decode(&too_many_providers.encode()).is_err());
        assert_eq!(Message::decode(&Bytes::new()), Err(MessageError::Empty));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_what_decodes_re_encodes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(message) = Message::decode(&Bytes::from(bytes.clone())) {
                prop_assert_eq!(message.encode().to_vec(), bytes);
            }
        }
    }
}

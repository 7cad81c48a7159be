//! Hashing a file of the store into its outboard, on two threads for
//! large files. The tree geometry and verified reads are the sans-IO
//! core's (`fogwire_store_proto::bao`).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};

use fogwire_store_proto::Hash;
pub use fogwire_store_proto::bao::*;

/// Below this, hashing on one thread is as fast as starting a second.
pub const PARALLEL_MIN: u64 = 8 * 1024 * 1024;

/// Reads `start..end` of a file with positioned reads (threads can share
/// the file).
struct RangeReader<'a> {
    file: &'a File,
    position: u64,
    end: u64,
}

impl Read for RangeReader<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let want = (self.end - self.position).min(buffer.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let read = FileExt::read_at(self.file, &mut buffer[..want], self.position)?;
        self.position += read as u64;
        Ok(read)
    }
}

/// Writes at a position of a file, in blocks.
struct PositionedWriter<'a> {
    file: &'a File,
    position: u64,
    buffer: Vec<u8>,
}

impl Write for PositionedWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= 64 * 1024 {
            self.flush()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.write_all_at(&self.buffer, self.position)?;
        self.position += self.buffer.len() as u64;
        self.buffer.clear();
        Ok(())
    }
}

/// Hashes the first `size` bytes of `data` into a post-order outboard
/// written to `outboard`, using two threads for large files: BLAKE3's two
/// top subtrees are independent, and their outboards are the two halves
/// of the whole one, before the root pair. `progress` counts bytes hashed.
pub fn outboard_file(
    data: &File,
    size: u64,
    outboard: &File,
    progress: &AtomicU64,
) -> io::Result<Hash> {
    let count = |bytes: &[u8]| {
        progress.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    };
    let reader = |start, end| RangeReader {
        file: data,
        position: start,
        end,
    };
    let writer = |position| PositionedWriter {
        file: outboard,
        position,
        buffer: Vec::with_capacity(64 * 1024),
    };
    if size < PARALLEL_MIN {
        return subtree_streaming(reader(0, size), 0, size, true, writer(0), count).map(Hash::from);
    }
    let left_len = blake3::hazmat::left_subtree_len(size);
    let left_outboard = tree(left_len).outboard_size();
    let right_outboard = tree(size - left_len).outboard_size();
    let (left, right) = std::thread::scope(|scope| {
        let left = scope
            .spawn(|| subtree_streaming(reader(0, left_len), 0, left_len, false, writer(0), count));
        let right = subtree_streaming(
            reader(left_len, size),
            left_len,
            size - left_len,
            false,
            writer(left_outboard),
            count,
        );
        let left = left
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("hashing thread failed")));
        (left, right)
    });
    let (left, right) = (left?, right?);
    let mut root_pair = writer(left_outboard + right_outboard);
    root_pair.write_all(left.as_bytes())?;
    root_pair.write_all(right.as_bytes())?;
    root_pair.flush()?;
    Ok(Hash::from(parent_cv(&left, &right, true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 1031) as u8).collect()
    }

    fn outboard_of(data: &[u8]) -> (Hash, Vec<u8>) {
        let mut outboard = Vec::new();
        let hash = outboard_streaming(data, data.len() as u64, &mut outboard, |_| Ok(())).unwrap();
        (hash, outboard)
    }

    #[test]
    fn two_threads_make_the_same_outboard_as_one() {
        let dir = tempfile::tempdir().unwrap();
        for len in [
            PARALLEL_MIN,
            PARALLEL_MIN + 1,
            PARALLEL_MIN + 16 * 1024 + 3,
            3 * PARALLEL_MIN + 777,
        ] {
            let data = data(len as usize);
            let path = dir.path().join("data");
            std::fs::write(&path, &data).unwrap();
            let outboard_path = dir.path().join("outboard");
            let outboard = File::create(&outboard_path).unwrap();
            let progress = AtomicU64::new(0);
            let hash =
                outboard_file(&File::open(&path).unwrap(), len, &outboard, &progress).unwrap();
            assert_eq!(hash, Hash::of(&data), "len {len}");
            assert_eq!(progress.load(Ordering::Relaxed), len);
            let (_, sequential) = outboard_of(&data);
            assert_eq!(
                std::fs::read(&outboard_path).unwrap(),
                sequential,
                "len {len}"
            );
        }
    }
}

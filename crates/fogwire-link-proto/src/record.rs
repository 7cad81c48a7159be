//! Records: how handshake messages and encrypted frames are delimited on the
//! byte stream.
//!
//! ```text
//! offset  size  field
//!      0     2  length n of the body, big-endian
//!      2     n  body: a Noise handshake message or transport message
//! ```
//!
//! The reader refuses a length above its limit as soon as the two length
//! bytes arrive, before buffering any of the body, so a peer cannot make us
//! hold more than one record's worth of its bytes.

use bytes::{Buf, BytesMut};

/// Size of the length prefix in front of every record.
pub const LEN_PREFIX: usize = 2;

/// Splits a byte stream into records.
#[derive(Debug)]
pub struct RecordReader {
    buffer: BytesMut,
    len_max: usize,
}

/// A record whose announced length is above the reader's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordTooLong {
    pub len: usize,
    pub max: usize,
}

impl RecordReader {
    pub fn new(len_max: usize) -> Self {
        Self {
            buffer: BytesMut::new(),
            len_max,
        }
    }

    pub fn set_len_max(&mut self, len_max: usize) {
        self.len_max = len_max;
    }

    /// The buffer the caller may read socket data into directly.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buffer
    }

    pub fn extend(&mut self, data: &[u8]) {
        self.buffer.extend_from_slice(data);
    }

    /// Bytes received but not yet returned as records.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Takes out whatever is buffered, for a new reader (the handshake hands
    /// bytes that followed its last message to the link).
    pub fn take_buffered(&mut self) -> BytesMut {
        self.buffer.split()
    }

    /// The bytes buffered so far, not yet taken as records.
    pub fn peek(&self) -> &[u8] {
        &self.buffer
    }

    /// The next complete record body, `None` if more bytes are needed.
    pub fn next_record(&mut self) -> Result<Option<BytesMut>, RecordTooLong> {
        if self.buffer.len() < LEN_PREFIX {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([self.buffer[0], self.buffer[1]]));
        if len > self.len_max {
            return Err(RecordTooLong {
                len,
                max: self.len_max,
            });
        }
        if self.buffer.len() < LEN_PREFIX + len {
            // Reserve the rest of this record now, so that reading the
            // socket straight into the buffer fills it in one go.
            self.buffer.reserve(LEN_PREFIX + len - self.buffer.len());
            return Ok(None);
        }
        self.buffer.advance(LEN_PREFIX);
        Ok(Some(self.buffer.split_to(len)))
    }
}

/// Writes the length prefix for a body of `len` bytes into `out[..2]`.
pub fn write_len_prefix(out: &mut [u8], len: usize) {
    // Callers never produce a body above RECORD_LEN_MAX (65 535).
    let len = u16::try_from(len).unwrap_or(u16::MAX);
    out[..LEN_PREFIX].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_records_fed_one_byte_at_a_time() {
        let mut reader = RecordReader::new(100);
        let stream = [0u8, 3, b'a', b'b', b'c', 0, 0, 0, 1, b'z'];
        let mut records = Vec::new();
        for byte in stream {
            reader.extend(&[byte]);
            while let Some(record) = reader.next_record().unwrap() {
                records.push(record.to_vec());
            }
        }
        assert_eq!(records, vec![b"abc".to_vec(), vec![], b"z".to_vec()]);
        assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn refuses_an_overlong_record_from_its_prefix_alone() {
        let mut reader = RecordReader::new(1024);
        reader.extend(&[0xff, 0xff]);
        assert_eq!(
            reader.next_record(),
            Err(RecordTooLong {
                len: 65_535,
                max: 1024
            })
        );
    }
}

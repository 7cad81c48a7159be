//! Records: how handshake messages and encrypted frames are delimited on the
//! byte stream.
//!
//! A handshake record:
//!
//! ```text
//! offset  size  field
//!      0     2  length n of the body, big-endian
//!      2     n  body: a Noise handshake message
//! ```
//!
//! A transport record (everything after the handshake):
//!
//! ```text
//! offset  size  field
//!      0     2  length n of the sealed part, big-endian
//!      2     2  length m of the clear body, big-endian (0 but after SEALED_DATA)
//!      4     n  sealed part: a Noise transport message (one frame ‖ tag)
//!    4+n     m  clear body: the body of a SEALED_DATA frame's message,
//!               already sealed end to end by whoever wrote it
//! ```
//!
//! The reader refuses a length above its limit as soon as the two length
//! bytes arrive, before buffering any of the body, so a peer cannot make us
//! hold more than one record's worth of its bytes.

use bytes::{Buf, BytesMut};

/// Size of the length prefix in front of every handshake record.
pub const LEN_PREFIX: usize = 2;
/// Size of the two lengths in front of every transport record.
pub const TRANSPORT_HEADER_LEN: usize = 4;

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

    /// The next complete transport record, sealed part and clear body
    /// together, and the sealed part's length; `None` if more bytes are
    /// needed. A clear body above `clear_len_max` is refused from the
    /// header alone, like an overlong sealed part.
    pub fn next_transport_record(
        &mut self,
        clear_len_max: usize,
    ) -> Result<Option<(BytesMut, usize)>, RecordTooLong> {
        if self.buffer.len() < TRANSPORT_HEADER_LEN {
            return Ok(None);
        }
        let sealed = usize::from(u16::from_be_bytes([self.buffer[0], self.buffer[1]]));
        let clear = usize::from(u16::from_be_bytes([self.buffer[2], self.buffer[3]]));
        if sealed > self.len_max {
            return Err(RecordTooLong {
                len: sealed,
                max: self.len_max,
            });
        }
        if clear > clear_len_max {
            return Err(RecordTooLong {
                len: clear,
                max: clear_len_max,
            });
        }
        let total = TRANSPORT_HEADER_LEN + sealed + clear;
        if self.buffer.len() < total {
            self.buffer.reserve(total - self.buffer.len());
            return Ok(None);
        }
        self.buffer.advance(TRANSPORT_HEADER_LEN);
        Ok(Some((self.buffer.split_to(sealed + clear), sealed)))
    }
}

/// Writes a transport record's header, for a sealed part of `sealed_len`
/// bytes and a clear body of `clear_len`, into `out[..4]`.
pub fn write_transport_header(out: &mut [u8], sealed_len: usize, clear_len: usize) {
    // Callers never produce either above 65 535.
    let sealed = u16::try_from(sealed_len).unwrap_or(u16::MAX);
    let clear = u16::try_from(clear_len).unwrap_or(u16::MAX);
    out[..2].copy_from_slice(&sealed.to_be_bytes());
    out[2..TRANSPORT_HEADER_LEN].copy_from_slice(&clear.to_be_bytes());
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
    fn splits_transport_records_into_sealed_part_and_clear_body() {
        let mut reader = RecordReader::new(100);
        let stream = [0u8, 2, 0, 3, b's', b's', b'c', b'c', b'c', 0, 1, 0, 0, b'x'];
        let mut records = Vec::new();
        for byte in stream {
            reader.extend(&[byte]);
            while let Some((record, sealed)) = reader.next_transport_record(10).unwrap() {
                records.push((record.to_vec(), sealed));
            }
        }
        assert_eq!(records, vec![(b"ssccc".to_vec(), 2), (b"x".to_vec(), 1)]);
        let mut header = [0u8; 4];
        write_transport_header(&mut header, 2, 3);
        assert_eq!(header, [0, 2, 0, 3]);
    }

    #[test]
    fn refuses_an_overlong_clear_body_from_the_header_alone() {
        let mut reader = RecordReader::new(100);
        reader.extend(&[0, 16, 0x01, 0x00]);
        assert_eq!(
            reader.next_transport_record(255),
            Err(RecordTooLong { len: 256, max: 255 })
        );
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

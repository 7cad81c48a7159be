//! The record splitter, handshake records or transport records (the input's
//! first byte picks which, and the limit), fed the input in pieces whose
//! sizes the input picks.
#![no_main]

use fogwire_link_proto::record::{LEN_PREFIX, RecordReader, TRANSPORT_HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let transport = first & 0x80 != 0;
    let limit = usize::from(first & 0x7f) * 512;
    let clear_limit = usize::from(first & 0x0f) * 4096;
    let header = if transport {
        TRANSPORT_HEADER_LEN
    } else {
        LEN_PREFIX
    };
    let mut reader = RecordReader::new(limit);
    let mut total_out = 0;
    for chunk in rest.chunks(usize::from(first % 7) + 1) {
        reader.extend(chunk);
        loop {
            let next = if transport {
                reader
                    .next_transport_record(clear_limit)
                    .map(|record| record.map(|(record, sealed)| {
                        assert!(sealed <= record.len() && sealed <= limit);
                        assert!(record.len() - sealed <= clear_limit);
                        record.len()
                    }))
            } else {
                reader.next_record().map(|record| record.map(|record| record.len()))
            };
            match next {
                Ok(Some(len)) => total_out += header + len,
                Ok(None) => break,
                Err(too_long) => {
                    assert!(too_long.len > too_long.max);
                    return;
                }
            }
        }
        // Never more buffered than one record plus one chunk.
        assert!(reader.buffered() <= header + 2 * 65_535 + chunk.len());
    }
    assert!(total_out <= rest.len());
});

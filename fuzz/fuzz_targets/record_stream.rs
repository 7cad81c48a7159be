//! The record splitter, fed the input in pieces whose sizes the input picks.
#![no_main]

use fogwire_link_proto::record::RecordReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&limit, rest)) = data.split_first() else {
        return;
    };
    let mut reader = RecordReader::new(usize::from(limit) * 256);
    let mut total_out = 0;
    for chunk in rest.chunks(usize::from(limit % 7) + 1) {
        reader.extend(chunk);
        loop {
            match reader.next_record() {
                Ok(Some(record)) => total_out += 2 + record.len(),
                Ok(None) => break,
                Err(too_long) => {
                    assert!(too_long.len > too_long.max);
                    return;
                }
            }
        }
        // Never more buffered than one record plus one chunk.
        assert!(reader.buffered() <= 2 + 65_535 + chunk.len());
    }
    assert!(total_out <= rest.len());
});

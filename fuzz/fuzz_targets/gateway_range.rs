//! The gateway's `Range` header on any text and any blob size: it never
//! panics or overflows, and a range it grants lies inside the blob.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((size, value)) = input.split_first_chunk::<8>() else {
        return;
    };
    let size = u64::from_le_bytes(*size);
    let Ok(value) = std::str::from_utf8(value) else {
        return;
    };
    if let Some(Ok((start, end))) = fogwire_control::parse_byte_range(value, size) {
        assert!(start < end && end <= size, "{value:?} of {size}: {start}..{end}");
    }
});

//! Fuzzes request decoding: any bytes after the length prefix must decode or be
//! refused, never panic, hang or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cirrus_broker::server::decode_request(bytes::Bytes::copy_from_slice(data));
});

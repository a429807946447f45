//! The feedback body `{"labels": [{"id", "label"}]}`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = infergate::http::codec::decode_labels(data);
});

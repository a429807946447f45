//! gzip and deflate request bodies, decompressed within a limit: a bomb
//! must be refused, never inflated whole.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for encoding in ["gzip", "deflate"] {
        if let Ok(out) = infergate::http::decompress_for_fuzz(encoding, data, 1 << 16) {
            assert!(out.len() <= 1 << 16);
        }
    }
});

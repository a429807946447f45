//! A drift baseline (baseline.json), checked as the loader checks it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = infergate::window::drift::BaselineFile::parse(
            text,
            std::path::Path::new("baseline.json"),
        );
    }
});

//! A model's config.toml.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(config) = infergate::repository::config::ModelConfig::parse(text) {
            let _ = config.rollups();
        }
    }
});

//! The HTTP infer body: JSON, and the binary extension with its header
//! length (the first two bytes of the input choose it), as the server
//! decodes it. Anything may be refused; nothing may panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let header_length = u16::from_le_bytes([data[0], data[1]]) as usize;
    let body = bytes::Bytes::copy_from_slice(&data[2..]);
    let _ = infergate::http::codec::decode_request("m", None, &body, None);
    let _ = infergate::http::codec::decode_request(
        "m",
        Some("1"),
        &body,
        Some(header_length % (body.len() + 1)),
    );
});

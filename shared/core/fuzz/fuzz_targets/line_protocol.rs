//! Fuzzes the line-protocol parser and reply encoder with arbitrary input: neither may panic, every reply
//! must be one line of pure ASCII, and the encoded string must decode back to the input exactly.

#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_core::kv::line;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for raw in text.split('\n') {
        if let Err(message) = line::parse(raw) {
            let reply = line::error(&message);
            assert!(reply.is_ascii() && reply.ends_with('\n') && reply.matches('\n').count() == 1);
        }
    }
    let encoded = line::python_json_string(&text);
    assert!(encoded.is_ascii());
    let decoded: String = serde_json::from_str(&encoded).expect("the encoding is valid JSON");
    assert_eq!(decoded, text);
});

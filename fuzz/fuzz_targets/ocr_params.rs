//! The ocr handler's options (crates/ocr/src/options.rs): the bytes as
//! JSON, then `Options::from_json`. Accepted options pass
//! `Options::validate`; a refusal's message is built.
#![no_main]

use jobmesh_ocr::Options;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    match Options::from_json(&value) {
        Ok(opts) => {
            opts.validate().expect("from_json returns valid options");
            let _ = jobmesh_ocr::install_command(&opts.lang);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});

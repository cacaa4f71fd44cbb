//! The thumbnail handler's parameters (crates/thumbnail/src/params.rs): the
//! bytes as JSON, then `Params::from_json`. Accepted parameters pass
//! `Params::validate`; a refusal's message is built.
#![no_main]

use jobmesh_thumbnail::Params;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    match Params::from_json(&value) {
        Ok(params) => {
            params
                .validate()
                .expect("from_json returns valid parameters");
            let _ = (params.fit.as_str(), params.format.as_str());
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});

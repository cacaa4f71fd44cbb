//! A request line on the local control socket (crates/peer/src/control.rs,
//! `read_request`): the daemon parses it as its private `Tagged` (an
//! optional session `id` plus the flattened public `Request`), mirrored
//! here field for field; then a submit's options go through
//! `SubmitOptions::to_options`. Whatever decodes re-encodes and decodes
//! again.
#![no_main]

use jobmesh_peer::control::{Request, MAX_CONTROL_REQUEST};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;

/// Same shape as `Tagged` in crates/peer/src/control.rs (private there).
#[derive(Deserialize)]
struct Tagged {
    #[serde(default)]
    #[allow(dead_code)]
    id: Option<u64>,
    #[serde(flatten)]
    request: Request,
}

fn check(request: &Request) {
    if let Request::Submit { options, .. } = request {
        let _ = options.to_options();
    }
    let text = serde_json::to_string(request).expect("a request serialises");
    serde_json::from_str::<Request>(&text)
        .unwrap_or_else(|e| panic!("re-encoded request refused: {e}: {text}"));
}

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_CONTROL_REQUEST {
        return;
    }
    // read_line hands the daemon a String: only UTF-8 gets as far as serde.
    if let Ok(line) = std::str::from_utf8(data) {
        if let Ok(tagged) = serde_json::from_str::<Tagged>(line) {
            check(&tagged.request);
        }
    }
    if let Ok(request) = serde_json::from_slice::<Request>(data) {
        check(&request);
    }
});

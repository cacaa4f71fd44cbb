//! Frames the signal-server sends a peer: `ServerMsg::decode`, a revocation
//! list's signature check, and the round trip.
#![no_main]

mod common;

use jobmesh_wire::signal::{ServerMsg, MAX_SERVER_MESSAGE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = ServerMsg::decode(data) else {
        return;
    };
    if let ServerMsg::Revocations { list } = &msg {
        // What a peer does with it: check it against its pool's key (the
        // fixed one, and the one the list names, to reach the signature).
        let _ = list.verify(common::POOL, &common::POOL_KEY);
        let _ = list.verify(&list.pool, &list.pool_key);
    }
    let text = jobmesh_wire::signal::encode(&msg);
    if text.len() <= MAX_SERVER_MESSAGE {
        let again = ServerMsg::decode(text.as_bytes());
        assert_eq!(again.as_ref(), Ok(&msg), "re-encoded: {text}");
    }
});

//! Frames a peer sends the signal-server: `ClientMsg::decode`, then what the
//! server does with a decoded hello (its proof, its credential), and the
//! round trip: whatever decodes re-encodes to the same message.
#![no_main]

mod common;

use jobmesh_wire::signal::{ClientMsg, MAX_SIGNAL_MESSAGE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = ClientMsg::decode(data) else {
        return;
    };
    if let ClientMsg::Hello(hello) = &msg {
        // What the server checks next: the proof over its challenge, then
        // the credential against the pool's key (the fixed pool's, and the
        // one the credential names, which gets past the issuer check).
        let _ = hello.verify(common::CHALLENGE);
        let _ = hello.join();
        if let Some(cred) = &hello.credential {
            let _ = cred.verify(
                &hello.pool,
                &common::POOL_KEY,
                &hello.key,
                common::NOW,
                None,
            );
            let grant = cred.grant();
            let _ = cred.verify(&grant.pool, &grant.pool_key, &hello.key, common::NOW, None);
        }
    }
    let text = jobmesh_wire::signal::encode(&msg);
    if text.len() <= MAX_SIGNAL_MESSAGE {
        let again = ClientMsg::decode(text.as_bytes());
        assert_eq!(again.as_ref(), Ok(&msg), "re-encoded: {text}");
    }
});

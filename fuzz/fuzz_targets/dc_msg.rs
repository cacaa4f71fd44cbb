//! Data-channel messages from another peer: `DcMsg::decode` and
//! `DcMsg::peek_job_id` (what the daemon calls on a message it could not
//! decode), and the round trip of whatever decodes.
#![no_main]

use jobmesh_wire::dc::{DcMsg, MAX_DC_MESSAGE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = DcMsg::peek_job_id(data);
    let Ok(msg) = DcMsg::decode(data) else {
        return;
    };
    let _ = msg.type_name();
    let bytes = msg.encode();
    if bytes.len() <= MAX_DC_MESSAGE {
        // Not compared with `==`: a job's input or result is any JSON, and
        // serde_json (without `float_roundtrip`) may move a float by one ULP.
        let again = DcMsg::decode(&bytes).unwrap_or_else(|e| {
            panic!(
                "re-encoded message refused: {e}: {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        assert_eq!(again.type_name(), msg.type_name());
    }
});

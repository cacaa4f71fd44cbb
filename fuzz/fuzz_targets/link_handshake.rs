//! The link handshake as one side runs it (crates/node/src/binding.rs):
//! the input is `<link_hello JSON>\n<link_proof JSON>\n<SDP text>`. Each
//! JSON line goes through `DcMsg::decode`; a hello's key is checked
//! (`peer_id`) and its credential verified; a proof is checked with the
//! hello's key (or a fixed one) over `binding_message` of fixed
//! fingerprints and nonces; the SDP through `Fingerprint::from_sdp`, whose
//! result prints back to the same fingerprint.
#![no_main]

mod common;

use jobmesh_identity::{Nonce, PublicKey, Purpose};
use jobmesh_wire::dc::DcMsg;
use jobmesh_wire::link::{binding_message, Fingerprint};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let hello = parts.next().map(DcMsg::decode);
    let proof = parts.next().map(DcMsg::decode);
    let sdp = parts.next();

    let mut remote: Option<(PublicKey, Nonce)> = None;
    for msg in [hello, proof].into_iter().flatten().flatten() {
        match msg {
            DcMsg::LinkHello {
                key,
                nonce,
                credential,
            } => {
                let _ = key.peer_id() == common::REMOTE.peer_id();
                if let Some(cred) = &credential {
                    let _ = cred.verify(common::POOL, &common::POOL_KEY, &key, common::NOW, None);
                    let grant = cred.grant();
                    let _ = cred.verify(&grant.pool, &grant.pool_key, &key, common::NOW, None);
                }
                remote = Some((key, nonce));
            }
            DcMsg::LinkProof { sig } => {
                // check_proof: signed by the remote over the fingerprints and
                // nonces as this side sees them, for this side's id.
                let (key, nonce) =
                    remote.unwrap_or_else(|| (common::REMOTE.public(), Nonce::from_bytes([0; 32])));
                let msg = binding_message(
                    &common::REMOTE_FP,
                    &common::LOCAL_FP,
                    &nonce,
                    &common::local_nonce(),
                    &common::LOCAL_ID,
                );
                assert_eq!(msg.len(), 144);
                let _ = key.verify(Purpose::ChannelBinding, &msg, &sig);
                // The same signature for another purpose never verifies.
                assert!(
                    key.verify(Purpose::SignalAdmission, &msg, &sig).is_err()
                        || key.verify(Purpose::ChannelBinding, &msg, &sig).is_err()
                );
            }
            _ => {}
        }
    }

    if let Some(sdp) = sdp.and_then(|s| std::str::from_utf8(s).ok()) {
        if let Some(fp) = Fingerprint::from_sdp(sdp) {
            let line = format!("a=fingerprint:sha-256 {fp}\r\n");
            assert_eq!(Fingerprint::from_sdp(&line), Some(fp));
            let _ = format!("{fp:?}");
        }
    }
});

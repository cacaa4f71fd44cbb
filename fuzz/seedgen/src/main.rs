//! Writes fuzz/corpus/<target>/<name> for every fuzz target: a handful of
//! valid inputs each, so the fuzzers start from messages that decode.

#[path = "../../fuzz_targets/common.rs"]
mod common;

use std::path::{Path, PathBuf};

use jobmesh_identity::{Identity, Nonce, Purpose};
use jobmesh_trust::{Invitation, Revocations, Role};
use jobmesh_wire::blob::{BlobMeta, ChunkHeader, Direction};
use jobmesh_wire::dc::{DcMsg, Load, Outcome, Progress, Receipt, RejectReason};
use jobmesh_wire::link::binding_message;
use jobmesh_wire::signal::{encode, ClientMsg, ErrorCode, Handshake, Join, ServerMsg};
use jobmesh_wire::{Capability, PeerInfo, Stats};
use serde_json::json;
use uuid::Uuid;

const JOB: Uuid = Uuid::from_u128(0x0123_4567_89ab_4cde_8f01_2345_6789_abcd);
const SDP: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\na=fingerprint:sha-256 BB:BB:BB:BB:BB:BB:BB:BB:BB:BB:BB:BB:BB:BB:BB:BB:BB:BB:BB:BB:BB:BB:BB:BB:BB:BB:BB:BB:BB:BB:BB:BB\r\na=setup:actpass\r\na=mid:0\r\na=sctp-port:5000\r\n";

fn cap(s: &str) -> Capability {
    Capability::new(s).expect("valid")
}

struct Out(PathBuf);

impl Out {
    fn put(&self, target: &str, name: &str, bytes: impl AsRef<[u8]>) {
        let dir = self.0.join(target);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(name), bytes).expect("write");
    }
}

fn main() {
    let root = std::env::args_os().nth(1).map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus"),
        PathBuf::from,
    );
    write_all(&root);
}

/// Writes every target's seeds under `root`.
fn write_all(root: &Path) {
    let out = Out(root.to_owned());

    let owner: &Identity = &common::POOL_OWNER;
    let remote: &Identity = &common::REMOTE;
    let invitation = Invitation::mint(
        owner,
        common::POOL,
        vec![Role::Worker, Role::Submitter],
        vec!["echo".into(), "ocr".into()],
        1_900_000_000,
    )
    .expect("mint");
    let credential = invitation.redeem(&remote.public());
    let revocations = Revocations::sign(
        owner,
        common::POOL,
        3,
        vec![invitation.key()],
        vec![common::LOCAL.public()],
    )
    .expect("sign");
    let stats = Stats {
        slots: 4,
        running: 1,
        queued: 2,
        completed: 10,
        failed: 1,
        seq: 7,
        mean_run_ms: [(cap("echo"), 3), (cap("thumbnail"), 120)]
            .into_iter()
            .collect(),
    };

    // signal_client_msg
    let t = "signal_client_msg";
    let join = Join {
        name: "worker-1".into(),
        pool: common::POOL.into(),
        capabilities: vec![cap("echo"), cap("thumbnail")],
        slots: 4,
        credential: None,
        view: None,
    };
    out.put(
        t,
        "hello",
        encode(&ClientMsg::Hello(join.hello(remote, common::CHALLENGE))),
    );
    let closed = Join {
        credential: Some(credential.clone()),
        view: None,
        ..join
    };
    out.put(
        t,
        "hello_credential",
        encode(&ClientMsg::Hello(closed.hello(remote, common::CHALLENGE))),
    );
    out.put(
        t,
        "stats",
        encode(&ClientMsg::Stats {
            stats: stats.clone(),
        }),
    );
    out.put(
        t,
        "relay_offer",
        encode(&ClientMsg::Relay {
            to: *common::LOCAL_ID,
            signal: Handshake::Offer {
                sdp: SDP.into(),
                dial: 42,
            },
        }),
    );
    out.put(
        t,
        "relay_candidate",
        encode(&ClientMsg::Relay {
            to: *common::LOCAL_ID,
            signal: Handshake::Candidate {
                candidate: "candidate:1 1 udp 2130706431 192.168.1.2 50000 typ host".into(),
                sdp_mid: Some("0".into()),
                sdp_mline_index: Some(0),
            },
        }),
    );

    // signal_server_msg
    let t = "signal_server_msg";
    out.put(
        t,
        "challenge",
        encode(&ServerMsg::Challenge {
            nonce: common::CHALLENGE.into(),
        }),
    );
    out.put(
        t,
        "welcome",
        encode(&ServerMsg::Welcome {
            pool: common::POOL.into(),
            heartbeat_ms: 5000,
        }),
    );
    let peer = PeerInfo {
        id: remote.peer_id(),
        name: "worker-1".into(),
        capabilities: vec![cap("echo"), cap("ocr")],
        stats: stats.clone(),
    };
    out.put(
        t,
        "view_reset",
        encode(&ServerMsg::View {
            reset: true,
            left: vec![],
            peers: vec![peer.clone()],
            synced: false,
        }),
    );
    out.put(
        t,
        "view_delta",
        encode(&ServerMsg::View {
            reset: false,
            left: vec![*common::LOCAL_ID],
            peers: vec![peer],
            synced: true,
        }),
    );
    out.put(
        t,
        "relayed_answer",
        encode(&ServerMsg::Relayed {
            from: remote.peer_id(),
            signal: Handshake::Answer {
                sdp: SDP.into(),
                dial: 42,
            },
        }),
    );
    out.put(
        t,
        "revocations",
        encode(&ServerMsg::Revocations {
            list: Box::new(revocations.clone()),
        }),
    );
    out.put(
        t,
        "error",
        encode(&ServerMsg::Error {
            code: ErrorCode::PoolFull,
            message: "the pool is full".into(),
        }),
    );

    // dc_msg
    let t = "dc_msg";
    let blobs = vec![
        BlobMeta {
            index: 0,
            size: 1234,
            blake3: "ab".repeat(32),
            name: Some("in.png".into()),
        },
        BlobMeta {
            index: 1,
            size: 0,
            blake3: "0f".repeat(32),
            name: None,
        },
    ];
    let hello = DcMsg::LinkHello {
        key: remote.public(),
        nonce: Nonce::from_bytes([0x11; 32]),
        credential: Some(Box::new(credential.clone())),
    };
    let msgs = [
        (
            "submit",
            DcMsg::Submit {
                job_id: JOB,
                attempt: 1,
                capability: cap("thumbnail"),
                input: json!({"width": 128, "format": "png", "list": [1, 2.5, -3, null, true, "x"]}),
                timeout_ms: 30_000,
            },
        ),
        (
            "cancel",
            DcMsg::Cancel {
                job_id: JOB,
                attempt: 2,
            },
        ),
        (
            "accepted",
            DcMsg::Accepted {
                job_id: JOB,
                attempt: 1,
            },
        ),
        (
            "rejected",
            DcMsg::Rejected {
                job_id: JOB,
                attempt: 1,
                reason: RejectReason::Busy,
                message: "all 4 slots taken".into(),
            },
        ),
        (
            "progress",
            DcMsg::Progress {
                job_id: JOB,
                attempt: 1,
                progress: Progress {
                    percent: Some(40),
                    stage: Some("recognising".into()),
                    message: Some("page 2 of 5".into()),
                },
            },
        ),
        (
            "result_ok",
            DcMsg::Result {
                job_id: JOB,
                attempt: 1,
                outcome: Outcome::Ok {
                    value: json!({"text": "hello", "confidence": 93.5}),
                },
                load: Some(Load {
                    running: 0,
                    slots: 4,
                    seq: 9,
                }),
            },
        ),
        (
            "result_err",
            DcMsg::Result {
                job_id: JOB,
                attempt: 3,
                outcome: Outcome::Err {
                    message: "tesseract crashed".into(),
                    retryable: true,
                },
                load: None,
            },
        ),
        (
            "blobs",
            DcMsg::Blobs {
                job_id: JOB,
                attempt: 1,
                direction: Direction::Input,
                blobs: blobs.clone(),
            },
        ),
        (
            "received",
            DcMsg::Received {
                receipts: vec![
                    Receipt {
                        job_id: JOB,
                        attempt: 1,
                    },
                    Receipt {
                        job_id: Uuid::nil(),
                        attempt: 7,
                    },
                ],
            },
        ),
        (
            "held",
            DcMsg::Held {
                job_id: JOB,
                attempt: 2,
            },
        ),
        ("link_hello", hello.clone()),
        (
            "link_proof",
            DcMsg::LinkProof {
                sig: remote.sign(Purpose::ChannelBinding, b"x"),
            },
        ),
        (
            "error",
            DcMsg::Error {
                job_id: Some(JOB),
                message: "invalid JSON".into(),
            },
        ),
    ];
    for (name, msg) in &msgs {
        out.put(t, name, msg.encode());
    }

    // blob_frame
    let t = "blob_frame";
    let h = ChunkHeader {
        direction: Direction::Input,
        job_id: JOB,
        attempt: 1,
        blob: 0,
        offset: 0,
    };
    out.put(
        t,
        "chunk_input",
        h.encode(b"\x89PNG\r\n\x1a\n payload bytes"),
    );
    let h = ChunkHeader {
        direction: Direction::Output,
        job_id: JOB,
        attempt: 4,
        blob: 3,
        offset: 65_504,
    };
    out.put(t, "chunk_output", h.encode(&[0u8; 64]));
    out.put(t, "chunk_empty", ChunkHeader { offset: 0, ..h }.encode(b""));
    out.put(
        t,
        "msg_blobs",
        DcMsg::Blobs {
            job_id: JOB,
            attempt: 1,
            direction: Direction::Output,
            blobs,
        }
        .encode(),
    );
    out.put(
        t,
        "msg_accepted",
        DcMsg::Accepted {
            job_id: JOB,
            attempt: 1,
        }
        .encode(),
    );

    // invitation_token
    let t = "invitation_token";
    out.put(t, "token", invitation.to_token().as_bytes());
    let any = Invitation::mint(
        owner,
        "open-ish",
        vec![Role::Observer],
        vec![],
        1_900_000_000,
    )
    .expect("mint");
    out.put(
        t,
        "token_any_capability",
        format!("  {}\n", any.to_token().as_str()),
    );
    out.put(
        t,
        "credential",
        serde_json::to_vec(&credential).expect("json"),
    );
    out.put(
        t,
        "revocations",
        serde_json::to_vec(&revocations).expect("json"),
    );
    // One object that reads as both: the credential checked against the list.
    let mut both = serde_json::to_value(&credential).expect("json");
    let list = serde_json::to_value(&revocations).expect("json");
    for (k, v) in list.as_object().expect("object") {
        if k != "sig" {
            both[k] = v.clone();
        }
    }
    both["sig"] = serde_json::to_value(credential.endorsement.sig).expect("json");
    out.put(
        t,
        "credential_and_revocations",
        serde_json::to_vec(&both).expect("json"),
    );

    // link_handshake: <hello>\n<proof>\n<sdp>, the proof valid for the
    // fixed binding (common.rs) as the verifier sees it.
    let t = "link_handshake";
    for (name, with_credential) in [("handshake", false), ("handshake_credential", true)] {
        let nonce = Nonce::from_bytes([0x11; 32]);
        let hello = DcMsg::LinkHello {
            key: remote.public(),
            nonce,
            credential: with_credential.then(|| Box::new(credential.clone())),
        };
        let msg = binding_message(
            &common::REMOTE_FP,
            &common::LOCAL_FP,
            &nonce,
            &common::local_nonce(),
            &common::LOCAL_ID,
        );
        let proof = DcMsg::LinkProof {
            sig: remote.sign(Purpose::ChannelBinding, &msg),
        };
        let mut bytes = hello.encode();
        bytes.push(b'\n');
        bytes.extend(proof.encode());
        bytes.push(b'\n');
        bytes.extend(SDP.as_bytes());
        out.put(t, name, bytes);
    }
    out.put(t, "sdp_only", format!("\n\n{SDP}"));

    // thumbnail_params
    let t = "thumbnail_params";
    out.put(t, "width", r#"{"width":128}"#);
    out.put(
        t,
        "all",
        r#"{"width":"64","height":64,"fit":"cover","format":"webp","quality":80}"#,
    );
    out.put(
        t,
        "nulls",
        r#"{"height":10,"format":"JPG","fit":null,"quality":null}"#,
    );
    out.put(
        t,
        "fill_png",
        r#"{"width":4096,"height":1,"fit":"Fill","format":"png"}"#,
    );

    // ocr_params
    let t = "ocr_params";
    out.put(t, "empty", "{}");
    out.put(t, "langs_words", r#"{"lang":"eng+deu","words":true}"#);
    out.put(t, "string_bool", r#"{"lang":"chi_sim","words":"FALSE"}"#);
    out.put(t, "null_lang", r#"{"lang":null,"words":null}"#);

    // control_line (hand-written: the generator does not build jobmesh-peer)
    let t = "control_line";
    out.put(
        t,
        "submit",
        format!(
            "{}\n",
            json!({"op": "submit", "capability": "echo", "input": {"text": "hi"}, "events": true})
        ),
    );
    out.put(t, "submit_full", format!("{}\n", json!({"op": "submit", "capability": "thumbnail", "input": {"width": 64}, "options": {"timeout_ms": 60000, "priority": -2, "retries": 3, "strategy": "least-loaded", "affinity": "gpu", "retry_on_disconnect": false}, "events": false, "files": ["/tmp/in.png"], "out": "/tmp/out.png", "out_dir": "/tmp/out", "detach": true})));
    out.put(
        t,
        "session_submit",
        format!(
            "{}\n",
            json!({"id": 7, "op": "submit", "capability": "echo", "input": [1, 2, 3]})
        ),
    );
    out.put(
        t,
        "result",
        format!(
            "{}\n",
            json!({"op": "result", "job_id": JOB, "out_dir": "/tmp/r"})
        ),
    );
    out.put(
        t,
        "cancel",
        format!("{}\n", json!({"id": 8, "op": "cancel", "job_id": JOB})),
    );
    for op in ["jobs", "watch", "peers"] {
        out.put(t, op, format!("{}\n", json!({"op": op})));
    }
}

/// The seeds are what they claim: valid messages, proofs that verify.
#[test]
fn seeds_decode_and_verify() {
    let dir = std::env::temp_dir().join(format!("jobmesh-seeds-{}", std::process::id()));
    let read = |t: &str, n: &str| std::fs::read(dir.join(t).join(n)).expect("seed");
    write_all(&dir);
    for n in [
        "hello",
        "hello_credential",
        "stats",
        "relay_offer",
        "relay_candidate",
    ] {
        let msg = ClientMsg::decode(&read("signal_client_msg", n)).expect(n);
        if let ClientMsg::Hello(h) = msg {
            h.verify(common::CHALLENGE).expect("proof verifies");
            if let Some(c) = &h.credential {
                c.verify(common::POOL, &common::POOL_KEY, &h.key, common::NOW, None)
                    .expect("credential verifies");
            }
        }
    }
    for n in [
        "challenge",
        "welcome",
        "view_reset",
        "view_delta",
        "relayed_answer",
        "revocations",
        "error",
    ] {
        if let ServerMsg::Revocations { list } =
            ServerMsg::decode(&read("signal_server_msg", n)).expect(n)
        {
            list.verify(common::POOL, &common::POOL_KEY)
                .expect("list verifies");
        }
    }
    for entry in std::fs::read_dir(dir.join("dc_msg")).expect("dir") {
        let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
        DcMsg::decode(&bytes).expect("dc seed decodes");
    }
    for entry in std::fs::read_dir(dir.join("blob_frame")).expect("dir") {
        let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
        jobmesh_wire::blob::Frame::decode(&bytes).expect("frame seed decodes");
    }
    for n in ["token", "token_any_capability"] {
        Invitation::from_token(std::str::from_utf8(&read("invitation_token", n)).expect("utf8"))
            .expect(n);
    }
    let both = read("invitation_token", "credential_and_revocations");
    let cred: jobmesh_trust::Credential = serde_json::from_slice(&both).expect("credential");
    let list: Revocations = serde_json::from_slice(&both).expect("revocations");
    assert!(list.revokes(&cred));
    for n in ["handshake", "handshake_credential"] {
        let bytes = read("link_handshake", n);
        let mut parts = bytes.splitn(3, |b| *b == b'\n');
        let (DcMsg::LinkHello { key, nonce, .. }, DcMsg::LinkProof { sig }) = (
            DcMsg::decode(parts.next().expect("hello")).expect("hello"),
            DcMsg::decode(parts.next().expect("proof")).expect("proof"),
        ) else {
            panic!("hello then proof")
        };
        let msg = binding_message(
            &common::REMOTE_FP,
            &common::LOCAL_FP,
            &nonce,
            &common::local_nonce(),
            &common::LOCAL_ID,
        );
        key.verify(Purpose::ChannelBinding, &msg, &sig)
            .expect("proof verifies");
        let sdp = std::str::from_utf8(parts.next().expect("sdp")).expect("utf8");
        assert_eq!(
            jobmesh_wire::link::Fingerprint::from_sdp(sdp),
            Some(common::REMOTE_FP)
        );
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

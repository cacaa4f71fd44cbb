//! Every message round-trips; arbitrary bytes never panic the decoders.

use jobmesh_identity::{Identity, Nonce, Purpose};
use jobmesh_trust::{Credential, Invitation, Role};
use jobmesh_wire::blob::{BlobMeta, Direction};
use jobmesh_wire::dc::{DcMsg, Outcome, Progress, Receipt, RejectReason, MAX_RECEIPTS};
use jobmesh_wire::signal::{ClientMsg, ErrorCode, Handshake, IceServer, Join, ServerMsg};
use jobmesh_wire::{Capability, DecodeError, PeerId, PeerInfo, Stats, PROTOCOL_VERSION};
use proptest::prelude::*;
use uuid::Uuid;

fn peer_id() -> impl Strategy<Value = PeerId> {
    any::<u128>().prop_map(|n| PeerId(Uuid::from_u128(n)))
}
fn cap() -> impl Strategy<Value = Capability> {
    "[a-z0-9_.-]{1,20}".prop_map(|s| Capability::new(&s).expect("valid by construction"))
}
/// A credential of a member with key seed `seed` in pool `pool`, or none.
fn credential(seed: [u8; 32], pool: &str, with: bool) -> Option<Credential> {
    with.then(|| {
        Invitation::mint(
            &Identity::from_seed(&[7; 32]),
            pool,
            vec![Role::Worker, Role::Submitter],
            vec!["ocr".into()],
            1_900_000_000,
        )
        .expect("valid")
        .redeem(&Identity::from_seed(&seed).public())
    })
}
fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_.-]{1,30}"
}
fn stats() -> impl Strategy<Value = Stats> {
    (
        0u32..64,
        0u32..64,
        0u32..1000,
        any::<u32>(),
        any::<u32>(),
        prop::collection::btree_map(cap(), any::<u32>(), 0..4),
    )
        .prop_map(|(slots, running, queued, c, f, means)| Stats {
            slots,
            running: running.min(slots),
            queued,
            completed: c.into(),
            failed: f.into(),
            seq: u64::from(c) ^ 7,
            finished: means
                .iter()
                .map(|(k, v)| (k.clone(), [u64::from(*v), u64::from(*v / 3)]))
                .collect(),
            mean_run_ms: means.into_iter().map(|(k, v)| (k, v.into())).collect(),
            draining: f % 2 == 1,
        })
}
fn peer_info() -> impl Strategy<Value = PeerInfo> {
    (
        peer_id(),
        name(),
        prop::collection::vec(cap(), 0..5),
        stats(),
    )
        .prop_map(|(id, name, capabilities, stats)| PeerInfo {
            id,
            name,
            capabilities,
            stats,
        })
}
fn handshake() -> impl Strategy<Value = Handshake> {
    prop_oneof![
        (".{0,200}", any::<u64>()).prop_map(|(sdp, dial)| Handshake::Offer { sdp, dial }),
        (".{0,200}", any::<u64>()).prop_map(|(sdp, dial)| Handshake::Answer { sdp, dial }),
        (
            ".{0,100}",
            prop::option::of("[0-9]{1,2}"),
            prop::option::of(any::<u16>())
        )
            .prop_map(
                |(candidate, sdp_mid, sdp_mline_index)| Handshake::Candidate {
                    candidate,
                    sdp_mid,
                    sdp_mline_index
                }
            ),
    ]
}
fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        ".{0,20}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn client_msg() -> impl Strategy<Value = ClientMsg> {
    prop_oneof![
        (
            any::<[u8; 32]>(),
            "[A-Za-z0-9_-]{1,64}",
            name(),
            name(),
            prop::collection::vec(cap(), 0..8),
            0u32..100,
            any::<bool>()
        )
            .prop_map(|(seed, nonce, name, pool, capabilities, slots, member)| {
                let join = Join {
                    credential: credential(seed, &pool, member),
                    view: None,
                    name,
                    pool,
                    capabilities,
                    slots,
                };
                ClientMsg::Hello(join.hello(&Identity::from_seed(&seed), &nonce))
            }),
        stats().prop_map(|stats| ClientMsg::Stats { stats }),
        (peer_id(), handshake()).prop_map(|(to, signal)| ClientMsg::Relay { to, signal }),
    ]
}

fn server_msg() -> impl Strategy<Value = ServerMsg> {
    let code = prop_oneof![
        Just(ErrorCode::BadMessage),
        Just(ErrorCode::WrongVersion),
        Just(ErrorCode::HelloTimeout),
        Just(ErrorCode::PoolFull),
        Just(ErrorCode::UnknownPeer),
        Just(ErrorCode::PeerBusy),
        Just(ErrorCode::GoingAway),
        Just(ErrorCode::BadProof),
        Just(ErrorCode::NotAdmitted),
    ];
    prop_oneof![
        "[A-Za-z0-9_-]{1,64}".prop_map(|nonce| ServerMsg::Challenge { nonce }),
        (name(), any::<u32>(), any::<bool>()).prop_map(|(pool, hb, turn)| ServerMsg::Welcome {
            pool,
            heartbeat_ms: hb.into(),
            ice_servers: if turn {
                vec![IceServer {
                    urls: vec![
                        "turn:203.0.113.7:3478?transport=udp".into(),
                        "turn:203.0.113.7:3478?transport=tcp".into(),
                    ],
                    username: Some("1800000000:06bfb095-729e-8add-a58b-be266e75c5c7".into()),
                    credential: Some("k7Zx3m0i0ZZbJ4Kq2gU4fO7Yb9Q=".into()),
                }]
            } else {
                Vec::new()
            },
        }),
        (
            any::<bool>(),
            prop::collection::vec(peer_id(), 0..3),
            prop::collection::vec(peer_info(), 0..5),
            any::<bool>()
        )
            .prop_map(|(reset, left, peers, synced)| ServerMsg::View {
                reset,
                left,
                peers,
                synced
            }),
        (peer_id(), handshake()).prop_map(|(from, signal)| ServerMsg::Relayed { from, signal }),
        (code, ".{0,50}").prop_map(|(code, message)| ServerMsg::Error { code, message }),
    ]
}

/// Texts a peer shows to people: decoding replaces their control characters
/// (see `texts_lose_their_control_characters`), so round trips use none.
const PRINTABLE_40: &str = "[^\\x00-\\x1f\\x7f-\\x9f]{0,40}";
const PRINTABLE_20: &str = "[^\\x00-\\x1f\\x7f-\\x9f]{0,20}";

fn dc_msg() -> impl Strategy<Value = DcMsg> {
    let id = any::<u128>().prop_map(Uuid::from_u128);
    let reason = prop_oneof![
        Just(RejectReason::Busy),
        Just(RejectReason::UnknownCapability),
        Just(RejectReason::BadInput),
        Just(RejectReason::Draining),
        Just(RejectReason::Forbidden),
    ];
    let outcome = prop_oneof![
        json().prop_map(|value| Outcome::Ok { value }),
        (PRINTABLE_40, any::<bool>())
            .prop_map(|(message, retryable)| Outcome::Err { message, retryable }),
    ];
    let attempt = 1u32..1000;
    let progress = (
        prop::option::of(0u8..=100),
        prop::option::of(PRINTABLE_20),
        prop::option::of(PRINTABLE_20),
    )
        .prop_map(|(percent, stage, message)| Progress {
            percent,
            stage,
            message,
        });
    prop_oneof![
        (id.clone(), attempt.clone(), cap(), json(), 1u64..1_000_000).prop_map(
            |(job_id, attempt, capability, input, timeout_ms)| DcMsg::Submit {
                job_id,
                attempt,
                capability,
                input,
                timeout_ms
            }
        ),
        (id.clone(), attempt.clone())
            .prop_map(|(job_id, attempt)| DcMsg::Cancel { job_id, attempt }),
        (id.clone(), attempt.clone())
            .prop_map(|(job_id, attempt)| DcMsg::Accepted { job_id, attempt }),
        (id.clone(), attempt.clone(), reason, PRINTABLE_40).prop_map(
            |(job_id, attempt, reason, message)| DcMsg::Rejected {
                job_id,
                attempt,
                reason,
                message
            }
        ),
        (id.clone(), attempt.clone(), progress).prop_map(|(job_id, attempt, progress)| {
            DcMsg::Progress {
                job_id,
                attempt,
                progress,
            }
        }),
        (
            id.clone(),
            attempt,
            outcome,
            prop::option::of((any::<u32>(), any::<u32>(), any::<u64>()))
        )
            .prop_map(|(job_id, attempt, outcome, load)| DcMsg::Result {
                load: load.map(|(running, slots, seq)| jobmesh_wire::dc::Load {
                    running,
                    slots,
                    seq
                }),
                job_id,
                attempt,
                outcome
            }),
        (
            id.clone(),
            1u32..100,
            any::<bool>(),
            prop::collection::vec(
                (
                    0u64..=jobmesh_wire::blob::MAX_BLOB_SIZE,
                    "[0-9a-f]{64}",
                    prop::option::of("[a-z]{1,10}\\.bin")
                ),
                0..4
            )
        )
            .prop_map(|(job_id, attempt, output, blobs)| DcMsg::Blobs {
                job_id,
                attempt,
                direction: if output {
                    Direction::Output
                } else {
                    Direction::Input
                },
                blobs: blobs
                    .into_iter()
                    .enumerate()
                    .map(|(i, (size, blake3, name))| BlobMeta {
                        index: i as u16,
                        size,
                        blake3,
                        name
                    })
                    .collect(),
            }),
        (prop::option::of(id.clone()), PRINTABLE_40)
            .prop_map(|(job_id, message)| DcMsg::Error { job_id, message }),
        prop::collection::vec((id.clone(), 1..u32::MAX), 0..8).prop_map(|r| DcMsg::Received {
            receipts: r
                .into_iter()
                .map(|(job_id, attempt)| Receipt { job_id, attempt })
                .collect(),
        }),
        (id, 1..u32::MAX).prop_map(|(job_id, attempt)| DcMsg::Held { job_id, attempt }),
        (any::<[u8; 32]>(), any::<[u8; 32]>(), any::<bool>()).prop_map(|(seed, nonce, member)| {
            DcMsg::LinkHello {
                key: Identity::from_seed(&seed).public(),
                nonce: Nonce::from_bytes(nonce),
                credential: credential(seed, "pool", member).map(Box::new),
            }
        }),
        (any::<[u8; 32]>(), prop::collection::vec(any::<u8>(), 0..64)).prop_map(|(seed, msg)| {
            DcMsg::LinkProof {
                sig: Identity::from_seed(&seed).sign(Purpose::ChannelBinding, &msg),
            }
        }),
        prop::option::of("[0-9a-f]{32}").prop_map(|token| DcMsg::Handover { token }),
        (
            any::<u128>(),
            1u32..1000,
            any::<bool>(),
            prop::collection::vec("[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}", 1..=16)
        )
            .prop_map(|(id, attempt, input, files)| DcMsg::BlobFiles {
                job_id: Uuid::from_u128(id),
                attempt,
                direction: if input {
                    Direction::Input
                } else {
                    Direction::Output
                },
                files,
            }),
    ]
}

proptest! {
    #[test]
    fn client_messages_round_trip(msg in client_msg()) {
        let text = jobmesh_wire::signal::encode(&msg);
        prop_assert_eq!(ClientMsg::decode(text.as_bytes()), Ok(msg));
    }

    #[test]
    fn server_messages_round_trip(msg in server_msg()) {
        let text = jobmesh_wire::signal::encode(&msg);
        prop_assert_eq!(ServerMsg::decode(text.as_bytes()), Ok(msg));
    }

    #[test]
    fn data_channel_messages_round_trip(msg in dc_msg()) {
        let bytes = msg.encode();
        let json: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
        prop_assert_eq!(json["type"].as_str(), Some(msg.type_name()));
        prop_assert_eq!(DcMsg::decode(&bytes), Ok(msg));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = ClientMsg::decode(&bytes);
        let _ = ServerMsg::decode(&bytes);
        let _ = DcMsg::decode(&bytes);
        let _ = DcMsg::peek_job_id(&bytes);
    }

    #[test]
    fn arbitrary_json_objects_never_panic(v in json(), ty in prop_oneof![
        Just("hello"), Just("stats"), Just("relay"), Just("submit"), Just("result"), Just("welcome")
    ]) {
        let mut obj = serde_json::json!({"type": ty});
        if let serde_json::Value::Object(m) = v {
            obj.as_object_mut().expect("object").extend(m);
        }
        let bytes = serde_json::to_vec(&obj).expect("encodes");
        let _ = ClientMsg::decode(&bytes);
        let _ = ServerMsg::decode(&bytes);
        let _ = DcMsg::decode(&bytes);
    }
}

#[test]
fn errors_name_the_problem() {
    assert!(matches!(
        ClientMsg::decode(b"{nope"),
        Err(DecodeError::BadJson(_))
    ));
    assert_eq!(
        ClientMsg::decode(br#"{"type":"teleport"}"#),
        Err(DecodeError::UnknownType("teleport".into()))
    );
    assert_eq!(
        ClientMsg::decode(br#"[1,2]"#),
        Err(DecodeError::MissingType)
    );
    let big = vec![b' '; jobmesh_wire::signal::MAX_SIGNAL_MESSAGE + 1];
    assert!(matches!(
        ClientMsg::decode(&big),
        Err(DecodeError::TooLarge { .. })
    ));
    let hello = serde_json::json!({
        "type": "hello", "version": 99, "peer_id": Uuid::new_v4(), "name": "a",
        "pool": "p", "capabilities": [], "slots": 1
    });
    let err = ClientMsg::decode(hello.to_string().as_bytes()).expect_err("wrong version");
    assert_eq!(
        err,
        DecodeError::WrongVersion {
            got: 99,
            want: PROTOCOL_VERSION
        }
    );
    assert!(err.to_string().contains("99"));
    let join = Join {
        name: "a".into(),
        pool: "p".into(),
        capabilities: Vec::new(),
        slots: 1,
        credential: None,
        view: None,
    };
    let mut bad_cap =
        serde_json::to_value(ClientMsg::Hello(join.hello(&Identity::generate(), "nonce")))
            .expect("json");
    bad_cap["capabilities"] = serde_json::json!(["Not Valid"]);
    let err = ClientMsg::decode(bad_cap.to_string().as_bytes()).expect_err("bad capability");
    assert!(err.to_string().contains("capability"), "{err}");
    let zero_timeout = serde_json::json!({
        "type": "submit", "job_id": Uuid::new_v4(), "attempt": 1, "capability": "echo", "input": null, "timeout_ms": 0
    });
    assert!(matches!(
        DcMsg::decode(zero_timeout.to_string().as_bytes()),
        Err(DecodeError::Invalid {
            field: "timeout_ms",
            ..
        })
    ));
}

#[test]
fn handed_over_files_must_be_plain_names_and_tokens_hex() {
    let files = |names: serde_json::Value| {
        let msg = serde_json::json!({"type": "blob_files", "job_id": Uuid::new_v4(),
            "attempt": 1, "direction": "input", "files": names});
        DcMsg::decode(msg.to_string().as_bytes())
    };
    assert!(files(serde_json::json!(["a.1-b_c"])).is_ok());
    for bad in [
        serde_json::json!([]),
        serde_json::json!(["../etc/passwd"]),
        serde_json::json!(["/etc/passwd"]),
        serde_json::json!([".."]),
        serde_json::json!([".hidden"]),
        serde_json::json!(["a b"]),
        serde_json::json!(["x".repeat(129)]),
        serde_json::json!(vec!["f"; 17]),
    ] {
        assert!(
            matches!(
                files(bad.clone()),
                Err(DecodeError::Invalid { field: "files", .. })
            ),
            "{bad}"
        );
    }
    let token = |t: &str| {
        let msg = serde_json::json!({"type": "handover", "token": t});
        DcMsg::decode(msg.to_string().as_bytes())
    };
    assert!(token(&"a".repeat(32)).is_ok());
    for bad in ["A".repeat(32), "a".repeat(31), "g".repeat(32)] {
        assert!(
            matches!(
                token(&bad),
                Err(DecodeError::Invalid { field: "token", .. })
            ),
            "{bad}"
        );
    }
}

#[test]
fn too_many_receipts_are_refused() {
    let receipt = serde_json::json!({"job_id": Uuid::new_v4(), "attempt": 1});
    let msg =
        |n: usize| serde_json::json!({"type": "received", "receipts": vec![receipt.clone(); n]});
    assert!(DcMsg::decode(msg(MAX_RECEIPTS).to_string().as_bytes()).is_ok());
    assert!(matches!(
        DcMsg::decode(msg(MAX_RECEIPTS + 1).to_string().as_bytes()),
        Err(DecodeError::Invalid {
            field: "receipts",
            ..
        })
    ));
}

#[test]
fn progress_out_of_range_is_refused() {
    let p = serde_json::json!({
        "type": "progress", "job_id": Uuid::new_v4(), "attempt": 1, "progress": {"percent": 101}
    });
    assert!(matches!(
        DcMsg::decode(p.to_string().as_bytes()),
        Err(DecodeError::Invalid {
            field: "percent",
            ..
        })
    ));
}

#[test]
fn peek_finds_the_job_id_of_a_broken_message() {
    let id = Uuid::new_v4();
    let msg = serde_json::json!({"type": "submit", "job_id": id, "capability": 7});
    assert_eq!(DcMsg::peek_job_id(msg.to_string().as_bytes()), Some(id));
}

/// A full view page whose last member is as large as a hello may make it is
/// accepted; a frame over the server limit is not.
#[test]
fn the_largest_view_page_is_accepted_and_an_oversized_frame_is_not() {
    use jobmesh_wire::signal::{encode, MAX_SERVER_MESSAGE, VIEW_PAGE_BYTES};
    let member = |i: u32, name: String| PeerInfo {
        id: PeerId(Uuid::from_u128(u128::from(i))),
        name,
        capabilities: vec![Capability::new("thumbnail").expect("valid")],
        stats: Stats {
            slots: 4,
            ..Stats::default()
        },
    };
    let mut peers: Vec<PeerInfo> = (0..120)
        .map(|i| member(i, format!("worker-{i:05}")))
        .collect();
    // A member as large as any hello can describe (its name fills the limit).
    peers.push(member(999, "n".repeat(jobmesh_wire::MAX_NAME_LEN)));
    let page = ServerMsg::View {
        reset: true,
        left: vec![],
        peers,
        synced: false,
    };
    let bytes = encode(&page);
    assert!(bytes.len() > VIEW_PAGE_BYTES, "{}", bytes.len());
    assert!(bytes.len() < MAX_SERVER_MESSAGE, "{}", bytes.len());
    assert_eq!(ServerMsg::decode(bytes.as_bytes()), Ok(page));
    let huge = format!(
        "{{\"type\":\"error\",\"code\":\"internal\",\"message\":\"{}\"}}",
        "x".repeat(MAX_SERVER_MESSAGE)
    );
    assert!(ServerMsg::decode(huge.as_bytes()).is_err());
}

#[test]
fn texts_lose_their_control_characters() {
    let bytes = serde_json::json!({
        "type": "error",
        "job_id": null,
        "message": "bad\u{1b}[2Jthing\nsecond line\tend\u{7}",
    })
    .to_string();
    let Ok(DcMsg::Error { message, .. }) = DcMsg::decode(bytes.as_bytes()) else {
        panic!("an error message");
    };
    assert_eq!(message, "bad\u{fffd}[2Jthing\nsecond line\tend\u{fffd}");
}

/// Fixed vectors, shared with the JavaScript client's tests
/// (clients/js/test/identity.test.js): the identity of seed [7; 32], its
/// peer id, and its hello's proof for nonce "bm9uY2U" in pool "lab".
#[test]
fn vectors_for_other_implementations() {
    let id = jobmesh_identity::Identity::from_seed(&[7; 32]);
    let hello = jobmesh_wire::signal::Join {
        name: "tab".into(),
        pool: "lab".into(),
        capabilities: Vec::new(),
        slots: 0,
        credential: None,
        view: None,
    }
    .hello(&id, "bm9uY2U");
    assert_eq!(
        hello.key.to_string(),
        "6kpsY-KcUgq-9VB7Ey7F-ZVHdq6-vnuSQh7qaRRG0iw"
    );
    assert_eq!(
        hello.peer_id.to_string(),
        "06bfb095-729e-8add-a58b-be266e75c5c7"
    );
    // Ed25519 signatures are deterministic (RFC 8032).
    assert_eq!(
        hello.proof.to_string(),
        "ZPXYUR1BTkqnpSgEV3JdCqYDDs7JyQaguBKUBbaI07zEuB3GPJh-MKwc2C5aefbcM--pvBI4egPH7F-UH8sKAw"
    );
}

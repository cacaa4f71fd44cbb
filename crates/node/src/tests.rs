use std::time::{Duration, Instant};

use jobmesh_core::{AttemptOutcome, DispatcherConfig, EventKind, JobOptions, JobSpec};
use jobmesh_identity::Nonce;
use jobmesh_trust::{Invitation, Revocations, Role};
use jobmesh_wire::dc::{DcMsg, Outcome};
use jobmesh_wire::link::Fingerprint;
use jobmesh_wire::signal::{Handshake, ServerMsg};
use jobmesh_wire::{Capability, PeerId, PeerInfo, Stats};
use serde_json::{json, Value};
use uuid::Uuid;

use super::*;

fn identity(n: u128) -> Identity {
    Identity::from_seed(&[u8::try_from(n).expect("small"); 32])
}

fn peer(n: u128) -> PeerId {
    identity(n).peer_id()
}

/// A peer whose id sorts below (`true`) or above 2's: dial collisions are
/// settled by id order.
fn beside_2(below: bool) -> u128 {
    (3..100)
        .find(|&n| (peer(n) < peer(2)) == below)
        .expect("ids spread both ways")
}

/// Both ends' view of one connection.
fn connection() -> (Binding, Binding) {
    let (a, b) = (Fingerprint([0xa; 32]), Fingerprint([0xb; 32]));
    (
        Binding {
            local: a,
            remote: b,
            nonce: Nonce::from_bytes([1; 32]),
        },
        Binding {
            local: b,
            remote: a,
            nonce: Nonce::from_bytes([2; 32]),
        },
    )
}

/// The link `n` answered an offer with (the offer just given).
fn answered(n: &mut Node) -> LinkId {
    drain(n)
        .into_iter()
        .find_map(|o| match o {
            NodeOutput::Answer { link, .. } => Some(link),
            _ => None,
        })
        .expect("answered")
}

fn opened(remote: u128, link: LinkId, binding: Binding) -> NodeInput<'static> {
    NodeInput::LinkOpened {
        peer: peer(remote),
        link,
        binding,
    }
}

fn from(remote: u128, link: LinkId, msg: DcMsg) -> NodeInput<'static> {
    NodeInput::Message {
        from: peer(remote),
        link,
        msg,
    }
}

/// `remote`'s hello on its end (`theirs`) of the connection.
fn hello_of(remote: u128, theirs: &Binding) -> DcMsg {
    member_hello(remote, theirs, None)
}

/// `remote`'s hello showing `credential`.
fn member_hello(remote: u128, theirs: &Binding, credential: Option<Credential>) -> DcMsg {
    DcMsg::LinkHello {
        key: identity(remote).public(),
        nonce: theirs.nonce,
        credential: credential.map(Box::new),
    }
}

/// `remote`'s proof for node `n` on its end (`theirs`), after `n`'s hello
/// with nonce `mine`.
fn proof_of(remote: u128, theirs: &Binding, n: &Node, mine: &Binding) -> DcMsg {
    let seen = RemoteHello {
        key: n.identity.public(),
        nonce: mine.nonce,
        credential: None,
    };
    DcMsg::LinkProof {
        sig: binding::prove(&identity(remote), theirs, &seen, n.id()),
    }
}

/// Opens `link` of `n` to `remote` as an honest remote would: the channel
/// opens, then both halves of the handshake pass.
fn open(n: &mut Node, now: Instant, remote: u128, link: LinkId) {
    let (mine, theirs) = connection();
    n.handle_input(now, opened(remote, link, mine))
        .expect("open");
    n.handle_input(now, from(remote, link, hello_of(remote, &theirs)))
        .expect("hello");
    let proof = proof_of(remote, &theirs, n, &mine);
    n.handle_input(now, from(remote, link, proof))
        .expect("proof");
}

fn echo() -> Capability {
    Capability::new("echo").expect("valid")
}

fn node(n: u128, capabilities: Vec<Capability>) -> Node {
    node_in(n, capabilities, None)
}

/// A node of a closed pool, holding `credential`.
fn node_in(n: u128, capabilities: Vec<Capability>, credential: Option<Credential>) -> Node {
    Node::new(NodeConfig {
        identity: identity(n),
        name: format!("n{n}"),
        capabilities,
        slots: 2,
        progress_interval: Duration::from_millis(100),
        stats_interval: Duration::from_millis(250),
        dispatcher: DispatcherConfig::default(),
        strategy: None,
        max_blob_size: 1 << 20,
        spool: SpoolLimits::from_total(4 << 20),
        journaled: false,
        seed: 7,
        input_check: Box::new(|_, _| Ok(())),
        credential,
        allow: HashMap::new(),
        clock: UnixClock {
            at: Instant::now(),
            unix: NOW_UNIX,
        },
        handover: None,
    })
}

const NOW_UNIX: u64 = 1_800_000_000;

/// The owner of pool `lab`.
fn owner() -> Identity {
    Identity::from_seed(&[200; 32])
}

/// A credential in `lab` for peer `n` with `roles`.
fn member(n: u128, roles: &[Role]) -> Credential {
    Invitation::mint(&owner(), "lab", roles.to_vec(), Vec::new(), NOW_UNIX + 3600)
        .expect("valid")
        .redeem(&identity(n).public())
}

fn spec(n: u128) -> JobSpec {
    JobSpec {
        job_id: Uuid::from_u128(1000 + n),
        capability: echo(),
        input: json!({ "n": n }),
        options: JobOptions::default(),
    }
}

fn submit(spec: JobSpec) -> NodeInput<'static> {
    NodeInput::Submit {
        spec,
        blobs: Vec::new(),
    }
}

/// A pool view with these workers in it.
fn view(workers: &[u128]) -> ServerMsg {
    ServerMsg::View {
        reset: true,
        left: Vec::new(),
        peers: workers
            .iter()
            .map(|&n| PeerInfo {
                id: peer(n),
                name: format!("n{n}"),
                capabilities: vec![echo()],
                stats: Stats {
                    slots: 2,
                    ..Stats::default()
                },
            })
            .collect(),
        synced: true,
    }
}

fn drain(node: &mut Node) -> Vec<NodeOutput> {
    std::iter::from_fn(|| node.poll_output()).collect()
}

#[test]
fn a_self_dispatched_job_never_touches_a_link() {
    let now = Instant::now();
    let mut n = node(1, vec![echo()]);
    n.handle_input(now, NodeInput::Signal(&view(&[])))
        .expect("view");
    n.handle_input(now, submit(spec(1))).expect("submitted");
    let out = drain(&mut n);
    let job_id = spec(1).job_id;
    assert!(out
        .iter()
        .any(|o| matches!(o, NodeOutput::StartHandler { job_id: j, .. } if *j == job_id)));
    n.handle_input(
        now,
        NodeInput::HandlerDone {
            job_id,
            result: Ok(json!("done")),
            outputs: Vec::new(),
        },
    )
    .expect("done");
    let out = drain(&mut n);
    let end = out.iter().find_map(|o| match o {
        NodeOutput::Finished(end) => Some(end),
        _ => None,
    });
    let end = end.expect("the job finished");
    assert_eq!(end.result, Ok(json!("done")));
    assert_eq!(end.worker, Some(peer(1)));
    assert!(!out
        .iter()
        .any(|o| matches!(o, NodeOutput::Dial { .. } | NodeOutput::Send { .. })));
}

/// Submits a job from `n` to the only worker, 2, and returns the dial.
fn dial_to_2(n: &mut Node, now: Instant) -> (LinkId, u64) {
    n.handle_input(now, NodeInput::Signal(&view(&[2])))
        .expect("view");
    n.handle_input(now, submit(spec(1))).expect("submitted");
    drain(n)
        .into_iter()
        .find_map(|o| match o {
            NodeOutput::Dial { peer: p, link, tag } if p == peer(2) => Some((link, tag)),
            _ => None,
        })
        .expect("a dial to the worker")
}

#[test]
fn dial_tags_stay_below_2_to_the_53_for_peers_whose_json_numbers_are_doubles() {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(53);
    for _ in 0..10_000 {
        let tag = crate::dial_tag(&mut rng);
        assert!(
            (1..=jobmesh_wire::signal::MAX_DIAL_TAG).contains(&tag),
            "{tag}"
        );
    }
    // The mask keeps the draw's low bits: tags still spread over the range.
    let high = (0..1000)
        .filter(|_| crate::dial_tag(&mut rng) > jobmesh_wire::signal::MAX_DIAL_TAG / 2)
        .count();
    assert!(
        (400..600).contains(&high),
        "{high} of 1000 in the upper half"
    );
}

fn offer(from: u128, tag: u64) -> ServerMsg {
    ServerMsg::Relayed {
        from: peer(from),
        signal: Handshake::Offer {
            sdp: "sdp".into(),
            dial: tag,
        },
    }
}

fn answer(from: u128, tag: u64) -> ServerMsg {
    ServerMsg::Relayed {
        from: peer(from),
        signal: Handshake::Answer {
            sdp: "sdp".into(),
            dial: tag,
        },
    }
}

#[test]
fn on_a_dial_collision_the_lower_id_keeps_its_offer() {
    let now = Instant::now();
    let mut low = node(beside_2(true), Vec::new());
    let (link, _) = dial_to_2(&mut low, now);
    low.handle_input(now, NodeInput::Signal(&offer(2, 99)))
        .expect("offer");
    assert_eq!(drain(&mut low), Vec::new(), "its own dial stands");
    assert!(low.is_current_link(&peer(2), link));
}

#[test]
fn a_dial_unanswered_when_the_signal_server_returns_is_made_again_with_its_messages() {
    let now = Instant::now();
    let mut n = node(1, Vec::new());
    let (old, old_tag) = dial_to_2(&mut n, now);
    n.handle_input(now, NodeInput::SignalDisconnected)
        .expect("input");
    n.handle_input(now, NodeInput::SignalConnected)
        .expect("input");
    let outs = drain(&mut n);
    let (new, tag) = outs
        .iter()
        .find_map(|o| match o {
            NodeOutput::Dial { peer: p, link, tag } if *p == peer(2) => Some((*link, *tag)),
            _ => None,
        })
        .expect("dialled again");
    assert!(outs.contains(&NodeOutput::CloseLink {
        peer: peer(2),
        link: old
    }));
    assert_ne!(new, old);
    assert_ne!(tag, old_tag);
    // The answer to the new dial opens the link, and the submit goes out on it.
    n.handle_input(now, NodeInput::Signal(&answer(2, tag)))
        .expect("answer");
    open(&mut n, now, 2, new);
    let sent = drain(&mut n);
    assert!(
        sent.iter().any(|o| matches!(o, NodeOutput::Send { link, msg: DcMsg::Submit { .. }, .. } if *link == new)),
        "{sent:?}"
    );
}

#[test]
fn an_attempt_given_up_while_its_link_opened_is_never_sent() {
    let now = Instant::now();
    let mut n = node(1, Vec::new());
    let (link, tag) = dial_to_2(&mut n, now);
    // The dial hangs past the lease: attempt 1 is given up (and retried).
    let mut t = now + Duration::from_secs(6);
    for _ in 0..10 {
        n.handle_input(t, NodeInput::Timeout).expect("timeout");
        match n.poll_timeout() {
            Some(next) if next <= now + Duration::from_secs(30) => t = next.max(t),
            _ => break,
        }
    }
    drain(&mut n);
    n.handle_input(t, NodeInput::Signal(&answer(2, tag)))
        .expect("answer");
    open(&mut n, t, 2, link);
    let sent: Vec<DcMsg> = drain(&mut n)
        .into_iter()
        .filter_map(|o| match o {
            NodeOutput::Send { msg, .. } => Some(msg),
            _ => None,
        })
        .collect();
    assert!(
        !sent.iter().any(|m| matches!(
            m,
            DcMsg::Submit { attempt: 1, .. } | DcMsg::Cancel { attempt: 1, .. }
        )),
        "nothing of the given-up attempt goes out: {sent:?}"
    );
}

#[test]
fn on_a_dial_collision_the_higher_id_answers_and_releases_its_dial() {
    let now = Instant::now();
    let mut high = node(beside_2(false), Vec::new());
    let (link, _) = dial_to_2(&mut high, now);
    high.handle_input(now, NodeInput::Signal(&offer(2, 99)))
        .expect("offer");
    let out = drain(&mut high);
    assert_eq!(
        out[0],
        NodeOutput::CloseLink {
            peer: peer(2),
            link
        }
    );
    let NodeOutput::Answer {
        link: answering,
        tag,
        ..
    } = out[1]
    else {
        panic!("expected an answer, got {out:?}");
    };
    assert_eq!(tag, 99);
    // The submit queued on the abandoned dial goes out on the answered link.
    open(&mut high, now, 2, answering);
    let out = drain(&mut high);
    assert!(out.iter().any(|o| matches!(o,
        NodeOutput::Send { link: l, msg: DcMsg::Submit { .. }, .. } if *l == answering)));
    // The abandoned dial opening late is released, not used.
    high.handle_input(now, opened(2, link, connection().0))
        .expect("late open");
    assert_eq!(
        drain(&mut high),
        vec![NodeOutput::CloseLink {
            peer: peer(2),
            link
        }]
    );
}

#[test]
fn an_answer_is_delivered_only_to_the_dial_it_answers() {
    let now = Instant::now();
    let mut n = node(1, Vec::new());
    let (link, tag) = dial_to_2(&mut n, now);
    n.handle_input(now, NodeInput::Signal(&answer(2, tag + 1)))
        .expect("stale");
    assert_eq!(drain(&mut n), Vec::new());
    n.handle_input(now, NodeInput::Signal(&answer(2, tag)))
        .expect("answer");
    assert_eq!(
        drain(&mut n),
        vec![NodeOutput::DeliverAnswer {
            link,
            sdp: "sdp".into()
        }]
    );
}

#[test]
fn messages_of_a_replaced_link_are_ignored_and_a_closed_link_loses_its_attempts() {
    let now = Instant::now();
    let mut n = node(1, Vec::new());
    let (link, _) = dial_to_2(&mut n, now);
    open(&mut n, now, 2, link);
    drain(&mut n);
    let job_id = spec(1).job_id;
    let result = |attempt| DcMsg::Result {
        job_id,
        attempt,
        outcome: Outcome::Ok { value: Value::Null },
        load: None,
    };
    // On a link id that is not the current one: nothing happens.
    n.handle_input(
        now,
        NodeInput::Message {
            from: peer(2),
            link: link + 1,
            msg: result(1),
        },
    )
    .expect("stale");
    assert!(!drain(&mut n)
        .iter()
        .any(|o| matches!(o, NodeOutput::Finished(_))));
    // The link closes: the attempt is lost, and the link released.
    n.handle_input(
        now,
        NodeInput::LinkClosed {
            peer: peer(2),
            link,
        },
    )
    .expect("closed");
    let out = drain(&mut n);
    assert!(out.contains(&NodeOutput::CloseLink {
        peer: peer(2),
        link
    }));
    assert!(n.open_link(&peer(2)).is_none());
}

#[test]
fn a_result_too_large_for_one_message_is_recognised_without_encoding_it() {
    assert!(!too_big(&json!({"words": 5})));
    assert!(too_big(&Value::String("x".repeat(MAX_DC_MESSAGE))));
    // Just under the limit, counting the widest envelope, still fits.
    let fits = Value::String("x".repeat(MAX_DC_MESSAGE - 300));
    let msg = DcMsg::Result {
        job_id: JobId::max(),
        attempt: u32::MAX,
        outcome: Outcome::Ok {
            value: fits.clone(),
        },
        load: None,
    };
    assert!(msg.encode().len() <= MAX_DC_MESSAGE);
    assert!(!too_big(&fits));
}

fn sent(out: &[NodeOutput]) -> Vec<&DcMsg> {
    out.iter()
        .filter_map(|o| match o {
            NodeOutput::Send { msg, .. } => Some(msg),
            _ => None,
        })
        .collect()
}

fn finished(out: &[NodeOutput]) -> Option<&JobEnd> {
    out.iter().find_map(|o| match o {
        NodeOutput::Finished(end) => Some(end),
        _ => None,
    })
}

#[test]
fn no_job_message_crosses_a_link_before_both_proofs_pass() {
    let now = Instant::now();
    let mut n = node(1, Vec::new());
    let (link, _) = dial_to_2(&mut n, now);
    let (mine, theirs) = connection();
    n.handle_input(now, opened(2, link, mine)).expect("open");
    let out = drain(&mut n);
    assert_eq!(
        sent(&out),
        vec![&DcMsg::LinkHello {
            key: identity(1).public(),
            nonce: mine.nonce,
            credential: None,
        }],
        "only the hello goes out while the link is unproven"
    );
    assert!(n.open_link(&peer(2)).is_none());
    n.handle_input(now, from(2, link, hello_of(2, &theirs)))
        .expect("hello");
    let out = drain(&mut n);
    let [DcMsg::LinkProof { sig }] = sent(&out)[..] else {
        panic!("expected our proof alone, got {out:?}");
    };
    // Our proof is what the remote checks on its end.
    let seen = RemoteHello {
        key: identity(1).public(),
        nonce: mine.nonce,
        credential: None,
    };
    assert_eq!(binding::check_proof(peer(2), &theirs, &seen, sig), Ok(()));
    let proof = proof_of(2, &theirs, &n, &mine);
    n.handle_input(now, from(2, link, proof)).expect("proof");
    let out = drain(&mut n);
    assert!(matches!(sent(&out)[..], [DcMsg::Submit { .. }]), "{out:?}");
    assert_eq!(n.open_link(&peer(2)), Some(link));
    assert_eq!(n.counters().links_refused, 0);
}

#[test]
fn a_hello_that_comes_before_the_channel_is_reported_open_is_kept() {
    let now = Instant::now();
    let mut n = node(1, Vec::new());
    let (link, tag) = dial_to_2(&mut n, now);
    n.handle_input(now, NodeInput::Signal(&answer(2, tag)))
        .expect("answer");
    let (mine, theirs) = connection();
    n.handle_input(now, from(2, link, hello_of(2, &theirs)))
        .expect("early hello");
    drain(&mut n);
    n.handle_input(now, opened(2, link, mine)).expect("open");
    let out = drain(&mut n);
    assert!(
        matches!(
            sent(&out)[..],
            [DcMsg::LinkHello { .. }, DcMsg::LinkProof { .. }]
        ),
        "{out:?}"
    );
    let proof = proof_of(2, &theirs, &n, &mine);
    n.handle_input(now, from(2, link, proof)).expect("proof");
    assert_eq!(n.open_link(&peer(2)), Some(link));
}

#[test]
fn a_proof_that_comes_before_its_hello_waits_for_it() {
    let now = Instant::now();
    let mut n = node(1, Vec::new());
    let (link, _) = dial_to_2(&mut n, now);
    let (mine, theirs) = connection();
    n.handle_input(now, opened(2, link, mine)).expect("open");
    drain(&mut n);
    let proof = proof_of(2, &theirs, &n, &mine);
    n.handle_input(now, from(2, link, proof.clone()))
        .expect("early proof");
    assert!(n.open_link(&peer(2)).is_none(), "not proven yet");
    assert_eq!(n.counters().links_refused, 0, "nor refused");
    n.handle_input(now, from(2, link, hello_of(2, &theirs)))
        .expect("hello");
    assert_eq!(n.open_link(&peer(2)), Some(link), "{:?}", drain(&mut n));
    assert_eq!(n.counters().links_refused, 0);

    // A second proof before any hello is out of place.
    let mut n = node(1, Vec::new());
    let (link, _) = dial_to_2(&mut n, now);
    let out = refused_by(&mut n, now, link, vec![proof.clone(), proof]);
    assert!(out.contains(&NodeOutput::CloseLink {
        peer: peer(2),
        link
    }));
    assert_eq!(n.counters().links_refused, 1);
}

/// Refuses the link of `n` to 2 with `msg` as the remote's first word
/// after the channel opened; returns the outputs.
fn refused_by(n: &mut Node, now: Instant, link: LinkId, msgs: Vec<DcMsg>) -> Vec<NodeOutput> {
    let (mine, _) = connection();
    n.handle_input(now, opened(2, link, mine)).expect("open");
    drain(n);
    for msg in msgs {
        n.handle_input(now, from(2, link, msg)).expect("message");
    }
    drain(n)
}

#[test]
fn a_remote_holding_another_key_is_refused_and_the_job_fails_naming_it() {
    let now = Instant::now();
    let mut n = node(1, Vec::new());
    let (link, _) = dial_to_2(&mut n, now);
    // A relay that answers as 2 but holds the key of 9.
    let (_, theirs) = connection();
    let out = refused_by(&mut n, now, link, vec![hello_of(9, &theirs)]);
    assert!(out.contains(&NodeOutput::CloseLink {
        peer: peer(2),
        link
    }));
    assert!(
        !sent(&out)
            .iter()
            .any(|m| matches!(m, DcMsg::Submit { .. } | DcMsg::LinkProof { .. })),
        "{out:?}"
    );
    assert_eq!(n.counters().links_refused, 1);
    assert!(n.open_link(&peer(2)).is_none());
    // 2 was the only worker: the job fails at once, saying why.
    let end = finished(&out).expect("the job ended");
    match &end.result {
        Err(JobError::Unverified { worker, why }) => {
            assert_eq!(*worker, peer(2));
            assert!(why.contains(&peer(9).to_string()), "{why}");
        }
        other => panic!("expected an identity error, got {other:?}"),
    }
}

#[test]
fn a_proof_over_other_fingerprints_or_nonces_is_refused() {
    let now = Instant::now();
    // The remote signed over the connection it has with someone between.
    let mut n = node(1, Vec::new());
    let (link, _) = dial_to_2(&mut n, now);
    let (mine, theirs) = connection();
    let relayed = Binding {
        remote: Fingerprint([0xee; 32]),
        ..theirs
    };
    let proof = proof_of(2, &relayed, &n, &mine);
    let out = refused_by(&mut n, now, link, vec![hello_of(2, &theirs), proof]);
    assert_eq!(n.counters().links_refused, 1);
    assert!(matches!(
        &finished(&out).expect("ended").result,
        Err(JobError::Unverified { .. })
    ));

    // A proof recorded on an earlier connection, replayed on a new one
    // where this side chose another nonce.
    let mut n = node(1, Vec::new());
    let (link, _) = dial_to_2(&mut n, now);
    let recorded = proof_of(2, &theirs, &n, &mine);
    let fresh = Binding {
        nonce: Nonce::from_bytes([7; 32]),
        ..mine
    };
    n.handle_input(now, opened(2, link, fresh)).expect("open");
    n.handle_input(now, from(2, link, hello_of(2, &theirs)))
        .expect("hello");
    n.handle_input(now, from(2, link, recorded))
        .expect("replay");
    assert_eq!(n.counters().links_refused, 1);
    assert!(n.open_link(&peer(2)).is_none());
}

#[test]
fn a_job_message_before_the_handshake_is_refused() {
    let now = Instant::now();
    let mut n = node(1, vec![echo()]);
    n.handle_input(now, NodeInput::Signal(&offer(2, 5)))
        .expect("offer");
    let link = answered(&mut n);
    let submit = DcMsg::Submit {
        job_id: spec(1).job_id,
        attempt: 1,
        capability: echo(),
        input: json!({}),
        timeout_ms: 1000,
    };
    let out = refused_by(&mut n, now, link, vec![submit]);
    assert_eq!(n.counters().links_refused, 1);
    assert_eq!(
        n.counters().submits_received,
        0,
        "the submit was never read"
    );
    assert!(!out
        .iter()
        .any(|o| matches!(o, NodeOutput::StartHandler { .. })));
    // The remote hears why before the close.
    assert!(
        matches!(sent(&out)[..], [DcMsg::Error { message, .. }] if message.contains("submit before the link handshake")),
        "{out:?}"
    );
}

#[test]
fn a_handshake_that_stalls_closes_the_link_without_blaming_the_peer() {
    let now = Instant::now();
    let mut n = node(1, Vec::new());
    let (link, _) = dial_to_2(&mut n, now);
    n.handle_input(now, opened(2, link, connection().0))
        .expect("open");
    drain(&mut n);
    let deadline = now + Duration::from_millis(BINDING_TIMEOUT_MS);
    assert!(n.poll_timeout().is_some_and(|t| t <= deadline));
    n.handle_input(deadline, NodeInput::Timeout)
        .expect("timeout");
    let out = drain(&mut n);
    assert!(out.contains(&NodeOutput::CloseLink {
        peer: peer(2),
        link
    }));
    assert_eq!(n.counters().links_refused, 0);
    // The worker may be tried again: the job is not failed for identity.
    assert!(!matches!(
        finished(&out).map(|e| &e.result),
        Some(Err(JobError::Unverified { .. }))
    ));
}

#[test]
fn a_refused_worker_is_passed_over_for_another() {
    let now = Instant::now();
    let mut n = node(1, Vec::new());
    n.handle_input(now, NodeInput::Signal(&view(&[2, 3])))
        .expect("view");
    n.handle_input(now, submit(spec(1))).expect("submitted");
    let dials: Vec<(PeerId, LinkId)> = drain(&mut n)
        .into_iter()
        .filter_map(|o| match o {
            NodeOutput::Dial { peer, link, .. } => Some((peer, link)),
            _ => None,
        })
        .collect();
    let [(first, link)] = dials[..] else {
        panic!("one dial expected: {dials:?}");
    };
    let other = if first == peer(2) { 3 } else { 2 };
    let (mine, theirs) = connection();
    n.handle_input(
        now,
        NodeInput::LinkOpened {
            peer: first,
            link,
            binding: mine,
        },
    )
    .expect("open");
    let forged = hello_of(9, &theirs);
    n.handle_input(
        now,
        NodeInput::Message {
            from: first,
            link,
            msg: forged,
        },
    )
    .expect("hello");
    let out = drain(&mut n);
    assert!(finished(&out).is_none(), "{out:?}");
    assert!(
        out.iter()
            .any(|o| matches!(o, NodeOutput::Dial { peer: p, .. } if *p == peer(other))),
        "the job goes to the other worker: {out:?}"
    );
}

/// Worker 2 of a closed pool, with an answered link from `remote`, whose
/// hello showed `credential`; returns the link and the outputs.
fn closed_worker_linked_from(
    remote: u128,
    credential: Option<Credential>,
) -> (Node, LinkId, Vec<NodeOutput>) {
    let now = Instant::now();
    let mut w = node_in(2, vec![echo()], Some(member(2, &[Role::Worker])));
    w.handle_input(now, NodeInput::Signal(&offer(remote, 5)))
        .expect("offer");
    let link = answered(&mut w);
    let (mine, theirs) = connection();
    w.handle_input(now, opened(remote, link, mine))
        .expect("open");
    w.handle_input(
        now,
        from(remote, link, member_hello(remote, &theirs, credential)),
    )
    .expect("hello");
    let proof = proof_of(remote, &theirs, &w, &mine);
    w.handle_input(now, from(remote, link, proof))
        .expect("proof");
    let out = drain(&mut w);
    (w, link, out)
}

fn submit_msg(n: u128) -> DcMsg {
    DcMsg::Submit {
        job_id: spec(n).job_id,
        attempt: 1,
        capability: echo(),
        input: json!({}),
        timeout_ms: 1000,
    }
}

fn rejection(out: &[NodeOutput]) -> Option<(RejectReason, &str)> {
    sent(out).into_iter().find_map(|m| match m {
        DcMsg::Rejected {
            reason, message, ..
        } => Some((*reason, message.as_str())),
        _ => None,
    })
}

#[test]
fn in_a_closed_pool_a_link_without_a_valid_credential_is_refused() {
    // None, and one of another pool's owner.
    let stranger = Invitation::mint(
        &Identity::from_seed(&[201; 32]),
        "lab",
        vec![Role::Submitter],
        Vec::new(),
        NOW_UNIX + 3600,
    )
    .expect("valid")
    .redeem(&identity(1).public());
    for credential in [None, Some(stranger)] {
        let (w, _, out) = closed_worker_linked_from(1, credential);
        assert_eq!(w.counters().links_refused, 1);
        assert!(w.open_link(&peer(1)).is_none());
        assert!(
            matches!(sent(&out)[..], [DcMsg::LinkHello { .. }, DcMsg::Error { message, .. }] if message.contains("not a member")),
            "{out:?}"
        );
    }
    // Another member's credential, shown by a key it was not issued to.
    let (w, _, _) = closed_worker_linked_from(1, Some(member(3, &[Role::Submitter])));
    assert_eq!(w.counters().links_refused, 1);
}

#[test]
fn in_a_closed_pool_only_submitters_get_jobs_run() {
    let now = Instant::now();
    // A member with the worker role alone: refused, forbidden.
    let (mut w, link, _) = closed_worker_linked_from(1, Some(member(1, &[Role::Worker])));
    assert_eq!(w.open_link(&peer(1)), Some(link), "a member may link");
    w.handle_input(now, from(1, link, submit_msg(1)))
        .expect("submit");
    let out = drain(&mut w);
    let (reason, message) = rejection(&out).expect("rejected");
    assert_eq!(reason, RejectReason::Forbidden);
    assert!(message.contains("submitter role"), "{message}");
    assert!(!out
        .iter()
        .any(|o| matches!(o, NodeOutput::StartHandler { .. })));
    // A submitter: run.
    let (mut w, link, _) = closed_worker_linked_from(1, Some(member(1, &[Role::Submitter])));
    w.handle_input(now, from(1, link, submit_msg(1)))
        .expect("submit");
    let out = drain(&mut w);
    assert!(rejection(&out).is_none(), "{out:?}");
    assert!(out
        .iter()
        .any(|o| matches!(o, NodeOutput::StartHandler { .. })));
}

#[test]
fn a_capability_allow_list_refuses_other_submitters() {
    let now = Instant::now();
    let (mut w, link, _) = closed_worker_linked_from(1, Some(member(1, &[Role::Submitter])));
    w.allow.insert(echo(), std::iter::once(peer(3)).collect());
    w.handle_input(now, from(1, link, submit_msg(1)))
        .expect("submit");
    let out = drain(&mut w);
    let (reason, message) = rejection(&out).expect("rejected");
    assert_eq!(reason, RejectReason::Forbidden);
    assert!(message.contains("allow-list"), "{message}");
}

#[test]
fn a_member_without_the_submitter_role_cannot_submit() {
    let now = Instant::now();
    let mut n = node_in(1, Vec::new(), Some(member(1, &[Role::Worker])));
    n.handle_input(now, NodeInput::Signal(&view(&[2])))
        .expect("view");
    let err = n.handle_input(now, submit(spec(1))).expect_err("refused");
    assert!(matches!(err, JobError::Forbidden { .. }), "{err:?}");
    assert!(err.to_string().contains("submitter role"), "{err}");
    let out = drain(&mut n);
    assert!(
        !out.iter()
            .any(|o| matches!(o, NodeOutput::Dial { .. } | NodeOutput::Send { .. })),
        "nothing was dialled or sent: {out:?}"
    );
}

#[test]
fn a_submitter_sends_no_job_to_a_member_without_the_worker_role() {
    let now = Instant::now();
    let mut n = node_in(1, Vec::new(), Some(member(1, &[Role::Submitter])));
    let (link, _) = dial_to_2(&mut n, now);
    let (mine, theirs) = connection();
    n.handle_input(now, opened(2, link, mine)).expect("open");
    // 2 is in the view with echo, but its credential says submitter only.
    let hello = member_hello(2, &theirs, Some(member(2, &[Role::Submitter])));
    n.handle_input(now, from(2, link, hello)).expect("hello");
    let proof = proof_of(2, &theirs, &n, &mine);
    n.handle_input(now, from(2, link, proof)).expect("proof");
    let out = drain(&mut n);
    assert!(
        !sent(&out).iter().any(|m| matches!(m, DcMsg::Submit { .. })),
        "{out:?}"
    );
    assert_eq!(n.open_link(&peer(2)), Some(link), "the link itself is fine");
}

#[test]
fn a_revocation_list_from_the_owner_closes_the_links_of_the_members_it_withdraws() {
    let now = Instant::now();
    let credential = member(1, &[Role::Submitter]);
    let (mut w, link, _) = closed_worker_linked_from(1, Some(credential.clone()));
    assert_eq!(w.open_link(&peer(1)), Some(link));
    // A list the owner did not sign (a signal-server's forgery) is ignored.
    let forged = Revocations::sign(
        &Identity::from_seed(&[202; 32]),
        "lab",
        1,
        Vec::new(),
        vec![identity(1).public()],
    )
    .expect("signed");
    let forged = ServerMsg::Revocations {
        list: Box::new(forged),
    };
    w.handle_input(now, NodeInput::Signal(&forged))
        .expect("list");
    assert_eq!(
        w.open_link(&peer(1)),
        Some(link),
        "a forged list changes nothing"
    );
    // The owner's list closes the link, and a new one is refused.
    let list = Revocations::sign(&owner(), "lab", 1, Vec::new(), vec![identity(1).public()])
        .expect("signed");
    let list = ServerMsg::Revocations {
        list: Box::new(list),
    };
    w.handle_input(now, NodeInput::Signal(&list)).expect("list");
    let out = drain(&mut w);
    assert!(out.contains(&NodeOutput::CloseLink {
        peer: peer(1),
        link
    }));
    assert!(w.open_link(&peer(1)).is_none());
    assert_eq!(w.counters().links_refused, 1);
    w.handle_input(now, NodeInput::Signal(&offer(1, 6)))
        .expect("offer");
    let again = answered(&mut w);
    let (mine, theirs) = connection();
    w.handle_input(now, opened(1, again, mine)).expect("open");
    w.handle_input(
        now,
        from(1, again, member_hello(1, &theirs, Some(credential))),
    )
    .expect("hello");
    assert_eq!(w.counters().links_refused, 2);
    assert!(w.open_link(&peer(1)).is_none());
}

#[test]
fn a_known_name_that_comes_back_with_another_key_is_noticed() {
    let now = Instant::now();
    let mut n = node(1, Vec::new());
    let page = |id: PeerId| ServerMsg::View {
        reset: false,
        left: Vec::new(),
        peers: vec![PeerInfo {
            id,
            name: "gpu-1".into(),
            capabilities: vec![echo()],
            stats: Stats::default(),
        }],
        synced: true,
    };
    n.handle_input(now, NodeInput::Signal(&page(peer(2))))
        .expect("view");
    n.handle_input(now, NodeInput::Signal(&page(peer(2))))
        .expect("the same again");
    assert_eq!(n.counters().key_changes, 0);
    n.handle_input(now, NodeInput::Signal(&page(peer(3))))
        .expect("another key");
    assert_eq!(n.counters().key_changes, 1);
}

#[test]
fn past_its_link_limit_a_node_answers_no_new_offer() {
    let now = Instant::now();
    let mut n = node(1, vec![echo()]);
    let offer_from = |p: PeerId| ServerMsg::Relayed {
        from: p,
        signal: Handshake::Offer {
            sdp: "sdp".into(),
            dial: 9,
        },
    };
    for _ in 0..MAX_LINKS {
        n.handle_input(now, NodeInput::Signal(&offer_from(PeerId::random())))
            .expect("offer");
    }
    let answers = drain(&mut n)
        .iter()
        .filter(|o| matches!(o, NodeOutput::Answer { .. }))
        .count();
    assert_eq!(answers, MAX_LINKS);
    n.handle_input(now, NodeInput::Signal(&offer_from(PeerId::random())))
        .expect("offer");
    assert!(drain(&mut n).is_empty(), "no answer past the limit");
    assert_eq!(n.counters().offers_refused, 1);
}

/// Blobs of these sizes, announced for job `n`'s first attempt.
fn announce(n: u128, sizes: &[u64]) -> DcMsg {
    let blobs = sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| BlobMeta {
            index: i as u16,
            size,
            blake3: "0".repeat(64),
            name: None,
        })
        .collect();
    DcMsg::Blobs {
        job_id: spec(n).job_id,
        attempt: 1,
        direction: Direction::Input,
        blobs,
    }
}

#[test]
fn input_blobs_past_the_spool_budget_are_refused_before_a_byte_is_sent() {
    let now = Instant::now();
    const MIB: u64 = 1 << 20;
    let mut w = node(2, vec![echo()]);
    w.spool = SpoolBudget::new(SpoolLimits {
        per_job: MIB,
        per_peer: 3 * MIB / 2,
        total: 2 * MIB,
    });
    w.handle_input(now, NodeInput::Signal(&offer(1, 5)))
        .expect("offer");
    let link = answered(&mut w);
    open(&mut w, now, 1, link);
    drain(&mut w);
    let submit_with = |w: &mut Node, n: u128, sizes: &[u64]| {
        w.handle_input(now, from(1, link, announce(n, sizes)))
            .expect("blobs");
        w.handle_input(now, from(1, link, submit_msg(n)))
            .expect("submit");
        drain(w)
    };
    // Over the budget of one job: refused for good.
    let out = submit_with(&mut w, 1, &[MIB / 2, MIB / 2 + 1]);
    let (reason, message) = rejection(&out).expect("rejected");
    assert_eq!(reason, RejectReason::BadInput);
    assert!(message.contains("per job"), "{message}");
    // One job fits, and holds its bytes until its handler returns.
    let out = submit_with(&mut w, 2, &[MIB]);
    assert!(rejection(&out).is_none(), "{out:?}");
    assert!(out
        .iter()
        .any(|o| matches!(o, NodeOutput::ReceiveBlobs { .. })));
    // A second from the same peer passes its per-peer budget: busy, so
    // the submitter tries another worker.
    let out = submit_with(&mut w, 3, &[MIB]);
    let (reason, message) = rejection(&out).expect("rejected");
    assert_eq!(reason, RejectReason::Busy);
    assert!(message.contains("per peer"), "{message}");
    let job = spec(2).job_id;
    w.handle_input(
        now,
        NodeInput::BlobsReceived {
            job_id: job,
            direction: Direction::Input,
        },
    )
    .expect("received");
    assert_eq!(w.spool.held(), MIB, "held while the handler runs");
    w.handle_input(
        now,
        NodeInput::HandlerDone {
            job_id: job,
            result: Ok(json!(1)),
            outputs: Vec::new(),
        },
    )
    .expect("done");
    assert_eq!(w.spool.held(), 0);
    let out = submit_with(&mut w, 3, &[MIB]);
    assert!(rejection(&out).is_none(), "{out:?}");
    // A job that fails while its blobs come in gives them back too.
    w.handle_input(
        now,
        NodeInput::BlobsFailed {
            job_id: spec(3).job_id,
            direction: Direction::Input,
            error: "digest mismatch".into(),
        },
    )
    .expect("failed");
    assert_eq!(w.spool.held(), 0);
}

#[test]
fn a_result_whose_blobs_this_peer_refuses_fails_its_attempt() {
    let now = Instant::now();
    const MIB: u64 = 1 << 20;
    // Over the largest blob (1 MiB here), then over the spool's budget.
    for sizes in [&[MIB + 1][..], &[MIB, MIB, MIB, MIB, 1]] {
        let mut n = node(1, Vec::new());
        let (link, _) = dial_to_2(&mut n, now);
        open(&mut n, now, 2, link);
        drain(&mut n);
        let job_id = spec(1).job_id;
        let mut announced = announce(1, sizes);
        if let DcMsg::Blobs { direction, .. } = &mut announced {
            *direction = Direction::Output;
        }
        let result = DcMsg::Result {
            job_id,
            attempt: 1,
            outcome: Outcome::Ok { value: json!(1) },
            load: None,
        };
        for msg in [announced, result] {
            n.handle_input(now, from(2, link, msg)).expect("message");
        }
        let out = drain(&mut n);
        assert!(
            !out.iter()
                .any(|o| matches!(o, NodeOutput::ReceiveBlobs { .. })),
            "no byte is asked for: {out:?}"
        );
        assert!(
            !out.iter()
                .any(|o| matches!(o, NodeOutput::Finished(end) if end.result.is_ok())),
            "the job does not complete without its blobs: {out:?}"
        );
        let retried = out.iter().find_map(|o| match o {
            NodeOutput::Event(JobEvent {
                kind:
                    EventKind::Retrying {
                        outcome: AttemptOutcome::Failed { message, .. },
                        ..
                    },
                ..
            }) => Some(message.clone()),
            _ => None,
        });
        let error = retried.expect("the attempt failed, and the job is tried again");
        assert!(error.contains("result"), "{error}");
        assert_eq!(n.spool.held(), 0);
    }
}

#[test]
fn a_link_that_never_opens_fails_the_job_with_why_and_its_peer_is_passed_over_for_a_while() {
    let now = Instant::now();
    let mut n = node(1, Vec::new());
    let (link, _) = dial_to_2(&mut n, now);
    let why = "no data channel with 2 after 10s (dial): the TURN server gave no relay candidate";
    let failed = NodeInput::LinkFailed {
        peer: peer(2),
        link,
        why: why.to_owned(),
    };
    n.handle_input(now, failed).expect("input");
    let out = drain(&mut n);
    // 2 was the only worker: the job fails at once, naming it and the cause,
    // and was never sent.
    match &finished(&out).expect("the job ended").result {
        Err(JobError::Unreachable { worker, why: got }) => {
            assert_eq!(*worker, peer(2));
            assert_eq!(got, why);
        }
        other => panic!("expected an unreachable worker, got {other:?}"),
    }
    assert!(!sent(&out).iter().any(|m| matches!(m, DcMsg::Submit { .. })));
    // While it is passed over, a new job fails the same way without a dial.
    let later = now + jobmesh_core::UNREACHABLE_FOR / 2;
    n.handle_input(later, submit(spec(2))).expect("submitted");
    let out = drain(&mut n);
    assert!(
        !out.iter().any(|o| matches!(o, NodeOutput::Dial { .. })),
        "{out:?}"
    );
    assert!(matches!(
        &finished(&out).expect("ended").result,
        Err(JobError::Unreachable { .. })
    ));
    // Past it, the peer is dialled again.
    let after = now + jobmesh_core::UNREACHABLE_FOR;
    n.handle_input(after, submit(spec(3))).expect("submitted");
    let out = drain(&mut n);
    assert!(
        out.iter()
            .any(|o| matches!(o, NodeOutput::Dial { peer: p, .. } if *p == peer(2))),
        "{out:?}"
    );
}

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

fn handover(token: &str) -> DcMsg {
    DcMsg::Handover {
        token: Some(token.to_owned()),
    }
}

/// Worker 2 with handover token `TOKEN`, a link from peer 1 open, and job
/// 1 (one 10-byte input blob) admitted; returns the link and what the
/// opening sent.
fn worker_sharing(remote_token: &str) -> (Node, LinkId, Vec<NodeOutput>) {
    let now = Instant::now();
    let mut w = node(2, vec![echo()]);
    w.handover = Some(TOKEN.to_owned());
    w.handle_input(now, NodeInput::Signal(&offer(1, 5)))
        .expect("offer");
    let link = answered(&mut w);
    open(&mut w, now, 1, link);
    let opening = drain(&mut w);
    for msg in [handover(remote_token), announce(1, &[10]), submit_msg(1)] {
        w.handle_input(now, from(1, link, msg)).expect("message");
    }
    let out = drain(&mut w);
    assert!(rejection(&out).is_none(), "{out:?}");
    (w, link, opening)
}

fn blob_files(files: &[&str]) -> DcMsg {
    DcMsg::BlobFiles {
        job_id: spec(1).job_id,
        attempt: 1,
        direction: Direction::Input,
        files: files.iter().map(|f| (*f).to_owned()).collect(),
    }
}

#[test]
fn peers_sharing_a_handover_directory_hand_blobs_over_as_files() {
    let now = Instant::now();
    let (mut w, link, opening) = worker_sharing(TOKEN);
    assert!(
        sent(&opening).contains(&&handover(TOKEN)),
        "a link opens with this peer's token: {opening:?}"
    );
    // The set under way, from the sharing peer: read from the files.
    w.handle_input(now, from(1, link, blob_files(&["f0"])))
        .expect("files");
    let out = drain(&mut w);
    assert!(
        matches!(&out[..], [NodeOutput::ReadBlobFiles { files, from, .. }] if files == &["f0"] && *from == peer(1)),
        "{out:?}"
    );
    // The result's blobs go back as files too.
    let job_id = spec(1).job_id;
    let done = |w: &mut Node, input| w.handle_input(now, input).expect("input");
    done(
        &mut w,
        NodeInput::BlobsReceived {
            job_id,
            direction: Direction::Input,
        },
    );
    drain(&mut w);
    let outputs = vec![BlobMeta {
        index: 0,
        size: 3,
        blake3: "0".repeat(64),
        name: None,
    }];
    done(
        &mut w,
        NodeInput::HandlerDone {
            job_id,
            result: Ok(json!(1)),
            outputs,
        },
    );
    let out = drain(&mut w);
    assert!(
        out.iter()
            .any(|o| matches!(o, NodeOutput::SendBlobs { handover: true, .. })),
        "{out:?}"
    );
}

#[test]
fn files_from_a_peer_with_another_directory_fail_the_set_and_chunks_stay() {
    let now = Instant::now();
    let (mut w, link, _) = worker_sharing("ffffffffffffffffffffffffffffffff");
    w.handle_input(now, from(1, link, blob_files(&["f0"])))
        .expect("files");
    let out = drain(&mut w);
    assert!(
        !out.iter()
            .any(|o| matches!(o, NodeOutput::ReadBlobFiles { .. })),
        "{out:?}"
    );
    let failed = sent(&out).into_iter().find_map(|m| match m {
        DcMsg::Result {
            outcome: Outcome::Err {
                message, retryable, ..
            },
            ..
        } => Some((message.clone(), *retryable)),
        _ => None,
    });
    let (message, retryable) = failed.expect("the attempt fails");
    assert!(message.contains("does not share"), "{message}");
    assert!(retryable);
}

#[test]
fn unreadable_files_fail_the_set_and_the_sender_falls_back_to_chunks() {
    let now = Instant::now();
    // The wrong number of files: not even read.
    let (mut w, link, _) = worker_sharing(TOKEN);
    w.handle_input(now, from(1, link, blob_files(&["f0", "f1"])))
        .expect("files");
    let out = drain(&mut w);
    assert!(
        sent(&out).contains(&&DcMsg::Handover { token: None }),
        "{out:?}"
    );
    assert!(!out
        .iter()
        .any(|o| matches!(o, NodeOutput::ReadBlobFiles { .. })));
    // Files that could not be read: the same, and this side sends chunks too.
    let (mut w, link, _) = worker_sharing(TOKEN);
    w.handle_input(now, from(1, link, blob_files(&["f0"])))
        .expect("files");
    drain(&mut w);
    let failed = NodeInput::BlobFilesFailed {
        from: peer(1),
        job_id: spec(1).job_id,
        direction: Direction::Input,
        error: "cannot read f0".into(),
    };
    w.handle_input(now, failed).expect("failed");
    let out = drain(&mut w);
    assert!(
        sent(&out).contains(&&DcMsg::Handover { token: None }),
        "{out:?}"
    );
    assert!(
        sent(&out).iter().any(|m| matches!(m, DcMsg::Result { outcome: Outcome::Err { message, .. }, .. } if message.contains("cannot read f0"))),
        "{out:?}"
    );
    assert!(!w.links.handover(&peer(1)));
}

#[test]
fn a_result_waits_for_its_handed_over_files_to_be_read() {
    let now = Instant::now();
    let mut n = node(1, Vec::new());
    n.handover = Some(TOKEN.to_owned());
    let (link, _) = dial_to_2(&mut n, now);
    open(&mut n, now, 2, link);
    n.handle_input(now, from(2, link, handover(TOKEN)))
        .expect("handover");
    let job_id = spec(1).job_id;
    let mut announced = announce(1, &[10]);
    if let DcMsg::Blobs { direction, .. } = &mut announced {
        *direction = Direction::Output;
    }
    let files = DcMsg::BlobFiles {
        job_id,
        attempt: 1,
        direction: Direction::Output,
        files: vec!["out0".into()],
    };
    let result = DcMsg::Result {
        job_id,
        attempt: 1,
        outcome: Outcome::Ok { value: json!(1) },
        load: None,
    };
    for msg in [
        DcMsg::Accepted { job_id, attempt: 1 },
        announced,
        files,
        result,
    ] {
        n.handle_input(now, from(2, link, msg)).expect("message");
    }
    let out = drain(&mut n);
    assert!(
        out.iter()
            .any(|o| matches!(o, NodeOutput::ReadBlobFiles { .. })),
        "{out:?}"
    );
    assert!(
        finished(&out).is_none(),
        "the result waits for its files: {out:?}"
    );
    let read = NodeInput::BlobsReceived {
        job_id,
        direction: Direction::Output,
    };
    n.handle_input(now, read).expect("read");
    let out = drain(&mut n);
    assert!(
        out.iter()
            .any(|o| matches!(o, NodeOutput::ResultBlobs { .. })),
        "{out:?}"
    );
    assert!(
        finished(&out).is_some_and(|end| end.result.is_ok()),
        "complete once read: {out:?}"
    );
}

use std::time::{Duration, Instant};

use jobmesh_core::{DispatcherConfig, JobOptions, JobSpec};
use jobmesh_wire::dc::{DcMsg, Outcome};
use jobmesh_wire::signal::{Handshake, ServerMsg};
use jobmesh_wire::{Capability, PeerId, PeerInfo, Stats};
use serde_json::{json, Value};
use uuid::Uuid;

use super::*;

fn peer(n: u128) -> PeerId {
    PeerId(Uuid::from_u128(n))
}

fn echo() -> Capability {
    Capability::new("echo").expect("valid")
}

fn node(n: u128, capabilities: Vec<Capability>) -> Node {
    Node::new(NodeConfig {
        me: peer(n),
        name: format!("n{n}"),
        capabilities,
        slots: 2,
        progress_interval: Duration::from_millis(100),
        stats_interval: Duration::from_millis(250),
        dispatcher: DispatcherConfig::default(),
        strategy: None,
        max_blob_size: 1 << 20,
        journaled: false,
        seed: 7,
        input_check: Box::new(|_, _| Ok(())),
    })
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
    let mut low = node(1, Vec::new());
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
    n.handle_input(
        now,
        NodeInput::LinkOpened {
            peer: peer(2),
            link: new,
        },
    )
    .expect("open");
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
    n.handle_input(
        t,
        NodeInput::LinkOpened {
            peer: peer(2),
            link,
        },
    )
    .expect("open");
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
    let mut high = node(3, Vec::new());
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
    high.handle_input(
        now,
        NodeInput::LinkOpened {
            peer: peer(2),
            link: answering,
        },
    )
    .expect("open");
    let out = drain(&mut high);
    assert!(out.iter().any(|o| matches!(o,
        NodeOutput::Send { link: l, msg: DcMsg::Submit { .. }, .. } if *l == answering)));
    // The abandoned dial opening late is released, not used.
    high.handle_input(
        now,
        NodeInput::LinkOpened {
            peer: peer(2),
            link,
        },
    )
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
    n.handle_input(
        now,
        NodeInput::LinkOpened {
            peer: peer(2),
            link,
        },
    )
    .expect("open");
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

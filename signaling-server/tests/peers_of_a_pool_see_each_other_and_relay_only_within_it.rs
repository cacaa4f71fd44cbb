//! Two peers of one pool see each other (their views), see each
//! other's stats, and relay handshakes; a relay to a peer of another pool is
//! refused with `unknown_peer`, which is not fatal. The tap sees every frame.

mod common;

use common::{cap, Peer, Server};
use jobmesh_signal_server::ServerConfig;
use jobmesh_wire::signal::{ClientMsg, ErrorCode, Handshake, ServerMsg};
use jobmesh_wire::{PeerId, PeerInfo, Stats};
use tokio::sync::mpsc;

fn info(id: PeerId, name: &str) -> PeerInfo {
    PeerInfo {
        id,
        name: name.into(),
        capabilities: vec![cap("echo")],
        stats: Stats {
            slots: 2,
            ..Stats::default()
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_of_a_pool_see_each_other_and_relay_only_within_it() {
    let (tap, mut tapped) = mpsc::channel(1024);
    let mut server = Server::start(ServerConfig {
        tap: Some(tap),
        ..ServerConfig::open()
    })
    .await;

    let mut a = Peer::join(&server.url, "alpha", "a").await;
    assert!(a.members().is_empty(), "A is first in alpha");
    let mut b = Peer::join(&server.url, "alpha", "b").await;
    assert_eq!(b.members(), vec![info(a.id, "a")], "B's view lists A");
    assert_eq!(a.wait_member(b.id).await, info(b.id, "b"));
    let mut c = Peer::join(&server.url, "beta", "c").await;
    assert!(c.members().is_empty(), "pools do not mix");

    // Stats reach the other peer of the pool.
    let stats = Stats {
        slots: 2,
        running: 1,
        queued: 3,
        completed: 10,
        failed: 1,
        seq: 4,
        ..Stats::default()
    };
    b.send(&ClientMsg::Stats {
        stats: stats.clone(),
    })
    .await;
    let b_id = b.id;
    a.wait_view("B's new stats", |v| {
        v.get(&b_id).is_some_and(|p| p.stats == stats)
    })
    .await;

    // Relays within the pool, both ways.
    let offer = Handshake::Offer {
        sdp: "v=0 offer".into(),
        dial: 1,
    };
    a.send(&ClientMsg::Relay {
        to: b.id,
        signal: offer.clone(),
    })
    .await;
    assert_eq!(
        b.next().await,
        ServerMsg::Relayed {
            from: a.id,
            signal: offer.clone()
        }
    );
    let answer = Handshake::Answer {
        sdp: "v=0 answer".into(),
        dial: 1,
    };
    b.send(&ClientMsg::Relay {
        to: a.id,
        signal: answer.clone(),
    })
    .await;
    assert_eq!(
        a.next().await,
        ServerMsg::Relayed {
            from: b.id,
            signal: answer
        }
    );

    // Across pools: refused, not fatal, and nothing reaches C.
    a.send(&ClientMsg::Relay {
        to: c.id,
        signal: offer.clone(),
    })
    .await;
    match a.next().await {
        ServerMsg::Error { code, message } => {
            assert_eq!(code, ErrorCode::UnknownPeer);
            assert!(message.contains(&c.id.to_string()), "{message}");
        }
        other => panic!("expected unknown_peer, got {other:?}"),
    }
    c.send(&ClientMsg::Relay {
        to: a.id,
        signal: offer.clone(),
    })
    .await;
    assert!(matches!(
        c.next().await,
        ServerMsg::Error {
            code: ErrorCode::UnknownPeer,
            ..
        }
    ));
    let candidate = Handshake::Candidate {
        candidate: "candidate:1 1 udp 1 127.0.0.1 5000 typ host".into(),
        sdp_mid: Some("0".into()),
        sdp_mline_index: Some(0),
    };
    a.send(&ClientMsg::Relay {
        to: b.id,
        signal: candidate.clone(),
    })
    .await;
    assert_eq!(
        b.next().await,
        ServerMsg::Relayed {
            from: a.id,
            signal: candidate
        },
        "A's socket still relays after the refusal"
    );
    assert_eq!(
        server.count(|c| &c.relays),
        3,
        "only the three relays within alpha were delivered"
    );

    // A late joiner's first view carries the latest stats.
    let d = Peer::join(&server.url, "alpha", "d").await;
    let b_seen = d.view.get(&b.id).expect("D's view lists B");
    assert_eq!(b_seen.stats, stats);

    // The tap saw every text frame the server received, and nothing else:
    // 4 hellos, 1 stats, 5 relays.
    server.stop().await;
    let mut frames = Vec::new();
    while let Ok(f) = tapped.try_recv() {
        frames.push(ClientMsg::decode(&f).expect("tapped frames are the clients' frames"));
    }
    let count = |p: fn(&ClientMsg) -> bool| frames.iter().filter(|m| p(m)).count();
    assert_eq!(count(|m| matches!(m, ClientMsg::Hello(_))), 4);
    assert_eq!(count(|m| matches!(m, ClientMsg::Stats { .. })), 1);
    assert_eq!(count(|m| matches!(m, ClientMsg::Relay { .. })), 5);
    assert_eq!(frames.len(), 10);
    assert_eq!(server.count(|c| &c.tap_dropped), 0);
    assert_eq!(server.count(|c| &c.frames_in), 10);
}

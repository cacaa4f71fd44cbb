//! Hostile WebSocket input: each bad frame gets an error naming the problem and
//! a close, and the peers already connected keep working.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use jobmesh_signal::ServerConfig;
use jobmesh_testkit::ws::{connect, join, next, send, Ws};
use jobmesh_testkit::{init_tracing, within, SignalGuard};
use jobmesh_wire::signal::{
    encode, ClientMsg, ErrorCode, Handshake, ServerMsg, MAX_SIGNAL_MESSAGE,
};
use jobmesh_wire::{PeerId, Stats};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// Reads an error with `code` whose message contains `needle`, then the close.
async fn expect_error_then_close(ws: &mut Ws, code: ErrorCode, needle: &str) {
    match next(ws).await {
        ServerMsg::Error { code: c, message } => {
            assert_eq!(c, code, "{message}");
            assert!(
                message.contains(needle),
                "{message:?} should mention {needle:?}"
            );
        }
        other => panic!("expected an error, got {other:?}"),
    }
    within("the close", async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(f)))) => {
                    assert_eq!(u16::from(f.code), 1008);
                    return;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                None | Some(Err(_)) | Some(Ok(Message::Close(None))) => return,
                other => panic!("expected a close, got {other:?}"),
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_frame_gets_an_error_and_a_close_and_others_keep_working() {
    init_tracing();
    let config = ServerConfig {
        hello_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let mut server = SignalGuard::start_with(config, false).await;
    let url = server.url().to_owned();
    let (mut a, a_id) = join(&url, "p").await;
    let (mut b, b_id) = join(&url, "p").await;
    assert!(matches!(next(&mut a).await, ServerMsg::PeerJoined { .. }));

    let version = json!({"type": "hello", "version": 99, "peer_id": PeerId::random(), "name": "x",
        "pool": "p", "capabilities": [], "slots": 1});
    let oversized = format!("\"{}\"", "x".repeat(MAX_SIGNAL_MESSAGE + 1));
    let stats_first = encode(&ClientMsg::Stats {
        stats: Stats::default(),
    });
    let cases: Vec<(Message, ErrorCode, &str)> = vec![
        (
            Message::text("{not json"),
            ErrorCode::BadMessage,
            "invalid JSON",
        ),
        (
            Message::text(r#"{"type":"teleport"}"#),
            ErrorCode::BadMessage,
            "unknown message type \"teleport\"",
        ),
        (
            Message::text(version.to_string()),
            ErrorCode::WrongVersion,
            "version 99",
        ),
        (Message::text(oversized), ErrorCode::BadMessage, "too large"),
        (
            Message::text(stats_first),
            ErrorCode::ExpectedHello,
            "first message must be a hello",
        ),
        (
            Message::binary(vec![1u8, 2, 3]),
            ErrorCode::BadMessage,
            "binary",
        ),
    ];
    for (frame, code, needle) in cases {
        let mut bad = connect(&url).await;
        bad.send(frame).await.expect("send");
        expect_error_then_close(&mut bad, code, needle).await;
    }

    // No hello at all: closed at the hello deadline.
    let mut mute = connect(&url).await;
    expect_error_then_close(&mut mute, ErrorCode::HelloTimeout, "no hello").await;

    // A joined peer that then misbehaves is closed and announced as gone.
    let (mut c, c_id) = join(&url, "p").await;
    assert!(matches!(next(&mut a).await, ServerMsg::PeerJoined { .. }));
    assert!(matches!(next(&mut b).await, ServerMsg::PeerJoined { .. }));
    c.send(Message::text("[]")).await.expect("send");
    expect_error_then_close(&mut c, ErrorCode::BadMessage, "type").await;
    assert_eq!(next(&mut a).await, ServerMsg::PeerLeft { peer_id: c_id });
    assert_eq!(next(&mut b).await, ServerMsg::PeerLeft { peer_id: c_id });

    // A and B still relay and see each other's stats.
    let offer = Handshake::Offer { sdp: "v=0".into() };
    send(
        &mut a,
        &ClientMsg::Relay {
            to: b_id,
            signal: offer.clone(),
        },
    )
    .await;
    assert_eq!(
        next(&mut b).await,
        ServerMsg::Relayed {
            from: a_id,
            signal: offer
        }
    );
    let stats = Stats {
        slots: 1,
        running: 1,
        ..Stats::default()
    };
    send(
        &mut b,
        &ClientMsg::Stats {
            stats: stats.clone(),
        },
    )
    .await;
    assert_eq!(
        next(&mut a).await,
        ServerMsg::StatsChanged {
            peer_id: b_id,
            stats
        }
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_stay_within_a_pool() {
    init_tracing();
    let mut server = SignalGuard::start().await;
    let url = server.url().to_owned();
    let (mut a, a_id) = join(&url, "one").await;
    let (mut other, other_id) = join(&url, "two").await;
    let (mut b, b_id) = join(&url, "one").await;
    assert_eq!(
        next(&mut a).await,
        ServerMsg::PeerJoined {
            peer: jobmesh_wire::PeerInfo {
                id: b_id,
                name: "t".into(),
                capabilities: Vec::new(),
                stats: Stats {
                    slots: 1,
                    ..Stats::default()
                },
            }
        },
        "only B, not the peer of pool two, is announced to A"
    );
    let offer = Handshake::Offer { sdp: "v=0".into() };
    send(
        &mut a,
        &ClientMsg::Relay {
            to: other_id,
            signal: offer.clone(),
        },
    )
    .await;
    match next(&mut a).await {
        ServerMsg::Error { code, .. } => assert_eq!(code, ErrorCode::UnknownPeer),
        other => panic!("expected unknown_peer, got {other:?}"),
    }
    // Not fatal: the same socket relays within its pool afterwards.
    send(
        &mut a,
        &ClientMsg::Relay {
            to: b_id,
            signal: offer.clone(),
        },
    )
    .await;
    assert_eq!(
        next(&mut b).await,
        ServerMsg::Relayed {
            from: a_id,
            signal: offer.clone()
        }
    );
    // And the peer of pool two never got anything: its next message is the
    // relay it sends itself bounced as unknown_peer.
    send(
        &mut other,
        &ClientMsg::Relay {
            to: a_id,
            signal: offer,
        },
    )
    .await;
    match next(&mut other).await {
        ServerMsg::Error { code, .. } => assert_eq!(code, ErrorCode::UnknownPeer),
        msg => panic!("pool two saw {msg:?}"),
    }
    server.stop().await;
}

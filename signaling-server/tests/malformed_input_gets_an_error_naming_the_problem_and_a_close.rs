//! Hostile input: each bad frame gets an `error` whose text names the problem,
//! then a close (1008), and the peers already connected keep working.

mod common;

use std::time::Duration;

use common::{connect, hello, Peer, Server};
use jobmesh_identity::Identity;
use jobmesh_signal_server::ServerConfig;
use jobmesh_wire::signal::{
    encode, ClientMsg, ErrorCode, Handshake, ServerMsg, MAX_SIGNAL_MESSAGE,
};
use jobmesh_wire::{PeerId, Stats};
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

const POLICY: u16 = 1008;

/// A relay from `from` reaches `to`, and stats from `to` reach `from`.
async fn still_working(from: &mut Peer, to: &mut Peer) {
    let offer = Handshake::Offer {
        sdp: format!("v=0 {}", from.id),
        dial: 0,
    };
    from.send(&ClientMsg::Relay {
        to: to.id,
        signal: offer.clone(),
    })
    .await;
    assert_eq!(
        to.next().await,
        ServerMsg::Relayed {
            from: from.id,
            signal: offer
        }
    );
    let stats = Stats {
        slots: 2,
        running: 1,
        seq: u64::from(to.id.0.as_fields().1),
        ..Stats::default()
    };
    to.send(&ClientMsg::Stats {
        stats: stats.clone(),
    })
    .await;
    let to_id = to.id;
    from.wait_view("the new stats", |v| {
        v.get(&to_id).is_some_and(|p| p.stats == stats)
    })
    .await;
}

/// A JSON text of exactly `size` bytes.
fn json_of_size(size: usize) -> String {
    format!("\"{}\"", "x".repeat(size - 2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_first_frame_gets_an_error_and_a_close_and_others_keep_working() {
    let mut server = Server::start(ServerConfig::open()).await;
    let mut a = Peer::join(&server.url, "p", "a").await;
    let mut b = Peer::join(&server.url, "p", "b").await;
    a.wait_member(b.id).await;

    // An older peer's hello (no key): its version is what is wrong.
    let wrong_version = json!({"type": "hello", "version": 99, "peer_id": PeerId::random(),
        "name": "x", "pool": "p", "capabilities": [], "slots": 1});
    let mut bad_pool =
        serde_json::to_value(hello(&Identity::generate(), "nonce", "p", "x")).expect("json");
    bad_pool["pool"] = json!("no spaces allowed");
    let limit = MAX_SIGNAL_MESSAGE.to_string();
    let cases: Vec<(&str, Message, ErrorCode, String)> = vec![
        (
            "invalid JSON",
            Message::text("{not json"),
            ErrorCode::BadMessage,
            "invalid JSON".into(),
        ),
        (
            "no type",
            Message::text(r#"{"version":1}"#),
            ErrorCode::BadMessage,
            "\"type\"".into(),
        ),
        (
            "unknown type",
            Message::text(r#"{"type":"teleport"}"#),
            ErrorCode::BadMessage,
            "unknown message type \"teleport\"".into(),
        ),
        (
            "wrong version",
            Message::text(wrong_version.to_string()),
            ErrorCode::WrongVersion,
            "unsupported protocol version 99".into(),
        ),
        (
            "invalid field",
            Message::text(bad_pool.to_string()),
            ErrorCode::BadMessage,
            "invalid pool".into(),
        ),
        (
            "oversized by one byte",
            Message::text(json_of_size(MAX_SIGNAL_MESSAGE + 1)),
            ErrorCode::BadMessage,
            format!(
                "too large: {} bytes, the limit is {limit}",
                MAX_SIGNAL_MESSAGE + 1
            ),
        ),
        (
            "oversized far beyond the limit",
            Message::text(json_of_size(16 * MAX_SIGNAL_MESSAGE)),
            ErrorCode::BadMessage,
            format!(
                "too large: {} bytes, the limit is {limit}",
                16 * MAX_SIGNAL_MESSAGE
            ),
        ),
        (
            "first frame not a hello",
            Message::text(encode(&ClientMsg::Stats {
                stats: Stats::default(),
            })),
            ErrorCode::ExpectedHello,
            "first message must be a hello".into(),
        ),
        (
            "binary frame",
            Message::binary(vec![1u8, 2, 3]),
            ErrorCode::BadMessage,
            "binary frames".into(),
        ),
        (
            "text frame that is not UTF-8",
            Message::Frame(Frame::message(
                vec![b'"', 0xff, 0xfe, b'"'],
                OpCode::Data(Data::Text),
                true,
            )),
            ErrorCode::BadMessage,
            "UTF-8".into(),
        ),
    ];
    let mut refused = 0;
    for (what, frame, code, needle) in cases {
        let mut bad = Peer::reading(connect(&server.url).await, Identity::generate()).await;
        // The server may reset a socket it refused while a big frame is
        // still being written; what matters is what the client reads.
        let _ = bad.try_send_raw(frame).await;
        println!("case: {what}");
        bad.expect_error_then_close(code, &needle, POLICY).await;
        refused += 1;
        assert_eq!(server.count(|c| &c.rejected_frames), refused, "{what}");
    }

    // The peers connected all along still relay and see stats, both ways.
    still_working(&mut a, &mut b).await;
    still_working(&mut b, &mut a).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joined_peer_that_misbehaves_is_closed_and_announced_as_left() {
    let mut server = Server::start(ServerConfig::open()).await;
    let mut a = Peer::join(&server.url, "p", "a").await;
    let mut b = Peer::join(&server.url, "p", "b").await;
    a.wait_member(b.id).await;
    let bad_frames: Vec<(Message, ErrorCode, &str)> = vec![
        (Message::text("[]"), ErrorCode::BadMessage, "\"type\""),
        (
            Message::text(encode(&hello(&Identity::generate(), "nonce", "p", "again"))),
            ErrorCode::ExpectedHello,
            "only once",
        ),
        (
            Message::text(
                json!({"type": "relay", "to": PeerId::random(),
                    "signal": {"kind": "offer", "sdp": "x".repeat(40 * 1024)}})
                .to_string(),
            ),
            ErrorCode::BadMessage,
            "invalid signal",
        ),
        (
            Message::text(json_of_size(MAX_SIGNAL_MESSAGE + 100)),
            ErrorCode::BadMessage,
            "too large",
        ),
    ];
    for (frame, code, needle) in bad_frames {
        let mut c = Peer::join(&server.url, "p", "c").await;
        a.wait_member(c.id).await;
        b.wait_member(c.id).await;
        c.send_raw(frame).await;
        c.expect_error_then_close(code, needle, POLICY).await;
        a.wait_gone(c.id).await;
        b.wait_gone(c.id).await;
    }
    still_working(&mut a, &mut b).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_never_says_hello_is_closed_at_the_hello_deadline() {
    let mut server = Server::start(ServerConfig {
        hello_timeout: Duration::from_millis(200),
        ..ServerConfig::open()
    })
    .await;
    let mut mute = Peer::reading(connect(&server.url).await, Identity::generate()).await;
    mute.expect_error_then_close(ErrorCode::HelloTimeout, "no hello within 200 ms", POLICY)
        .await;
    // Pings before the hello do not count as one.
    let mut pinger = Peer::reading(connect(&server.url).await, Identity::generate()).await;
    pinger.send_raw(Message::Ping(Default::default())).await;
    pinger
        .expect_error_then_close(ErrorCode::HelloTimeout, "no hello", POLICY)
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_and_a_peer_id_without_its_key_are_refused_and_its_key_replaces_its_old_socket()
{
    let mut server = Server::start(ServerConfig {
        max_peers_per_pool: 2,
        ..ServerConfig::open()
    })
    .await;
    let mut a = Peer::join(&server.url, "small", "a").await;
    let b = Peer::join(&server.url, "small", "b").await;
    a.wait_member(b.id).await;

    let mut third = Peer::reading(connect(&server.url).await, Identity::generate()).await;
    third.send(&third.hello("small", "third")).await;
    third
        .expect_error_then_close(
            ErrorCode::PoolFull,
            "pool \"small\" is full (2 peers)",
            POLICY,
        )
        .await;

    // A squatter claiming B's id with a key of its own.
    let mut squatter = Peer::reading(connect(&server.url).await, Identity::generate()).await;
    let ClientMsg::Hello(mut claim) = squatter.hello("small", "squatter") else {
        unreachable!("a hello")
    };
    claim.peer_id = b.id;
    squatter.send(&ClientMsg::Hello(claim)).await;
    squatter
        .expect_error_then_close(ErrorCode::BadProof, "is not the id of the key", POLICY)
        .await;

    // B's own key on a new socket: the new one replaces the old.
    let (b_id, b_key) = (b.id, b.identity.clone());
    let mut old_b = b;
    let b = Peer::join_on(connect(&server.url).await, b_key, "small", "b-again").await;
    let heard = old_b.heard().await;
    assert!(
        matches!(heard, common::Heard::Closed(_)),
        "the old socket is closed: {heard:?}"
    );
    a.wait_view("B described by its new hello", |v| {
        v.get(&b_id).is_some_and(|p| p.name == "b-again")
    })
    .await;

    // None of it disturbed the pool, and B's departure makes room for a
    // newcomer.
    drop(b);
    a.wait_gone(b_id).await;
    let c = Peer::join(&server.url, "small", "c").await;
    a.wait_member(c.id).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_that_does_not_prove_its_peer_id_is_refused() {
    let mut server = Server::start(ServerConfig::open()).await;
    let mut a = Peer::join(&server.url, "p", "a").await;

    // A valid hello of another connection, replayed here: another nonce.
    let elsewhere = Peer::reading(connect(&server.url).await, Identity::generate()).await;
    let captured = elsewhere.hello("p", "captured");
    let mut replay = Peer::reading(connect(&server.url).await, Identity::generate()).await;
    replay.send(&captured).await;
    replay
        .expect_error_then_close(ErrorCode::BadProof, "does not verify", POLICY)
        .await;

    // A proof that is not a signature of the key, and a proof made for
    // another pool than the one asked for.
    let mut forger = Peer::reading(connect(&server.url).await, Identity::generate()).await;
    let ClientMsg::Hello(mut forged) = forger.hello("p", "forger") else {
        unreachable!("a hello")
    };
    forged.proof = Identity::generate().sign(jobmesh_identity::Purpose::SignalAdmission, b"x");
    forger.send(&ClientMsg::Hello(forged)).await;
    forger
        .expect_error_then_close(ErrorCode::BadProof, "does not verify", POLICY)
        .await;
    let mut mover = Peer::reading(connect(&server.url).await, Identity::generate()).await;
    let ClientMsg::Hello(mut moved) = mover.hello("p", "mover") else {
        unreachable!("a hello")
    };
    moved.pool = "other".into();
    mover.send(&ClientMsg::Hello(moved)).await;
    mover
        .expect_error_then_close(ErrorCode::BadProof, "does not verify", POLICY)
        .await;

    // None of them joined: a newcomer is the only member A hears of.
    let b = Peer::join(&server.url, "p", "b").await;
    a.wait_member(b.id).await;
    assert_eq!(a.members().len(), 1, "{:?}", a.members());
    drop(elsewhere);
    server.stop().await;
}

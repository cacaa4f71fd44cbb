//! Liveness: with a short heartbeat, a client that stops reading (so it never
//! answers the server's pings) is removed and its pool told, while
//! a client that keeps reading (and so answers pings) stays.

mod common;

use std::time::Duration;

use common::{challenge, connect, hello, Peer, Server};
use futures_util::{SinkExt, StreamExt};
use jobmesh_identity::Identity;
use jobmesh_signal_server::ServerConfig;
use jobmesh_wire::signal::encode;
use jobmesh_wire::PeerId;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_removed_and_announced_as_left() {
    let mut server = Server::start(ServerConfig {
        heartbeat: Duration::from_millis(200),
        ..ServerConfig::open()
    })
    .await;
    let mut alive = Peer::join(&server.url, "p", "alive").await;

    // The silent client says hello, reads its welcome, and never reads again.
    let mut silent = connect(&server.url).await;
    let nonce = challenge(&mut silent).await;
    let silent_key = Identity::generate();
    let silent_id = silent_key.peer_id();
    silent
        .send(Message::text(encode(&hello(
            &silent_key,
            &nonce,
            "p",
            "silent",
        ))))
        .await
        .expect("send hello");
    let welcome = common::within("the welcome", silent.next()).await;
    assert!(matches!(welcome, Some(Ok(Message::Text(_)))), "{welcome:?}");
    alive.wait_member(silent_id).await;

    // The reading client hears of its removal, and is itself never removed.
    alive.wait_gone(silent_id).await;
    assert_eq!(server.count(|c| &c.clients_expired), 1);
    assert_eq!(server.count(|c| &c.clients_dropped_slow), 0);

    // The silent client's socket was closed by the server: once it reads
    // again, it finds the end of the stream (after whatever was buffered).
    common::within("the silent socket to end", async {
        loop {
            match silent.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;

    // The survivor still works: a newcomer sees it, and it sees the newcomer.
    let newcomer = Peer::join(&server.url, "p", "newcomer").await;
    let ids: Vec<PeerId> = newcomer.members().iter().map(|p| p.id).collect();
    assert_eq!(ids, vec![alive.id]);
    alive.wait_member(newcomer.id).await;
    server.stop().await;
}

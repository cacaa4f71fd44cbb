//! A peer that closes its socket, with or without a close handshake, leaves
//! its pool at once: the others' views drop it, and its id may join again.

mod common;

use common::{connect, Peer, Server};
use jobmesh_signal_server::ServerConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_closes_its_socket_is_announced_as_left() {
    let mut server = Server::start(ServerConfig::open()).await;
    let mut a = Peer::join(&server.url, "p", "a").await;
    let mut b = Peer::join(&server.url, "p", "b").await;
    let mut c = Peer::join(&server.url, "p", "c").await;
    let (b_id, b_key) = (b.id, b.identity.clone());
    a.wait_member(b_id).await;
    a.wait_member(c.id).await;
    b.wait_member(c.id).await;
    assert_eq!(c.members().len(), 2);

    // A clean close.
    b.close().await;
    // The server answers the close handshake.
    let heard = b.heard().await;
    assert!(matches!(heard, common::Heard::Closed(_)), "{heard:?}");
    a.wait_gone(b_id).await;
    c.wait_gone(b_id).await;

    // The same key (so the same id) may come back on a new socket.
    let again = Peer::join_on(connect(&server.url).await, b_key, "p", "b-again").await;
    assert_eq!(a.wait_member(b_id).await.name, "b-again");
    assert_eq!(c.wait_member(b_id).await.name, "b-again");

    // A socket dropped without a close handshake.
    drop(again);
    a.wait_gone(b_id).await;
    c.wait_gone(b_id).await;
    server.stop().await;
}

//! A peer that closes its socket, with or without a close handshake, leaves
//! its pool at once: the others get `peer_left`, and its id may join again.

mod common;

use common::{connect, Peer, Server};
use jobmesh_signal::ServerConfig;
use jobmesh_wire::signal::ServerMsg;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_closes_its_socket_is_announced_as_left() {
    let mut server = Server::start(ServerConfig::default()).await;
    let mut a = Peer::join(&server.url, "p", "a").await;
    let mut b = Peer::join(&server.url, "p", "b").await;
    let mut c = Peer::join(&server.url, "p", "c").await;
    let b_id = b.id;
    assert!(matches!(a.next().await, ServerMsg::PeerJoined { peer } if peer.id == b_id));
    assert!(matches!(a.next().await, ServerMsg::PeerJoined { peer } if peer.id == c.id));
    assert!(matches!(b.next().await, ServerMsg::PeerJoined { peer } if peer.id == c.id));
    assert_eq!(c.welcome_peers.len(), 2);

    // A clean close.
    b.close().await;
    // The server answers the close handshake.
    let heard = b.heard().await;
    assert!(matches!(heard, common::Heard::Closed(_)), "{heard:?}");
    assert_eq!(a.next().await, ServerMsg::PeerLeft { peer_id: b_id });
    assert_eq!(c.next().await, ServerMsg::PeerLeft { peer_id: b_id });

    // The same id may come back on a new socket.
    let again = Peer::join_on(connect(&server.url).await, b_id, "p", "b-again").await;
    assert!(matches!(a.next().await, ServerMsg::PeerJoined { peer } if peer.id == b_id));
    assert!(matches!(c.next().await, ServerMsg::PeerJoined { peer } if peer.id == b_id));

    // A socket dropped without a close handshake.
    drop(again);
    assert_eq!(a.next().await, ServerMsg::PeerLeft { peer_id: b_id });
    assert_eq!(c.next().await, ServerMsg::PeerLeft { peer_id: b_id });
    server.stop().await;
}

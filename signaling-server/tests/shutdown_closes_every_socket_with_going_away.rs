//! Cancelling the token stops the server: every socket, joined or not yet,
//! gets `error{going_away}` and a close frame with code 1001, `run` returns
//! `Ok`, and nothing listens on the port any more.

mod common;

use common::{connect, Peer, Server};
use jobmesh_identity::Identity;
use jobmesh_signal_server::ServerConfig;
use jobmesh_wire::signal::ErrorCode;

const GOING_AWAY: u16 = 1001;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_every_socket_with_going_away() {
    let mut server = Server::start(ServerConfig::open()).await;
    let mut a = Peer::join(&server.url, "p", "a").await;
    let mut b = Peer::join(&server.url, "p", "b").await;
    a.wait_member(b.id).await;
    // Connected, but no hello yet: waiting for one when the server stops.
    let mut waiting = Peer::reading(connect(&server.url).await, Identity::generate()).await;

    server.stop().await;

    // Each hears the error first: no peer_left is sent on the way out.
    for peer in [&mut a, &mut b, &mut waiting] {
        peer.expect_error_then_close(ErrorCode::GoingAway, "shutting down", GOING_AWAY)
            .await;
    }

    // The listener is gone.
    assert!(
        tokio::net::TcpStream::connect(server.addr).await.is_err(),
        "nothing listens after shutdown"
    );
}

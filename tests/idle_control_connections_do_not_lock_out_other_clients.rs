//! A daemon serves at most `MAX_CONTROL_CONNECTIONS` control connections at
//! once; connections that never send a request give their slot back after
//! `FIRST_REQUEST_TIMEOUT`, so a local process holding every slot idle
//! delays the next client, and does not lock it out.

use jobmesh_peer::control::{self, Request, MAX_CONTROL_CONNECTIONS};
use jobmesh_testkit::{init_tracing, within, PeerGuard, SignalGuard};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_control_connections_give_their_slots_back() {
    init_tracing();
    let mut server = SignalGuard::start().await;
    let peer = PeerGuard::start(server.url(), "idle", "p", &[], 0);
    let control = peer.serve_control().await;
    let mut idle = Vec::new();
    for _ in 0..MAX_CONTROL_CONNECTIONS {
        idle.push(
            tokio::net::UnixStream::connect(&control.path)
                .await
                .expect("connect"),
        );
    }
    // Every slot is held by a connection that says nothing; this request
    // waits for one to be given back, then is answered.
    let reply = within("an answer past the idle connections", async {
        control::request(&control.path, &Request::Peers).await
    })
    .await
    .expect("answer");
    assert!(reply.get("peers").is_some(), "{reply}");
    drop(idle);
    server.stop().await;
}

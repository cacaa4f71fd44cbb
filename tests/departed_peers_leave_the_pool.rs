use jobmesh_testkit::{init_tracing, PeerGuard, SignalGuard};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_shuts_down_disappears_from_the_others_lists() {
    init_tracing();
    let mut server = SignalGuard::start().await;
    let stayer = PeerGuard::start(server.url(), "t6", "stayer", &["echo"], 1);
    let leaver = PeerGuard::start(server.url(), "t6", "leaver", &["echo"], 1);
    let leaver_id = leaver.handle.id();
    stayer
        .wait_pool("the leaver to appear", |s| {
            s.peers.iter().any(|p| p.id == leaver_id)
        })
        .await;
    leaver.stop().await;
    stayer
        .wait_pool("the leaver to disappear", |s| {
            s.peers.iter().all(|p| p.id != leaver_id)
        })
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_goes_silent_is_removed_within_the_heartbeat_deadline() {
    init_tracing();
    // 100 ms heartbeats: a silent peer must be gone within 3 intervals (+ sweep).
    let mut server = SignalGuard::start_with_heartbeat(std::time::Duration::from_millis(100)).await;
    let watcher = PeerGuard::start(server.url(), "t6b", "watcher", &[], 0);
    let silent = server.silent_client("t6b").await;
    watcher
        .wait_pool("the silent peer to appear", |s| {
            s.peers.iter().any(|p| p.id == silent.id)
        })
        .await;
    watcher
        .wait_pool("the silent peer to be removed", |s| {
            s.peers.iter().all(|p| p.id != silent.id)
        })
        .await;
    drop(silent);
    server.stop().await;
}

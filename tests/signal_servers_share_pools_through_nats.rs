//! Several signal-servers, one pool (issue 22): three real `signal-server`
//! processes share their members through a real `nats-server` (Debian's,
//! `scripts/setup`), each owning the peers connected to it. Every peer's
//! view is the whole pool and jobs flow between peers of different servers;
//! when a server is killed, its peers move to the next of their `--signal`
//! list and are seen there, and jobs go on.

use std::time::Duration;

use jobmesh_core::JobOptions;
use jobmesh_peer::StrategyKind;
use jobmesh_testkit::process::{nats_server, signal_server_with, Proc};
use jobmesh_testkit::{cap, init_tracing, within, PeerGuard};
use serde_json::json;

/// Three signal-servers clustered through one nats-server.
fn cluster() -> (Proc, Vec<(Proc, String)>) {
    let (nats, url) = nats_server(0);
    let servers = (0..3)
        .map(|_| signal_server_with(&["--open", "--cluster", &url]))
        .collect();
    (nats, servers)
}

async fn echo(from: &PeerGuard, n: u32) -> serde_json::Value {
    let r = within(
        "an echo across servers",
        from.handle
            .run(cap("echo"), json!({ "n": n }), Duration::from_secs(15)),
    )
    .await
    .expect("an envelope");
    r.result.expect("completed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_on_three_servers_see_one_pool_and_run_each_others_jobs() {
    init_tracing();
    let (_nats, servers) = cluster();
    let urls: Vec<&str> = servers.iter().map(|(_, u)| u.as_str()).collect();
    let w1 = PeerGuard::start(urls[0], "shared", "w1", &["echo"], 2);
    let w2 = PeerGuard::start(urls[1], "shared", "w2", &["echo"], 2);
    let s = PeerGuard::start(urls[2], "shared", "s", &[], 0);
    // Every view is the whole pool, each member once.
    for p in [&w1, &w2, &s] {
        p.wait_pool("the whole pool", |v| v.synced && v.peers.len() == 2)
            .await;
    }
    s.wait_capable("echo", 2).await;
    // Jobs go to both workers, each on another server than the submitter:
    // the handshakes crossed the cluster.
    let mut seen = std::collections::BTreeSet::new();
    for n in 0..6 {
        let r = within(
            "an echo across servers",
            s.handle.run(
                cap("echo"),
                json!({ "n": n }),
                JobOptions {
                    strategy: Some(StrategyKind::RoundRobin),
                    ..JobOptions::from(Duration::from_secs(15))
                },
            ),
        )
        .await
        .expect("an envelope");
        assert_eq!(r.result, Ok(json!({ "n": n })));
        seen.extend(r.worker.map(|(_, name)| name));
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["w1", "w2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peers_of_a_killed_server_move_to_the_others_and_jobs_go_on() {
    init_tracing();
    let (_nats, mut servers) = cluster();
    let urls: Vec<String> = servers.iter().map(|(_, u)| u.clone()).collect();
    // The worker starts on server 0 and knows the others.
    let rest = urls[1..].to_vec();
    let worker = PeerGuard::start_configured(&urls[0], "moving", "w", &["echo"], 2, |c| {
        c.signal_fallbacks = rest;
    });
    let s = PeerGuard::start(&urls[2], "moving", "s", &[], 0);
    s.wait_capable("echo", 1).await;
    assert_eq!(echo(&s, 1).await, json!({ "n": 1 }));

    let (mut killed, _) = servers.remove(0);
    killed.kill_now();
    // It reconnects to server 1: seen there by everyone, once.
    worker
        .wait_pool("the worker to join another server", |v| {
            v.connected && v.synced
        })
        .await;
    s.wait_pool("the worker once", |v| {
        v.synced && v.peers.iter().filter(|p| p.name == "w").count() == 1
    })
    .await;
    assert_eq!(echo(&s, 2).await, json!({ "n": 2 }));
}

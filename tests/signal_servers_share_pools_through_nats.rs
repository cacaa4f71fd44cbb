//! Several signal-servers, one pool (issue 22): three real `signal-server`
//! processes share their members through a real `nats-server` (Debian's,
//! `scripts/setup`), each owning the peers connected to it. Every peer's
//! view is the whole pool and jobs flow between peers of different servers;
//! when a server is killed, its peers move to the next of their `--signal`
//! list and are seen there, and jobs go on.

use std::time::Duration;

use jobmesh_core::JobOptions;
use jobmesh_peer::StrategyKind;
use jobmesh_testkit::process::{http_get, metric, nats_server, signal_server_with, Proc};
use jobmesh_testkit::{cap, init_tracing, within, PeerGuard};
use serde_json::json;

/// The admin token of [`cluster`]'s servers (for `/metrics`).
const TOKEN: &str = "cluster-test-token";

/// Three signal-servers clustered through one nats-server.
fn cluster() -> (Proc, Vec<(Proc, String)>) {
    let (nats, url) = nats_server(0);
    let token = tempfile::NamedTempFile::new().expect("a token file");
    std::fs::write(token.path(), TOKEN).expect("write the token");
    let token = token.path().to_str().expect("utf-8");
    let servers = (0..3)
        .map(|_| signal_server_with(&["--open", "--cluster", &url, "--admin-token-file", token]))
        .collect();
    (nats, servers)
}

/// The `/metrics` text of the signal-server at `url` (`ws://HOST:PORT/ws`).
fn metrics_of(url: &str) -> String {
    let addr = url
        .strip_prefix("ws://")
        .and_then(|u| u.strip_suffix("/ws"))
        .expect("a ws:// url");
    let (status, text) = http_get(addr, "/metrics", Some(TOKEN));
    assert!(status.contains("200"), "{status}");
    text
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
    // The submitter's server says so: two other servers, its member's
    // changes published, the others' applied, handshakes both ways.
    let text = metrics_of(urls[2]);
    assert_eq!(metric(&text, "jobmesh_signal_cluster_servers"), 2.0);
    assert_eq!(metric(&text, "jobmesh_signal_peers"), 3.0);
    assert!(metric(&text, "jobmesh_signal_cluster_batches_published_total") >= 1.0);
    assert!(metric(&text, "jobmesh_signal_cluster_changes_applied_total") >= 2.0);
    let out = r#"jobmesh_signal_cluster_relays_total{direction="out"}"#;
    let into = r#"jobmesh_signal_cluster_relays_total{direction="in"}"#;
    assert!(metric(&text, out) >= 2.0, "two offers out\n{text}");
    assert!(metric(&text, into) >= 2.0, "two answers in\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peers_of_a_killed_server_move_to_the_others_and_jobs_go_on() {
    init_tracing();
    let (_nats, mut servers) = cluster();
    let urls: Vec<String> = servers.iter().map(|(_, u)| u.clone()).collect();
    // The worker starts on server 0 and knows the others.
    let rest = urls[1..].to_vec();
    let worker = PeerGuard::start_configured(&urls[0], "moving", "w", &["echo", "sleep"], 2, |c| {
        c.signal_fallbacks = rest;
    });
    let s = PeerGuard::start(&urls[2], "moving", "s", &[], 0);
    s.wait_capable("echo", 1).await;
    assert_eq!(echo(&s, 1).await, json!({ "n": 1 }));
    // A job in flight when the worker's server dies: it runs on the link,
    // which needs no server.
    let handle = s.handle.clone();
    let in_flight = tokio::spawn(async move {
        handle
            .run(cap("sleep"), json!({ "ms": 3000 }), Duration::from_secs(30))
            .await
    });
    s.wait_pool("the worker to run the sleep", |v| {
        v.peers
            .iter()
            .any(|p| p.name == "w" && p.stats.running >= 1)
    })
    .await;

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
    let r = within("the job that was in flight", in_flight)
        .await
        .expect("the task ran")
        .expect("an envelope");
    assert_eq!(r.attempts.len(), 1, "it ran once, on the same worker");
    assert!(r.result.is_ok(), "{:?}", r.result);
}

/// The port of a `nats://127.0.0.1:PORT` URL.
fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_serve_their_own_peers_while_nats_is_away_and_converge_after() {
    init_tracing();
    let (nats, nats_url) = nats_server(0);
    let (_a, a) = signal_server_with(&["--open", "--cluster", &nats_url]);
    let (_b, b) = signal_server_with(&["--open", "--cluster", &nats_url]);
    let w1 = PeerGuard::start(&a, "split", "w1", &["echo"], 2);
    let near = PeerGuard::start(&a, "split", "near", &[], 0);
    let far = PeerGuard::start(&b, "split", "far", &[], 0);
    far.wait_capable("echo", 1).await;
    near.wait_capable("echo", 1).await;

    drop(nats);
    let away = std::time::Instant::now();
    // Each server goes on serving its own peers.
    assert_eq!(echo(&near, 1).await, json!({ "n": 1 }));
    // The other server's members go once its heartbeats stop.
    far.wait_pool("w1 to go from b's view", |v| {
        v.peers.iter().all(|p| p.name != "w1")
    })
    .await;
    // Someone joins a while the cluster is split.
    let w2 = PeerGuard::start(&a, "split", "w2", &["echo"], 2);
    near.wait_capable("echo", 2).await;
    // The outage lasts 30 s (the scenario's length, not a wait for anything).
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(away.elapsed())).await;

    let (_nats, _) = nats_server(port_of(&nats_url));
    // Both servers reconnect, meet again and exchange snapshots: b sees all
    // of a's members, once each, and reaches them.
    far.wait_pool("a's members again, once each", |v| {
        v.synced
            && ["w1", "w2", "near"]
                .iter()
                .all(|n| v.peers.iter().filter(|p| p.name == *n).count() == 1)
    })
    .await;
    assert_eq!(echo(&far, 2).await, json!({ "n": 2 }));
    drop((w1, w2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_keeps_none_of_its_old_members() {
    init_tracing();
    let (_nats, nats_url) = nats_server(0);
    let args = |id: &'static str| ["--open", "--cluster", nats_url.as_str(), "--server-id", id];
    let (mut a, a_url) = signal_server_with(&args("a"));
    let (_b, b_url) = signal_server_with(&args("b"));
    let gone = PeerGuard::start(&a_url, "restart", "gone", &["echo"], 1);
    let s = PeerGuard::start(&b_url, "restart", "s", &[], 0);
    s.wait_capable("echo", 1).await;

    // Server a dies with its peer, and comes back (same name, a new run).
    a.kill_now();
    drop(gone);
    let listen = a_url
        .trim_start_matches("ws://")
        .trim_end_matches("/ws")
        .to_owned();
    let (_a, a_url) = jobmesh_testkit::process::signal_server_on(&listen, &args("a"));
    let back = PeerGuard::start(&a_url, "restart", "back", &["echo"], 1);
    // b's view holds what the new run has, and nothing of the old one.
    s.wait_pool("only the new run's member", |v| {
        v.synced && v.peers.iter().map(|p| p.name.as_str()).eq(["back"])
    })
    .await;
    assert_eq!(echo(&s, 3).await, json!({ "n": 3 }));
    drop(back);
}

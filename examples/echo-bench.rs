//! A first measurement of jobmesh's overhead: one signal-server, two worker
//! daemons and one submitter in this process, real WebRTC over loopback.
//!
//! ```sh
//! cargo run --release --example echo-bench
//! ```
//!
//! Prints: time to the first result (includes opening the data channel),
//! sequential `echo` round trips (p50/p99/max), and the rate of many jobs
//! submitted at once. `docs/performance.md` records the figures.

use std::time::{Duration, Instant};

use anyhow::Context;
use jobmesh_peer::{DaemonConfig, PeerHandle};
use jobmesh_transport::rtc::RtcConfig;
use jobmesh_wire::Capability;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const SEQUENTIAL: usize = 1000;
const WARMUP: usize = 200;
const CONCURRENT: usize = 10_000;

fn start(
    url: &str,
    name: &str,
    caps: &[&str],
    slots: u32,
    stop: &CancellationToken,
) -> anyhow::Result<PeerHandle> {
    let mut config = DaemonConfig::new(url, name, "bench");
    config.membership = jobmesh_peer::Membership::Open;
    config.capabilities = caps
        .iter()
        .filter_map(|c| Capability::new(c).ok())
        .collect();
    config.slots = slots;
    config.rtc = RtcConfig {
        udp_addrs: vec!["127.0.0.1:0".into()],
        ..RtcConfig::default()
    };
    Ok(jobmesh_peer::spawn(config, stop.child_token())?)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}/ws", listener.local_addr()?);
    tokio::spawn(jobmesh_signal_server::run(
        listener,
        jobmesh_signal_server::ServerConfig::open(),
        stop.clone(),
    ));
    // Slots are generous so the concurrent run measures the mesh, not queueing.
    let w1 = start(&url, "w1", &["echo"], 64, &stop)?;
    let w2 = start(&url, "w2", &["echo"], 64, &stop)?;
    let sub = start(&url, "sub", &[], 0, &stop)?;
    sub.wait_pool(Duration::from_secs(10), |s| {
        s.peers.iter().filter(|p| p.stats.slots > 0).count() == 2
    })
    .await
    .context("workers did not join")?;
    let echo = Capability::new("echo")?;
    let timeout = Duration::from_secs(30);

    let t = Instant::now();
    sub.run(echo.clone(), json!(0), timeout).await?.result?;
    let first = t.elapsed();
    // Open the link to the second worker too.
    for _ in 0..4 {
        sub.run(echo.clone(), json!(0), timeout).await?.result?;
    }

    let input = json!("0123456789abcdef");
    let mut samples = Vec::with_capacity(SEQUENTIAL);
    for i in 0..WARMUP + SEQUENTIAL {
        let t = Instant::now();
        sub.run(echo.clone(), input.clone(), timeout)
            .await?
            .result?;
        if i >= WARMUP {
            samples.push(t.elapsed());
        }
    }
    samples.sort();

    let t = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENT)
        .map(|n| {
            let sub = sub.clone();
            let echo = echo.clone();
            tokio::spawn(async move { sub.run(echo, json!(n), timeout).await })
        })
        .collect();
    for (n, task) in tasks.into_iter().enumerate() {
        anyhow::ensure!(
            task.await??.result? == json!(n),
            "job {n} returned someone else's result"
        );
    }
    let burst = t.elapsed();

    println!("jobmesh echo-bench (2 workers, 1 submitter, one process, loopback WebRTC)");
    println!(
        "  first result, data channel included : {:8.1} ms",
        ms(first)
    );
    println!(
        "  sequential round trip ({SEQUENTIAL} after {WARMUP} warm-up): p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99)),
        ms(percentile(&samples, 1.0)),
    );
    println!(
        "  {CONCURRENT} jobs submitted at once      : {:8.0} jobs/s ({:.2} s)",
        CONCURRENT as f64 / burst.as_secs_f64(),
        burst.as_secs_f64()
    );
    let received = |h: &PeerHandle| jobmesh_peer::Metrics::get(&h.metrics().submits_received);
    println!(
        "  submits received by the workers       : w1 {}, w2 {} (every job checked: result == input)",
        received(&w1),
        received(&w2)
    );
    stop.cancel();
    Ok(())
}

//! Blob transfer figures: one signal-server, a worker whose `copy` handler
//! returns its input file, and a submitter, in this process, real WebRTC over
//! loopback (so both daemons share this machine's cores).
//!
//! ```sh
//! cargo run --release --example blob-bench
//! ```
//!
//! Prints, for several sizes, the round-trip rate (each byte goes to the
//! worker and back, digest-checked and spooled on both sides), and the `echo`
//! round trip on the same link while a large blob streams: control messages
//! go before blob chunks. `docs/performance.md` records the figures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use jobmesh_peer::handlers::{handler_fn, HandlerError};
use jobmesh_peer::{Blob, DaemonConfig, Extensions, JobOptions, PeerHandle};
use jobmesh_transport::rtc::RtcConfig;
use jobmesh_wire::Capability;
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn config(url: &str, name: &str, caps: &[&str]) -> DaemonConfig {
    let mut config = DaemonConfig::new(url, name, "blobs");
    config.membership = jobmesh_peer::Membership::Open;
    config.capabilities = caps
        .iter()
        .filter_map(|c| Capability::new(c).ok())
        .collect();
    config.slots = 4;
    config.dispatcher.self_dispatch = false;
    config.rtc = RtcConfig {
        udp_addrs: vec!["127.0.0.1:0".into()],
        ..RtcConfig::default()
    };
    // To compare send-buffer sizes: BLOB_BENCH_SEND_BUFFER_KIB=256.
    if let Some(kib) = std::env::var("BLOB_BENCH_SEND_BUFFER_KIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        config.rtc.send_buffer_limit = kib * 1024;
    }
    config
}

fn pseudo_random(n: usize) -> Vec<u8> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

async fn copy(
    sub: &PeerHandle,
    data: &Arc<Vec<u8>>,
    path: &std::path::Path,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let job = sub
        .submit_with_blobs(
            "copy".parse()?,
            json!({}),
            vec![Blob::from_file(path)],
            JobOptions::from(Duration::from_secs(600)),
        )
        .await?;
    let report = job.result().await?;
    let took = started.elapsed();
    report.result.context("copy job")?;
    let back = report.blobs.first().context("no blob back")?;
    anyhow::ensure!(back.size() == data.len() as u64, "size differs");
    Ok(took)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}/ws", listener.local_addr()?);
    tokio::spawn(jobmesh_signal_server::run(
        listener,
        Default::default(),
        stop.clone(),
    ));

    let mut ext = Extensions::default();
    // Returns its input file as its output: the bytes cross the link twice.
    ext.handlers.insert(
        "copy".parse()?,
        Arc::new(handler_fn(|_input, ctx| async move {
            let blob = ctx
                .blobs()
                .first()
                .cloned()
                .ok_or_else(|| HandlerError::permanent("no blob"))?;
            ctx.attach(Blob::from_file(blob.path));
            Ok(json!(null))
        })),
    );
    let worker = jobmesh_peer::spawn_with(
        config(&url, "w", &["copy", "echo"]),
        ext,
        stop.child_token(),
    )?;
    let sub = jobmesh_peer::spawn(config(&url, "s", &[]), stop.child_token())?;
    sub.wait_pool(Duration::from_secs(10), |s| {
        s.peers.iter().any(|p| p.stats.slots > 0)
    })
    .await?;
    // Open the link first: setup time is not transfer time.
    sub.run("echo".parse()?, json!(1), Duration::from_secs(10))
        .await?;

    let dir = tempfile::tempdir()?;
    println!("blob round trips (submitter -> worker -> submitter), median of the runs:");
    for (mib, runs) in [(1usize, 20), (16, 5), (64, 3), (256, 3)] {
        let data = Arc::new(pseudo_random(mib << 20));
        let path = dir.path().join(format!("{mib}.bin"));
        std::fs::write(&path, data.as_slice())?;
        let mut times = Vec::new();
        for _ in 0..runs {
            times.push(copy(&sub, &data, &path).await?);
        }
        times.sort();
        let median = times[times.len() / 2];
        let mb = 2.0 * (mib << 20) as f64 / 1e6;
        println!(
            "  {mib:>4} MiB: {:>8.1} ms  {:>6.1} MB/s moved (both ways)  [{:.1}-{:.1} ms]",
            median.as_secs_f64() * 1e3,
            mb / median.as_secs_f64(),
            times[0].as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3,
        );
    }

    // Echo round trips on the same link while 256 MiB streams both ways.
    let data = Arc::new(pseudo_random(256 << 20));
    let path = dir.path().join("bg.bin");
    std::fs::write(&path, data.as_slice())?;
    let bg = {
        let sub = sub.clone();
        let data = data.clone();
        tokio::spawn(async move { copy(&sub, &data, &path).await })
    };
    let mut rtts = Vec::new();
    while !bg.is_finished() {
        let t = Instant::now();
        sub.run("echo".parse()?, json!(1), Duration::from_secs(10))
            .await?
            .result?;
        rtts.push(t.elapsed());
    }
    bg.await??;
    rtts.sort();
    let p = |q: f64| rtts[((rtts.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!(
        "echo during a 256 MiB transfer on the same link: {} round trips, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        rtts.len(),
        p(0.5),
        p(0.99),
        p(1.0)
    );

    for h in [&sub, &worker] {
        h.shutdown();
        h.stopped().await;
    }
    stop.cancel();
    Ok(())
}

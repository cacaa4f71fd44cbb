//! A local jobmesh on this machine: a signal-server and two worker peers in one
//! process, plus a submit-only daemon serving the default control socket. It
//! submits a demo job, prints the commands to use from another terminal, and
//! runs until Ctrl-C.
//!
//! ```sh
//! cargo run --release --example local-mesh            # listens on 127.0.0.1:7070
//! JOBMESH_LISTEN=127.0.0.1:0 cargo run --release --example local-mesh
//! ```

use std::time::Duration;

use anyhow::Context;
use jobmesh_peer::control;
use jobmesh_peer::DaemonConfig;
use jobmesh_transport::rtc::RtcConfig;
use jobmesh_wire::Capability;
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("JOBMESH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,webrtc=error,rtc=error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let shutdown = CancellationToken::new();
    let want = std::env::var("JOBMESH_LISTEN").unwrap_or_else(|_| "127.0.0.1:7070".into());
    let listener = match tokio::net::TcpListener::bind(&want).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{want} is not free ({e}); using a free port instead");
            tokio::net::TcpListener::bind("127.0.0.1:0").await?
        }
    };
    let addr = listener.local_addr()?;
    let url = format!("ws://{addr}/ws");
    // An open pool on loopback: a development mesh on one machine. Across
    // machines, pools are closed (README, "Across machines").
    let server = tokio::spawn(jobmesh_signal_server::run(
        listener,
        jobmesh_signal_server::ServerConfig::open(),
        shutdown.clone(),
    ));
    println!("signal-server listening on {url}");

    let rtc = RtcConfig {
        udp_addrs: vec!["127.0.0.1:0".into()],
        ..RtcConfig::default()
    };
    let start = |name: &str, caps: &[&str], slots: u32| {
        let mut config = DaemonConfig::new(url.clone(), name, "default");
        config.membership = jobmesh_peer::Membership::Open;
        config.capabilities = caps
            .iter()
            .filter_map(|c| Capability::new(c).ok())
            .collect();
        config.slots = slots;
        config.rtc = rtc.clone();
        config.grace = Duration::from_secs(5);
        jobmesh_peer::spawn(config, CancellationToken::new())
    };
    let caps = ["echo", "sleep", "thumbnail", "ocr"];
    let w1 = start("local-w1", &caps, 2)?;
    let w2 = start("local-w2", &caps, 2)?;
    let me = jobmesh_peer::default_name();
    let submitter = start(&me, &[], 0)?;
    println!(
        "worker peers local-w1 and local-w2 joined pool \"default\" ({})",
        caps.join(", ")
    );

    // Serve the default control socket, so `peer submit` finds this mesh with no flags.
    let control_path = control::default_path("default", &me);
    let control_cancel = shutdown.clone();
    match control::bind(&control_path).await {
        Ok(l) => {
            tokio::spawn(control::serve(
                l,
                control_path.clone(),
                submitter.clone(),
                control_cancel,
            ));
        }
        Err(e) => eprintln!("no control socket ({e:#}); use --signal from other terminals"),
    }

    submitter
        .wait_pool(Duration::from_secs(10), |s| {
            s.connected && s.peers.iter().filter(|p| p.stats.slots > 0).count() >= 2
        })
        .await
        .context("the workers did not join in time")?;
    let report = submitter
        .run(
            Capability::new("echo")?,
            json!({"hello": "mesh"}),
            Duration::from_secs(10),
        )
        .await?;
    let envelope = control::Envelope::from_report(&report);
    println!("demo job: {}", serde_json::to_string(&envelope)?);

    println!();
    println!("From another terminal (after `cargo build --release`):");
    println!("  ./target/release/peer submit echo --input '{{\"n\":1}}' --json");
    println!("  ./target/release/peer submit sleep --input '{{\"ms\":300}}' --signal {url} --open");
    println!("  ./target/release/peer submit thumbnail --file photo.jpg --param width=256 --out thumb.jpg");
    println!("  ./target/release/peer submit ocr --file scan.png");
    println!("  ./target/release/peer peers --signal {url} --open");
    println!(
        "  ./target/release/peer --signal {url} --open --capabilities echo --name another-worker"
    );
    println!("(an open development pool on this machine: --open; closed pools: README, \"Across machines\")");
    println!();
    println!("Running until Ctrl-C.");

    tokio::signal::ctrl_c().await?;
    eprintln!("stopping: letting running jobs finish");
    // Peers first (they finish running jobs and leave), then the server.
    for h in [&w1, &w2, &submitter] {
        h.shutdown();
    }
    for h in [&w1, &w2, &submitter] {
        let _ = tokio::time::timeout(Duration::from_secs(10), h.stopped()).await;
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    Ok(())
}

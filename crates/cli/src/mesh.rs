//! `peer mesh`: a whole development pool from the one installed binary — a
//! signal-server, worker peers and this machine's daemon (found by `peer
//! submit` like any other), in this process, until Ctrl-C. The pool is open
//! and on loopback only; pools across machines are closed (README).

use std::time::Duration;

use anyhow::Context;
use jobmesh_peer::handlers::{self, CapabilityError};
use jobmesh_peer::{DaemonConfig, Membership, PeerHandle};
use jobmesh_transport::rtc::RtcConfig;
use jobmesh_wire::Capability;
use tokio_util::sync::CancellationToken;

use crate::args::{Common, MeshArgs};
use crate::out::outln;
use crate::Local;

/// The mesh's pool.
const POOL: &str = "default";

pub(crate) async fn run(args: MeshArgs, common: Common) -> anyhow::Result<u8> {
    let capabilities = usable(&args.with)?;
    let listener = match tokio::net::TcpListener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "note: {} is taken ({e}); listening on a free port",
                args.listen
            );
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .context("binding a loopback port for the signal-server")?
        }
    };
    let url = format!("ws://{}/ws", listener.local_addr()?);
    // The server outlives the peers: they leave it before it stops.
    let server_stop = CancellationToken::new();
    let server = tokio::spawn(jobmesh_signal_server::run(
        listener,
        jobmesh_signal_server::ServerConfig::open(),
        server_stop.clone(),
    ));
    // One signal drains them all.
    let shutdown = CancellationToken::new();
    crate::on_signals(shutdown.clone())?;
    let config = |name: String, caps: &[Capability], slots: u32| {
        let mut c = DaemonConfig::new(url.clone(), name, POOL);
        c.membership = Membership::Open;
        c.capabilities = caps.to_vec();
        c.slots = slots;
        // Loopback candidates only: every peer is on this machine.
        c.rtc = RtcConfig {
            udp_addrs: vec!["127.0.0.1:0".into()],
            ..RtcConfig::default()
        };
        c.grace = Duration::from_secs(5);
        c
    };
    let mut workers: Vec<PeerHandle> = Vec::new();
    for i in 1..=args.workers {
        let c = config(format!("mesh-w{i}"), &capabilities, args.worker_slots);
        workers.push(jobmesh_peer::spawn(c, shutdown.child_token())?);
    }
    // This machine's daemon: submits only, with a journal, found by `peer submit`.
    let name = common
        .name
        .clone()
        .unwrap_or_else(jobmesh_peer::default_name);
    let mut me = config(name.clone(), &[], 0);
    me.data_dir = Some(crate::data_dir(common.data_dir.clone(), POOL, &name)?);
    let control_path = common
        .control
        .clone()
        .unwrap_or_else(|| jobmesh_peer::control::default_path(POOL, &name));
    let local = Local::start(
        me,
        jobmesh_peer::Extensions::default(),
        control_path,
        shutdown.child_token(),
    )
    .await?;
    let dashboard = if args.no_dashboard {
        None
    } else {
        Some(serve_dashboard(&args.dashboard, &local).await?)
    };
    let names: Vec<String> = (1..=args.workers).map(|i| format!("mesh-w{i}")).collect();
    let caps: Vec<&str> = capabilities.iter().map(Capability::as_str).collect();
    outln!("signal-server listening on {url} (an open pool on loopback, for development)");
    outln!("workers {} running {}", names.join(", "), caps.join(", "));
    if let Some(addr) = dashboard {
        outln!("the pool's dashboard: http://{addr}/ (jobs over HTTP: http://{addr}/v1/jobs/CAPABILITY)");
    }
    local
        .handle
        .wait_pool(Duration::from_secs(15), |s| {
            s.connected && s.peers.iter().filter(|p| p.stats.slots > 0).count() >= workers.len()
        })
        .await
        .context("the workers did not join in time")?;
    if !args.no_demo {
        demo(&local.handle, &capabilities).await?;
    }
    outln!();
    outln!("From another terminal:");
    outln!("  peer submit echo --input '{{\"n\":1}}'");
    outln!("  peer submit sleep --input '{{\"ms\":300}}' --json");
    if caps.contains(&"thumbnail") {
        outln!("  peer submit thumbnail --file photo.jpg --param width=256 --out thumb.jpg");
    }
    if caps.contains(&"ocr") {
        outln!("  peer submit ocr --file scan.png");
    }
    outln!("  peer peers; peer jobs; peer watch; peer status; peer watch --all");

    outln!("  peer --signal {url} --open --capabilities echo --name another-worker");
    let http = url.trim_end_matches("/ws").replacen("ws://", "http://", 1);
    outln!("  a browser tab as a peer: {http}/examples/ (docs/browser.md)");
    outln!("(peer is target/release/peer if it is not installed.) Running until Ctrl-C.");

    let code = local.run().await;
    // The signal reached the workers too: let them finish and leave.
    for w in &workers {
        let _ = tokio::time::timeout(Duration::from_secs(10), w.stopped()).await;
    }
    server_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    Ok(code)
}

/// The capabilities asked for that can run here; `ocr` without tesseract
/// is left out with a note (a development mesh should start anyway).
/// Serves the dashboard of `local` on `addr` (loopback), or on a free
/// loopback port if that one is taken; its address.
async fn serve_dashboard(addr: &str, local: &Local) -> anyhow::Result<std::net::SocketAddr> {
    let access = jobmesh_http::Access::new(None)?;
    let listener = match jobmesh_http::bind("--dashboard", addr, Some(&access)).await {
        Ok(l) => l,
        Err(jobmesh_http::HttpError::Bind { source, .. }) => {
            eprintln!("note: {addr} is taken ({source}); serving the dashboard on a free port");
            jobmesh_http::bind("--dashboard", "127.0.0.1:0", Some(&access)).await?
        }
        Err(e) => return Err(e.into()),
    };
    let stop = local.control_cancel.clone();
    let app = jobmesh_http::router(local.handle.clone(), access, stop.clone());
    Ok(jobmesh_http::spawn(listener, app, stop)?)
}

fn usable(asked: &[String]) -> anyhow::Result<Vec<Capability>> {
    let mut caps = Vec::new();
    for raw in asked.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let cap = Capability::new(raw).map_err(|e| anyhow::anyhow!("--with: {e}"))?;
        match handlers::builtin(std::slice::from_ref(&cap)) {
            Ok(_) => caps.push(cap),
            Err(e @ CapabilityError::Unavailable { .. }) => eprintln!("note: leaving out {e}"),
            Err(e) => return Err(e).context("--with"),
        }
    }
    anyhow::ensure!(
        !caps.is_empty(),
        "--with: no capability the workers could run"
    );
    Ok(caps)
}

/// One job through the mesh, so a user sees it work.
async fn demo(me: &PeerHandle, caps: &[Capability]) -> anyhow::Result<()> {
    let Some(echo) = caps.iter().find(|c| c.as_str() == "echo") else {
        return Ok(());
    };
    let report = me
        .run(
            echo.clone(),
            serde_json::json!({"hello": "mesh"}),
            Duration::from_secs(10),
        )
        .await?;
    let envelope = jobmesh_peer::control::Envelope::from_report(&report);
    outln!("demo job: {}", serde_json::to_string(&envelope)?);
    Ok(())
}

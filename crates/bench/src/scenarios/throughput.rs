//! Many no-op jobs submitted at once, until every result is in: through the
//! library API (an in-process daemon, without and with a journal) and
//! through a `peer` daemon's control socket (it keeps a journal), both ways a client can use it: all of them pipelined on one
//! session, and one connection per job as `peer submit` does (the daemon
//! serves 64 connections at once).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::stream::{FuturesUnordered, StreamExt};
use jobmesh_peer::control::{self, Request};
use jobmesh_peer::PeerHandle;
use serde_json::json;

use super::mesh::{echo, Mesh};
use crate::report::Figure;
use crate::Ctx;

/// `n` no-op jobs submitted at once through the library API: jobs/s.
async fn at_once(ctx: &Ctx, sub: &PeerHandle, n: usize) -> anyhow::Result<Vec<f64>> {
    let mut rates = Vec::new();
    for _ in 0..ctx.repeats {
        let t = Instant::now();
        let mut all: FuturesUnordered<_> = (0..n)
            .map(|i| sub.run(echo(), json!(i), Duration::from_secs(60)))
            .collect();
        while let Some(r) = all.next().await {
            r?.result.context("echo job")?;
        }
        rates.push(n as f64 / t.elapsed().as_secs_f64());
    }
    Ok(rates)
}

pub(crate) async fn run(ctx: Ctx) -> anyhow::Result<Vec<Figure>> {
    let n = if ctx.quick { 2_000 } else { 10_000 };
    let mesh = Mesh::start(&ctx, 2)?;
    let sub = mesh.submitter("tp").await?;
    let library = at_once(&ctx, &sub, n).await?;
    // The same with a pool-wide observer watching both workers: what
    // streaming every job's events to it costs them (same run, same mesh).
    let observer = mesh.submitter("tpo").await?;
    let mut observation = observer.observe().await?;
    let heard = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let drain = tokio::spawn({
        let heard = heard.clone();
        async move {
            loop {
                match observation.next().await {
                    Ok(Some(b)) => {
                        heard
                            .fetch_add(b.events.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                    // Fell behind: it missed some; go on.
                    Err(_) => {}
                    Ok(None) => break,
                }
            }
        }
    });
    let observed = at_once(&ctx, &sub, n).await?;
    drain.abort();
    anyhow::ensure!(
        heard.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the observer heard no event"
    );
    observer.shutdown();
    let journaled = mesh.submitter_with("tpj", true).await?;
    let library_journaled = at_once(&ctx, &journaled, n).await?;

    let (_proc, sock) = mesh.control_submitter(&ctx).await?;
    let mut via_session = Vec::new();
    for _ in 0..ctx.repeats {
        let session = control::Session::open(&sock).await?;
        let requests: Vec<Request> = (0..n).map(|i| Request::submit(echo(), json!(i))).collect();
        let t = Instant::now();
        let mut all: FuturesUnordered<_> = requests.iter().map(|r| session.request(r)).collect();
        while let Some(reply) = all.next().await {
            let reply = reply?;
            anyhow::ensure!(
                reply["status"] == "completed",
                "job via a control session: {reply}"
            );
        }
        via_session.push(n as f64 / t.elapsed().as_secs_f64());
    }
    let sock = Arc::new(sock);
    let mut via_socket = Vec::new();
    for _ in 0..ctx.repeats {
        let t = Instant::now();
        // As many clients at once as the daemon serves (more would only
        // wait in the listen backlog, or be refused when it is full).
        let mut all = futures_util::stream::iter(0..n)
            .map(|i| {
                let sock = sock.clone();
                async move {
                    let reply = control::request(&sock, &Request::submit(echo(), json!(i))).await?;
                    anyhow::ensure!(
                        reply["status"] == "completed",
                        "job via the control socket: {reply}"
                    );
                    Ok(())
                }
            })
            .buffer_unordered(control::MAX_CONTROL_CONNECTIONS);
        while let Some(r) = all.next().await {
            r?;
        }
        via_socket.push(n as f64 / t.elapsed().as_secs_f64());
    }
    mesh.stop();
    Ok(vec![
        Figure::new(
            "throughput",
            format!("{n} no-ops at once, library API"),
            "jobs/s",
            library,
        ),
        Figure::new(
            "throughput",
            format!("{n} no-ops at once, library API, one pool-wide observer"),
            "jobs/s",
            observed,
        ),
        Figure::new(
            "throughput",
            format!("{n} no-ops at once, library API, journaled submitter"),
            "jobs/s",
            library_journaled,
        ),
        Figure::new(
            "throughput",
            format!("{n} no-ops at once, control socket (journaled daemon), one session"),
            "jobs/s",
            via_session,
        ),
        Figure::new(
            "throughput",
            format!("{n} no-ops, one control connection per job (journaled daemon)"),
            "jobs/s",
            via_socket,
        ),
    ])
}

//! Many no-op jobs submitted at once, until every result is in: through the
//! library API (an in-process daemon, without and with a journal) and
//! through a `peer` daemon's control socket (it keeps a journal), both ways a client can use it: all of them pipelined on one
//! session, and one connection per job as `peer submit` does (the daemon
//! serves 64 connections at once); and through the same daemon's HTTP API
//! (`POST /v1/jobs/echo`) over 64 keep-alive connections, with each
//! request's latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::stream::{FuturesUnordered, StreamExt};
use jobmesh_peer::control::{self, Request};
use jobmesh_peer::PeerHandle;
use serde_json::json;

use super::mesh::{echo, Mesh};
use crate::report::{quantile, Figure};
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

/// HTTP connections kept open at once (as `wrk -c 64` or `oha -c 64`).
const HTTP_CONNECTIONS: usize = 64;

/// `n` no-op jobs through the HTTP API at `addr`, over
/// [`HTTP_CONNECTIONS`] keep-alive connections that each send one request
/// after another: jobs/s, and every request's latency in ms.
async fn over_http(addr: std::net::SocketAddr, n: usize) -> anyhow::Result<(f64, Vec<f64>)> {
    use http_body_util::BodyExt;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = Instant::now();
    let connections: Vec<_> = (0..HTTP_CONNECTIONS)
        .map(|_| {
            let next = next.clone();
            tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                let io = hyper_util::rt::TokioIo::new(stream);
                let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
                tokio::spawn(conn);
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let request = hyper::Request::post("/v1/jobs/echo")
                        .header(hyper::header::HOST, addr.to_string())
                        .header(hyper::header::CONTENT_TYPE, "application/json")
                        .body(http_body_util::Full::new(bytes::Bytes::from(format!(
                            "{{\"i\":{i}}}"
                        ))))?;
                    let sent = Instant::now();
                    sender.ready().await?;
                    let response = sender.send_request(request).await?;
                    let status = response.status();
                    let body = response.into_body().collect().await?.to_bytes();
                    anyhow::ensure!(
                        status == hyper::StatusCode::OK,
                        "job over HTTP: {status} {}",
                        String::from_utf8_lossy(&body)
                    );
                    latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(n);
    for c in connections {
        latencies.extend(c.await??);
    }
    Ok((n as f64 / t.elapsed().as_secs_f64(), latencies))
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

    let (_proc, sock, http) = mesh.control_submitter(&ctx).await?;
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
    let (mut via_http, mut http_p50, mut http_p99) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ctx.repeats {
        let (rate, mut ms) = over_http(http, n).await?;
        via_http.push(rate);
        http_p50.push(quantile(&mut ms, 0.50));
        http_p99.push(quantile(&mut ms, 0.99));
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
        Figure::new(
            "throughput",
            format!("{n} no-ops over HTTP, {HTTP_CONNECTIONS} keep-alive connections (journaled daemon)"),
            "jobs/s",
            via_http,
        ),
        Figure::new(
            "throughput",
            format!("HTTP request latency p50, {HTTP_CONNECTIONS} connections"),
            "ms",
            http_p50,
        ),
        Figure::new(
            "throughput",
            format!("HTTP request latency p99, {HTTP_CONNECTIONS} connections"),
            "ms",
            http_p99,
        ),
    ])
}

//! `peer --metrics ADDR`: the daemon's Prometheus metrics over HTTP, at
//! `GET /metrics` (the text format, version 0.0.4). Nothing else is served.

use anyhow::Context;
use axum::http::header;
use axum::routing::get;
use jobmesh_peer::PeerHandle;
use tokio_util::sync::CancellationToken;

/// Binds `addr` (before the daemon starts: a taken port fails the start).
pub(crate) async fn bind(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--metrics {addr}: cannot listen there"))?;
    let bound = listener.local_addr()?;
    if !bound.ip().is_loopback() {
        eprintln!("warning: metrics on {bound} are readable by anyone who reaches it (no credential is asked)");
    }
    Ok(listener)
}

/// Serves the metrics of `handle` on `listener` until `stop`; returns the
/// address (port 0: the one picked).
pub(crate) fn serve(
    listener: tokio::net::TcpListener,
    handle: PeerHandle,
    stop: CancellationToken,
) -> anyhow::Result<std::net::SocketAddr> {
    let bound = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let text = handle.metrics_text();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    text,
                )
            }
        }),
    );
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            eprintln!("warning: the metrics endpoint stopped: {e}");
        }
    });
    Ok(bound)
}

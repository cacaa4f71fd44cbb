//! jobmesh as a Rust library: a worker with its own handlers (one of them
//! taking and returning a file), a submitter with its own dispatch strategy,
//! job events and the results, all in one process.
//!
//! ```sh
//! cargo run --example library
//! ```

use std::time::Duration;

use jobmesh::{
    handler_fn, Blob, Candidate, EventKind, HandlerError, JobOptions, PeerId, PickRequest, Pool,
    RngCore, Strategy,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// A custom strategy: the candidate with the most free slots, lowest id on ties.
struct MostFreeSlots;

impl Strategy for MostFreeSlots {
    fn pick(
        &mut self,
        _: &PickRequest<'_>,
        candidates: &[Candidate],
        _: &mut dyn RngCore,
    ) -> Option<PeerId> {
        candidates
            .iter()
            .filter(|c| c.has_room())
            .max_by_key(|c| (c.slots - c.busy, std::cmp::Reverse(c.id)))
            .map(|c| c.id)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A discovery server for this demo; in real use it runs elsewhere. Open
    // mode: any pool admits anyone, fine on one machine. Across machines,
    // pools are closed: see the README ("Across machines").
    let stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}/ws", listener.local_addr()?);
    tokio::spawn(jobmesh::signal::run(
        listener,
        jobmesh::signal::ServerConfig::open(),
        stop.clone(),
    ));
    let loopback = |c: &mut jobmesh::DaemonConfig| c.rtc.udp_addrs = vec!["127.0.0.1:0".into()];

    // A worker with a custom capability: count words, reporting progress.
    let worker = Pool::builder(&url, "demo")
        .open()
        .name("counter")
        .handler(
            "wordcount",
            handler_fn(|input, ctx| async move {
                let text = input["text"].as_str().ok_or_else(|| {
                    HandlerError::permanent("wordcount needs {\"text\": \"...\"}")
                })?;
                ctx.progress(Some(50), Some("counting"), None);
                let words = text.split_whitespace().count();
                Ok(json!({ "words": words }))
            }),
        )?
        // Files in, files out: upper-cases the text of blob 0 into a new blob.
        .handler(
            "upper",
            handler_fn(|_input, ctx| async move {
                let fail = |e: std::io::Error| HandlerError::permanent(e.to_string());
                let blob = ctx
                    .blobs()
                    .first()
                    .ok_or_else(|| HandlerError::permanent("upper needs a file"))?;
                let text = tokio::fs::read_to_string(&blob.path).await.map_err(fail)?;
                let out = ctx.work_dir().map_err(fail)?.join("upper.txt");
                tokio::fs::write(&out, text.to_uppercase())
                    .await
                    .map_err(fail)?;
                ctx.attach(Blob::from_file(out));
                Ok(json!({ "bytes": text.len() }))
            }),
        )?
        .slots(4)
        .configure(loopback)
        .start()?;

    // A submit-only peer with its own strategy.
    let submitter = Pool::builder(&url, "demo")
        .open()
        .name("client")
        .custom_strategy(MostFreeSlots)
        .configure(loopback)
        .start()?;
    submitter
        .wait_pool(Duration::from_secs(10), |s| {
            s.peers.iter().any(|p| p.stats.slots > 0)
        })
        .await?;

    let mut job = submitter
        .submit(
            "wordcount".parse()?,
            json!({"text": "the quick brown fox jumps"}),
            JobOptions::from(Duration::from_secs(10)),
        )
        .await?;
    while let Some(event) = job.next_event().await {
        match &event.kind {
            EventKind::Progress { progress, .. } => {
                println!(
                    "event: progress {:?} {:?}",
                    progress.percent, progress.stage
                );
            }
            other => println!("event: {}", other.name()),
        }
    }
    let report = job.result().await?;
    println!("result: {}", report.result?);
    println!("worker: {}", report.worker.map(|w| w.1).unwrap_or_default());

    // A file in, a file back.
    let job = submitter
        .submit_with_blobs(
            "upper".parse()?,
            json!({}),
            vec![Blob::from_bytes(b"files travel too".to_vec()).with_name("note.txt")],
            JobOptions::from(Duration::from_secs(10)),
        )
        .await?;
    let report = job.result().await?;
    let blob = report
        .blobs
        .first()
        .ok_or_else(|| anyhow::anyhow!("no blob back"))?;
    println!(
        "blob result: {} {:?} = {}",
        report.result?,
        blob.name(),
        String::from_utf8_lossy(&blob.to_vec()?)
    );

    for peer in [&submitter, &worker] {
        peer.shutdown();
        peer.stopped().await;
    }
    stop.cancel();
    Ok(())
}

//! 1 MiB in and 1 MiB out (`echo` returns its input blob): one at a time,
//! and 100 submitted at once; over WebRTC, then between daemons that hand
//! blobs over as files (the same host).

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use jobmesh_peer::{Blob, PeerHandle};
use serde_json::json;

use super::mesh::{echo, Mesh};
use crate::report::Figure;
use crate::Ctx;

const MIB: usize = 1 << 20;

async fn one(sub: &PeerHandle, data: &Bytes) -> anyhow::Result<()> {
    let job = sub
        .submit_with_blobs(
            echo(),
            json!({}),
            vec![Blob::from_bytes(data.clone())],
            Duration::from_secs(120),
        )
        .await?;
    let report = job.result().await?;
    report.result.context("echo job with a blob")?;
    let back = report.blobs.first().context("no blob came back")?;
    anyhow::ensure!(
        back.size() == data.len() as u64,
        "the blob came back with {} bytes",
        back.size()
    );
    Ok(())
}

pub(crate) async fn run(ctx: Ctx) -> anyhow::Result<Vec<Figure>> {
    let mut figures = measure(&ctx, Mesh::start(&ctx, 2)?, "").await?;
    // The same jobs between daemons sharing a handover directory (one host,
    // one user): the blobs go as files, not over the data channel.
    let handing_over = Mesh::start_handing_over(&ctx, 2)?;
    figures.extend(measure(&ctx, handing_over, ", same host (handed over as files)").await?);
    Ok(figures)
}

/// The sequential and concurrent figures on `mesh`, named with `how`.
async fn measure(ctx: &Ctx, mesh: Mesh, how: &str) -> anyhow::Result<Vec<Figure>> {
    let (sequential, at_once) = if ctx.quick { (5, 20) } else { (30, 100) };
    let sub = mesh.submitter("pl").await?;
    let data: Bytes = (0..MIB)
        .map(|i| (i * 31 % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    // A new link's SCTP congestion window starts at a few packets and grows
    // only while full: its first two 1 MiB jobs take ~2x as long. Links are
    // long-lived, so like link setup this is kept out of the figures.
    for _ in 0..2 * mesh.workers.len() {
        one(&sub, &data).await?;
    }
    let (mut rate, mut mbs, mut burst, mut burst_mbs) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ctx.repeats {
        let t = Instant::now();
        for _ in 0..sequential {
            one(&sub, &data).await?;
        }
        let secs = t.elapsed().as_secs_f64();
        rate.push(sequential as f64 / secs);
        // Each round trip carries the MiB up and back: both directions count.
        mbs.push(2.0 * sequential as f64 * MIB as f64 / 1e6 / secs);

        let t = Instant::now();
        let mut all: FuturesUnordered<_> = (0..at_once).map(|_| one(&sub, &data)).collect();
        while let Some(r) = all.next().await {
            r?;
        }
        let secs = t.elapsed().as_secs_f64();
        burst.push(at_once as f64 / secs);
        burst_mbs.push(2.0 * at_once as f64 * MIB as f64 / 1e6 / secs);
    }
    mesh.stop();
    Ok(vec![
        Figure::new(
            "payload",
            format!("1 MiB in + out, sequential{how}: round trips/s"),
            "jobs/s",
            rate,
        ),
        Figure::new(
            "payload",
            format!("1 MiB in + out, sequential{how}: MB/s moved"),
            "MB/s",
            mbs,
        ),
        Figure::new(
            "payload",
            format!("{at_once} x 1 MiB in + out at once{how}"),
            "jobs/s",
            burst,
        ),
        Figure::new(
            "payload",
            format!("1 MiB in + out, all at once{how}: MB/s moved"),
            "MB/s",
            burst_mbs,
        ),
    ])
}

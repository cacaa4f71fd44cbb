//! Sequential no-op `echo` jobs with a 16-byte input, one at a time: the
//! latency of one job, submit to result, on warm links; from a submitter
//! without a journal and from one with (each submit waits for a disk sync).

use std::time::{Duration, Instant};

use anyhow::Context;
use jobmesh_peer::PeerHandle;
use serde_json::json;

use super::mesh::{echo, Mesh};
use crate::report::{quantile, Figure};
use crate::Ctx;

pub(crate) async fn run(ctx: Ctx) -> anyhow::Result<Vec<Figure>> {
    let mesh = Mesh::start(&ctx, 2)?;
    let mut figures = Vec::new();
    for (journaled, label) in [(false, ""), (true, "journaled submitter ")] {
        let sub = mesh
            .submitter_with(&format!("rt{journaled}"), journaled)
            .await?;
        let (p50, p99) = latencies(&ctx, &sub).await?;
        figures.push(Figure::new("round-trip", format!("{label}p50"), "ms", p50));
        figures.push(Figure::new("round-trip", format!("{label}p99"), "ms", p99));
    }
    mesh.stop();
    Ok(figures)
}

async fn latencies(ctx: &Ctx, sub: &PeerHandle) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let (warm, timed) = if ctx.quick { (50, 200) } else { (200, 1000) };
    let (mut p50, mut p99) = (Vec::new(), Vec::new());
    for _ in 0..ctx.repeats {
        let mut ms = Vec::with_capacity(timed);
        for i in 0..warm + timed {
            let t = Instant::now();
            sub.run(echo(), json!("0123456789abcdef"), Duration::from_secs(10))
                .await?
                .result
                .context("echo job")?;
            if i >= warm {
                ms.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        p50.push(quantile(&mut ms, 0.50));
        p99.push(quantile(&mut ms, 0.99));
    }
    Ok((p50, p99))
}

//! Sequential no-op `echo` jobs with a 16-byte input, one at a time: the
//! latency of one job, submit to result, on warm links.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use super::mesh::{echo, Mesh};
use crate::report::{quantile, Figure};
use crate::Ctx;

pub(crate) async fn run(ctx: Ctx) -> anyhow::Result<Vec<Figure>> {
    let (warm, timed) = if ctx.quick { (50, 200) } else { (200, 1000) };
    let mesh = Mesh::start(&ctx, 2)?;
    let sub = mesh.submitter("rt").await?;
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
    mesh.stop();
    Ok(vec![
        Figure::new("round-trip", "p50", "ms", p50),
        Figure::new("round-trip", "p99", "ms", p99),
    ])
}

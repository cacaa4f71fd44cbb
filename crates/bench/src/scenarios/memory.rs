//! Memory of a real worker process: idle RSS after its first job, and RSS
//! growth per open peer connection (N in-process submitters each run a job
//! on it, which opens one link each).

use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use super::mesh::{echo, Mesh};
use crate::report::Figure;
use crate::Ctx;

pub(crate) async fn run(ctx: Ctx) -> anyhow::Result<Vec<Figure>> {
    let counts: &[usize] = if ctx.quick { &[1, 10] } else { &[1, 10, 50] };
    let mut idle = Vec::new();
    let mut per_conn: Vec<Vec<f64>> = vec![Vec::new(); counts.len()];
    for _ in 0..ctx.repeats {
        for (ci, &n) in counts.iter().enumerate() {
            let mesh = Mesh::start(&ctx, 1)?;
            let first = mesh.submitter("m0").await?;
            // Let the allocator settle after the first job.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let base = mesh.workers[0].rss_mib()?;
            if ci == 0 {
                idle.push(base);
            }
            let mut subs = vec![first];
            for i in 1..=n {
                let s = mesh.submitter(&format!("m{i}")).await?;
                s.run(echo(), json!(i), Duration::from_secs(20))
                    .await?
                    .result
                    .context("job on a new connection")?;
                subs.push(s);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let after = mesh.workers[0].rss_mib()?;
            per_conn[ci].push((after - base) * 1024.0 / n as f64);
            mesh.stop();
        }
    }
    let mut figures = vec![Figure::new(
        "memory",
        "worker idle RSS after its first job",
        "MiB",
        idle,
    )];
    for (ci, &n) in counts.iter().enumerate() {
        figures.push(Figure::new(
            "memory",
            format!("worker RSS growth per connection, {n} open"),
            "KiB",
            per_conn[ci].clone(),
        ));
    }
    Ok(figures)
}

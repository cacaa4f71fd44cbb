//! From nothing to the first result, with the real binaries: launch
//! `signal-server` and two `peer` workers, then `peer submit echo --signal`
//! (a submitter that joins the pool for one job); stop the clock when it
//! exits with the result.

use std::process::Command;
use std::time::Instant;

use crate::env;
use crate::report::Figure;
use crate::Ctx;

pub(crate) async fn run(ctx: Ctx) -> anyhow::Result<Vec<Figure>> {
    let mut total = Vec::new();
    let mut submit_only = Vec::new();
    for _ in 0..ctx.repeats {
        let dir = tempfile::tempdir()?;
        let t = Instant::now();
        let (_server, url) = env::signal_server(&ctx.bins, &[])?;
        let _workers = (0..2)
            .map(|i| {
                let sock = dir.path().join(format!("w{i}.sock"));
                env::peer(&ctx.bins, &url, "start", &format!("w{i}"), "echo", &sock)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let s = Instant::now();
        let bins = ctx.bins.clone();
        let out = tokio::task::spawn_blocking(move || {
            Command::new(&bins.peer)
                .args([
                    "submit", "echo", "--input", "1", "--pool", "start", "--signal", &url, "--open",
                ])
                .env_remove("JOBMESH_CONTROL")
                .env("XDG_RUNTIME_DIR", "/nonexistent-jobmesh-bench")
                .output()
        })
        .await??;
        anyhow::ensure!(
            out.status.success(),
            "peer submit failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let result = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(result.trim() == "1", "unexpected result {result:?}");
        total.push(t.elapsed().as_secs_f64());
        submit_only.push(s.elapsed().as_secs_f64());
        drop(dir);
    }
    Ok(vec![
        Figure::new(
            "startup",
            "launch server + 2 workers + submit -> first result",
            "s",
            total,
        ),
        Figure::new(
            "startup",
            "of which `peer submit` (join, link, job)",
            "s",
            submit_only,
        ),
    ])
}

//! A browser tab beside the daemons, same run: headless Chromium (the
//! `tests/browser/tab.mjs` driver, installed by `scripts/setup`) joins the
//! mesh with the JavaScript client. Round trips of no-op jobs and 1 MiB
//! in + out, sequential, on warm links: daemon → daemon, daemon → tab (an
//! in-process submitter to the tab's `mirror` worker) and tab → daemon
//! (timed in the page, `performance.now()`).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use jobmesh_peer::{Blob, PeerHandle};
use jobmesh_wire::Capability;
use serde_json::{json, Value};

use super::mesh::{echo, Mesh};
use crate::report::{quantile, Figure};
use crate::Ctx;

const MIB: usize = 1 << 20;

/// The tab: the driver's stdin, and its answers line by line.
struct Tab {
    child: Child,
    stdin: ChildStdin,
    answers: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Tab {
    fn open(signal_url: &str) -> anyhow::Result<Self> {
        let script = std::path::Path::new("tests/browser/tab.mjs");
        anyhow::ensure!(
            script.exists() && std::path::Path::new("tests/browser/node_modules").is_dir(),
            "the browser scenario needs tests/browser/tab.mjs and its node packages (run it from the repository; scripts/setup installs them)"
        );
        let base = signal_url
            .trim_end_matches("/ws")
            .replacen("ws://", "http://", 1);
        let mut child = Command::new("node")
            .arg(script)
            .arg(base)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("node (scripts/setup installs nodejs)")?;
        let stdin = child.stdin.take().context("stdin")?;
        let answers = BufReader::new(child.stdout.take().context("stdout")?).lines();
        Ok(Self {
            child,
            stdin,
            answers,
        })
    }

    /// One step; blocks this thread (the tab's work is in its own process).
    fn step(&mut self, step: &Value) -> anyhow::Result<Value> {
        writeln!(self.stdin, "{step}")?;
        let line = self.answers.next().context("the tab driver ended")??;
        let v: Value = serde_json::from_str(&line)?;
        anyhow::ensure!(v.get("error").is_none(), "{step}: {v}");
        Ok(v)
    }

    /// The page's round trips of `n` sequential jobs (with `bytes` each way).
    fn timed(&mut self, capability: &str, n: usize, bytes: usize) -> anyhow::Result<Vec<f64>> {
        let v = self.step(&json!({ "op": "bench", "type": capability, "n": n, "bytes": bytes }))?;
        Ok(v["ms"]
            .as_array()
            .context("ms")?
            .iter()
            .filter_map(Value::as_f64)
            .collect())
    }
}

impl Drop for Tab {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Round trips (ms) of `n` sequential jobs from `sub`, `data` in and out.
async fn timed(
    sub: &PeerHandle,
    cap: &Capability,
    n: usize,
    data: &Bytes,
) -> anyhow::Result<Vec<f64>> {
    let mut ms = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let blobs = if data.is_empty() {
            vec![]
        } else {
            vec![Blob::from_bytes(data.clone())]
        };
        let job = sub
            .submit_with_blobs(
                cap.clone(),
                json!({ "i": i }),
                blobs,
                Duration::from_secs(60),
            )
            .await?;
        let report = job.result().await?;
        report.result.context("job")?;
        anyhow::ensure!(
            data.is_empty() || report.blobs.first().map(|b| b.size()) == Some(data.len() as u64),
            "the blob did not come back whole"
        );
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(ms)
}

pub(crate) async fn run(ctx: Ctx) -> anyhow::Result<Vec<Figure>> {
    let (rts, blobs) = if ctx.quick { (50, 10) } else { (300, 30) };
    let mesh = Mesh::start(&ctx, 1)?;
    let mut tab = Tab::open(&mesh.url)?;
    tab.step(&json!({ "op": "work", "pool": "bench", "name": "tab", "caps": ["mirror"] }))?;
    let sub = mesh.submitter("br").await?;
    let mirror = Capability::new("mirror")?;
    sub.wait_pool(super::mesh::SETUP, |s| {
        s.peers.iter().any(|p| p.capabilities.contains(&mirror))
    })
    .await
    .context("waiting for the tab")?;
    let data: Bytes = (0..MIB)
        .map(|i| (i * 31 % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let none = Bytes::new();
    // The first transfer on a fresh link to a tab: the browser's UDP buffer
    // overflows, and SCTP's retransmission floor decides how long the
    // losses take to recover (vendor/README.md). One sample a run.
    let three: Bytes = (0..3 * MIB)
        .map(|i| (i * 7 % 253) as u8)
        .collect::<Vec<u8>>()
        .into();
    let first = timed(&sub, &mirror, 1, &three).await?;
    // Warm links (a new link's congestion window starts small): not timed.
    timed(&sub, &echo(), 4, &data).await?;
    timed(&sub, &mirror, 4, &data).await?;
    tokio::task::block_in_place(|| tab.timed("echo", 4, MIB))?;

    let p50 = |mut ms: Vec<f64>| quantile(&mut ms, 0.5);
    let rate =
        |ms: &[f64]| 2.0 * ms.len() as f64 * MIB as f64 / 1e6 / (ms.iter().sum::<f64>() / 1e3);
    let mut f: Vec<(&str, Vec<f64>, Vec<f64>)> = vec![
        ("daemon → daemon", vec![], vec![]),
        ("daemon → tab", vec![], vec![]),
        ("tab → daemon", vec![], vec![]),
    ];
    for _ in 0..ctx.repeats {
        f[0].1.push(p50(timed(&sub, &echo(), rts, &none).await?));
        f[0].2
            .push(rate(&timed(&sub, &echo(), blobs, &data).await?));
        f[1].1.push(p50(timed(&sub, &mirror, rts, &none).await?));
        f[1].2
            .push(rate(&timed(&sub, &mirror, blobs, &data).await?));
        let (rt, mb) = tokio::task::block_in_place(|| -> anyhow::Result<_> {
            Ok((tab.timed("echo", rts, 0)?, tab.timed("echo", blobs, MIB)?))
        })?;
        f[2].1.push(p50(rt));
        f[2].2.push(rate(&mb));
    }
    mesh.stop();
    let first = Figure::new(
        "browser",
        "daemon → fresh tab: first 3 MiB in + out",
        "ms",
        first,
    );
    let mut out = vec![first];
    for (who, rt, mb) in f {
        out.push(Figure::new(
            "browser",
            format!("{who}: no-op round trip p50"),
            "ms",
            rt,
        ));
        out.push(Figure::new(
            "browser",
            format!("{who}: 1 MiB in + out, sequential: MB/s moved"),
            "MB/s",
            mb,
        ));
    }
    Ok(out)
}

//! `jobmesh-bench`: how fast jobmesh gets a job to another peer and its
//! result back, next to a bare webrtc 0.21 data channel and a TCP socket
//! measured in the same run.
//!
//! ```sh
//! scripts/bench                 # everything, a few minutes on 2 cores
//! scripts/bench --quick         # a smaller version, under a minute
//! scripts/bench --scenario round-trip --scenario raw
//! ```
//!
//! The signal-server and the workers are the real release binaries (`peer`,
//! `signal-server`) as child processes; the submitter is an in-process
//! daemon (the library API) or, where named, a `peer` daemon reached through
//! its control socket. Each figure is reported as min / median / max over
//! the repeats; the table goes to stdout and every sample to a JSON file.

mod env;
mod report;
mod scenarios;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;

use report::Figure;

#[derive(Parser, Debug)]
#[command(
    name = "jobmesh-bench",
    about = "jobmesh's benchmark (see docs/performance.md)"
)]
struct Args {
    /// A smaller version of every scenario (under a minute): a smoke test.
    #[arg(long)]
    quick: bool,
    /// Run only these scenarios (repeatable): round-trip, throughput,
    /// payload, startup, memory, signal-scale, signal-cluster, raw,
    /// browser.
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    /// Repeats per figure [default: 5, or 2 with --quick].
    #[arg(long)]
    repeats: Option<usize>,
    /// Where the JSON report goes.
    #[arg(long, default_value = "jobmesh-bench.json")]
    json: PathBuf,
}

/// What every scenario gets.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    /// Smaller sizes and counts.
    pub(crate) quick: bool,
    /// Samples per figure.
    pub(crate) repeats: usize,
    /// The `peer` and `signal-server` binaries.
    pub(crate) bins: env::Bins,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if let Ok(spec) = std::env::var(scenarios::CLIENTS_ENV) {
        // A client process of signal-scale (see there), not a run.
        return scenarios::clients_main(&spec).await;
    }
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("JOBMESH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    for s in &args.scenarios {
        anyhow::ensure!(
            scenarios::ALL.iter().any(|(name, _)| name == s),
            "unknown scenario {s:?}; known: {}",
            scenarios::ALL
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let ctx = Ctx {
        quick: args.quick,
        repeats: args
            .repeats
            .unwrap_or(if args.quick { 2 } else { 5 })
            .max(1),
        bins: env::Bins::find()?,
    };
    let started = Instant::now();
    let mut figures: Vec<Figure> = Vec::new();
    for (name, run) in scenarios::ALL {
        if !args.scenarios.is_empty() && !args.scenarios.iter().any(|s| s == name) {
            continue;
        }
        eprintln!("== {name}");
        let t = Instant::now();
        let got = run(ctx.clone())
            .await
            .with_context(|| format!("scenario {name}"))?;
        eprintln!("   {name}: {:.1} s", t.elapsed().as_secs_f64());
        print!("{}", report::table(&got));
        figures.extend(got);
    }
    let ratios = scenarios::ratios(&figures);
    figures.extend(ratios);
    println!();
    println!(
        "jobmesh-bench{} on {} cores, {} repeats, {:.0} s",
        if ctx.quick { " --quick" } else { "" },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        ctx.repeats,
        started.elapsed().as_secs_f64()
    );
    print!("{}", report::table(&figures));
    let json = serde_json::json!({
        "quick": ctx.quick,
        "repeats": ctx.repeats,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "seconds": started.elapsed().as_secs_f64(),
        "figures": figures,
    });
    std::fs::write(&args.json, serde_json::to_vec_pretty(&json)?)
        .with_context(|| format!("writing {}", args.json.display()))?;
    eprintln!("samples written to {}", args.json.display());
    Ok(())
}

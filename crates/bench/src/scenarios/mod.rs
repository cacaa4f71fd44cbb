//! The scenarios, each a function from the run's [`Ctx`] to its figures.

mod browser;
mod memory;
mod mesh;
mod payload;
mod raw;
mod round_trip;
mod signal_scale;
mod startup;
mod throughput;

pub(crate) use signal_scale::{clients_main, CLIENTS_ENV};

use std::future::Future;
use std::pin::Pin;

use crate::report::Figure;
use crate::Ctx;

type Run = fn(Ctx) -> Pin<Box<dyn Future<Output = anyhow::Result<Vec<Figure>>>>>;

/// Every scenario, in the order they run.
pub(crate) const ALL: &[(&str, Run)] = &[
    ("raw", |c| Box::pin(raw::run(c))),
    ("round-trip", |c| Box::pin(round_trip::run(c))),
    ("throughput", |c| Box::pin(throughput::run(c))),
    ("payload", |c| Box::pin(payload::run(c))),
    ("startup", |c| Box::pin(startup::run(c))),
    ("memory", |c| Box::pin(memory::run(c))),
    ("signal-scale", |c| Box::pin(signal_scale::run(c))),
    ("signal-cluster", |c| Box::pin(signal_scale::run_cluster(c))),
    ("browser", |c| Box::pin(browser::run(c))),
];

/// jobmesh / raw ratios of the same run, for round trip and payload.
pub(crate) fn ratios(figures: &[Figure]) -> Vec<Figure> {
    let find = |scenario: &str, name: &str| {
        figures
            .iter()
            .find(|f| f.scenario == scenario && f.name == name)
            .map(Figure::median)
    };
    let mut out = Vec::new();
    let pairs = [
        (
            "round-trip p50 / raw 64 B ping-pong p50",
            ("round-trip", "p50"),
            ("raw", "webrtc 64 B ping-pong p50"),
        ),
        (
            "round-trip p99 / raw 64 B ping-pong p99",
            ("round-trip", "p99"),
            ("raw", "webrtc 64 B ping-pong p99"),
        ),
        (
            "payload sequential MB/s moved / raw bulk",
            ("payload", "1 MiB in + out, sequential: MB/s moved"),
            ("raw", "webrtc bulk, 64 KiB messages"),
        ),
        (
            "payload sequential MB/s moved / raw 1 MiB bursts",
            ("payload", "1 MiB in + out, sequential: MB/s moved"),
            ("raw", "webrtc 1 MiB bursts one at a time, 64 KiB messages"),
        ),
        (
            "payload all at once MB/s moved / raw bulk",
            ("payload", "1 MiB in + out, all at once: MB/s moved"),
            ("raw", "webrtc bulk, 64 KiB messages"),
        ),
    ];
    for (name, (s1, n1), (s2, n2)) in pairs {
        if let (Some(a), Some(b)) = (find(s1, n1), find(s2, n2)) {
            out.push(Figure::new("ratio", name, "x", vec![a / b]));
        }
    }
    out
}

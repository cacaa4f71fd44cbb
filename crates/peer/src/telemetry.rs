//! A daemon's Prometheus metrics: what its jobs did (counted as their
//! events pass, per capability), what it holds now (read at each scrape),
//! and its counters. `PeerHandle::metrics_text` renders them in the
//! Prometheus text format; `peer --metrics ADDR` serves them.
//!
//! Labels are bounded: the only one is `capability`, and past
//! [`MAX_CAPABILITY_LABELS`] distinct values further capabilities are
//! counted as `other` (anyone who can submit through this daemon chooses
//! capability names). No job or peer ids: those belong in logs.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use jobmesh_core::{EventKind, JobEvent};
use jobmesh_transport::rtc::Traffic;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::watch;

use crate::jobs::JobTable;
use crate::view::{Metrics, PoolSnapshot};

/// Distinct `capability` label values; further ones are `other`.
pub(crate) const MAX_CAPABILITY_LABELS: usize = 64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Cap {
    capability: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Durability {
    durability: &'static str,
}

/// The journal's transactions: counted by durability, timed. Made before
/// the journal opens (its thread reports to them), registered with the rest.
#[derive(Clone, Debug)]
pub(crate) struct JournalMetrics {
    commits: Family<Durability, Counter>,
    latency: Family<Durability, Histogram, fn() -> Histogram>,
}

impl Default for JournalMetrics {
    fn default() -> Self {
        Self {
            commits: Family::default(),
            latency: Family::new_with_constructor(seconds_histogram),
        }
    }
}

impl JournalMetrics {
    /// What the journal thread calls after each transaction.
    pub(crate) fn observer(&self) -> jobmesh_journal::CommitObserver {
        let me = self.clone();
        Arc::new(move |took, durability| {
            let label = Durability {
                durability: match durability {
                    jobmesh_journal::Durability::Synced => "synced",
                    jobmesh_journal::Durability::Written => "written",
                },
            };
            me.commits.get_or_create(&label).inc();
            me.latency.get_or_create(&label).observe(took.as_secs_f64());
        })
    }
}

fn seconds_histogram() -> Histogram {
    // 0.5 ms to ~4.5 min, doubling.
    Histogram::new(exponential_buckets(0.0005, 2.0, 20))
}

/// The job metrics of one daemon, as its jobs' events pass.
pub(crate) struct Telemetry {
    registry: Registry,
    submitted: Family<Cap, Counter>,
    completed: Family<Cap, Counter>,
    failed: Family<Cap, Counter>,
    timed_out: Family<Cap, Counter>,
    lost: Family<Cap, Counter>,
    cancelled: Family<Cap, Counter>,
    retries: Family<Cap, Counter>,
    queue_wait: Family<Cap, Histogram, fn() -> Histogram>,
    run_time: Family<Cap, Histogram, fn() -> Histogram>,
    links_open: Gauge,
    links_opened: Family<Via, Counter>,
    links_failed: Counter,
    link_setup: Histogram,
    blobs_received: Family<HeldIn, Counter>,
    blob_received_bytes: Counter,
    labels: Mutex<HashSet<String>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Via {
    /// The route's candidate kind (`LinkPath::via`): `host`, `srflx`,
    /// `prflx`, `relay`, or `unknown`.
    via: &'static str,
    /// `udp`, `tcp`, or `unknown`.
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HeldIn {
    /// `memory` or `file` (spooled).
    held: &'static str,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Telemetry")
    }
}

impl Telemetry {
    /// A registry with the job metrics, and `now` read at each scrape.
    pub(crate) fn new(now: Now, journal: &JournalMetrics) -> Self {
        let mut registry = Registry::with_prefix("jobmesh");
        let t = Telemetry {
            submitted: Family::default(),
            completed: Family::default(),
            failed: Family::default(),
            timed_out: Family::default(),
            lost: Family::default(),
            cancelled: Family::default(),
            retries: Family::default(),
            queue_wait: Family::new_with_constructor(seconds_histogram),
            run_time: Family::new_with_constructor(seconds_histogram),
            links_open: Gauge::default(),
            links_opened: Family::default(),
            links_failed: Counter::default(),
            link_setup: seconds_histogram(),
            blobs_received: Family::default(),
            blob_received_bytes: Counter::default(),
            labels: Mutex::new(HashSet::new()),
            registry: Registry::default(),
        };
        let counters: [(&str, &str, &Family<Cap, Counter>); 7] = [
            ("jobs_submitted", "Jobs submitted through this daemon.", &t.submitted),
            ("jobs_completed", "Jobs of this daemon that completed.", &t.completed),
            ("jobs_failed", "Jobs of this daemon that failed (their handler's error, no capable worker, refused).", &t.failed),
            ("jobs_timed_out", "Jobs of this daemon whose last attempt timed out.", &t.timed_out),
            ("jobs_lost", "Jobs of this daemon whose worker went away and that were not retried.", &t.lost),
            ("jobs_cancelled", "Jobs of this daemon that were cancelled.", &t.cancelled),
            ("job_retries", "Attempts of this daemon's jobs that failed and were tried again.", &t.retries),
        ];
        for (name, help, family) in counters {
            registry.register(name, help, family.clone());
        }
        registry.register_with_unit(
            "job_queue_wait",
            "From submit to the first dispatch to a worker.",
            Unit::Seconds,
            t.queue_wait.clone(),
        );
        registry.register_with_unit(
            "job_run_time",
            "From the worker's start of the last attempt to the job's end.",
            Unit::Seconds,
            t.run_time.clone(),
        );
        registry.register(
            "link_setups",
            "Data channels opened, dialled or answered, by how they connected: via the candidate kind of the route (relay when either side is relayed, else srflx or prflx when either went through a NAT mapping, else host) and the protocol.",
            t.links_opened.clone(),
        );
        registry.register(
            "links_failed",
            "Dials and answers that ended without a data channel (no candidate pair worked, or the handshake timed out).",
            t.links_failed.clone(),
        );
        registry.register(
            "links_open",
            "Data channels to other peers open now.",
            t.links_open.clone(),
        );
        registry.register_with_unit(
            "link_setup",
            "Time from the start of a dial or answer to an open data channel.",
            Unit::Seconds,
            t.link_setup.clone(),
        );
        registry.register(
            "blobs_received",
            "Blobs received whole from other peers, by where they were held: memory, or a spool file.",
            t.blobs_received.clone(),
        );
        registry.register_with_unit(
            "blob_received",
            "Bytes of blobs received whole from other peers.",
            Unit::Bytes,
            t.blob_received_bytes.clone(),
        );
        registry.register(
            "journal_commits",
            "Journal transactions (each one disk sync when synced), by durability.",
            journal.commits.clone(),
        );
        registry.register_with_unit(
            "journal_commit",
            "Time one journal transaction took, its disk sync included.",
            Unit::Seconds,
            journal.latency.clone(),
        );
        registry.register_collector(Box::new(now));
        Telemetry { registry, ..t }
    }

    /// Counts `e`, just applied to `table`.
    pub(crate) fn record(&self, e: &JobEvent, table: &JobTable) {
        let Some(job) = table.get(&e.job_id) else {
            return;
        };
        let cap = self.label(job.capability.as_str());
        match &e.kind {
            EventKind::Queued { .. } => {
                self.submitted.get_or_create(&cap).inc();
            }
            EventKind::Retrying { .. } => {
                self.retries.get_or_create(&cap).inc();
            }
            EventKind::Finished { state, .. } => {
                let family = match *state {
                    "completed" => &self.completed,
                    "timed_out" => &self.timed_out,
                    "lost" => &self.lost,
                    "cancelled" => &self.cancelled,
                    _ => &self.failed,
                };
                family.get_or_create(&cap).inc();
                let secs = |ms: Option<u64>| ms.map(|ms| ms as f64 / 1000.0);
                if let Some(s) = secs(job.queued_ms) {
                    self.queue_wait.get_or_create(&cap).observe(s);
                }
                if let Some(s) = secs(job.run_ms) {
                    self.run_time.get_or_create(&cap).observe(s);
                }
            }
            EventKind::Dispatched { .. }
            | EventKind::Started { .. }
            | EventKind::Progress { .. } => {}
        }
    }

    /// A data channel opened, after `took`, over `path`.
    pub(crate) fn link_opened(
        &self,
        took: std::time::Duration,
        path: Option<jobmesh_transport::path::LinkPath>,
    ) {
        self.links_open.inc();
        self.link_setup.observe(took.as_secs_f64());
        let via = path.map_or(
            Via {
                via: "unknown",
                protocol: "unknown",
            },
            |p| Via {
                via: p.via().as_str(),
                protocol: p.protocol.as_str(),
            },
        );
        self.links_opened.get_or_create(&via).inc();
    }

    /// A dial or answer ended without a data channel.
    pub(crate) fn link_failed(&self) {
        self.links_failed.inc();
    }

    /// A set of blobs arrived whole.
    pub(crate) fn blobs_received(&self, blobs: &[crate::blobs::ReceivedBlob]) {
        for b in blobs {
            let held = if b.path().is_some() { "file" } else { "memory" };
            self.blobs_received.get_or_create(&HeldIn { held }).inc();
            self.blob_received_bytes.inc_by(b.size());
        }
    }

    /// An open data channel was closed.
    pub(crate) fn link_closed(&self) {
        self.links_open.dec();
    }

    /// The label of `capability`: itself while there are few, else `other`.
    fn label(&self, capability: &str) -> Cap {
        let mut seen = crate::lock(&self.labels);
        let capability = if seen.contains(capability) {
            capability.to_owned()
        } else if seen.len() < MAX_CAPABILITY_LABELS {
            seen.insert(capability.to_owned());
            capability.to_owned()
        } else {
            "other".to_owned()
        };
        Cap { capability }
    }

    /// Everything, in the Prometheus text format (version 0.0.4).
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// What a daemon holds and has counted, read at each scrape.
#[derive(Debug)]
pub(crate) struct Now {
    pub(crate) pool: watch::Receiver<PoolSnapshot>,
    pub(crate) counters: Arc<Metrics>,
    pub(crate) traffic: Traffic,
}

impl Collector for Now {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (me, peers, connected) = {
            let pool = self.pool.borrow();
            (pool.me.stats.clone(), pool.peers.len(), pool.connected)
        };
        let gauges: [(&str, &str, i64); 5] = [
            (
                "jobs_running",
                "Jobs this peer runs now, as a worker.",
                i64::from(me.running),
            ),
            (
                "jobs_queued",
                "Jobs waiting for one of this worker's slots.",
                i64::from(me.queued),
            ),
            (
                "slots",
                "Jobs this worker runs at once.",
                i64::from(me.slots),
            ),
            (
                "pool_peers",
                "Other members of the pool this peer knows of.",
                peers as i64,
            ),
            (
                "signal_connected",
                "1 while this peer is connected to its signal-server.",
                i64::from(connected),
            ),
        ];
        for (name, help, value) in gauges {
            let g = ConstGauge::new(value);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        let c = &self.counters;
        let counters: [(&str, &str, u64); 10] = [
            (
                "worker_submits_received",
                "Jobs offered to this peer as a worker.",
                Metrics::get(&c.submits_received),
            ),
            (
                "worker_jobs_refused",
                "Jobs this worker refused (busy, draining, not allowed, too large).",
                Metrics::get(&c.rejected),
            ),
            (
                "worker_handlers_cancelled",
                "Running jobs whose handler was cancelled.",
                Metrics::get(&c.handlers_cancelled),
            ),
            (
                "links_refused",
                "Links closed because the remote did not prove its identity.",
                Metrics::get(&c.links_refused),
            ),
            (
                "malformed_messages",
                "Data-channel messages that failed to decode.",
                Metrics::get(&c.malformed_messages),
            ),
            (
                "leases_expired",
                "Attempts declared lost because their worker went silent.",
                Metrics::get(&c.leases_expired),
            ),
            (
                "stale_messages",
                "Messages about attempts that were no longer current, ignored.",
                Metrics::get(&c.stale_messages),
            ),
            (
                "blob_sets_handed_over",
                "Blob sets handed over as files to a daemon on this host (not sent over the data channel).",
                Metrics::get(&c.blob_sets_handed_over),
            ),
            (
                "data_channel_sent_bytes",
                "Bytes sent on data channels.",
                self.traffic.sent(),
            ),
            (
                "data_channel_received_bytes",
                "Bytes received on data channels.",
                self.traffic.received(),
            ),
        ];
        for (name, help, value) in counters {
            let k = ConstCounter::new(value);
            k.encode(encoder.encode_descriptor(name, help, None, k.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use jobmesh_wire::{Capability, PeerId, PeerInfo, Stats};

    use super::*;
    use crate::jobs::Clock;

    fn telemetry() -> Telemetry {
        let me = PeerInfo {
            id: PeerId::random(),
            name: "me".into(),
            capabilities: Vec::new(),
            stats: Stats {
                slots: 3,
                running: 1,
                ..Stats::default()
            },
        };
        let (_tx, pool) = watch::channel(PoolSnapshot {
            connected: true,
            synced: true,
            me,
            peers: Vec::new(),
            refused: None,
            links: Default::default(),
            link_errors: Default::default(),
        });
        Telemetry::new(
            Now {
                pool,
                counters: Arc::default(),
                traffic: Traffic::default(),
            },
            &JournalMetrics::default(),
        )
    }

    /// Runs one job of `capability` through `table` to `state`, counting it.
    fn job(t: &Telemetry, table: &mut JobTable, capability: &str, state: &'static str) {
        let clock = Clock::now();
        let at = Instant::now();
        let job_id = uuid::Uuid::new_v4();
        let worker = PeerId::random();
        let kinds = [
            EventKind::Queued {
                capability: Capability::new(capability).expect("valid"),
                priority: 0,
            },
            EventKind::Dispatched { worker, attempt: 1 },
            EventKind::Started { worker, attempt: 1 },
            EventKind::Finished { state, error: None },
        ];
        for (i, kind) in kinds.into_iter().enumerate() {
            let e = JobEvent {
                job_id,
                at: at + Duration::from_millis(10 * i as u64),
                kind,
            };
            table.apply(&e, &clock);
            t.record(&e, table);
        }
    }

    #[test]
    fn jobs_are_counted_per_capability_and_state_with_their_times() {
        let t = telemetry();
        let mut table = JobTable::default();
        for _ in 0..3 {
            job(&t, &mut table, "echo", "completed");
        }
        job(&t, &mut table, "echo", "timed_out");
        job(&t, &mut table, "ocr", "failed");
        let text = t.render();
        for line in [
            "jobmesh_jobs_submitted_total{capability=\"echo\"} 4",
            "jobmesh_jobs_completed_total{capability=\"echo\"} 3",
            "jobmesh_jobs_timed_out_total{capability=\"echo\"} 1",
            "jobmesh_jobs_failed_total{capability=\"ocr\"} 1",
            "jobmesh_job_run_time_seconds_count{capability=\"echo\"} 4",
            "jobmesh_job_queue_wait_seconds_count{capability=\"ocr\"} 1",
            "jobmesh_slots 3",
            "jobmesh_jobs_running 1",
            "jobmesh_signal_connected 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }

    #[test]
    fn capability_labels_are_bounded() {
        let t = telemetry();
        let mut table = JobTable::default();
        for i in 0..MAX_CAPABILITY_LABELS + 5 {
            job(&t, &mut table, &format!("c{i}"), "completed");
        }
        let text = t.render();
        let series = text
            .lines()
            .filter(|l| l.starts_with("jobmesh_jobs_completed_total{"))
            .count();
        assert_eq!(series, MAX_CAPABILITY_LABELS + 1, "{text}");
        assert!(text.contains("jobmesh_jobs_completed_total{capability=\"other\"} 5"));
    }
}

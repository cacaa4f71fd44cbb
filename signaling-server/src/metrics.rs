//! `GET /metrics` on the signal-server's HTTP port: Prometheus text format
//! (version 0.0.4), behind the admin token like the admin API. Labels are a
//! closed set (reasons); no pool names or peer ids, which anyone can make
//! up.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::server::Counters;

/// What the server holds at one scrape.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Now {
    /// Open WebSocket connections of admitted peers.
    pub(crate) connections: usize,
    /// Members of all pools.
    pub(crate) peers: usize,
    /// Pools with at least one member.
    pub(crate) pools: usize,
}

/// A counter's name, help, label (`reason`) and value.
type Sample = (
    &'static str,
    &'static str,
    Option<(&'static str, &'static str)>,
    u64,
);

/// One scrape's values, owned (a collector lives in its registry).
#[derive(Debug)]
struct Scrape {
    gauges: Vec<(&'static str, &'static str, i64)>,
    counters: Vec<Sample>,
}

/// The metrics of a server holding `now` with `counters`, and its view
/// fan-out times.
pub(crate) fn render(now: Now, c: &Counters, fan_out: &Histogram) -> String {
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
    let scrape = Scrape {
        gauges: vec![
            (
                "connections",
                "Open WebSocket connections of admitted peers.",
                n(now.connections),
            ),
            ("peers", "Members of all pools.", n(now.peers)),
            ("pools", "Pools with at least one member.", n(now.pools)),
            (
                "cluster_servers",
                "Other servers of the cluster heard from and not gone (0: alone, or NATS away).",
                i64::try_from(get(&c.cluster.servers)).unwrap_or(i64::MAX),
            ),
        ],
        counters: vec![
            (
                "frames_received",
                "WebSocket data frames received.",
                None,
                get(&c.frames_in),
            ),
            (
                "received_bytes",
                "Bytes of WebSocket data frames received.",
                None,
                get(&c.bytes_in),
            ),
            (
                "frames_sent",
                "WebSocket data frames sent (views, relays, answers).",
                None,
                get(&c.frames_out),
            ),
            (
                "relays",
                "Handshake messages relayed between peers of a pool.",
                None,
                get(&c.relays),
            ),
            (
                "relays_dropped",
                "Relays dropped, by reason.",
                Some(("reason", "recipient_busy")),
                get(&c.relays_dropped_busy),
            ),
            (
                "relays_dropped",
                "Relays dropped, by reason.",
                Some(("reason", "rate_limited")),
                get(&c.relays_rate_limited),
            ),
            (
                "connections_refused",
                "Connections refused, by reason.",
                Some(("reason", "not_admitted")),
                get(&c.not_admitted),
            ),
            (
                "connections_refused",
                "Connections refused, by reason.",
                Some(("reason", "connection_limit")),
                get(&c.connections_refused),
            ),
            (
                "connections_refused",
                "Connections refused, by reason.",
                Some(("reason", "bad_frame")),
                get(&c.rejected_frames),
            ),
            (
                "connections_kicked",
                "Admitted connections the server ended, by reason.",
                Some(("reason", "slow_reader")),
                get(&c.clients_dropped_slow),
            ),
            (
                "connections_kicked",
                "Admitted connections the server ended, by reason.",
                Some(("reason", "silent")),
                get(&c.clients_expired),
            ),
            (
                "cluster_batches_published",
                "Batches of this server's own members' changes published to the cluster.",
                None,
                get(&c.cluster.batches_published),
            ),
            (
                "cluster_changes_applied",
                "Changes of other servers' members applied here.",
                None,
                get(&c.cluster.changes_applied),
            ),
            (
                "cluster_snapshots_requested",
                "Snapshots asked of other servers (a gap in their sequence, a new server or run).",
                None,
                get(&c.cluster.snapshots_requested),
            ),
            (
                "cluster_snapshots_sent",
                "Snapshots of this server's members sent to another server.",
                None,
                get(&c.cluster.snapshots_sent),
            ),
            (
                "cluster_relays",
                "Handshakes crossing the cluster, by direction.",
                Some(("direction", "out")),
                get(&c.cluster.relays_out),
            ),
            (
                "cluster_relays",
                "Handshakes crossing the cluster, by direction.",
                Some(("direction", "in")),
                get(&c.cluster.relays_in),
            ),
            (
                "cluster_publishes_dropped",
                "Cluster messages NATS did not take in time (lost batches heal by snapshot).",
                None,
                get(&c.cluster.publishes_dropped),
            ),
        ],
    };
    let mut registry = Registry::with_prefix("jobmesh_signal");
    registry.register_collector(Box::new(scrape));
    registry.register_with_unit(
        "view_fan_out",
        "From a change of a pool to a member's view holding it (views are paced, so this includes the wait for the member's next view).",
        Unit::Seconds,
        fan_out.clone(),
    );
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, value) in &self.gauges {
            let g = ConstGauge::new(*value);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        // One descriptor per name, then its labelled samples.
        let mut i = 0;
        while i < self.counters.len() {
            let (name, help, _, _) = self.counters[i];
            let mut metric = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            while i < self.counters.len() && self.counters[i].0 == name {
                let (_, _, label, value) = self.counters[i];
                let k = ConstCounter::new(value);
                match label {
                    Some(l) => k.encode(metric.encode_family(&[l])?)?,
                    None => k.encode(metric.encode_family(&Vec::<(String, String)>::new())?)?,
                }
                i += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_come_out_with_their_labels() {
        let c = Counters::default();
        c.relays.store(7, Ordering::Relaxed);
        c.not_admitted.store(2, Ordering::Relaxed);
        let text = render(
            Now {
                connections: 3,
                peers: 3,
                pools: 1,
            },
            &c,
            &Histogram::new([0.1]),
        );
        for line in [
            "jobmesh_signal_peers 3",
            "jobmesh_signal_relays_total 7",
            "jobmesh_signal_connections_refused_total{reason=\"not_admitted\"} 2",
            "jobmesh_signal_connections_refused_total{reason=\"bad_frame\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert_eq!(
            text.matches("# TYPE jobmesh_signal_connections_refused_total counter")
                .count()
                + text
                    .matches("# TYPE jobmesh_signal_connections_refused counter")
                    .count(),
            1,
            "{text}"
        );
    }
}

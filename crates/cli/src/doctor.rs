//! `peer doctor`: what stands between this peer and the others, in the
//! order a link needs it: the signal-server (reachable, TLS, admits this
//! peer), STUN (this host's public mapping, and whether it changes with the
//! destination: the NAT's kind), TURN (a relayed address with this peer's
//! credential), and, given a member, a link to it (the candidate pair and
//! the setup time). Each check says what it saw and, when it failed, what to
//! do; the verdict is the first failure. Exit 0 only when everything needed
//! works (a check with nothing to check is skipped, not failed).

use std::time::{Duration, Instant};

use jobmesh_peer::control::{self, Request};
use jobmesh_peer::{NetworkReport, LINK_PROBE_TIMEOUT};
use jobmesh_transport::path::LinkPath;
use jobmesh_transport::probe::{self, Mapping, NatKind};
use jobmesh_transport::rtc::RtcConfig;
use serde::Serialize;

use crate::args::{Common, DoctorArgs};
use crate::out::outln;
use crate::{connect, finish, Via};

/// What to do when the signal-server cannot be reached.
const SIGNAL_ADVICE: &str =
    "check the URL (--signal), that the signal-server runs, and that nothing between blocks TCP to it";

/// How long the signal-server gets to answer.
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Fail,
    Skip,
}

#[derive(Debug, Serialize)]
struct Check {
    check: &'static str,
    status: Status,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    advice: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ms: Option<u64>,
}

impl Check {
    fn ok(check: &'static str, detail: String, took: Option<Duration>) -> Self {
        Self {
            check,
            status: Status::Ok,
            detail,
            advice: None,
            ms: took.map(millis),
        }
    }

    fn fail(check: &'static str, detail: String, advice: &str) -> Self {
        Self {
            check,
            status: Status::Fail,
            detail,
            advice: Some(advice.to_owned()),
            ms: None,
        }
    }

    fn skip(check: &'static str, detail: &str) -> Self {
        Self {
            check,
            status: Status::Skip,
            detail: detail.to_owned(),
            advice: None,
            ms: None,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Debug, Serialize)]
struct Report {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    nat: Option<&'static str>,
    checks: Vec<Check>,
}

pub(crate) async fn run(args: DoctorArgs, common: &Common) -> anyhow::Result<u8> {
    let mut checks = Vec::new();
    let mut nat = None;
    match connect(common).await {
        // With --signal and no daemon, this command joins by itself: what
        // failed is reaching or joining the pool.
        Err(e) if common.signal.is_some() => {
            checks.push(Check::fail("signal", format!("{e:#}"), SIGNAL_ADVICE))
        }
        Err(e) => checks.push(Check::fail(
            "daemon",
            format!("{e:#}"),
            "start the peer daemon, or give --signal URL to check from this command alone",
        )),
        Ok(via) => {
            diagnose(&via, &args, &mut checks, &mut nat).await;
            finish(via).await;
        }
    }
    let ok = checks.iter().all(|c| !matches!(c.status, Status::Fail));
    let report = Report {
        ok,
        nat: nat.map(nat_name),
        checks,
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_human(&report);
    }
    Ok(if ok { 0 } else { 1 })
}

async fn diagnose(
    via: &Via,
    args: &DoctorArgs,
    checks: &mut Vec<Check>,
    nat: &mut Option<NatKind>,
) {
    let network: anyhow::Result<NetworkReport> = match via {
        Via::Control(path) => {
            async {
                let v = control::request(path, &Request::Network).await?;
                Ok(serde_json::from_value(v)?)
            }
            .await
        }
        Via::Ephemeral(h) => h.network().await.map_err(Into::into),
    };
    let network = match network {
        Ok(n) => n,
        Err(e) => {
            checks.push(Check::fail(
                "daemon",
                format!("{e:#}"),
                "is the daemon of this version? (peer --version)",
            ));
            return;
        }
    };
    // Every signal-server it may use: one that does not answer is one
    // this peer cannot move to when its own goes away.
    for url in std::iter::once(&network.signal_url).chain(&network.signal_fallbacks) {
        checks.push(signal(url, network.ca.as_deref()).await);
    }
    checks.push(membership(&network));
    let (stun, kind) = stun(&network).await;
    *nat = kind;
    checks.push(stun);
    checks.push(turn(&network).await);
    if let Some(peer) = &args.peer {
        checks.push(link(via, peer).await);
    }
}

async fn signal(url: &str, ca: Option<&std::path::Path>) -> Check {
    let tls = match ca.map(|ca| jobmesh_transport::signal::tls_config(Some(ca))) {
        Some(Err(e)) => return Check::fail("signal", e, "give --ca a readable PEM file"),
        Some(Ok(t)) => Some(t),
        None => None,
    };
    match jobmesh_transport::signal::reach(url, tls, SIGNAL_TIMEOUT).await {
        Ok(took) => {
            let how = if url.starts_with("wss:") {
                "answers over TLS"
            } else {
                "answers (ws://: no TLS)"
            };
            Check::ok("signal", format!("{url} {how}"), Some(took))
        }
        Err(e) if e.contains(url) => Check::fail("signal", e, SIGNAL_ADVICE),
        Err(e) => Check::fail("signal", format!("{url}: {e}"), SIGNAL_ADVICE),
    }
}

fn membership(n: &NetworkReport) -> Check {
    match (&n.refused, n.connected) {
        (Some(why), _) => Check::fail(
            "member",
            format!("the signal-server refused this peer: {why}"),
            "a closed pool needs an invitation (peer pool invite, then peer --token FILE)",
        ),
        (None, true) => Check::ok("member", "admitted to the pool, connected".to_owned(), None),
        (None, false) => Check::fail(
            "member",
            "not connected to the signal-server now (the daemon keeps trying)".to_owned(),
            "see the signal check above and the daemon's log",
        ),
    }
}

/// Every STUN-capable server of `n`: `stun:` URLs and the TURN servers
/// (which answer STUN too), `host:port`, each once.
fn stun_servers(n: &NetworkReport) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for url in n.ice_servers.iter().flat_map(|s| &s.urls) {
        if let Some(s) = probe::server_of(url) {
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    out
}

async fn stun(n: &NetworkReport) -> (Check, Option<NatKind>) {
    let servers = stun_servers(n);
    if servers.is_empty() {
        return (
            Check::skip(
                "stun",
                "no STUN or TURN server offered: links use this host's own addresses only (enough on one host or a LAN)",
            ),
            None,
        );
    }
    let bind = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
    let mappings = match probe::stun_mappings(bind, &servers).await {
        Ok(m) => m,
        Err(e) => {
            return (
                Check::fail(
                    "stun",
                    format!("cannot open a UDP socket: {e}"),
                    "check the host's firewall and socket limits",
                ),
                None,
            )
        }
    };
    let kind = probe::nat_kind(&mappings);
    let seen = describe(&mappings);
    let check = match kind {
        NatKind::NoAnswer => Check::fail(
            "stun",
            format!("no STUN server answered over UDP ({})", servers.join(", ")),
            "UDP is blocked on this network, or the servers are down: jobmesh's links need UDP (webrtc-rs 0.21 has no TURN over TCP); open outgoing UDP, or run the peer where it has it",
        ),
        NatKind::Unknown => Check::ok(
            "stun",
            format!("{seen}; one server answered, so whether the mapping changes per destination is not known (offer two STUN addresses to tell)"),
            None,
        ),
        NatKind::EndpointIndependent => Check::ok(
            "stun",
            format!("{seen}: the same mapping for every destination, so peers can reach this host directly"),
            None,
        ),
        NatKind::DestinationDependent => Check::ok(
            "stun",
            format!("{seen}: the mapping changes per destination (a symmetric NAT), so links to peers behind NATs go through TURN"),
            None,
        ),
    };
    (check, Some(kind))
}

fn describe(mappings: &[Mapping]) -> String {
    mappings
        .iter()
        .map(|m| match (m.mapped, m.rtt) {
            (Some(a), Some(rtt)) => format!("{} sees {a} ({} ms)", m.server, millis(rtt)),
            _ => format!("{} did not answer", m.server),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

async fn turn(n: &NetworkReport) -> Check {
    let turn_urls: Vec<&str> = n
        .ice_servers
        .iter()
        .filter(|s| s.credential.is_some())
        .flat_map(|s| &s.urls)
        .map(String::as_str)
        .filter(|u| u.starts_with("turn:") || u.starts_with("turns:"))
        .collect();
    if turn_urls.is_empty() {
        return Check::skip(
            "turn",
            "no TURN server offered: peers behind symmetric NATs or without UDP to each other cannot link (give the signal-server --turn-url and --turn-secret-file)",
        );
    }
    let mut config = RtcConfig::default();
    if n.ice_override {
        config.ice_servers = n.ice_servers.iter().flat_map(|s| s.urls.clone()).collect();
    } else {
        config.offered_ice_servers = n.ice_servers.clone();
    }
    let started = Instant::now();
    match probe::relay_candidates(&config).await {
        Ok((relays, took)) if relays > 0 => Check::ok(
            "turn",
            format!("{} relays for this peer ({relays} relayed address{})", turn_urls.join(", "), if relays == 1 { "" } else { "es" }),
            Some(took),
        ),
        Ok(_) => Check::fail(
            "turn",
            format!(
                "{} gave no relayed address within {} ms",
                turn_urls.join(", "),
                millis(started.elapsed())
            ),
            "the TURN server is down or unreachable over UDP, or refuses the credential: check coturn runs with the signal-server's --turn-secret-file as its static-auth-secret (use-auth-secret) and that both clocks agree",
        ),
        Err(e) => Check::fail("turn", e.to_string(), "see the daemon's log"),
    }
}

async fn link(via: &Via, peer: &str) -> Check {
    let started = Instant::now();
    let got: anyhow::Result<(String, LinkPath)> = match via {
        Via::Control(path) => {
            async {
                let v = control::request(
                    path,
                    &Request::Link {
                        peer: peer.to_owned(),
                    },
                )
                .await?;
                let name = v["name"].as_str().unwrap_or(peer).to_owned();
                Ok((name, serde_json::from_value(v["path"].clone())?))
            }
            .await
        }
        Via::Ephemeral(h) => {
            async {
                let pool = h.pool();
                let p = pool
                    .member(peer)
                    .ok_or_else(|| anyhow::anyhow!("no member named {peer:?} in the pool"))?;
                let path = h.link_to(p.id, LINK_PROBE_TIMEOUT).await?;
                Ok((p.name.clone(), path))
            }
            .await
        }
    };
    match got {
        Ok((name, path)) => Check::ok(
            "link",
            format!(
                "to {name}: {} (this side {}, theirs {}, {}), opened in {} ms",
                path.route(),
                path.local,
                path.remote,
                path.protocol,
                path.setup_ms
            ),
            Some(started.elapsed()),
        ),
        Err(e) => Check::fail(
            "link",
            format!("to {peer}: {e:#}"),
            "run peer doctor on that member's host too: the side whose checks fail above is the one to fix",
        ),
    }
}

fn nat_name(kind: NatKind) -> &'static str {
    match kind {
        NatKind::NoAnswer => "no-udp",
        NatKind::Unknown => "unknown",
        NatKind::EndpointIndependent => "endpoint-independent",
        NatKind::DestinationDependent => "destination-dependent",
    }
}

fn print_human(report: &Report) {
    for c in &report.checks {
        let mark = match c.status {
            Status::Ok => "ok  ",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        };
        let took = c.ms.map(|ms| format!(" ({ms} ms)")).unwrap_or_default();
        outln!("{mark} {:<7}{}{took}", c.check, c.detail);
        if let Some(advice) = &c.advice {
            outln!("     {:<7}-> {advice}", "");
        }
    }
    match report
        .checks
        .iter()
        .find(|c| matches!(c.status, Status::Fail))
    {
        None => outln!("verdict: this peer can reach the pool and link with its members"),
        Some(c) => outln!(
            "verdict: {} fails: {}",
            c.check,
            c.advice.as_deref().unwrap_or("")
        ),
    }
}

//! How a link connected, and why one did not: the candidate pair ICE
//! chose (host, server-reflexive, peer-reflexive or relayed; UDP or TCP)
//! with the link's setup time, and, for a link that never opened, what the
//! two SDPs offered and what that suggests. Pure: the transport hands in
//! the selected pair's candidate types and the SDP texts.
//!
//! What webrtc 0.21 supports (its `turn_relayer`): TURN over UDP only, so
//! `turn:` URLs with `?transport=tcp` and `turns:` URLs are skipped with a
//! warning; ICE-TCP host candidates, which reach only a peer whose TCP
//! port is open to this one. A network that blocks UDP therefore leaves a
//! daemon no path to a peer behind a NAT; the explanation says so.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How an ICE candidate was found (RFC 8445, 5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CandidateKind {
    /// An address of one of the host's interfaces.
    Host,
    /// The host's public mapping as a STUN server saw it (server-reflexive).
    Srflx,
    /// A mapping learnt from the remote's connectivity checks (peer-reflexive).
    Prflx,
    /// An address on a TURN server that relays for the host.
    Relay,
}

impl CandidateKind {
    /// From an SDP `typ` or webrtc's candidate type name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "host" => Some(Self::Host),
            "srflx" => Some(Self::Srflx),
            "prflx" => Some(Self::Prflx),
            "relay" => Some(Self::Relay),
            _ => None,
        }
    }

    /// Its name in SDP (`host`, `srflx`, `prflx`, `relay`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::Srflx => "srflx",
            Self::Prflx => "prflx",
            Self::Relay => "relay",
        }
    }
}

impl fmt::Display for CandidateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The transport protocol of a candidate pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// UDP.
    Udp,
    /// TCP (ICE-TCP).
    Tcp,
}

impl Protocol {
    /// `udp` or `tcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one link connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkPath {
    /// This side's candidate of the selected pair.
    pub local: CandidateKind,
    /// The remote's candidate of the selected pair.
    pub remote: CandidateKind,
    /// The pair's transport protocol.
    pub protocol: Protocol,
    /// From the start of the dial or answer to the open data channel, in
    /// milliseconds.
    pub setup_ms: u64,
}

impl LinkPath {
    /// Whether the link goes through a TURN server (on either side).
    pub fn relayed(&self) -> bool {
        self.local == CandidateKind::Relay || self.remote == CandidateKind::Relay
    }

    /// The candidate kind that says most about the route: `relay` when
    /// either side is relayed, else `srflx` or `prflx` when either went
    /// through a NAT mapping, else `host`.
    pub fn via(&self) -> CandidateKind {
        use CandidateKind::{Host, Prflx, Relay, Srflx};
        let either = |k| self.local == k || self.remote == k;
        [Relay, Srflx, Prflx]
            .into_iter()
            .find(|k| either(*k))
            .unwrap_or(Host)
    }

    /// `"relay"` or `"direct"`.
    pub fn route(&self) -> &'static str {
        if self.relayed() {
            "relay"
        } else {
            "direct"
        }
    }
}

impl fmt::Display for LinkPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}/{} {} {} ms",
            self.route(),
            self.local,
            self.remote,
            self.protocol,
            self.setup_ms
        )
    }
}

/// Candidates of one SDP, by kind (UDP and TCP together).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Candidates {
    /// Host candidates.
    pub host: usize,
    /// Server-reflexive candidates.
    pub srflx: usize,
    /// Relayed candidates.
    pub relay: usize,
}

impl Candidates {
    /// Counts the `a=candidate:` lines of `sdp` (peer-reflexive ones never
    /// appear in an SDP).
    pub fn of_sdp(sdp: &str) -> Self {
        let mut c = Self::default();
        for line in sdp.lines() {
            let Some(rest) = line.trim().strip_prefix("a=candidate:") else {
                continue;
            };
            let mut fields = rest.split_whitespace();
            let kind = fields
                .by_ref()
                .skip_while(|f| *f != "typ")
                .nth(1)
                .and_then(CandidateKind::parse);
            match kind {
                Some(CandidateKind::Host) => c.host += 1,
                Some(CandidateKind::Srflx) => c.srflx += 1,
                Some(CandidateKind::Relay) => c.relay += 1,
                Some(CandidateKind::Prflx) | None => {}
            }
        }
        c
    }
}

impl fmt::Display for Candidates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} host, {} srflx, {} relay",
            self.host, self.srflx, self.relay
        )
    }
}

/// The STUN and TURN URLs a connection was given, as far as webrtc 0.21
/// can use them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Servers {
    /// `stun:` URLs.
    pub stun: usize,
    /// `turn:` URLs over UDP (the only TURN webrtc 0.21 speaks).
    pub turn_udp: usize,
    /// `turn:` over TCP and `turns:` URLs, which webrtc 0.21 skips.
    pub turn_unsupported: usize,
}

impl Servers {
    /// Sorts `urls` by what they are.
    pub fn of<'a>(urls: impl IntoIterator<Item = &'a str>) -> Self {
        let mut s = Self::default();
        for url in urls {
            let url = url.trim();
            if url.starts_with("stun:") || url.starts_with("stuns:") {
                s.stun += 1;
            } else if url.starts_with("turns:") || url.contains("transport=tcp") {
                s.turn_unsupported += 1;
            } else if url.starts_with("turn:") {
                s.turn_udp += 1;
            }
        }
        s
    }
}

/// Why a link whose SDPs were `local` and `remote` (None: never produced
/// or never received) found no working path, in words for its error: what
/// each side offered and the likeliest cause.
pub fn explain(
    servers: Servers,
    relay_only: bool,
    local: Option<&str>,
    remote: Option<&str>,
) -> String {
    let Some(local) = local else {
        return "this side's candidates were not ready in time".to_owned();
    };
    let here = Candidates::of_sdp(local);
    let there = remote.map(Candidates::of_sdp);
    let mut why = match there {
        Some(there) => format!("candidates here: {here}; from the remote: {there}"),
        None => format!(
            "the remote's answer did not come back through the signal-server in time; \
             candidates here: {here}"
        ),
    };
    let mut hint = |s: &str| {
        why.push_str("; ");
        why.push_str(s);
    };
    if servers.turn_unsupported > 0 && servers.turn_udp == 0 {
        hint("the TURN URLs given are TCP or TLS, which webrtc-rs 0.21 cannot use (give a turn: URL over UDP)");
    }
    if servers.stun + servers.turn_udp == 0 {
        hint("no STUN or TURN server was given, so only addresses of this host's own networks can be tried: give the signal-server --stun-url and --turn-url (or the peer --ice-server)");
    } else {
        if servers.turn_udp > 0 && here.relay == 0 {
            hint("the TURN server gave no relay candidate (unreachable, UDP to it blocked, or it refused the credential)");
        }
        if servers.stun > 0 && here.srflx == 0 && !relay_only {
            hint("no STUN server answered (is UDP blocked on this network?)");
        }
    }
    if let Some(there) = there {
        if there.srflx + there.relay == 0 && !relay_only {
            hint("the remote offered only host addresses (it has no STUN or TURN server, or none answered it)");
        }
        if here.relay + there.relay > 0 {
            hint("relayed candidates were there but no pair answered (the TURN server may have lost the allocation, or a firewall drops the relayed traffic)");
        }
    }
    why.push_str("; run `peer doctor` on both hosts");
    why
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: &str = "v=0\r\n\
        a=candidate:1 1 udp 2130706431 192.168.1.2 5000 typ host\r\n\
        a=candidate:2 1 udp 1694498815 100.64.1.2 5000 typ srflx raddr 0.0.0.0 rport 5000\r\n";
    const REMOTE_HOST_ONLY: &str = "a=candidate:1 1 udp 2130706431 192.168.2.2 6000 typ host\r\n";

    #[test]
    fn candidates_are_counted_by_their_typ() {
        let relay =
            "a=candidate:3 1 udp 16777215 203.0.113.1 49152 typ relay raddr 1.2.3.4 rport 1\n";
        let c = Candidates::of_sdp(&format!("{LOCAL}{relay}a=candidate:bad\n"));
        assert_eq!(
            c,
            Candidates {
                host: 1,
                srflx: 1,
                relay: 1
            }
        );
    }

    #[test]
    fn servers_are_sorted_by_what_webrtc_can_use() {
        let s = Servers::of([
            "stun:a:3478",
            "turn:a:3478",
            "turn:a:3478?transport=tcp",
            "turns:a:5349",
        ]);
        assert_eq!(
            s,
            Servers {
                stun: 1,
                turn_udp: 1,
                turn_unsupported: 2
            }
        );
    }

    #[test]
    fn a_missing_relay_candidate_blames_the_turn_server() {
        let servers = Servers::of(["stun:a:3478", "turn:a:3478"]);
        let why = explain(servers, false, Some(LOCAL), Some(REMOTE_HOST_ONLY));
        assert!(why.contains("1 host, 1 srflx, 0 relay"), "{why}");
        assert!(why.contains("TURN server gave no relay candidate"), "{why}");
        assert!(why.contains("remote offered only host"), "{why}");
        assert!(why.contains("peer doctor"), "{why}");
    }

    #[test]
    fn no_servers_and_no_stun_answer_are_told_apart() {
        let none = explain(Servers::default(), false, Some(LOCAL), Some(LOCAL));
        assert!(none.contains("no STUN or TURN server was given"), "{none}");
        let host_only = REMOTE_HOST_ONLY;
        let silent = explain(
            Servers::of(["stun:a:3478"]),
            false,
            Some(host_only),
            Some(LOCAL),
        );
        assert!(silent.contains("no STUN server answered"), "{silent}");
        assert!(!silent.contains("only host addresses"), "{silent}");
        let tcp = explain(
            Servers::of(["turns:a:5349"]),
            false,
            Some(LOCAL),
            Some(LOCAL),
        );
        assert!(tcp.contains("webrtc-rs 0.21 cannot use"), "{tcp}");
    }

    #[test]
    fn a_handshake_without_an_answer_still_judges_this_side() {
        let servers = Servers::of(["stun:a:3478", "turn:a:3478"]);
        let why = explain(servers, false, Some(LOCAL), None);
        assert!(why.contains("answer did not come back"), "{why}");
        assert!(why.contains("TURN server gave no relay candidate"), "{why}");
    }

    #[test]
    fn a_path_shows_its_route() {
        let p = LinkPath {
            local: CandidateKind::Relay,
            remote: CandidateKind::Srflx,
            protocol: Protocol::Udp,
            setup_ms: 320,
        };
        assert!(p.relayed());
        assert_eq!(p.via(), CandidateKind::Relay);
        assert_eq!(p.to_string(), "relay relay/srflx udp 320 ms");
        let direct = LinkPath {
            local: CandidateKind::Host,
            remote: CandidateKind::Prflx,
            ..p
        };
        assert_eq!(
            (direct.route(), direct.via()),
            ("direct", CandidateKind::Prflx)
        );
        let json = serde_json::to_value(p).expect("json");
        assert_eq!(json["local"], "relay");
        assert_eq!(json["protocol"], "udp");
    }
}

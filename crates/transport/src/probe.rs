//! Probes for `peer doctor`: what a STUN server sees of this host (its
//! public mapping, from one socket to every server, so that mappings that
//! differ by destination show a NAT that maps per destination), and
//! whether a TURN server gives this host a relayed address with the
//! credentials at hand (a relay-only peer connection's ICE gathering, the
//! same path a link takes).

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use ::rtc::stun::message::{Getter, Message, TransactionId, BINDING_REQUEST, BINDING_SUCCESS};
use ::rtc::stun::xoraddr::XorMappedAddress;
use tokio::net::UdpSocket;

use crate::path::Candidates;
use crate::rtc::{LinkError, RtcConfig};

/// How many binding requests go to each STUN server, and how long each
/// waits for its answer.
const STUN_TRIES: u32 = 3;
const STUN_WAIT: Duration = Duration::from_millis(700);

/// One STUN server's answer to this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// The server, as resolved.
    pub server: SocketAddr,
    /// This host's address and port as the server saw them; None when it
    /// did not answer.
    pub mapped: Option<SocketAddr>,
    /// The round trip of the answer.
    pub rtt: Option<Duration>,
}

/// `host:port` of a `stun:`/`turn:` URL (default port 3478), without its
/// `?transport=` query.
pub fn server_of(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("stun:")
        .or_else(|| url.strip_prefix("turn:"))?;
    let host_port = rest.split('?').next()?;
    if host_port.is_empty() {
        return None;
    }
    Some(
        if host_port
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            host_port.to_owned()
        } else {
            format!("{host_port}:3478")
        },
    )
}

/// Asks every server in `servers` (`host:port`) for this host's mapping,
/// from one UDP socket bound to `bind`, one server after another.
pub async fn stun_mappings(bind: SocketAddr, servers: &[String]) -> std::io::Result<Vec<Mapping>> {
    let socket = UdpSocket::bind(bind).await?;
    let mut out = Vec::new();
    for s in servers {
        let Some(server) = s
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.find(SocketAddr::is_ipv4))
        else {
            continue;
        };
        out.push(ask(&socket, server).await);
    }
    Ok(out)
}

async fn ask(socket: &UdpSocket, server: SocketAddr) -> Mapping {
    let mut buf = [0u8; 1024];
    for _ in 0..STUN_TRIES {
        let mut request = Message::new();
        if request
            .build(&[Box::new(BINDING_REQUEST), Box::new(TransactionId::new())])
            .is_err()
        {
            break;
        }
        let sent = Instant::now();
        if socket.send_to(&request.raw, server).await.is_err() {
            break;
        }
        let deadline = sent + STUN_WAIT;
        while let Ok(Ok((n, from))) =
            tokio::time::timeout_at(deadline.into(), socket.recv_from(&mut buf)).await
        {
            if from != server {
                continue;
            }
            let mut answer = Message::new();
            if answer.unmarshal_binary(&buf[..n]).is_err()
                || answer.transaction_id != request.transaction_id
                || answer.typ != BINDING_SUCCESS
            {
                continue;
            }
            let mut mapped = XorMappedAddress::default();
            if mapped.get_from(&answer).is_ok() {
                return Mapping {
                    server,
                    mapped: Some(SocketAddr::new(mapped.ip, mapped.port)),
                    rtt: Some(sent.elapsed()),
                };
            }
        }
    }
    Mapping {
        server,
        mapped: None,
        rtt: None,
    }
}

/// What a NAT does to this host's traffic, from its [`Mapping`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    /// No STUN server answered.
    NoAnswer,
    /// One answer (or all from one server): the mapping's behaviour across
    /// destinations is not known.
    Unknown,
    /// The same public address and port towards every server: direct links
    /// with peers behind easy NATs work (or there is no NAT).
    EndpointIndependent,
    /// Another public port per destination: a symmetric ("hard") NAT;
    /// links to peers behind NATs need a TURN relay.
    DestinationDependent,
}

/// Judges `mappings`.
pub fn nat_kind(mappings: &[Mapping]) -> NatKind {
    let seen: Vec<(SocketAddr, SocketAddr)> = mappings
        .iter()
        .filter_map(|m| Some((m.server, m.mapped?)))
        .collect();
    let Some((first_server, first)) = seen.first() else {
        return NatKind::NoAnswer;
    };
    if seen.iter().all(|(s, _)| s == first_server) {
        return NatKind::Unknown;
    }
    if seen.iter().all(|(_, m)| m == first) {
        NatKind::EndpointIndependent
    } else {
        NatKind::DestinationDependent
    }
}

/// Whether the TURN servers of `config` give this host a relayed address:
/// gathers a relay-only connection's candidates (at most
/// [`RtcConfig::gather_timeout`]) and counts them; with the time it took.
pub async fn relay_candidates(config: &RtcConfig) -> Result<(usize, Duration), LinkError> {
    let started = Instant::now();
    let config = RtcConfig {
        relay_only: true,
        ..config.clone()
    };
    let sdp = crate::rtc::gathered_offer(&config).await?;
    Ok((Candidates::of_sdp(&sdp).relay, started.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(server: &str, mapped: Option<&str>) -> Mapping {
        Mapping {
            server: server.parse().expect("addr"),
            mapped: mapped.map(|a| a.parse().expect("addr")),
            rtt: None,
        }
    }

    #[test]
    fn urls_name_their_server() {
        assert_eq!(
            server_of("stun:a.example:19302").as_deref(),
            Some("a.example:19302")
        );
        assert_eq!(
            server_of("turn:10.0.0.1?transport=udp").as_deref(),
            Some("10.0.0.1:3478")
        );
        assert_eq!(server_of("turns:a:5349"), None);
        assert_eq!(server_of("stun:"), None);
    }

    #[test]
    fn mappings_tell_easy_from_hard_nats() {
        let easy = [
            m("203.0.113.1:3478", Some("100.64.1.2:5000")),
            m("203.0.113.2:3478", Some("100.64.1.2:5000")),
        ];
        assert_eq!(nat_kind(&easy), NatKind::EndpointIndependent);
        let hard = [
            m("203.0.113.1:3478", Some("100.64.1.2:5000")),
            m("203.0.113.2:3478", Some("100.64.1.2:6123")),
        ];
        assert_eq!(nat_kind(&hard), NatKind::DestinationDependent);
        let one = [
            m("203.0.113.1:3478", Some("100.64.1.2:5000")),
            m("203.0.113.2:3478", None),
        ];
        assert_eq!(nat_kind(&one), NatKind::Unknown);
        assert_eq!(nat_kind(&[m("203.0.113.1:3478", None)]), NatKind::NoAnswer);
    }

    #[tokio::test]
    async fn a_silent_server_gives_no_mapping() {
        // A bound socket that never answers.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = silent.local_addr().expect("addr").to_string();
        let got = stun_mappings("127.0.0.1:0".parse().expect("addr"), &[addr])
            .await
            .expect("probe");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].mapped, None);
    }
}

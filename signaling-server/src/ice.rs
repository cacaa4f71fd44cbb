//! The STUN and TURN servers a signal-server offers the members of its
//! pools, in each welcome. TURN credentials follow coturn's shared-secret
//! scheme (`use-auth-secret` / `static-auth-secret`, the "TURN REST API"):
//! the username is `EXPIRY:PEER-ID` (Unix seconds), the password the
//! base64 HMAC-SHA1 of the username under the secret the server shares with
//! coturn. Each is minted for one peer at its hello and valid for
//! [`Turn::ttl`]: no long-lived TURN password is ever on a peer, and a
//! credential names whom it was given to. A connected peer gets fresh ones
//! every half lifetime ([`IceOffer::renew_every`], `ice_servers` frames), so
//! a daemon connected for weeks can still open relayed links.

use std::time::Duration;

use hmac::{Hmac, Mac};
use jobmesh_wire::signal::IceServer;
use jobmesh_wire::PeerId;
use sha1::Sha1;

/// What a signal-server offers: STUN servers, and a TURN service.
#[derive(Clone, Default)]
pub struct IceOffer {
    /// `stun:host:port` URLs, given as they are.
    pub stun_urls: Vec<String>,
    /// A TURN service sharing a secret with this server.
    pub turn: Option<Turn>,
}

/// A TURN service (coturn with `use-auth-secret`).
#[derive(Clone)]
pub struct Turn {
    /// `turn:host:port?transport=udp`, `…?transport=tcp`, `turns:…`.
    pub urls: Vec<String>,
    /// The secret shared with the TURN server (`static-auth-secret`).
    pub secret: String,
    /// How long a minted credential is valid.
    pub ttl: Duration,
}

impl std::fmt::Debug for IceOffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceOffer")
            .field("stun_urls", &self.stun_urls)
            .field("turn_urls", &self.turn.as_ref().map(|t| &t.urls))
            .finish_non_exhaustive()
    }
}

impl IceOffer {
    /// How often a connected peer gets fresh credentials: half their
    /// lifetime, so the ones it holds are always at least half valid. None
    /// without TURN (STUN needs no credential).
    pub fn renew_every(&self) -> Option<Duration> {
        self.turn.as_ref().map(|t| t.ttl / 2)
    }

    /// The ICE servers for `peer`'s welcome, at Unix time `now`.
    pub fn for_peer(&self, peer: &PeerId, now: u64) -> Vec<IceServer> {
        let mut out = Vec::new();
        if !self.stun_urls.is_empty() {
            out.push(IceServer {
                urls: self.stun_urls.clone(),
                username: None,
                credential: None,
            });
        }
        if let Some(turn) = &self.turn {
            let username = format!("{}:{peer}", now.saturating_add(turn.ttl.as_secs()));
            out.push(IceServer {
                urls: turn.urls.clone(),
                credential: Some(credential(turn.secret.as_bytes(), &username)),
                username: Some(username),
            });
        }
        out
    }
}

/// coturn's password for `username` under `secret`: base64(HMAC-SHA1).
pub fn credential(secret: &[u8], username: &str) -> String {
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(username.as_bytes());
    data_encoding::BASE64.encode(&mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_is_coturns_hmac_of_the_username() {
        // python3: base64.b64encode(hmac.new(b"north-wind-secret", b"1800000000:06bf…c5c7", hashlib.sha1).digest())
        assert_eq!(
            credential(
                b"north-wind-secret",
                "1800000000:06bfb095-729e-8add-a58b-be266e75c5c7"
            ),
            "ZK5wSCbEPJcOE669pt1ZBxNLFFw="
        );
    }

    #[test]
    fn each_peer_gets_its_own_credential_that_expires() {
        let offer = IceOffer {
            stun_urls: vec!["stun:203.0.113.7:3478".into()],
            turn: Some(Turn {
                urls: vec!["turn:203.0.113.7:3478?transport=udp".into()],
                secret: "north-wind-secret".into(),
                ttl: Duration::from_secs(3600),
            }),
        };
        let a = PeerId(uuid::Uuid::parse_str("06bfb095-729e-8add-a58b-be266e75c5c7").expect("id"));
        let servers = offer.for_peer(&a, 1_799_996_400);
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].urls, ["stun:203.0.113.7:3478"]);
        assert_eq!(servers[0].username, None);
        assert_eq!(
            servers[1].username.as_deref(),
            Some("1800000000:06bfb095-729e-8add-a58b-be266e75c5c7")
        );
        assert_eq!(
            servers[1].credential.as_deref(),
            Some("ZK5wSCbEPJcOE669pt1ZBxNLFFw=")
        );
        servers
            .iter()
            .try_for_each(IceServer::validate)
            .expect("valid on the wire");
        assert!(IceOffer::default().for_peer(&a, 0).is_empty());
    }
}

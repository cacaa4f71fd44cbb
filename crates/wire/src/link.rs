//! The link handshake: before any job message crosses a new data channel,
//! each side proves that it holds the key of the peer id it was dialled or
//! answered as, bound to this very connection.
//!
//! ```text
//! A                                              B
//!  | -- link_hello {key_A, nonce_A} ----------> |   both at once, as the
//!  | <---------- link_hello {key_B, nonce_B} -- |   channel opens
//!  | -- link_proof {sig_A} -------------------> |   each after the other's hello
//!  | <-------------------- link_proof {sig_B} - |
//! ```
//!
//! `sig_A` is A's Ed25519 signature ([`Purpose::ChannelBinding`]) of
//! [`binding_message`]`(fp_A, fp_B, nonce_A, nonce_B, id_B)`, where `fp_X` is
//! the SHA-256 fingerprint of X's DTLS certificate on this connection. The
//! WebRTC stack checks the certificate each side presented against the
//! fingerprint in the SDP it was given; the signal-server relays those SDPs
//! and could swap them, so the proof carries the fingerprints each side
//! actually saw. B checks that `key_A` is the key of the peer it expects
//! (`key_A.peer_id()`), then the signature over the fingerprints *it* sees:
//! anyone relaying the connection (two DTLS sessions, two pairs of
//! fingerprints) cannot produce it without A's key. Fresh nonces on both
//! sides make a recorded proof worthless on another connection.
//!
//! [`Purpose::ChannelBinding`]: jobmesh_identity::Purpose::ChannelBinding

use std::fmt;

use jobmesh_identity::{Nonce, PeerId};

/// How long a link may take from open to both proofs checked; past it the
/// link is closed (as a link that failed, not as a forgery).
pub const BINDING_TIMEOUT_MS: u64 = 10_000;

/// Bytes of a certificate fingerprint (SHA-256).
pub const FINGERPRINT_LEN: usize = 32;

/// The SHA-256 fingerprint of a DTLS certificate.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; FINGERPRINT_LEN]);

impl Fingerprint {
    /// The `sha-256` fingerprint an SDP declares (`a=fingerprint:sha-256
    /// AB:CD:…`, at session or media level); `None` if it has none, or two
    /// that differ.
    pub fn from_sdp(sdp: &str) -> Option<Self> {
        let mut found: Option<Self> = None;
        for line in sdp.lines() {
            let Some(rest) = line.trim_end().strip_prefix("a=fingerprint:") else {
                continue;
            };
            let Some((algorithm, hex)) = rest.split_once(' ') else {
                continue;
            };
            if !algorithm.eq_ignore_ascii_case("sha-256") {
                continue;
            }
            let fp = Self::from_colon_hex(hex.trim())?;
            if found.is_some_and(|f| f != fp) {
                return None;
            }
            found = Some(fp);
        }
        found
    }

    fn from_colon_hex(hex: &str) -> Option<Self> {
        let mut bytes = [0u8; FINGERPRINT_LEN];
        let mut parts = hex.split(':');
        for b in &mut bytes {
            let part = parts.next()?;
            if part.len() != 2 {
                return None;
            }
            *b = u8::from_str_radix(part, 16).ok()?;
        }
        parts.next().is_none().then_some(Self(bytes))
    }
}

impl fmt::Display for Fingerprint {
    /// The SDP form: upper-case hex bytes joined by colons.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// What one side knows of a new connection when its channel opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// The fingerprint of this side's own DTLS certificate.
    pub local: Fingerprint,
    /// The fingerprint of the certificate the remote presented.
    pub remote: Fingerprint,
    /// This side's fresh nonce for the handshake.
    pub nonce: Nonce,
}

/// What a link proof signs: the signer's fingerprint, the verifier's, the
/// signer's nonce, the verifier's, and the verifier's peer id (who the
/// signer believes it is talking to): 32 + 32 + 32 + 32 + 16 bytes.
pub fn binding_message(
    signer: &Fingerprint,
    verifier: &Fingerprint,
    signer_nonce: &Nonce,
    verifier_nonce: &Nonce,
    verifier_id: &PeerId,
) -> Vec<u8> {
    let mut msg = Vec::with_capacity(4 * 32 + 16);
    msg.extend_from_slice(&signer.0);
    msg.extend_from_slice(&verifier.0);
    msg.extend_from_slice(signer_nonce.as_bytes());
    msg.extend_from_slice(verifier_nonce.as_bytes());
    msg.extend_from_slice(verifier_id.0.as_bytes());
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08";

    #[test]
    fn an_sdp_fingerprint_is_read_and_printed_back() {
        let sdp =
            format!("v=0\r\na=group:BUNDLE 0\r\nm=application 9\r\na=fingerprint:sha-256 {FP}\r\n");
        let fp = Fingerprint::from_sdp(&sdp).expect("found");
        assert_eq!(fp.to_string(), FP);
        assert_eq!(fp.0[0], 0x6b);
    }

    #[test]
    fn a_missing_malformed_or_contradictory_fingerprint_is_none() {
        assert_eq!(Fingerprint::from_sdp("v=0\r\n"), None);
        assert_eq!(
            Fingerprint::from_sdp("a=fingerprint:sha-256 6B:8B\r\n"),
            None
        );
        let other = FP.replacen("6B", "6C", 1);
        let two = format!("a=fingerprint:sha-256 {FP}\r\na=fingerprint:sha-256 {other}\r\n");
        assert_eq!(Fingerprint::from_sdp(&two), None);
        // Other algorithms are not ours to check; the same one twice is fine.
        let mixed = format!("a=fingerprint:sha-1 00:11\r\na=fingerprint:sha-256 {FP}\r\na=fingerprint:SHA-256 {FP}\r\n");
        assert!(Fingerprint::from_sdp(&mixed).is_some());
    }

    #[test]
    fn the_binding_message_orders_signer_before_verifier() {
        let a = Fingerprint([1; 32]);
        let b = Fingerprint([2; 32]);
        let (na, nb) = (Nonce::from_bytes([3; 32]), Nonce::from_bytes([4; 32]));
        let id = PeerId::random();
        let m = binding_message(&a, &b, &na, &nb, &id);
        assert_eq!(m.len(), 144);
        assert_ne!(m, binding_message(&b, &a, &nb, &na, &id));
        assert_eq!(&m[..32], &[1; 32]);
        assert_eq!(&m[128..], id.0.as_bytes());
    }
}

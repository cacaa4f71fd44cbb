//! The link handshake's checks ([`jobmesh_wire::link`]): pure functions of
//! what both sides sent and what this side saw of the connection.

use jobmesh_identity::{Identity, Nonce, PublicKey, Purpose, Signature};
use jobmesh_trust::{Credential, Revocations, TrustError};
use jobmesh_wire::link::{binding_message, Binding};
use jobmesh_wire::PeerId;

/// The remote's half of the handshake: its key, nonce and credential.
#[derive(Debug, Clone)]
pub(crate) struct RemoteHello {
    pub(crate) key: PublicKey,
    pub(crate) nonce: Nonce,
    pub(crate) credential: Option<Box<Credential>>,
}

/// Why a link was refused. Each names what failed, for the log, the
/// counters and the errors of the jobs that were waiting for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The remote's key is not the key of the peer id it was reached as.
    #[error("it proved the key of peer {proved}, not of the peer it was reached as")]
    WrongKey {
        /// Whose key it holds.
        proved: PeerId,
    },
    /// The proof does not verify over this connection's fingerprints and
    /// nonces: someone between relays the connection, or replays a proof.
    #[error("its proof does not match this connection's DTLS certificates and nonces (a relayed or replayed handshake)")]
    BadProof,
    /// A message out of the handshake's order.
    #[error("it sent {0} before the link handshake completed")]
    OutOfOrder(&'static str),
    /// The remote refused the link and said why.
    #[error("it refused the link: {0}")]
    RemoteRefused(String),
    /// In a closed pool: the remote showed no valid credential.
    #[error("it is not a member of this pool: {0}")]
    NotMember(String),
}

/// Checks the remote's key against the peer id it was reached as.
pub(crate) fn check_key(expected: PeerId, key: &PublicKey) -> Result<(), Refusal> {
    let proved = key.peer_id();
    if proved == expected {
        Ok(())
    } else {
        Err(Refusal::WrongKey { proved })
    }
}

/// In a closed pool where this peer holds `own`: the remote's credential,
/// checked for its key at Unix time `now` against the owner's `revoked`
/// list; returns it.
pub(crate) fn check_member(
    own: &Credential,
    remote: &RemoteHello,
    now: u64,
    revoked: Option<&Revocations>,
) -> Result<Credential, Refusal> {
    let pool = own.grant();
    let credential = remote
        .credential
        .as_deref()
        .ok_or_else(|| Refusal::NotMember("it presented no credential".into()))?;
    credential
        .verify(&pool.pool, &pool.pool_key, &remote.key, now, revoked)
        .map(|_| credential.clone())
        .map_err(|e: TrustError| Refusal::NotMember(format!("its credential: {e}")))
}

/// This side's proof for the remote `remote_id` that sent `remote`.
pub(crate) fn prove(
    identity: &Identity,
    binding: &Binding,
    remote: &RemoteHello,
    remote_id: PeerId,
) -> Signature {
    let msg = binding_message(
        &binding.local,
        &binding.remote,
        &binding.nonce,
        &remote.nonce,
        &remote_id,
    );
    identity.sign(Purpose::ChannelBinding, &msg)
}

/// Checks the remote's proof: signed by its key, over the fingerprints and
/// nonces as this side (`me`) sees them.
pub(crate) fn check_proof(
    me: PeerId,
    binding: &Binding,
    remote: &RemoteHello,
    sig: &Signature,
) -> Result<(), Refusal> {
    let msg = binding_message(
        &binding.remote,
        &binding.local,
        &remote.nonce,
        &binding.nonce,
        &me,
    );
    remote
        .key
        .verify(Purpose::ChannelBinding, &msg, sig)
        .map_err(|_| Refusal::BadProof)
}

#[cfg(test)]
mod tests {
    use jobmesh_wire::link::Fingerprint;

    use super::*;

    fn identity(n: u8) -> Identity {
        Identity::from_seed(&[n; 32])
    }

    fn nonce(n: u8) -> Nonce {
        Nonce::from_bytes([n; 32])
    }

    /// Both sides' view of one connection.
    fn connection() -> (Binding, Binding) {
        let (fa, fb) = (Fingerprint([0xa; 32]), Fingerprint([0xb; 32]));
        (
            Binding {
                local: fa,
                remote: fb,
                nonce: nonce(1),
            },
            Binding {
                local: fb,
                remote: fa,
                nonce: nonce(2),
            },
        )
    }

    fn hello(identity: &Identity, binding: &Binding) -> RemoteHello {
        RemoteHello {
            key: identity.public(),
            nonce: binding.nonce,
            credential: None,
        }
    }

    #[test]
    fn proofs_over_the_same_connection_verify_both_ways() {
        let (a, b) = (identity(1), identity(2));
        let (ca, cb) = connection();
        let sig_a = prove(&a, &ca, &hello(&b, &cb), b.peer_id());
        let sig_b = prove(&b, &cb, &hello(&a, &ca), a.peer_id());
        assert_eq!(
            check_proof(b.peer_id(), &cb, &hello(&a, &ca), &sig_a),
            Ok(())
        );
        assert_eq!(
            check_proof(a.peer_id(), &ca, &hello(&b, &cb), &sig_b),
            Ok(())
        );
    }

    #[test]
    fn a_relayed_connection_fails_the_proof() {
        // A talks to M (fingerprints a, m1); M talks to B (m2, b) and passes
        // the handshake messages through.
        let (a, b) = (identity(1), identity(2));
        let at_a = Binding {
            local: Fingerprint([0xa; 32]),
            remote: Fingerprint([0x01; 32]),
            nonce: nonce(1),
        };
        let at_b = Binding {
            local: Fingerprint([0xb; 32]),
            remote: Fingerprint([0x02; 32]),
            nonce: nonce(2),
        };
        let sig_a = prove(&a, &at_a, &hello(&b, &at_b), b.peer_id());
        assert_eq!(
            check_proof(b.peer_id(), &at_b, &hello(&a, &at_a), &sig_a),
            Err(Refusal::BadProof)
        );
    }

    #[test]
    fn a_proof_from_another_connection_or_for_another_peer_fails() {
        let (a, b, c) = (identity(1), identity(2), identity(3));
        let (ca, cb) = connection();
        let sig_a = prove(&a, &ca, &hello(&b, &cb), b.peer_id());
        // Replayed on a connection where B chose another nonce.
        let fresh = Binding {
            nonce: nonce(9),
            ..cb
        };
        assert_eq!(
            check_proof(b.peer_id(), &fresh, &hello(&a, &ca), &sig_a),
            Err(Refusal::BadProof)
        );
        // Shown to C, on the same fingerprints and nonces.
        assert_eq!(
            check_proof(c.peer_id(), &cb, &hello(&a, &ca), &sig_a),
            Err(Refusal::BadProof)
        );
    }

    #[test]
    fn a_key_for_another_id_is_refused() {
        let (a, b) = (identity(1), identity(2));
        assert_eq!(check_key(a.peer_id(), &a.public()), Ok(()));
        assert_eq!(
            check_key(a.peer_id(), &b.public()),
            Err(Refusal::WrongKey {
                proved: b.peer_id()
            })
        );
    }
}

//! Who may be in a closed pool, and as what.
//!
//! A closed pool has an owner key pair (`peer pool init`). The owner never
//! runs a server and never hands out a shared secret: it signs.
//!
//! ```text
//! pool key P ──signs──▶ invitation {grant, invite key I}      (peer pool invite)
//!                          │ the token carries I's secret half, out of band
//!                          ▼
//!            invite key I ──signs──▶ member key M              (peer --token: once)
//! ```
//!
//! The result, a [`Credential`], is a chain anyone can check with P's public
//! key alone: P signed the [`Grant`] (pool, roles, capabilities, expiry) for
//! I, and I signed M. A daemon redeems its invitation once and keeps the
//! credential in its data dir; it presents it in its hello (the signal-server
//! checks it) and in every link handshake (the other peer checks it), and
//! proves it holds M by signing each challenge. Nobody can add a member
//! without P's key, and nobody can use a member's credential without M's.
//! The owner withdraws credentials with a signed [`Revocations`] list.
//!
//! No I/O and no clock: times are Unix seconds, passed in.

use std::fmt;
use std::str::FromStr;

use data_encoding::BASE64URL_NOPAD;
use jobmesh_identity::{Identity, PublicKey, Purpose, Signature, Zeroizing};
use serde::{Deserialize, Serialize};

/// Longest pool name (as the signalling wire allows).
pub const MAX_POOL_LEN: usize = 64;
/// Most capabilities a grant may name.
pub const MAX_CAPABILITIES: usize = 64;
/// Longest capability name.
pub const MAX_CAPABILITY_LEN: usize = 64;
/// Most entries of a revocation list.
pub const MAX_REVOKED: usize = 1024;
/// The start of an invitation token.
pub const TOKEN_PREFIX: &str = "jobmesh-invite-v1.";

/// What a member may do in its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Run jobs (advertise capabilities).
    Worker,
    /// Submit jobs to workers.
    Submitter,
    /// Watch the pool's job events.
    Observer,
}

impl Role {
    fn bit(self) -> u8 {
        match self {
            Role::Worker => 1,
            Role::Submitter => 2,
            Role::Observer => 4,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Worker => "worker",
            Role::Submitter => "submitter",
            Role::Observer => "observer",
        })
    }
}

impl FromStr for Role {
    type Err = TrustError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "worker" => Ok(Role::Worker),
            "submitter" => Ok(Role::Submitter),
            "observer" => Ok(Role::Observer),
            other => Err(TrustError::Invalid(format!(
                "unknown role {other:?}: worker, submitter or observer"
            ))),
        }
    }
}

/// What went wrong with a token, a credential or a revocation list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// Malformed, or a field out of bounds.
    #[error("{0}")]
    Invalid(String),
    /// For another pool.
    #[error("it is for pool {got:?}, not {want:?}")]
    WrongPool {
        /// The pool expected.
        want: String,
        /// The pool it names.
        got: String,
    },
    /// Signed by another pool key than the pool's.
    #[error("it was not issued by this pool's key (issued by {0})")]
    WrongIssuer(PublicKey),
    /// A signature in it does not verify.
    #[error("{0} does not verify")]
    Forged(&'static str),
    /// It names another member key than the one presented.
    #[error("it belongs to another key ({0})")]
    NotYours(PublicKey),
    /// Past its expiry.
    #[error("it expired at {at} (Unix time); ask the pool's owner for a new invitation")]
    Expired {
        /// When.
        at: u64,
    },
    /// On the owner's revocation list.
    #[error("it was revoked by the pool's owner")]
    Revoked,
    /// It lacks a role.
    #[error("it does not grant the {0} role")]
    MissingRole(Role),
    /// It does not cover a capability.
    #[error("it does not allow the capability {0:?}")]
    Capability(String),
}

/// What the owner grants: roles in one pool until a time, optionally only
/// for some capabilities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The pool's name.
    pub pool: String,
    /// The pool's (owner's) public key.
    pub pool_key: PublicKey,
    /// The roles, sorted, without repeats.
    pub roles: Vec<Role>,
    /// The capabilities a worker may offer (or a submitter may ask for);
    /// empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// Valid until this Unix time (seconds).
    pub expires: u64,
}

impl Grant {
    /// Whether it grants `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Whether it covers `capability`.
    pub fn allows(&self, capability: &str) -> bool {
        self.capabilities.is_empty() || self.capabilities.iter().any(|c| c == capability)
    }

    /// `Err` unless it grants `role` for every capability in `capabilities`.
    pub fn require<'a>(
        &self,
        role: Role,
        mut capabilities: impl Iterator<Item = &'a str>,
    ) -> Result<(), TrustError> {
        if !self.has(role) {
            return Err(TrustError::MissingRole(role));
        }
        match capabilities.find(|c| !self.allows(c)) {
            Some(c) => Err(TrustError::Capability(c.to_owned())),
            None => Ok(()),
        }
    }

    fn validate(&self) -> Result<(), TrustError> {
        let bad = |why: String| Err(TrustError::Invalid(why));
        if self.pool.is_empty() || self.pool.len() > MAX_POOL_LEN {
            return bad(format!("a pool name is 1-{MAX_POOL_LEN} bytes"));
        }
        if self.roles.is_empty() {
            return bad("a grant names at least one role".into());
        }
        if self.roles.windows(2).any(|w| w[0] >= w[1]) {
            return bad("roles must be sorted, without repeats".into());
        }
        if self.capabilities.len() > MAX_CAPABILITIES
            || self
                .capabilities
                .iter()
                .any(|c| c.is_empty() || c.len() > MAX_CAPABILITY_LEN)
        {
            return bad(format!(
                "at most {MAX_CAPABILITIES} capabilities of 1-{MAX_CAPABILITY_LEN} bytes"
            ));
        }
        Ok(())
    }

    /// The bytes the owner signs for invitation key `invite_key`: every
    /// field, length-prefixed where its length varies.
    fn signed_bytes(&self, invite_key: &PublicKey) -> Vec<u8> {
        let mut b = Vec::with_capacity(128);
        put_str(&mut b, &self.pool);
        b.extend_from_slice(&self.pool_key.to_bytes());
        b.extend_from_slice(&invite_key.to_bytes());
        b.push(self.roles.iter().fold(0, |bits, r| bits | r.bit()));
        // At most MAX_CAPABILITIES (validated), so the count fits.
        b.extend_from_slice(
            &u16::try_from(self.capabilities.len())
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        );
        for c in &self.capabilities {
            put_str(&mut b, c);
        }
        b.extend_from_slice(&self.expires.to_be_bytes());
        b
    }
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    // Callers validated the length (≤ 64).
    b.extend_from_slice(&u16::try_from(s.len()).unwrap_or(u16::MAX).to_be_bytes());
    b.extend_from_slice(s.as_bytes());
}

/// A grant signed for an invitation key: the first link of every
/// credential minted from one invitation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endorsement {
    /// What is granted.
    pub grant: Grant,
    /// The invitation's public key.
    pub invite_key: PublicKey,
    /// The owner's signature of both.
    pub sig: Signature,
}

impl Endorsement {
    /// Checks the owner's signature, with the key the grant names.
    fn verify(&self) -> Result<(), TrustError> {
        self.grant.validate()?;
        self.grant
            .pool_key
            .verify(
                Purpose::Invitation,
                &self.grant.signed_bytes(&self.invite_key),
                &self.sig,
            )
            .map_err(|_| TrustError::Forged("the owner's signature"))
    }
}

/// An invitation: an endorsement plus the invitation key's secret half,
/// handed to a new member out of band as one token. Anyone holding it can
/// join the pool with the grant until it expires (or its key is revoked):
/// treat it like a password, send it only over a private channel.
#[derive(Clone)]
pub struct Invitation {
    endorsement: Endorsement,
    secret: Identity,
}

impl fmt::Debug for Invitation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Invitation")
            .field("endorsement", &self.endorsement)
            .finish_non_exhaustive()
    }
}

/// The token's content.
#[derive(Serialize, Deserialize)]
struct TokenBody {
    #[serde(flatten)]
    endorsement: Endorsement,
    /// The invitation key's secret seed, base64url.
    secret: String,
}

impl Invitation {
    /// The owner of `pool` (key `owner`) invites a member with `roles`
    /// (and, if not empty, only `capabilities`) until `expires`.
    pub fn mint(
        owner: &Identity,
        pool: &str,
        mut roles: Vec<Role>,
        mut capabilities: Vec<String>,
        expires: u64,
    ) -> Result<Self, TrustError> {
        roles.sort();
        roles.dedup();
        capabilities.sort();
        capabilities.dedup();
        let grant = Grant {
            pool: pool.to_owned(),
            pool_key: owner.public(),
            roles,
            capabilities,
            expires,
        };
        grant.validate()?;
        let secret = Identity::generate();
        let invite_key = secret.public();
        let sig = owner.sign(Purpose::Invitation, &grant.signed_bytes(&invite_key));
        Ok(Self {
            endorsement: Endorsement {
                grant,
                invite_key,
                sig,
            },
            secret,
        })
    }

    /// What it grants.
    pub fn grant(&self) -> &Grant {
        &self.endorsement.grant
    }

    /// Its public key (what a revocation names).
    pub fn key(&self) -> PublicKey {
        self.endorsement.invite_key
    }

    /// The token text: [`TOKEN_PREFIX`] then base64url JSON.
    pub fn to_token(&self) -> Zeroizing<String> {
        let body = TokenBody {
            endorsement: self.endorsement.clone(),
            secret: BASE64URL_NOPAD.encode(self.secret.secret_seed().as_ref()),
        };
        // Serializing plain data cannot fail.
        let json = Zeroizing::new(serde_json::to_vec(&body).unwrap_or_default());
        Zeroizing::new(format!("{TOKEN_PREFIX}{}", BASE64URL_NOPAD.encode(&json)))
    }

    /// Reads a token (surrounding whitespace allowed) and checks that it is
    /// whole: the owner's signature, and the secret matching the key.
    /// Whether it is the right pool's and unexpired is the redeemer's check.
    pub fn from_token(token: &str) -> Result<Self, TrustError> {
        let bad = |why: &str| TrustError::Invalid(format!("not a jobmesh invitation: {why}"));
        let body = token
            .trim()
            .strip_prefix(TOKEN_PREFIX)
            .ok_or_else(|| bad(&format!("it does not start with {TOKEN_PREFIX}")))?;
        if body.len() > 16 * 1024 {
            return Err(bad("it is too long"));
        }
        let json = Zeroizing::new(
            BASE64URL_NOPAD
                .decode(body.as_bytes())
                .map_err(|_| bad("it is not base64url"))?,
        );
        let body: TokenBody =
            serde_json::from_slice(&json).map_err(|e| bad(&format!("its content: {e}")))?;
        let seed = Zeroizing::new(
            BASE64URL_NOPAD
                .decode(body.secret.as_bytes())
                .map_err(|_| bad("its secret is not base64url"))?,
        );
        let seed: &[u8; 32] = seed
            .as_slice()
            .try_into()
            .map_err(|_| bad("its secret is not 32 bytes"))?;
        let secret = Identity::from_seed(seed);
        if secret.public() != body.endorsement.invite_key {
            return Err(bad("its secret does not match its key"));
        }
        body.endorsement.verify()?;
        Ok(Self {
            endorsement: body.endorsement,
            secret,
        })
    }

    /// Binds `member` (a daemon's identity key): the credential it keeps.
    pub fn redeem(&self, member: &PublicKey) -> Credential {
        let member_sig = self.secret.sign(
            Purpose::Membership,
            &membership_bytes(&self.endorsement, member),
        );
        Credential {
            endorsement: self.endorsement.clone(),
            member: *member,
            member_sig,
        }
    }
}

fn membership_bytes(e: &Endorsement, member: &PublicKey) -> Vec<u8> {
    let mut b = e.grant.signed_bytes(&e.invite_key);
    b.extend_from_slice(&e.sig.to_bytes());
    b.extend_from_slice(&member.to_bytes());
    b
}

/// A member's credential: the owner's endorsement of an invitation key,
/// and that key's signature of the member's key. Public: it travels in
/// hellos and link handshakes; only the member's key makes it usable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// The owner's endorsement.
    #[serde(flatten)]
    pub endorsement: Endorsement,
    /// The member's key.
    pub member: PublicKey,
    /// The invitation key's signature binding it.
    pub member_sig: Signature,
}

impl Credential {
    /// What it grants (unchecked: see [`verify`](Self::verify)).
    pub fn grant(&self) -> &Grant {
        &self.endorsement.grant
    }

    /// Checks the whole chain for `member` in `pool`, whose key is
    /// `pool_key`, at Unix time `now`, against the owner's `revoked` list:
    /// returns what it grants.
    pub fn verify(
        &self,
        pool: &str,
        pool_key: &PublicKey,
        member: &PublicKey,
        now: u64,
        revoked: Option<&Revocations>,
    ) -> Result<&Grant, TrustError> {
        let grant = &self.endorsement.grant;
        if grant.pool != pool {
            return Err(TrustError::WrongPool {
                want: pool.to_owned(),
                got: grant.pool.clone(),
            });
        }
        if grant.pool_key != *pool_key {
            return Err(TrustError::WrongIssuer(grant.pool_key));
        }
        self.endorsement.verify()?;
        if self.member != *member {
            return Err(TrustError::NotYours(self.member));
        }
        self.endorsement
            .invite_key
            .verify(
                Purpose::Membership,
                &membership_bytes(&self.endorsement, member),
                &self.member_sig,
            )
            .map_err(|_| TrustError::Forged("the invitation's signature"))?;
        if now >= grant.expires {
            return Err(TrustError::Expired { at: grant.expires });
        }
        if revoked.is_some_and(|r| r.revokes(self)) {
            return Err(TrustError::Revoked);
        }
        Ok(grant)
    }
}

/// The owner's list of withdrawn credentials: invitation keys (every
/// member that redeemed one) and member keys. A newer list (higher `seq`)
/// replaces an older one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocations {
    /// The pool.
    pub pool: String,
    /// Its key, which signed the list.
    pub pool_key: PublicKey,
    /// Increases with each list the owner publishes.
    pub seq: u64,
    /// Revoked invitation keys.
    #[serde(default)]
    pub invites: Vec<PublicKey>,
    /// Revoked member keys.
    #[serde(default)]
    pub members: Vec<PublicKey>,
    /// The owner's signature.
    pub sig: Signature,
}

impl Revocations {
    /// The owner's signed list.
    pub fn sign(
        owner: &Identity,
        pool: &str,
        seq: u64,
        mut invites: Vec<PublicKey>,
        mut members: Vec<PublicKey>,
    ) -> Result<Self, TrustError> {
        let key = |k: &PublicKey| k.to_bytes();
        invites.sort_by_key(key);
        invites.dedup();
        members.sort_by_key(key);
        members.dedup();
        let mut list = Self {
            pool: pool.to_owned(),
            pool_key: owner.public(),
            seq,
            invites,
            members,
            sig: Signature::from_bytes([0; 64]),
        };
        list.check_bounds()?;
        list.sig = owner.sign(Purpose::Revocation, &list.signed_bytes());
        Ok(list)
    }

    /// Checks it is `pool`'s, signed by `pool_key`.
    pub fn verify(&self, pool: &str, pool_key: &PublicKey) -> Result<(), TrustError> {
        if self.pool != pool {
            return Err(TrustError::WrongPool {
                want: pool.to_owned(),
                got: self.pool.clone(),
            });
        }
        if self.pool_key != *pool_key {
            return Err(TrustError::WrongIssuer(self.pool_key));
        }
        self.check_bounds()?;
        pool_key
            .verify(Purpose::Revocation, &self.signed_bytes(), &self.sig)
            .map_err(|_| TrustError::Forged("the owner's signature"))
    }

    /// Whether it withdraws `credential`.
    pub fn revokes(&self, credential: &Credential) -> bool {
        self.invites.contains(&credential.endorsement.invite_key)
            || self.members.contains(&credential.member)
    }

    fn check_bounds(&self) -> Result<(), TrustError> {
        if self.pool.is_empty() || self.pool.len() > MAX_POOL_LEN {
            return Err(TrustError::Invalid(format!(
                "a pool name is 1-{MAX_POOL_LEN} bytes"
            )));
        }
        if self.invites.len() + self.members.len() > MAX_REVOKED {
            return Err(TrustError::Invalid(format!(
                "a revocation list holds at most {MAX_REVOKED} keys"
            )));
        }
        Ok(())
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64 + 32 * (self.invites.len() + self.members.len()));
        put_str(&mut b, &self.pool);
        b.extend_from_slice(&self.pool_key.to_bytes());
        b.extend_from_slice(&self.seq.to_be_bytes());
        for list in [&self.invites, &self.members] {
            // Bounded by MAX_REVOKED (checked).
            b.extend_from_slice(&u32::try_from(list.len()).unwrap_or(u32::MAX).to_be_bytes());
            for k in list {
                b.extend_from_slice(&k.to_bytes());
            }
        }
        b
    }
}

#[cfg(test)]
mod tests;

//! Who a peer is: an Ed25519 key pair, and the peer id derived from its
//! public key, so that nobody can claim an id without holding its key.
//!
//! * [`Identity`]: the secret half. A daemon keeps it in its data dir
//!   ([`Identity::load_or_create`], owner-only file); a library user may
//!   bring one ([`Identity::from_seed`]).
//! * [`PublicKey`]: what others see; its text form is 43 characters of
//!   unpadded base64url. [`PublicKey::peer_id`] is the id it stands for.
//! * Every signature names its purpose ([`Purpose`]): a signature made for
//!   one step of one protocol is never valid for another.
//!
//! No I/O except reading and writing the key file.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use data_encoding::BASE64URL_NOPAD;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use uuid::Uuid;
pub use zeroize::Zeroizing;

/// A peer's id: a UUID. A peer's own is derived from its public key
/// ([`PublicKey::peer_id`]); [`PeerId::random`] is for tests and for
/// things that are not peers.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct PeerId(pub Uuid);

impl PeerId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }

    /// The first 8 hex digits, for tables and log lines.
    pub fn short(&self) -> String {
        let mut s = self.0.simple().to_string();
        s.truncate(8);
        s
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Bytes of a public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Bytes of a signature.
pub const SIGNATURE_LEN: usize = 64;
/// The key file's name in a data dir.
pub const KEY_FILE: &str = "identity.key";

/// The first line of a key file's content that is not a comment starts with this.
const KEY_PREFIX: &str = "ed25519:";
/// Domain separation of peer ids derived from keys.
const PEER_ID_CONTEXT: &str = "jobmesh 2026-12 peer id v1";

/// What a signature is for. Each purpose is signed with its name and a zero
/// byte before the message, so no signature serves two purposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A peer proves to the signal-server that it holds its id's key.
    SignalAdmission,
    /// A peer proves its key over one data channel, bound to that
    /// connection's DTLS fingerprints.
    ChannelBinding,
    /// A pool's owner grants an invitation key a role in the pool.
    Invitation,
    /// An invitation key binds the member key that redeemed it.
    Membership,
    /// A pool's owner publishes the credentials it revoked.
    Revocation,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::SignalAdmission => b"jobmesh signal admission v1",
            Purpose::ChannelBinding => b"jobmesh channel binding v1",
            Purpose::Invitation => b"jobmesh pool invitation v1",
            Purpose::Membership => b"jobmesh pool membership v1",
            Purpose::Revocation => b"jobmesh pool revocations v1",
        }
    }
}

/// What went wrong with a key, a signature or a key file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Text that is not a public key.
    #[error("not a jobmesh public key (43 characters of base64url): {0}")]
    BadPublicKey(String),
    /// Text that is not a nonce.
    #[error("not a nonce (43 characters of base64url): {0}")]
    BadNonce(String),
    /// A signature that is malformed or does not verify.
    #[error("the signature does not verify")]
    BadSignature,
    /// The key file cannot be read or written.
    #[error("identity key {path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        error: std::io::Error,
    },
    /// The key file exists but is not one.
    #[error("identity key {path} is not a jobmesh key file: {why}")]
    BadKeyFile {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// The key file can be read by others.
    #[error(
        "identity key {path} can be read by other users (mode {mode:o}): run `chmod 600 {path}`"
    )]
    Exposed {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
}

/// A peer's secret key. Its `Debug` shows only the public half.
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("public", &self.public())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A new random identity (from the operating system's RNG).
    pub fn generate() -> Self {
        let seed = Zeroizing::new(rand::random::<[u8; 32]>());
        Self::from_seed(&seed)
    }

    /// The identity of a 32-byte secret seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(seed),
        }
    }

    /// Its 32-byte secret seed (for a token that carries a key; keep it
    /// as secret as the key).
    pub fn secret_seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_bytes())
    }

    /// Its public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.key.verifying_key().to_bytes())
    }

    /// The peer id it stands for.
    pub fn peer_id(&self) -> PeerId {
        self.public().peer_id()
    }

    /// Signs `msg` for `purpose`.
    pub fn sign(&self, purpose: Purpose, msg: &[u8]) -> Signature {
        Signature(self.key.sign(&framed(purpose, msg)).to_bytes())
    }

    /// Reads the identity kept at `path`, or creates one there (owner-only:
    /// mode 0600) if there is none. `true` when it was created. A key file
    /// others can read is refused, naming the `chmod` that fixes it.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), IdentityError> {
        match Self::load(path) {
            Ok(identity) => Ok((identity, false)),
            Err(IdentityError::Io { error, .. })
                if error.kind() == std::io::ErrorKind::NotFound =>
            {
                let identity = Self::generate();
                match identity.store(path) {
                    Ok(()) => Ok((identity, true)),
                    // Another process created it first: use theirs.
                    Err(IdentityError::Io { error, .. })
                        if error.kind() == std::io::ErrorKind::AlreadyExists =>
                    {
                        Ok((Self::load(path)?, false))
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Reads the identity kept at `path`.
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        use std::os::unix::fs::PermissionsExt;
        let io = |error| IdentityError::Io {
            path: path.display().to_string(),
            error,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::Exposed {
                path: path.display().to_string(),
                mode,
            });
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
        let bad = |why: &str| IdentityError::BadKeyFile {
            path: path.display().to_string(),
            why: why.to_owned(),
        };
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or_else(|| bad("it holds no key"))?;
        let encoded = line
            .strip_prefix(KEY_PREFIX)
            .ok_or_else(|| bad("its key line does not start with `ed25519:`"))?;
        let bytes = Zeroizing::new(
            BASE64URL_NOPAD
                .decode(encoded.as_bytes())
                .map_err(|_| bad("its key is not base64url"))?,
        );
        let seed: &[u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| bad("its key is not 32 bytes"))?;
        Ok(Self::from_seed(seed))
    }

    /// Writes the identity to a new file at `path`, owner-only, and syncs
    /// it. Fails if the file exists.
    pub fn store(&self, path: &Path) -> Result<(), IdentityError> {
        self.store_as(path, &format!("identity key of peer {}", self.peer_id()))
    }

    /// [`store`](Self::store), its first comment line saying what the key is.
    pub fn store_as(&self, path: &Path, what: &str) -> Result<(), IdentityError> {
        use std::os::unix::fs::OpenOptionsExt;
        let io = |error| IdentityError::Io {
            path: path.display().to_string(),
            error,
        };
        let seed = Zeroizing::new(BASE64URL_NOPAD.encode(self.key.as_bytes()));
        let text = Zeroizing::new(format!(
            "# jobmesh {what}: keep it secret.\n# public key {}\n{KEY_PREFIX}{}\n",
            self.public(),
            seed.as_str(),
        ));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)
    }
}

/// Serde as the type's text form (`Display` / `FromStr`).
macro_rules! text_serde {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A peer's public key: 32 bytes known to be a valid Ed25519 point (kept
/// compressed: it travels in every hello).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; PUBLIC_KEY_LEN]);

impl PublicKey {
    /// The key of 32 bytes, if they are a valid Ed25519 point.
    pub fn from_bytes(bytes: &[u8; PUBLIC_KEY_LEN]) -> Result<Self, IdentityError> {
        VerifyingKey::from_bytes(bytes)
            .map(|_| Self(*bytes))
            .map_err(|_| IdentityError::BadPublicKey(BASE64URL_NOPAD.encode(bytes)))
    }

    /// Its 32 bytes.
    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.0
    }

    /// The peer id this key stands for: 128 bits of a keyed hash of the
    /// key, as a UUID (version 8). Claiming someone's id takes a key whose
    /// hash matches it: a second preimage, 2^128 work.
    pub fn peer_id(&self) -> PeerId {
        let hash = blake3::derive_key(PEER_ID_CONTEXT, &self.0);
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&hash[..16]);
        bytes[6] = (bytes[6] & 0x0f) | 0x80; // version 8: custom
        bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 9562 variant
        PeerId(Uuid::from_bytes(bytes))
    }

    /// Checks a signature of `msg` for `purpose` by this key's holder.
    pub fn verify(
        &self,
        purpose: Purpose,
        msg: &[u8],
        signature: &Signature,
    ) -> Result<(), IdentityError> {
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        VerifyingKey::from_bytes(&self.0)
            .and_then(|key| key.verify_strict(&framed(purpose, msg), &sig))
            .map_err(|_| IdentityError::BadSignature)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE64URL_NOPAD.encode(&self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || IdentityError::BadPublicKey(s.chars().take(64).collect());
        let bytes = BASE64URL_NOPAD.decode(s.as_bytes()).map_err(|_| bad())?;
        let bytes: [u8; PUBLIC_KEY_LEN] = bytes.try_into().map_err(|_| bad())?;
        Self::from_bytes(&bytes)
    }
}

text_serde!(PublicKey);

/// An Ed25519 signature; its text form is unpadded base64url (86 characters).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature([u8; SIGNATURE_LEN]);

impl Signature {
    /// Its 64 bytes.
    pub fn to_bytes(&self) -> [u8; SIGNATURE_LEN] {
        self.0
    }

    /// A signature from its 64 bytes (checked when verified).
    pub fn from_bytes(bytes: [u8; SIGNATURE_LEN]) -> Self {
        Self(bytes)
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE64URL_NOPAD.encode(&self.0))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({self})")
    }
}

impl FromStr for Signature {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = BASE64URL_NOPAD
            .decode(s.as_bytes())
            .map_err(|_| IdentityError::BadSignature)?;
        let bytes: [u8; SIGNATURE_LEN] =
            bytes.try_into().map_err(|_| IdentityError::BadSignature)?;
        Ok(Self(bytes))
    }
}

text_serde!(Signature);

/// Bytes of a [`Nonce`].
pub const NONCE_LEN: usize = 32;

/// 32 fresh random bytes that make one handshake unlike any other; text
/// form: unpadded base64url (43 characters).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Nonce([u8; NONCE_LEN]);

impl Nonce {
    /// A nonce from the operating system's RNG.
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// A nonce of given bytes (a simulator's, drawn from its seed).
    pub fn from_bytes(bytes: [u8; NONCE_LEN]) -> Self {
        Self(bytes)
    }

    /// Its bytes.
    pub fn as_bytes(&self) -> &[u8; NONCE_LEN] {
        &self.0
    }
}

impl fmt::Display for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE64URL_NOPAD.encode(&self.0))
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce({self})")
    }
}

impl FromStr for Nonce {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || IdentityError::BadNonce(s.chars().take(64).collect());
        let bytes = BASE64URL_NOPAD.decode(s.as_bytes()).map_err(|_| bad())?;
        Ok(Self(bytes.try_into().map_err(|_| bad())?))
    }
}

text_serde!(Nonce);

/// A fresh nonce for a challenge: `bytes` random bytes from the operating
/// system's RNG, as unpadded base64url.
pub fn random_nonce(bytes: usize) -> String {
    let mut nonce = vec![0u8; bytes];
    rand::fill(nonce.as_mut_slice());
    BASE64URL_NOPAD.encode(&nonce)
}

/// What is signed: the purpose's label, a zero byte, the message.
fn framed(purpose: Purpose, msg: &[u8]) -> Vec<u8> {
    let label = purpose.label();
    let mut framed = Vec::with_capacity(label.len() + 1 + msg.len());
    framed.extend_from_slice(label);
    framed.push(0);
    framed.extend_from_slice(msg);
    framed
}

#[cfg(test)]
mod tests;

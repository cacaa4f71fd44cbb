use std::collections::BTreeMap;
use std::fmt;

use crate::PeerId;
use serde::{Deserialize, Serialize};

use crate::DecodeError;

/// Longest peer name or pool name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Most capabilities one peer may advertise.
pub const MAX_CAPABILITIES: usize = 64;
/// Longest capability name, in bytes.
const MAX_CAPABILITY_LEN: usize = 64;
/// Most slots one peer may advertise (a sanity bound, not a tuning knob).
const MAX_SLOTS: u32 = 4096;

/// A capability name: 1–64 bytes of `[a-z0-9_.-]`, e.g. `thumbnail`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Capability(String);

impl Capability {
    /// Validates a capability name.
    pub fn new(name: &str) -> Result<Self, DecodeError> {
        let ok_len = !name.is_empty() && name.len() <= MAX_CAPABILITY_LEN;
        let ok_chars = name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
        if ok_len && ok_chars {
            Ok(Self(name.to_owned()))
        } else {
            Err(DecodeError::Invalid {
                field: "capability",
                reason: format!(
                    "{:?} must be 1-{MAX_CAPABILITY_LEN} characters of a-z, 0-9, '_', '.', '-'",
                    crate::truncate(name, 80)
                ),
            })
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Capability {
    type Err = DecodeError;
    fn from_str(s: &str) -> Result<Self, DecodeError> {
        Self::new(s)
    }
}

impl TryFrom<String> for Capability {
    type Error = DecodeError;
    fn try_from(s: String) -> Result<Self, DecodeError> {
        Self::new(&s)
    }
}

impl From<Capability> for String {
    fn from(c: Capability) -> String {
        c.0
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// How busy a worker is, as it reports itself to the pool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Jobs it can run at once.
    pub slots: u32,
    /// Jobs running now.
    pub running: u32,
    /// Jobs waiting in its own submit queue.
    pub queued: u32,
    /// Jobs it finished successfully since start.
    pub completed: u64,
    /// Jobs that failed on it since start.
    pub failed: u64,
    /// Bumped by the worker on every change, so a receiver can tell which of
    /// two reports (broadcast or piggybacked on a result) is newer.
    #[serde(default)]
    pub seq: u64,
    /// Mean run time of its finished jobs, per capability, in milliseconds.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mean_run_ms: BTreeMap<Capability, u64>,
    /// Jobs it finished since start, per capability: `[completed, failed]`.
    /// (Optional on the wire: a peer that sends none counts as none.)
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub finished: BTreeMap<Capability, [u64; 2]>,
    /// It is shutting down: it finishes what runs and takes no new job, so
    /// submitters leave it out at once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
}

/// One member of a pool as the signal-server describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Its id.
    pub id: PeerId,
    /// Its human name (not unique).
    pub name: String,
    /// What it can run.
    pub capabilities: Vec<Capability>,
    /// Latest stats it reported.
    pub stats: Stats,
}

pub(crate) fn check_name(field: &'static str, name: &str) -> Result<(), DecodeError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(DecodeError::Invalid {
            field,
            reason: format!(
                "{:?} must be 1-{MAX_NAME_LEN} bytes of letters, digits, '_', '.', '-'",
                crate::truncate(name, 80)
            ),
        })
    }
}

pub(crate) fn check_capabilities(caps: &[Capability]) -> Result<(), DecodeError> {
    if caps.len() > MAX_CAPABILITIES {
        return Err(DecodeError::Invalid {
            field: "capabilities",
            reason: format!("{} given, at most {MAX_CAPABILITIES}", caps.len()),
        });
    }
    Ok(())
}

pub(crate) fn check_slots(slots: u32) -> Result<(), DecodeError> {
    if slots > MAX_SLOTS {
        return Err(DecodeError::Invalid {
            field: "slots",
            reason: format!("{slots} given, at most {MAX_SLOTS}"),
        });
    }
    Ok(())
}

impl Stats {
    pub(crate) fn validate(&self) -> Result<(), DecodeError> {
        check_slots(self.slots)?;
        if self.mean_run_ms.len() > MAX_CAPABILITIES || self.finished.len() > MAX_CAPABILITIES {
            return Err(DecodeError::Invalid {
                field: "stats",
                reason: format!("mean_run_ms or finished has more than {MAX_CAPABILITIES} entries"),
            });
        }
        if self.running > self.slots.max(1) * 64 || self.queued > 10_000_000 {
            return Err(DecodeError::Invalid {
                field: "stats",
                reason: "running or queued out of range".into(),
            });
        }
        Ok(())
    }
}

//! The data-channel wire: peer ⇄ peer, one JSON message per data-channel message.
//!
//! ```text
//! submitter                      worker
//!  | -- submit {job_id, ..} ----> |
//!  | <------- accepted {job_id}   |   took a slot
//!  | <------- rejected {job_id}   |   or: busy / unknown capability / bad input / draining
//!  | <--------- result {job_id}   |   exactly one per accepted job
//!  | -- cancel {job_id} --------> |   submitter gave up (timeout)
//!  | <------- error {job_id?}     |   the message could not be decoded
//! ```
//! Every reply echoes the job id of the message it answers.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{decode_tagged, Capability, DecodeError};

/// Largest data-channel message: webrtc 0.21's default SCTP maximum (64 KiB).
/// A submit, its input included, must fit in one message.
pub const MAX_DC_MESSAGE: usize = 64 * 1024;
/// Longest job timeout a submitter may ask for: one day, in milliseconds.
pub const MAX_TIMEOUT_MS: u64 = 24 * 3600 * 1000;
/// Longest error text carried in a result or rejection.
pub const MAX_ERROR_LEN: usize = 4096;

/// A job's id: a random (v4) UUID chosen by the submitter.
pub type JobId = Uuid;

/// Why a worker refused a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Every slot is taken; try another worker.
    Busy,
    /// This worker does not run that capability.
    UnknownCapability,
    /// The input is not what the handler accepts.
    BadInput,
    /// The worker is shutting down.
    Draining,
}

impl RejectReason {
    /// Whether another worker might take the job.
    pub fn try_elsewhere(self) -> bool {
        !matches!(self, RejectReason::BadInput)
    }
}

/// A job's result as the worker reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// The handler returned a value.
    Ok {
        /// What it returned.
        value: serde_json::Value,
    },
    /// The handler failed.
    Err {
        /// Why.
        message: String,
    },
}

/// Peer → peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DcMsg {
    /// Run this job.
    Submit {
        /// Id chosen by the submitter.
        job_id: JobId,
        /// Which handler.
        capability: Capability,
        /// The handler's input.
        input: serde_json::Value,
        /// The worker stops the job after this long.
        timeout_ms: u64,
    },
    /// Cancel a job this peer submitted (it timed out or the caller gave up).
    Cancel {
        /// Which job.
        job_id: JobId,
    },
    /// The worker took a slot for the job.
    Accepted {
        /// Which job.
        job_id: JobId,
    },
    /// The worker refused the job.
    Rejected {
        /// Which job.
        job_id: JobId,
        /// Why.
        reason: RejectReason,
        /// Detail for humans.
        message: String,
    },
    /// The job ended on the worker.
    Result {
        /// Which job.
        job_id: JobId,
        /// How it ended.
        outcome: Outcome,
    },
    /// The last message could not be decoded.
    Error {
        /// The job it was about, when that much could be read.
        job_id: Option<JobId>,
        /// What was wrong.
        message: String,
    },
}

const DC_TYPES: &[&str] = &[
    "submit", "cancel", "accepted", "rejected", "result", "error",
];

impl DcMsg {
    /// Decodes and validates one data-channel message.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let msg: DcMsg = decode_tagged(bytes, MAX_DC_MESSAGE, DC_TYPES)?;
        if let DcMsg::Submit { timeout_ms, .. } = &msg {
            if *timeout_ms == 0 || *timeout_ms > MAX_TIMEOUT_MS {
                return Err(DecodeError::Invalid {
                    field: "timeout_ms",
                    reason: format!("{timeout_ms} given, must be 1..={MAX_TIMEOUT_MS}"),
                });
            }
        }
        Ok(msg)
    }

    /// Best effort: the `job_id` of an undecodable message, so the error reply
    /// can name it.
    pub fn peek_job_id(bytes: &[u8]) -> Option<JobId> {
        if bytes.len() > MAX_DC_MESSAGE {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        v.get("job_id")?.as_str()?.parse().ok()
    }

    /// Encodes for the data channel.
    pub fn encode(&self) -> Vec<u8> {
        crate::signal::encode(self).into_bytes()
    }
}

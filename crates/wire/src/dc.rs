//! The data-channel wire: peer ⇄ peer, one JSON message per data-channel message.
//!
//! Every link first runs the handshake of [`crate::link`] (`link_hello`,
//! `link_proof`); then:
//!
//! ```text
//! submitter                                worker
//!  | -- submit {job_id, attempt, ..} -----> |
//!  | <------- accepted {job_id, attempt}    |   took a slot
//!  | <------- rejected {job_id, attempt}    |   or: busy / unknown capability / bad input / draining
//!  | <------- progress {job_id, attempt}    |   any number, coalesced by the worker
//!  | <--------- result {job_id, attempt}    |   exactly one per accepted attempt
//!  | -- received {receipts} --------------> |   the worker may drop the results it kept
//!  | -- cancel {job_id, attempt} ---------> |   submitter gave up (timeout, cancel)
//!  | <------- error {job_id?}               |   the message could not be decoded
//!  | <-------- held {job_id, attempt}       |   on a new link: a job of yours runs
//!  |                                        |   or has finished here (the old link
//!  |                                        |   closed); submit it again to re-attach
//! ```
//! Every reply echoes the job id and attempt number of the submit it answers.
//! An attempt is one hand-over of a job to one worker; a retry is a new
//! attempt with a higher number, so late messages of an old attempt are
//! recognised and ignored.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use jobmesh_identity::{Nonce, PublicKey, Signature};
use jobmesh_trust::Credential;

use crate::{decode_tagged, Capability, DecodeError, PeerId};

/// Largest data-channel message: webrtc 0.21's default SCTP maximum (64 KiB).
/// A submit, its input included, must fit in one message.
pub const MAX_DC_MESSAGE: usize = 64 * 1024;
/// Longest job timeout a submitter may ask for: one day, in milliseconds.
pub const MAX_TIMEOUT_MS: u64 = 24 * 3600 * 1000;
/// Longest error text carried in a result or rejection.
pub const MAX_ERROR_LEN: usize = 4096;
/// Longest progress stage or message text.
pub const MAX_PROGRESS_TEXT: usize = 256;
/// A worker tells the submitter of every job it runs that it is alive at
/// least this often: progress counts, and with nothing new to say it sends an
/// empty `progress` (a heartbeat). A submitter declares an attempt lost when
/// it has heard nothing for its lease (several of these).
pub const HEARTBEAT_INTERVAL_MS: u64 = 1000;

/// Longest a submitter holds back its receipts of results, to send many in
/// one `received`.
pub const RECEIPT_DELAY_MS: u64 = 20;
/// Most receipts in one `received` message (each is ~70 bytes of JSON).
pub const MAX_RECEIPTS: usize = 512;

/// One result a submitter has: see [`DcMsg::Received`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Which job.
    pub job_id: JobId,
    /// The attempt whose result arrived.
    pub attempt: u32,
}

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
    /// The submitter may not run this here: it lacks the submitter role in
    /// the pool, or is not on the capability's allow-list.
    Forbidden,
}

impl RejectReason {
    /// Whether another worker might take the job.
    pub fn try_elsewhere(self) -> bool {
        !matches!(self, RejectReason::BadInput | RejectReason::Forbidden)
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
        /// Whether running it again (elsewhere) might succeed.
        #[serde(default)]
        retryable: bool,
    },
}

/// A worker's load as it sends a result: fresher than its broadcast stats,
/// which reach submitters later and coalesced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Load {
    /// Jobs running after this one ended.
    pub running: u32,
    /// Its slots.
    pub slots: u32,
    /// Its stats sequence number (see [`Stats::seq`](crate::Stats::seq)).
    pub seq: u64,
}

/// A handler's report of how far it got.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// 0–100, when the handler knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u8>,
    /// A short stage name, e.g. `recognising`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Progress {
    fn validate(&self) -> Result<(), DecodeError> {
        if self.percent.is_some_and(|p| p > 100) {
            return Err(DecodeError::Invalid {
                field: "percent",
                reason: "must be 0-100".into(),
            });
        }
        let long = |t: &Option<String>| t.as_ref().is_some_and(|t| t.len() > MAX_PROGRESS_TEXT);
        if long(&self.stage) || long(&self.message) {
            return Err(DecodeError::Invalid {
                field: "progress",
                reason: format!("stage and message are at most {MAX_PROGRESS_TEXT} bytes"),
            });
        }
        Ok(())
    }
}

/// Peer → peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DcMsg {
    /// Run this job.
    Submit {
        /// Id chosen by the submitter.
        job_id: JobId,
        /// Attempt number, from 1.
        attempt: u32,
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
        /// Which attempt.
        attempt: u32,
    },
    /// The worker took a slot for the job.
    Accepted {
        /// Which job.
        job_id: JobId,
        /// Which attempt.
        attempt: u32,
    },
    /// The worker refused the job.
    Rejected {
        /// Which job.
        job_id: JobId,
        /// Which attempt.
        attempt: u32,
        /// Why.
        reason: RejectReason,
        /// Detail for humans.
        message: String,
    },
    /// How far the job got on the worker.
    Progress {
        /// Which job.
        job_id: JobId,
        /// Which attempt.
        attempt: u32,
        /// The report.
        progress: Progress,
    },
    /// The job ended on the worker.
    Result {
        /// Which job.
        job_id: JobId,
        /// Which attempt.
        attempt: u32,
        /// How it ended.
        outcome: Outcome,
        /// The worker's load after it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        load: Option<Load>,
    },
    /// Describes the blobs whose chunks follow: a job's inputs (sent right
    /// before its `submit`) or a result's outputs (right before its `result`).
    Blobs {
        /// Which job.
        job_id: JobId,
        /// Which attempt.
        attempt: u32,
        /// Input or output.
        direction: crate::blob::Direction,
        /// The blobs, indexed from 0.
        blobs: Vec<crate::blob::BlobMeta>,
    },
    /// The submitter has these results (current or stale): the worker may
    /// drop the copies it keeps until then. Gathered for up to
    /// [`RECEIPT_DELAY_MS`], at most [`MAX_RECEIPTS`] per message.
    Received {
        /// Which results.
        receipts: Vec<Receipt>,
    },
    /// The worker holds this attempt of a job of the recipient's: still
    /// running, or finished with its result kept, since the link it came on
    /// closed. Sent when a link to the submitter opens again. A submitter
    /// still holding the job submits it again to this worker (a new attempt
    /// number), which re-attaches the running job or delivers the kept
    /// result; one that does not cancels the attempt, and the worker drops it.
    Held {
        /// Which job.
        job_id: JobId,
        /// The attempt it holds.
        attempt: u32,
    },
    /// The first message on a link, from both sides: the sender's key and
    /// its fresh nonce ([`crate::link`]).
    LinkHello {
        /// The sender's public key; its peer id must be the one expected.
        key: PublicKey,
        /// The sender's nonce for this link.
        nonce: Nonce,
        /// The sender's membership credential, in a closed pool.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credential: Option<Box<Credential>>,
    },
    /// The second, after the remote's hello: the sender's signature of
    /// [`crate::link::binding_message`].
    LinkProof {
        /// The signature.
        sig: Signature,
    },
    /// Subscribe to the job events of the jobs the recipient runs as a
    /// worker (a pool-wide observer); `history`: send the recent ones first.
    Observe {
        /// Send the last [`OBSERVED_HISTORY`] events first.
        #[serde(default)]
        history: bool,
    },
    /// End a subscription.
    Unobserve {},
    /// Job events of a worker, to a subscriber, oldest first.
    Observed {
        /// At most [`MAX_OBSERVED_BATCH`].
        events: Vec<ObservedEvent>,
        /// Events the subscriber missed since the last batch (its queue
        /// overflowed and the oldest went).
        #[serde(default, skip_serializing_if = "is_zero")]
        dropped: u64,
    },
    /// Sent by both sides when a link opens: the token of the sender's
    /// handover directory, where it reads blobs handed over as files
    /// ([`DcMsg::BlobFiles`]). A peer whose own directory has the same
    /// token shares it (the same host and user) and may hand blobs over;
    /// any other sends chunks. `None`: the sender takes no files (it has no
    /// directory, or reading one failed).
    Handover {
        /// [`HANDOVER_TOKEN_LEN`] lowercase hex digits.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// In place of chunk frames: the blobs of this transfer, announced by
    /// its `blobs` message, are these files in the shared handover
    /// directory, one per blob in order. The recipient reads them, checks
    /// their digests as it would chunks', and removes them.
    BlobFiles {
        /// Which job.
        job_id: JobId,
        /// Which attempt.
        attempt: u32,
        /// Input or output.
        direction: crate::blob::Direction,
        /// File names (no paths), see [`valid_handover_file`].
        files: Vec<String>,
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
    "submit",
    "cancel",
    "accepted",
    "rejected",
    "progress",
    "result",
    "blobs",
    "received",
    "held",
    "link_hello",
    "link_proof",
    "observe",
    "unobserve",
    "observed",
    "handover",
    "blob_files",
    "error",
];

/// Length of a handover directory's token, in hex digits.
pub const HANDOVER_TOKEN_LEN: usize = 32;
/// Longest handover file name, in bytes.
pub const MAX_HANDOVER_FILE: usize = 128;

/// Whether `token` may be a handover directory's token: exactly
/// [`HANDOVER_TOKEN_LEN`] lowercase hex digits.
pub fn valid_handover_token(token: &str) -> bool {
    crate::is_lower_hex(token, HANDOVER_TOKEN_LEN)
}

/// Whether `name` may name a handed-over blob's file: 1 to
/// [`MAX_HANDOVER_FILE`] ASCII letters, digits, `.`, `_` and `-`, not
/// starting with `.` (so never a path, `.` or `..`).
pub fn valid_handover_file(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_HANDOVER_FILE
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// Events a worker keeps for a subscriber that asks for history.
pub const OBSERVED_HISTORY: usize = 64;
/// Most events in one `observed` message (each at most ~1 KiB).
pub const MAX_OBSERVED_BATCH: usize = 32;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What happened to a job on a worker, as an observer hears it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObservedKind {
    /// The worker started it.
    Started,
    /// Its handler reported progress.
    Progress,
    /// It completed.
    Completed,
    /// It failed (its error follows).
    Failed,
    /// It was cancelled, timed out or given up on the worker.
    Cancelled,
    /// Its worker left the pool while it ran (said by the observer, not by
    /// the worker).
    Lost,
}

/// One job event of a worker, for the pool's observers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservedEvent {
    /// The job.
    pub job_id: JobId,
    /// Its attempt.
    pub attempt: u32,
    /// Its capability.
    pub capability: Capability,
    /// Who submitted it.
    pub submitter: PeerId,
    /// When, by the worker's clock (Unix milliseconds).
    pub at_ms: u64,
    /// What.
    pub event: ObservedKind,
    /// How far (progress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u8>,
    /// How long it ran (completed, failed, cancelled), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_ms: Option<u64>,
    /// Why it failed, cut to [`MAX_PROGRESS_TEXT`] bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl DcMsg {
    /// Decodes and validates one data-channel message.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut msg: DcMsg = decode_tagged(bytes, MAX_DC_MESSAGE, DC_TYPES)?;
        msg.clean_texts();
        match &msg {
            DcMsg::Submit {
                timeout_ms,
                attempt,
                ..
            } => {
                if *timeout_ms == 0 || *timeout_ms > MAX_TIMEOUT_MS {
                    return Err(DecodeError::Invalid {
                        field: "timeout_ms",
                        reason: format!("{timeout_ms} given, must be 1..={MAX_TIMEOUT_MS}"),
                    });
                }
                if *attempt == 0 {
                    return Err(DecodeError::Invalid {
                        field: "attempt",
                        reason: "attempts are numbered from 1".into(),
                    });
                }
            }
            DcMsg::Progress { progress, .. } => progress.validate()?,
            DcMsg::Received { receipts } if receipts.len() > MAX_RECEIPTS => {
                return Err(DecodeError::Invalid {
                    field: "receipts",
                    reason: format!("{} given, at most {MAX_RECEIPTS}", receipts.len()),
                });
            }
            DcMsg::Blobs { blobs, .. } => {
                crate::blob::BlobMeta::validate_all(blobs, crate::blob::MAX_BLOB_SIZE)?;
            }
            DcMsg::Handover { token: Some(t) } if !valid_handover_token(t) => {
                return Err(DecodeError::Invalid {
                    field: "token",
                    reason: format!("must be {HANDOVER_TOKEN_LEN} lowercase hex digits"),
                });
            }
            DcMsg::BlobFiles { files, .. } => {
                let count = (1..=crate::blob::MAX_BLOBS_PER_JOB).contains(&files.len());
                if !count || !files.iter().all(|f| valid_handover_file(f)) {
                    return Err(DecodeError::Invalid {
                        field: "files",
                        reason: format!(
                            "1-{} names of 1-{MAX_HANDOVER_FILE} letters, digits, '.', '_' or '-', not starting with '.'",
                            crate::blob::MAX_BLOBS_PER_JOB
                        ),
                    });
                }
            }
            DcMsg::Observed { events, .. } => {
                if events.len() > MAX_OBSERVED_BATCH {
                    return Err(DecodeError::Invalid {
                        field: "events",
                        reason: format!("{} given, at most {MAX_OBSERVED_BATCH}", events.len()),
                    });
                }
                for e in events {
                    if e.percent.is_some_and(|p| p > 100)
                        || e.error
                            .as_ref()
                            .is_some_and(|t| t.len() > MAX_PROGRESS_TEXT)
                    {
                        return Err(DecodeError::Invalid {
                            field: "events",
                            reason: format!(
                                "percent is 0-100, error at most {MAX_PROGRESS_TEXT} bytes"
                            ),
                        });
                    }
                }
            }
            _ => {}
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

    /// Replaces the control characters (but newline and tab) of the texts a
    /// peer shows to people (errors, progress) with U+FFFD, so that no
    /// remote text can drive a terminal it is printed on.
    fn clean_texts(&mut self) {
        fn clean(text: &mut String) {
            if text
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t')
            {
                *text = text
                    .chars()
                    .map(|c| {
                        if c.is_control() && c != '\n' && c != '\t' {
                            '\u{fffd}'
                        } else {
                            c
                        }
                    })
                    .collect();
            }
        }
        match self {
            DcMsg::Rejected { message, .. }
            | DcMsg::Error { message, .. }
            | DcMsg::Result {
                outcome: Outcome::Err { message, .. },
                ..
            } => clean(message),
            DcMsg::Observed { events, .. } => {
                for text in events.iter_mut().filter_map(|e| e.error.as_mut()) {
                    clean(text);
                }
            }
            DcMsg::Progress { progress, .. } => {
                for text in [&mut progress.stage, &mut progress.message]
                    .into_iter()
                    .flatten()
                {
                    clean(text);
                }
            }
            _ => {}
        }
    }

    /// Its `type` on the wire.
    pub fn type_name(&self) -> &'static str {
        match self {
            DcMsg::Submit { .. } => "submit",
            DcMsg::Cancel { .. } => "cancel",
            DcMsg::Accepted { .. } => "accepted",
            DcMsg::Rejected { .. } => "rejected",
            DcMsg::Progress { .. } => "progress",
            DcMsg::Result { .. } => "result",
            DcMsg::Blobs { .. } => "blobs",
            DcMsg::Received { .. } => "received",
            DcMsg::Held { .. } => "held",
            DcMsg::LinkHello { .. } => "link_hello",
            DcMsg::LinkProof { .. } => "link_proof",
            DcMsg::Observe { .. } => "observe",
            DcMsg::Unobserve {} => "unobserve",
            DcMsg::Observed { .. } => "observed",
            DcMsg::Handover { .. } => "handover",
            DcMsg::BlobFiles { .. } => "blob_files",
            DcMsg::Error { .. } => "error",
        }
    }

    /// Encodes for the data channel.
    pub fn encode(&self) -> Vec<u8> {
        crate::signal::encode(self).into_bytes()
    }
}

//! A job's outcome and options in the forms the control socket and the
//! journal carry: [`SubmitOptions`] in, [`Envelope`] out, and [`JobReport`],
//! the Rust form an envelope is made from.
//!
//! Below the control socket (`control`), the Rust API (`api`) and the
//! journal's owner (`store`), which all speak these forms; it imports only
//! the crates underneath and [`crate::blobs`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use jobmesh_core::{Attempt, JobError, JobOptions, StrategyKind};
use jobmesh_wire::dc::JobId;
use jobmesh_wire::PeerId;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::blobs::ReceivedBlob;

/// Job options as the control socket carries them; unset fields take the
/// defaults of [`JobOptions`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SubmitOptions {
    /// Per-attempt (and queue-wait) timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Higher first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Retries after retryable failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Strategy name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// Affinity key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<String>,
    /// Whether losing the worker retries the job (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on_disconnect: Option<bool>,
}

impl SubmitOptions {
    /// `o` in this form, every field set.
    pub fn of(o: &JobOptions) -> Self {
        Self {
            timeout_ms: Some(u64::try_from(o.timeout.as_millis()).unwrap_or(u64::MAX)),
            priority: Some(o.priority),
            retries: Some(o.max_retries),
            strategy: o.strategy.map(|s| s.name().to_owned()),
            affinity: o.affinity.clone(),
            retry_on_disconnect: Some(o.retry_on_disconnect),
        }
    }

    /// The core's options, or why they are invalid.
    pub fn to_options(&self) -> Result<JobOptions, String> {
        let mut o = JobOptions::default();
        if let Some(ms) = self.timeout_ms {
            if ms == 0 || ms > jobmesh_wire::dc::MAX_TIMEOUT_MS {
                return Err(format!(
                    "timeout_ms must be 1..={}",
                    jobmesh_wire::dc::MAX_TIMEOUT_MS
                ));
            }
            o.timeout = Duration::from_millis(ms);
        }
        if let Some(p) = self.priority {
            o.priority = p;
        }
        if let Some(r) = self.retries {
            o.max_retries = r.min(100);
        }
        if let Some(s) = &self.strategy {
            o.strategy = Some(s.parse::<StrategyKind>()?);
        }
        o.affinity.clone_from(&self.affinity);
        if let Some(r) = self.retry_on_disconnect {
            o.retry_on_disconnect = r;
        }
        Ok(o)
    }
}

/// Adds the field `key` to the input object `input` (`peer submit --param
/// KEY=VALUE`, an HTTP query parameter): `raw` as JSON if it parses as JSON
/// (`256`, `true`, `[1,2]`), else as a string.
pub fn add_param(input: &mut Value, key: &str, raw: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err(format!("a parameter needs a name (got ={raw})"));
    }
    let Value::Object(obj) = input else {
        return Err(
            "parameters add fields to the input, so the input must be a JSON object".into(),
        );
    };
    let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::from(raw));
    obj.insert(key.to_owned(), value);
    Ok(())
}

/// The worker in an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRef {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
}

/// How a job ended, as `peer submit --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The job.
    pub job_id: String,
    /// `completed`, `failed`, `rejected`, `lost`, `cancelled`, `timed_out`,
    /// `no_worker`, `unreachable`, `queue_full` or `too_large`.
    pub status: String,
    /// Who ran it.
    pub worker: Option<WorkerRef>,
    /// The result, when completed.
    pub result: Option<Value>,
    /// The error, when not.
    pub error: Option<String>,
    /// Attempts made (workers the job was handed to).
    pub attempts: u32,
    /// From submit to outcome.
    pub elapsed_ms: u64,
    /// The result's blobs, and where they were written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blobs: Vec<BlobInfo>,
}

/// A result blob in an [`Envelope`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobInfo {
    /// Its index.
    pub index: u16,
    /// Its name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its size in bytes.
    pub size: u64,
    /// Its BLAKE3 digest (verified on arrival).
    pub blake3: String,
    /// Where it was written, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved_to: Option<PathBuf>,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq)]
pub struct JobReport {
    /// The job.
    pub job_id: JobId,
    /// The worker of the last attempt: id and name.
    pub worker: Option<(PeerId, String)>,
    /// Result value or error.
    pub result: Result<Value, JobError>,
    /// The result's blobs (none unless the handler attached some).
    pub blobs: Vec<ReceivedBlob>,
    /// Every attempt, oldest first.
    pub attempts: Vec<Attempt>,
    /// From submit to outcome.
    pub elapsed: Duration,
}

impl Envelope {
    /// The answer to a detached submit: the job is journaled and on its way.
    pub fn submitted(job_id: JobId) -> Self {
        Self {
            job_id: job_id.to_string(),
            status: "submitted".into(),
            worker: None,
            result: None,
            error: None,
            attempts: 0,
            elapsed_ms: 0,
            blobs: Vec::new(),
        }
    }

    /// Builds the envelope of a finished job.
    pub fn from_report(r: &JobReport) -> Self {
        let (status, result, error) = match &r.result {
            Ok(v) => ("completed", Some(v.clone()), None),
            Err(e) => (status_of(e), None, Some(e.to_string())),
        };
        Self {
            job_id: r.job_id.to_string(),
            status: status.to_owned(),
            worker: r.worker.as_ref().map(|(id, name)| WorkerRef {
                id: id.to_string(),
                name: name.clone(),
            }),
            result,
            error,
            attempts: u32::try_from(r.attempts.len()).unwrap_or(u32::MAX),
            elapsed_ms: u64::try_from(r.elapsed.as_millis()).unwrap_or(u64::MAX),
            blobs: Vec::new(),
        }
    }

    /// The CLI's exit code: 0 completed, 2 the input is too large (a usage
    /// error), 3 nobody could take it (no capable worker, none reachable,
    /// timed out, queue full), 1 any other failure.
    pub fn exit_code(&self) -> u8 {
        match self.status.as_str() {
            "completed" | "submitted" => 0,
            "no_worker" | "unreachable" | "timed_out" | "queue_full" => 3,
            "too_large" => 2,
            _ => 1,
        }
    }
}

fn status_of(e: &JobError) -> &'static str {
    match e {
        JobError::NoCapableWorker { .. } | JobError::OutsideView { .. } => "no_worker",
        JobError::Unreachable { .. } => "unreachable",
        JobError::QueueFull { .. } => "queue_full",
        JobError::TooLarge { .. } => "too_large",
        JobError::Rejected { .. } => "rejected",
        other => other.state_name(),
    }
}

/// Writes a result's blobs: blob 0 to `out`, every blob into `out_dir`
/// (named after the blob, else `output-N`). Returns their descriptions.
pub fn save_blobs(
    blobs: &[ReceivedBlob],
    out: Option<&Path>,
    out_dir: Option<&Path>,
) -> Result<Vec<BlobInfo>, String> {
    let mut infos = Vec::with_capacity(blobs.len());
    let mut used = std::collections::HashSet::new();
    for (i, b) in blobs.iter().enumerate() {
        let target = match (i, out, out_dir) {
            (0, Some(o), _) => Some(o.to_owned()),
            (_, _, Some(d)) => {
                // Two blobs of one name: the later ones get their index, so
                // none overwrites another.
                let name = b
                    .name()
                    .map_or_else(|| format!("output-{i}"), str::to_owned);
                let name = if used.insert(name.clone()) {
                    name
                } else {
                    let unique = match name.rsplit_once('.') {
                        Some((stem, ext)) if !stem.is_empty() => format!("{stem}-{i}.{ext}"),
                        _ => format!("{name}-{i}"),
                    };
                    used.insert(unique.clone());
                    unique
                };
                Some(d.join(name))
            }
            _ => None,
        };
        if let Some(t) = &target {
            b.save(t).map_err(|e| {
                format!(
                    "the job completed, but its result blob {i} could not be written to {}: {e}",
                    t.display()
                )
            })?;
        }
        infos.push(BlobInfo {
            index: b.meta().index,
            name: b.name().map(str::to_owned),
            size: b.size(),
            blake3: b.meta().blake3.clone(),
            saved_to: target,
        });
    }
    Ok(infos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_blobs_of_one_name_are_all_saved() {
        let blob = |index: u16, name: &str, bytes: &[u8]| {
            let meta = jobmesh_wire::blob::BlobMeta {
                index,
                size: bytes.len() as u64,
                blake3: blake3::hash(bytes).to_hex().to_string(),
                name: Some(name.to_owned()),
            };
            ReceivedBlob::in_memory(meta, bytes.to_vec())
        };
        let dir = tempfile::tempdir().expect("dir");
        let blobs = [
            blob(0, "page.txt", b"one"),
            blob(1, "page.txt", b"two"),
            blob(2, "page", b"three"),
            blob(3, "page", b"four"),
        ];
        let infos = save_blobs(&blobs, None, Some(dir.path())).expect("saved");
        let read = |n: &str| std::fs::read(dir.path().join(n)).expect(n);
        assert_eq!(read("page.txt"), b"one");
        assert_eq!(read("page-1.txt"), b"two");
        assert_eq!(read("page"), b"three");
        assert_eq!(read("page-3"), b"four");
        assert_eq!(
            infos[1].saved_to.as_deref(),
            Some(dir.path().join("page-1.txt").as_path())
        );
    }

    #[test]
    fn exit_codes_follow_the_status() {
        let mk = |status: &str| Envelope {
            job_id: String::new(),
            status: status.into(),
            worker: None,
            result: None,
            error: None,
            attempts: 1,
            elapsed_ms: 0,
            blobs: Vec::new(),
        };
        assert_eq!(mk("completed").exit_code(), 0);
        assert_eq!(mk("failed").exit_code(), 1);
        assert_eq!(mk("rejected").exit_code(), 1);
        assert_eq!(mk("no_worker").exit_code(), 3);
        assert_eq!(mk("unreachable").exit_code(), 3);
        assert_eq!(mk("timed_out").exit_code(), 3);
    }
}

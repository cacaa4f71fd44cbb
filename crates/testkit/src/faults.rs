//! The fault suite's bookkeeping: its checker ([`History`], shared with
//! the simulator, `jobmesh_sim::check`), where every execution is logged by
//! the handler itself.
//!
//! The scenarios' shared steps live here too: [`logging_handler`] (the exec
//! handler that logs each execution), [`detached`] submits,
//! [`await_outcomes`] (outcomes read back from a daemon's journal) and
//! [`read_executions`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use jobmesh_peer::control::{self, Request};
use serde_json::Value;
use uuid::Uuid;

use crate::cap;

pub use jobmesh_sim::check::{Delivered, History, Summary};

/// Writes an exec handler `name` to `dir/<name>.toml` that appends the job
/// id to `dir/executions.log` at each start, sleeps `sleep` seconds and
/// copies its input back: the JSON input (`io = "json"`) or input blob 0 as
/// its output blob (`"blob"`). Returns its config file and the log.
pub fn logging_handler(dir: &Path, name: &str, sleep: &str, io: &str) -> (PathBuf, PathBuf) {
    let log = dir.join("executions.log");
    let config = dir.join(format!("{name}.toml"));
    let toml = format!(
        "[[handler]]\nname = \"{name}\"\nargv = [\"sh\", \"-c\", \"echo \\\"$JOBMESH_JOB_ID\\\" >> {}; sleep {sleep}; cat\"]\nstdin = \"{io}\"\nstdout = \"{io}\"\nenv = [\"PATH\"]\n",
        log.display()
    );
    std::fs::write(&config, toml).expect("handler config");
    (config, log)
}

/// Logs every execution a [`logging_handler`] wrote to `log`.
pub fn read_executions(log: &Path, history: &mut History) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    for line in text.lines() {
        if let Ok(id) = Uuid::parse_str(line.trim()) {
            history.executed(id);
        }
    }
}

/// Prints `summary` under the table header, as every scenario does.
pub fn print(summary: &Summary) {
    println!("\n{}\n{summary}", Summary::HEADER);
}

/// A detached submit of `input` to `capability`: answered with the job id
/// once it is journaled.
pub fn detached(capability: &str, input: Value) -> Request {
    let mut r = Request::submit(cap(capability), input);
    if let Request::Submit { detach, .. } = &mut r {
        *detach = true;
    }
    r
}

/// Reads every acknowledged job's outcome from the journal of the daemon at
/// `sock` (`result`), waiting while one has not ended, and logs it as
/// delivered. Panics if they have not all ended within `deadline`.
pub async fn await_outcomes(sock: &Path, history: &mut History, deadline: Duration) {
    if let Err(hung) = try_await_outcomes(sock, history, deadline).await {
        panic!(
            "{} acknowledged jobs had not ended after {deadline:?}, {} first",
            hung.len(),
            hung[0]
        );
    }
}

/// [`await_outcomes`], returning the jobs that had not ended when `deadline`
/// passed instead of panicking: they stay undelivered, so
/// [`History::check`] counts them lost.
pub async fn try_await_outcomes(
    sock: &Path,
    history: &mut History,
    deadline: Duration,
) -> Result<(), Vec<Uuid>> {
    let all = async {
        for id in history.undelivered() {
            loop {
                if let Some(outcome) = outcome(sock, id).await {
                    history.delivered(id, outcome);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    if tokio::time::timeout(deadline, all).await.is_ok() {
        return Ok(());
    }
    // Waiting stopped at the first job still running: look once at the rest.
    let mut hung = Vec::new();
    for id in history.undelivered() {
        match outcome(sock, id).await {
            Some(outcome) => history.delivered(id, outcome),
            None => hung.push(id),
        }
    }
    Err(hung)
}

/// A job's outcome from the daemon's journal; `None` while it runs.
async fn outcome(sock: &Path, job_id: Uuid) -> Option<Delivered> {
    let req = Request::Result {
        job_id,
        out: None,
        out_dir: None,
    };
    let v = control::request(sock, &req).await.expect("result");
    match v["status"].as_str() {
        Some("queued" | "running") => None,
        Some("completed") => Some(Delivered::Completed),
        _ => {
            eprintln!("job failed: {v}");
            Some(Delivered::Failed(v.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_duplicated_and_executions_are_counted_per_acknowledged_job() {
        let mut h = History::default();
        let ids: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
        for id in &ids {
            h.submitted(*id);
        }
        h.refused("queue full");
        h.unknown();
        h.delivered(ids[0], Delivered::Completed);
        h.delivered(ids[1], Delivered::Failed("bad input".into()));
        h.delivered(ids[2], Delivered::Completed);
        h.delivered(ids[2], Delivered::Completed);
        // ids[3] never delivered: lost.
        h.executed(ids[0]);
        h.executed(ids[2]);
        h.executed(ids[2]);
        h.executed(ids[3]);
        let s = h.check("example");
        assert_eq!(
            (
                s.submitted,
                s.completed,
                s.failed,
                s.unknown,
                s.lost,
                s.duplicated
            ),
            (6, 2, 2, 1, 1, 1)
        );
        assert_eq!((s.executions_max, s.never_ran), (2, 1));
        assert!((s.executions_mean - 1.0).abs() < 1e-9);
        assert!(s.to_string().starts_with("example"));
    }
}

//! Which local daemon a client command talks to, with no `--control`: the
//! one this user is running (from the records in the runtime dir), narrowed
//! by `--pool`, `--name` and `--signal` when given; with several, the
//! newest, and a note naming the others.

use std::path::PathBuf;

use anyhow::bail;
use jobmesh_peer::control::{self, running};
use tokio::net::UnixStream;

use crate::args::Common;

/// Where a client command found a daemon, or why it found none.
pub(crate) enum Found {
    Daemon(PathBuf),
    /// None answers: what was looked at, for the error.
    Nothing(String),
}

pub(crate) async fn daemon(common: &Common) -> anyhow::Result<Found> {
    if let Some(path) = &common.control {
        if UnixStream::connect(path).await.is_ok() {
            return Ok(Found::Daemon(path.clone()));
        }
        bail!(
            "no peer daemon answers on --control {}; start one with `peer --control {}`",
            path.display(),
            path.display()
        );
    }
    let runtime = control::runtime_dir();
    let all = running::list(&runtime).await;
    let wanted = |r: &running::Running| {
        common.pool.as_ref().is_none_or(|p| *p == r.pool)
            && common.name.as_ref().is_none_or(|n| *n == r.name)
            && common.signal.as_ref().is_none_or(|s| *s == r.signal)
    };
    let matching: Vec<&running::Running> = all.iter().filter(|r| wanted(r)).collect();
    if let Some(first) = matching.first() {
        if matching.len() > 1 {
            let others: Vec<String> = matching[1..].iter().map(|r| label(r)).collect();
            eprintln!(
                "note: using {}, the newest of {} daemons (also {}); pick one with --name or --pool",
                label(first),
                matching.len(),
                others.join(", ")
            );
        }
        return Ok(Found::Daemon(first.control.clone()));
    }
    // A daemon that wrote no record (an older version, a read-only runtime
    // dir) still listens on its default socket; which server it joined
    // through, nobody can tell.
    let pool = common.pool.clone().unwrap_or_else(|| "default".into());
    let name = common
        .name
        .clone()
        .unwrap_or_else(jobmesh_peer::default_name);
    let fallback = control::default_path(&pool, &name);
    if common.signal.is_none() && UnixStream::connect(&fallback).await.is_ok() {
        return Ok(Found::Daemon(fallback));
    }
    let looked = if all.is_empty() {
        format!(
            "no peer daemon is running (none recorded in {}, none on {})",
            runtime.join("running").display(),
            fallback.display()
        )
    } else {
        let names: Vec<String> = all.iter().map(label).collect();
        format!(
            "no running daemon matches{}{}{} (running: {})",
            common
                .pool
                .as_ref()
                .map(|p| format!(" --pool {p}"))
                .unwrap_or_default(),
            common
                .name
                .as_ref()
                .map(|n| format!(" --name {n}"))
                .unwrap_or_default(),
            common
                .signal
                .as_ref()
                .map(|s| format!(" --signal {s}"))
                .unwrap_or_default(),
            names.join(", ")
        )
    };
    Ok(Found::Nothing(looked))
}

/// A client command that needs the daemon itself (its jobs, its journal).
pub(crate) async fn required(common: &Common) -> anyhow::Result<PathBuf> {
    match daemon(common).await? {
        Found::Daemon(path) => Ok(path),
        Found::Nothing(looked) => {
            bail!("{looked}; start one (`peer --capabilities ...`), or name it with --control")
        }
    }
}

/// `name (pool P, pid N)`.
fn label(r: &running::Running) -> String {
    format!("{} (pool {}, pid {})", r.name, r.pool, r.pid)
}

//! The daemons this user is running: each writes a small record into
//! `runtime_dir()/running/` while it runs, so a client command finds the
//! local daemon without `--control`, whatever its name, pool or socket.
//!
//! A record is `PID.json`, written whole (temp file + rename, owner-only)
//! and removed when the daemon stops. One left by a daemon that was killed
//! is recognised by its socket no longer answering, and removed by the
//! client that found it so.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::net::UnixStream;

/// Largest record read: they are a few hundred bytes.
const MAX_RECORD: u64 = 16 * 1024;
/// Most records looked at: more is someone else's mess, not our daemons.
const MAX_RECORDS: usize = 256;

/// One running daemon, as its record says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    /// Its process id.
    pub pid: u32,
    /// Its pool.
    pub pool: String,
    /// Its name in the pool.
    pub name: String,
    /// The signal-server it joins through.
    pub signal: String,
    /// Its control socket.
    pub control: PathBuf,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_ms: u64,
}

/// The folder of the records in `runtime`.
fn folder(runtime: &Path) -> PathBuf {
    runtime.join("running")
}

/// The record of a running daemon; removed when dropped.
#[derive(Debug)]
pub struct Record {
    path: PathBuf,
}

impl Drop for Record {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Writes `me`'s record into `runtime` (creating its folder, owner-only).
pub fn announce(runtime: &Path, me: &Running) -> std::io::Result<Record> {
    let dir = folder(runtime);
    if !dir.exists() {
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let path = dir.join(format!("{}.json", me.pid));
    let tmp = dir.join(format!(".{}.json.tmp", me.pid));
    std::fs::write(&tmp, serde_json::to_vec(me).map_err(std::io::Error::other)?)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, &path)?;
    Ok(Record { path })
}

/// The records in `runtime`, unchecked, newest first. Unreadable or
/// malformed ones are skipped: they are not a daemon anyone can use.
fn records(runtime: &Path) -> Vec<(PathBuf, Running)> {
    let Ok(entries) = std::fs::read_dir(folder(runtime)) else {
        return Vec::new();
    };
    let mut found: Vec<(PathBuf, Running)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .take(MAX_RECORDS)
        .filter_map(|path| {
            let mut text = Vec::new();
            std::fs::File::open(&path)
                .ok()?
                .take(MAX_RECORD)
                .read_to_end(&mut text)
                .ok()?;
            let r = serde_json::from_slice(&text).ok()?;
            Some((path, r))
        })
        .collect();
    found.sort_by_key(|r| std::cmp::Reverse(r.1.started_ms));
    found
}

/// The daemons running in `runtime` whose control socket answers, newest
/// first. Records of daemons that are gone are removed.
pub async fn list(runtime: &Path) -> Vec<Running> {
    let mut live = Vec::new();
    for (path, r) in records(runtime) {
        if UnixStream::connect(&r.control).await.is_ok() {
            live.push(r);
        } else if !Path::new(&format!("/proc/{}", r.pid)).exists() {
            // Gone without removing its record (killed): nobody else will.
            let _ = std::fs::remove_file(path);
        }
    }
    live
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(pid: u32, control: PathBuf, started_ms: u64) -> Running {
        Running {
            pid,
            pool: "default".into(),
            name: format!("w{pid}"),
            signal: "ws://127.0.0.1:7070/ws".into(),
            control,
            started_ms,
        }
    }

    #[tokio::test]
    async fn only_daemons_that_answer_are_listed_newest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runtime = dir.path();
        // Two daemons listening (this process stands for both pids).
        let a_sock = runtime.join("a.sock");
        let b_sock = runtime.join("b.sock");
        let _a = tokio::net::UnixListener::bind(&a_sock).expect("bind");
        let _b = tokio::net::UnixListener::bind(&b_sock).expect("bind");
        let me = std::process::id();
        let _ra = announce(runtime, &running(me, a_sock, 1)).expect("announce");
        let rb = announce(
            runtime,
            &Running {
                pid: u32::MAX - 1,
                ..running(me, b_sock, 2)
            },
        )
        .expect("announce");
        // A record of a daemon that was killed: no socket, no process.
        let dead =
            announce(runtime, &running(u32::MAX, runtime.join("dead.sock"), 3)).expect("announce");
        let dead_path = dead.path.clone();
        std::mem::forget(dead);
        // Junk in the folder is ignored.
        std::fs::write(folder(runtime).join("junk.json"), b"{not json").expect("write");

        let live = list(runtime).await;
        let names: Vec<u64> = live.iter().map(|r| r.started_ms).collect();
        assert_eq!(names, vec![2, 1], "{live:?}");
        assert!(!dead_path.exists(), "the dead daemon's record is removed");

        // A record goes when its daemon stops.
        drop(rb);
        assert_eq!(list(runtime).await.len(), 1);
    }
}

//! Helpers for tests that run the real binaries.

use std::process::{Child, ExitStatus};
use std::sync::mpsc;

use crate::DEADLINE;

/// Sends SIGTERM to `child` and waits (at most [`DEADLINE`]) for it to exit.
pub fn sigterm_and_wait(mut child: Child) -> ExitStatus {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill -TERM");
    assert!(status.success(), "kill -TERM failed");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    rx.recv_timeout(DEADLINE)
        .expect("the process exits after SIGTERM")
        .expect("wait for the process")
}

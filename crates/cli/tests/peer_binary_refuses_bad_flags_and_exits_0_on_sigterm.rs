//! The real `peer` binary: clear refusals at start, SIGTERM → leave and exit 0.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn peer() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_peer"));
    for var in [
        "JOBMESH_SIGNAL",
        "JOBMESH_CONTROL",
        "JOBMESH_CAPABILITIES",
        "JOBMESH_NAME",
        "JOBMESH_DATA_DIR",
    ] {
        c.env_remove(var);
    }
    c
}

#[test]
fn unknown_or_invalid_capabilities_are_refused_at_start() {
    let out = peer()
        .args(["--capabilities", "echo,teleport"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"teleport\"") && err.contains("echo, sleep"),
        "{err}"
    );

    let out = peer()
        .args(["--capabilities", "Not Valid"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("capability"));

    let out = peer().args(["submit"]).output().expect("run");
    assert_eq!(
        out.status.code(),
        Some(2),
        "a missing argument is a usage error"
    );

    // An exec handler whose program is missing is refused at start, by name.
    let dir = std::env::temp_dir().join(format!("jobmesh-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let cfg = dir.join("h.toml");
    let toml = "[[handler]]\nname = \"resize\"\nargv = [\"no-such-tool-jobmesh\", \"-x\"]\n";
    std::fs::write(&cfg, toml).expect("write");
    let out = peer()
        .args(["--capabilities", "resize", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("resize") && err.contains("no-such-tool-jobmesh") && err.contains("install"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_daemon_exits_0_on_sigterm_even_without_a_signal_server() {
    let dir = std::env::temp_dir().join(format!("jobmesh-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let sock = dir.join("d.sock");
    // Nothing listens on port 1: the daemon keeps retrying in the background.
    let mut child = peer()
        .args([
            "--signal",
            "ws://127.0.0.1:1/ws",
            "--capabilities",
            "echo",
            "--name",
            "d",
            "--open",
        ])
        .arg("--control")
        .arg(&sock)
        .arg("--data-dir")
        .arg(dir.join("d.data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn peer");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    assert!(
        line.contains("running") && line.contains("d.sock"),
        "{line:?}"
    );
    assert!(sock.exists(), "the control socket is bound");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&sock).expect("stat").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "local callers only");

    let exit = jobmesh_testkit::process::sigterm_and_wait(child);
    assert_eq!(exit.code(), Some(0));
    assert!(!sock.exists(), "the control socket is removed on exit");
    let _ = std::fs::remove_dir_all(&dir);
}

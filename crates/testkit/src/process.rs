//! Helpers for tests that run the real binaries.

use std::process::{Child, ExitStatus};
use std::sync::mpsc;

use crate::netns::Namespace;
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

/// A binary of this workspace. `cargo test --workspace` builds them next to
/// the test binary's `deps/` folder before any test runs.
pub fn bin(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` so the binaries are built",
        path.display()
    );
    path
}

/// A child process killed (SIGKILL) on drop, and the file its stderr
/// goes to, if any ([`Proc::spawn`]): shown when a test fails.
pub struct Proc(pub Child, Option<std::path::PathBuf>);

/// Lines of a process's log shown when its test fails.
const LOG_TAIL: usize = 60;

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let Some(log) = self.1.take() else {
            return;
        };
        if std::thread::panicking() {
            // The test failed: what the process said is the first clue.
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
            eprintln!(
                "--- the last {} log lines of process {} ---\n{}\n---",
                tail.len(),
                self.0.id(),
                tail.join("\n")
            );
        }
        let _ = std::fs::remove_file(&log);
    }
}

/// A fresh file for a child's stderr, in the temp dir.
fn log_file() -> Option<(std::path::PathBuf, std::fs::File)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("jobmesh-test-{}-{n}.log", std::process::id()));
    let file = std::fs::File::create(&path).ok()?;
    Some((path, file))
}

impl Proc {
    /// Guards `child`, started by the caller (its stderr as it set it).
    pub fn adopt(child: Child) -> Self {
        Self(child, None)
    }

    /// Spawns `cmd` with stdout piped and returns it with its first stdout
    /// line (the ready line of `signal-server` and `peer`). Its stderr (the
    /// daemons' logs) goes to a file whose last lines are shown if the test
    /// fails, or with the test's output when `JOBMESH_TEST_STDERR` is set
    /// (`JOBMESH_LOG` picks what they log).
    pub fn spawn(cmd: &mut std::process::Command) -> (Self, String) {
        use std::io::BufRead;
        let (stderr, log) = if std::env::var_os("JOBMESH_TEST_STDERR").is_some() {
            (std::process::Stdio::inherit(), None)
        } else {
            match log_file() {
                Some((path, file)) => (std::process::Stdio::from(file), Some(path)),
                None => (std::process::Stdio::null(), None),
            }
        };
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn binary");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the ready line");
        (Self(child, log), line)
    }

    /// Sends it `signal` (`"STOP"`, `"CONT"`, `"TERM"`, ...) with `kill`.
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.0.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Kills the process with SIGKILL and reaps it, keeping the guard.
    pub fn kill_now(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Whether it has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `peer` binary with the environment that would redirect it removed,
/// and a default data, runtime and config dir under the temp dir, never the
/// user's (tests that restart a daemon pass their own `--data-dir`; daemons
/// of tests never show up among a user's running daemons).
pub fn peer(args: &[&str]) -> std::process::Command {
    peer_at(None, args)
}

/// [`peer`], inside network namespace `ns` ([`Namespace::command`]).
pub fn peer_in(ns: &Namespace, args: &[&str]) -> std::process::Command {
    peer_at(Some(ns), args)
}

/// A binary of this workspace ([`bin`]) run here or inside `ns`.
fn program(name: &str, ns: Option<&Namespace>) -> std::process::Command {
    match ns {
        None => std::process::Command::new(bin(name)),
        Some(ns) => ns.command(bin(name)),
    }
}

fn peer_at(ns: Option<&Namespace>, args: &[&str]) -> std::process::Command {
    let mut c = program("peer", ns);
    c.args(args)
        .env_remove("JOBMESH_SIGNAL")
        .env_remove("JOBMESH_CONTROL")
        .env_remove("JOBMESH_DATA_DIR")
        .env(
            "XDG_DATA_HOME",
            std::env::temp_dir().join("jobmesh-test-data"),
        )
        .env(
            "XDG_RUNTIME_DIR",
            std::env::temp_dir().join("jobmesh-test-run"),
        )
        // No settings file of the user's (~/.config/jobmesh/peer.toml).
        .env(
            "XDG_CONFIG_HOME",
            std::env::temp_dir().join("jobmesh-test-config"),
        )
        .env_remove("JOBMESH_CONFIG")
        // Blobs go over WebRTC, as between hosts: the tests of the same-host
        // handover pass --handover-dir (a flag wins over this).
        .env("JOBMESH_HANDOVER_DIR", "off");
    c
}

/// Runs `peer` to completion.
pub fn run_peer(args: &[&str]) -> std::process::Output {
    peer(args).output().expect("run peer")
}

/// `peer submit CAPABILITY --each -` through the daemon at `control`: `n`
/// echo-able inputs `{"i": 0..n}`, one a line; its exit code.
pub fn submit_each(control: &str, capability: &str, n: usize) -> Option<i32> {
    let inputs: String = (0..n).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    submit_lines(control, capability, &inputs, &[])
        .status
        .code()
}

/// `peer submit CAPABILITY --each - EXTRA…` through the daemon at
/// `control`, `inputs` (one JSON input a line) on its stdin: what it
/// printed and its exit status.
pub fn submit_lines(
    control: &str,
    capability: &str,
    inputs: &str,
    extra: &[&str],
) -> std::process::Output {
    use std::io::Write;
    let mut args = vec!["submit", capability, "--each", "-", "--control", control];
    args.extend_from_slice(extra);
    let mut child = peer(&args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("peer runs");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(inputs.as_bytes())
        .expect("stdin");
    child.wait_with_output().expect("peer ends")
}

/// A `sleep` job through the daemon at `control` that times out on its
/// worker (5 s asked, 0.3 s allowed, no retry): it ends with exit code 3.
pub fn submit_timing_out(control: &str) {
    let out = run_peer(&[
        "submit",
        "sleep",
        "--input",
        r#"{"ms":5000}"#,
        "--timeout",
        "0.3",
        "--retries",
        "0",
        "--control",
        control,
    ]);
    expect_exit(&out, 3);
}

/// The lines `from` gives, as they come, on a channel (a reader thread).
pub fn lines_of(from: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(from).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// `peer watch --json` (with `extra` flags, `--all` say) on the daemon at
/// `sock`, its events arriving on a channel; stopped when dropped.
pub struct Watch {
    _child: Proc,
    lines: mpsc::Receiver<String>,
}

impl Watch {
    /// Starts it.
    pub fn start(sock: &str, extra: &[&str]) -> Self {
        let mut args = vec!["watch", "--json", "--control", sock];
        args.extend_from_slice(extra);
        let mut child = peer(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn peer watch");
        let lines = lines_of(child.stdout.take().expect("stdout"));
        Self {
            _child: Proc::adopt(child),
            lines,
        }
    }

    /// The next event for which `pred` holds (it sees every event), within
    /// [`DEADLINE`]; panics naming `what` otherwise.
    pub fn until(
        &self,
        what: &str,
        mut pred: impl FnMut(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let end = std::time::Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(std::time::Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {what} from peer watch within {DEADLINE:?}"));
            let Ok(v) = serde_json::from_str(&line) else {
                continue;
            };
            if pred(&v) {
                return v;
            }
        }
    }
}

/// What `peer watch --all --json` said of each job: the workers it was
/// heard on, and its events in order.
#[derive(Debug, Default)]
pub struct Heard(
    pub std::collections::HashMap<String, (std::collections::HashSet<String>, Vec<String>)>,
);

impl Heard {
    /// Notes one event of the stream (one without a job and a named worker
    /// is not a job's).
    pub fn record(&mut self, v: &serde_json::Value) {
        if let (Some(job), Some(event), Some(worker)) = (
            v["job_id"].as_str(),
            v["event"].as_str(),
            v["worker_name"].as_str(),
        ) {
            let j = self.0.entry(job.to_owned()).or_default();
            j.0.insert(worker.to_owned());
            j.1.push(event.to_owned());
        }
    }

    /// Jobs heard ending: completed, failed or cancelled.
    pub fn ended(&self) -> usize {
        self.0
            .values()
            .filter(|(_, k)| {
                k.iter()
                    .any(|e| matches!(e.as_str(), "completed" | "failed" | "cancelled"))
            })
            .count()
    }
}

/// `GET path` on `addr` over plain HTTP/1.0, with a bearer `token`: its
/// status line and body.
pub fn http_get(addr: &str, path: &str, token: Option<&str>) -> (String, String) {
    http_get_as(addr, addr, path, token)
}

/// [`http_get`] naming `host` in its Host header.
pub fn http_get_as(addr: &str, host: &str, path: &str, token: Option<&str>) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n{auth}\r\n").expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

/// The value of the Prometheus sample `series` (its name and labels,
/// exactly) in the exposition `text`.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
}

/// Runs `peer` to completion as on another machine: with a runtime dir where
/// no daemon runs, so a client command cannot use this machine's daemons.
pub fn run_peer_elsewhere(args: &[&str]) -> std::process::Output {
    peer(args)
        .env(
            "XDG_RUNTIME_DIR",
            std::env::temp_dir().join("jobmesh-test-elsewhere"),
        )
        .output()
        .expect("run peer")
}

/// Runs `peer result JOB_ID --json --control SOCK` (plus `extra` flags)
/// until the job has ended, and returns its envelope. Only "not ended yet"
/// (exit 4) may come before it.
pub async fn await_result(sock: &str, job_id: &str, extra: &[&str]) -> serde_json::Value {
    let mut envelope = serde_json::Value::Null;
    crate::eventually("the job's result", || {
        let mut args = vec!["result", job_id, "--json", "--control", sock];
        args.extend_from_slice(extra);
        let out = run_peer(&args);
        if out.status.code() == Some(0) {
            envelope = stdout_json(&out);
            return true;
        }
        expect_exit(&out, 4);
        false
    })
    .await;
    envelope
}

/// A command's stdout as JSON (panics with stdout and stderr otherwise).
pub fn stdout_json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Asserts a command's exit code, showing its stderr when it differs.
pub fn expect_exit(out: &std::process::Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts the `signal-server` binary on `127.0.0.1:0` in open mode (these
/// tests are about other things than admission); returns it and the
/// WebSocket URL from its ready line.
pub fn signal_server() -> (Proc, String) {
    start_signal_server(None, "127.0.0.1:0", &["--open"])
}

/// [`signal_server`] with `args` instead of `--open` (pool keys, say).
pub fn signal_server_with(args: &[&str]) -> (Proc, String) {
    start_signal_server(None, "127.0.0.1:0", args)
}

/// Debian's `nats-server` on a free port of 127.0.0.1: the process
/// (stopped when dropped) and its `nats://` URL, once it accepts
/// connections. `port` 0 picks a free one; another restarts one where it
/// was.
pub fn nats_server(port: u16) -> (Proc, String) {
    let program = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("the cluster tests need Debian's nats-server: run scripts/setup");
    let port = if port == 0 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free TCP port")
            .port()
    } else {
        port
    };
    let child = std::process::Command::new(program)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn nats-server");
    let nats = Proc::adopt(child);
    let deadline = std::time::Instant::now() + crate::DEADLINE;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nats-server did not listen on {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (nats, format!("nats://127.0.0.1:{port}"))
}

/// Debian's coturn (`turnserver`) on 127.0.0.1, UDP and TCP, checking
/// credentials with coturn's shared-secret scheme under `secret` and
/// relaying to loopback peers: the process (stopped when dropped) and its
/// port, once it answers a STUN binding request.
pub fn coturn(secret: &str) -> (Proc, u16) {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port();
    let loopback = [std::net::Ipv4Addr::LOCALHOST];
    let turn = coturn_at(None, &loopback, port, secret, &["--allow-loopback-peers"]);
    (turn, port)
}

/// coturn inside `ns` (None: here) listening on every address of `ips`
/// at `port` (UDP and TCP), relaying from the first, with [`coturn`]'s
/// credential scheme and `extra` flags; returned once each address
/// answers a STUN binding request.
pub fn coturn_at(
    ns: Option<&Namespace>,
    ips: &[std::net::Ipv4Addr],
    port: u16,
    secret: &str,
    extra: &[&str],
) -> Proc {
    assert!(
        std::path::Path::new("/usr/bin/turnserver").exists(),
        "the TURN tests need Debian's coturn: run scripts/setup"
    );
    let first = ips.first().expect("an address for coturn");
    let mut cmd = match ns {
        None => std::process::Command::new("/usr/bin/turnserver"),
        Some(ns) => ns.command("/usr/bin/turnserver"),
    };
    cmd.args(["-n", "--no-cli", "--no-tls", "--no-dtls", "--simple-log"])
        .args(ips.iter().map(|ip| format!("--listening-ip={ip}")))
        .arg(format!("--relay-ip={first}"))
        .arg(format!("--listening-port={port}"))
        .args([
            "--use-auth-secret",
            &format!("--static-auth-secret={secret}"),
            "--realm=jobmesh.test",
        ])
        .args([
            "--min-port=49152",
            "--max-port=65535",
            "--log-file=/dev/null",
            "--no-stdout-log",
        ])
        .args(extra)
        .arg(format!(
            "--userdb={}",
            std::env::temp_dir()
                .join(format!(
                    "jobmesh-turndb-{}-{first}-{port}",
                    std::process::id()
                ))
                .display()
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let turn = Proc::adopt(cmd.spawn().expect("spawn turnserver"));
    let probe = || {
        for ip in ips {
            wait_stun(std::net::SocketAddr::from((*ip, port)));
        }
    };
    match ns {
        None => probe(),
        Some(ns) => ns.enter(probe),
    }
    turn
}

/// Waits until a STUN server answers a binding request at `server`.
fn wait_stun(server: std::net::SocketAddr) {
    // A STUN binding request: type 1, length 0, the magic cookie, an id.
    let local = if server.ip().is_loopback() {
        "127.0.0.1:0"
    } else {
        "0.0.0.0:0"
    };
    let socket = std::net::UdpSocket::bind(local).expect("bind");
    socket
        .set_read_timeout(Some(std::time::Duration::from_millis(100)))
        .expect("timeout");
    let mut request = vec![0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42];
    request.extend_from_slice(b"jobmesh-test");
    let deadline = std::time::Instant::now() + crate::DEADLINE;
    let mut buf = [0u8; 512];
    loop {
        let _ = socket.send_to(&request, server);
        if matches!(socket.recv_from(&mut buf), Ok((n, _)) if n >= 20 && buf[..2] == [1, 1]) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "coturn did not answer STUN at {server}"
        );
    }
}

/// [`signal_server_with`] on a given `listen` address: to start a server
/// again where one was stopped.
pub fn signal_server_on(listen: &str, args: &[&str]) -> (Proc, String) {
    start_signal_server(None, listen, args)
}

/// Starts the `signal-server` binary inside `ns`, on its veth address with
/// port 0, so peers in the namespace at the other end of the link reach it;
/// returns it and the WebSocket URL from its ready line.
pub fn signal_server_in(ns: &Namespace) -> (Proc, String) {
    signal_server_in_with(ns, &["--open"])
}

/// [`signal_server_in`] with `args` instead of `--open`.
pub fn signal_server_in_with(ns: &Namespace, args: &[&str]) -> (Proc, String) {
    start_signal_server(Some(ns), &format!("{}:0", ns.addr()), args)
}

fn start_signal_server(ns: Option<&Namespace>, listen: &str, args: &[&str]) -> (Proc, String) {
    let (server, ready) = Proc::spawn(
        program("signal-server", ns)
            .args(["--listen", listen])
            .args(args),
    );
    let url = ready
        .split_whitespace()
        .find(|w| w.starts_with("ws://") || w.starts_with("wss://"))
        .unwrap_or_else(|| panic!("no ws:// url in the ready line {ready:?}"))
        .to_owned();
    (server, url)
}

/// A `peer` daemon process named `name` in `pool` at `url`, running `caps`
/// (`""`: submit only), its control socket `<dir>/<name>.sock` and data dir
/// `<dir>/<name>.data` (so a restart finds its journal), never
/// running its own jobs, with `extra` flags (an open pool unless they hold
/// `--token`); returns it once it is ready.
pub fn daemon(
    url: &str,
    pool: &str,
    name: &str,
    caps: &str,
    dir: &std::path::Path,
    extra: &[&str],
) -> Proc {
    spawn_daemon(
        peer(&["--no-self-dispatch"]),
        url,
        pool,
        name,
        caps,
        dir,
        extra,
    )
}

/// [`daemon`], but a candidate for its own jobs too (self-dispatch, as
/// `peer` starts by default): a submitter that also works.
pub fn self_dispatching_daemon(
    url: &str,
    pool: &str,
    name: &str,
    caps: &str,
    dir: &std::path::Path,
    extra: &[&str],
) -> Proc {
    spawn_daemon(peer(&[]), url, pool, name, caps, dir, extra)
}

/// [`daemon`], inside network namespace `ns`. Its control socket is a file
/// as usual, so the test reaches it from its own namespace.
pub fn daemon_in(
    ns: &Namespace,
    url: &str,
    pool: &str,
    name: &str,
    caps: &str,
    dir: &std::path::Path,
    extra: &[&str],
) -> Proc {
    let cmd = peer_in(ns, &["--no-self-dispatch"]);
    spawn_daemon(cmd, url, pool, name, caps, dir, extra)
}

/// Adds [`daemon`]'s flags (but `--no-self-dispatch`) to `cmd` (a `peer`
/// command) and spawns it.
pub fn spawn_daemon(
    cmd: std::process::Command,
    url: &str,
    pool: &str,
    name: &str,
    caps: &str,
    dir: &std::path::Path,
    extra: &[&str],
) -> Proc {
    spawn_daemon_ready(cmd, url, pool, name, caps, dir, extra).0
}

/// A submit-only [`daemon`] serving `flag` (`--metrics` or `--http`) on a
/// free loopback port, with `extra` flags: the daemon and the address of
/// its endpoint (from its ready line).
pub fn daemon_serving(
    flag: &str,
    url: &str,
    pool: &str,
    name: &str,
    dir: &std::path::Path,
    extra: &[&str],
) -> (Proc, String) {
    let mut args = vec![flag, "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let (daemon, ready) = spawn_daemon_ready(
        peer(&["--no-self-dispatch"]),
        url,
        pool,
        name,
        "",
        dir,
        &args,
    );
    let addr = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://")?.split('/').next())
        .unwrap_or_else(|| panic!("no {flag} address in the ready line {ready:?}"))
        .to_owned();
    (daemon, addr)
}

/// [`spawn_daemon`], with its ready line.
fn spawn_daemon_ready(
    mut cmd: std::process::Command,
    url: &str,
    pool: &str,
    name: &str,
    caps: &str,
    dir: &std::path::Path,
    extra: &[&str],
) -> (Proc, String) {
    let sock = dir.join(format!("{name}.sock"));
    let sock = sock.to_str().expect("a UTF-8 temp dir");
    let data = dir.join(format!("{name}.data"));
    let data = data.to_str().expect("a UTF-8 temp dir");
    cmd.args([
        "--signal",
        url,
        "--pool",
        pool,
        "--name",
        name,
        "--capabilities",
        caps,
        "--control",
        sock,
        "--data-dir",
        data,
    ]);
    cmd.args(extra);
    // An open pool, unless the test hands the daemon an invitation.
    if !extra.contains(&"--token") {
        cmd.arg("--open");
    }
    Proc::spawn(&mut cmd)
}

/// Waits (at most [`DEADLINE`]) until the daemon serving the control socket
/// `sock` is connected and sees `n` other peers advertising `capability`:
/// for daemons in another network namespace, which an in-process watcher
/// cannot join. Asks every 50 ms (the pool's changes are no event on the
/// control socket).
pub async fn wait_capable(sock: &std::path::Path, capability: &str, n: usize) {
    let wanted = crate::cap(capability);
    crate::within(
        &format!("{} to see {n} peers with {capability}", sock.display()),
        async {
            loop {
                let reply =
                    jobmesh_peer::control::request(sock, &jobmesh_peer::control::Request::Peers)
                        .await
                        .ok()
                        .and_then(|v| {
                            serde_json::from_value::<jobmesh_peer::control::PeersReply>(v).ok()
                        });
                if let Some(r) = reply {
                    let capable = r
                        .peers
                        .iter()
                        .filter(|p| p.capabilities.contains(&wanted))
                        .count();
                    if r.connected && capable >= n {
                        return;
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        },
    )
    .await;
}

/// A script of `tests/browser` run by node with `args` (headless Debian
/// chromium, driven by playwright-core): the process, its stdin piped, and
/// its stdout lines as they come.
pub fn browser_script(script: &str, args: &[&std::ffi::OsStr]) -> (Child, mpsc::Receiver<String>) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir()
            && std::path::Path::new("/usr/bin/chromium").exists(),
        "the browser tests need Debian's chromium and tests/browser's node packages: run scripts/setup"
    );
    let mut child = std::process::Command::new("node")
        .arg(dir.join(script))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("node runs (scripts/setup installs nodejs)");
    let lines = lines_of(child.stdout.take().expect("piped"));
    (child, lines)
}

/// A browser tab in a pool: `tests/browser/tab.mjs` under node, on the
/// signal-server whose `ws://…/ws` URL is given; [`BrowserTab::step`] sends
/// one step (see the script) and returns its answer. Killed when dropped.
pub struct BrowserTab {
    child: Child,
    answers: mpsc::Receiver<String>,
}

impl BrowserTab {
    /// Opens the tab on the signal-server at `signal_url`.
    pub fn open(signal_url: &str) -> Self {
        Self::open_script("tab.mjs", signal_url)
    }

    /// Another step-driven script of `tests/browser` (`example.mjs`), on the
    /// signal-server at `signal_url`.
    pub fn open_script(script: &str, signal_url: &str) -> Self {
        let base = signal_url
            .trim_end_matches("/ws")
            .replacen("ws://", "http://", 1);
        let (child, answers) = browser_script(script, &[base.as_ref()]);
        Self { child, answers }
    }

    /// Runs `step` in the tab; panics on an `error` answer or none in 120 s.
    pub fn step(&mut self, step: serde_json::Value) -> serde_json::Value {
        self.start(&step);
        let v = self.answer();
        assert!(v.get("error").is_none(), "{step}: {v}");
        v
    }

    /// Waits (at most [`DEADLINE`](crate::DEADLINE)) until the tab's pool
    /// view lists exactly the workers `names`, by name.
    pub async fn wait_workers(&mut self, names: &[&str]) {
        let want = serde_json::json!(names);
        crate::eventually(&format!("the tab to see the workers {names:?}"), || {
            self.step(serde_json::json!({ "op": "workers" }))["workers"] == want
        })
        .await;
    }

    /// Sends `step` without waiting for its answer; [`BrowserTab::answer`] takes it.
    pub fn start(&mut self, step: &serde_json::Value) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("piped");
        writeln!(stdin, "{step}").expect("send the step");
    }

    /// The answer to the oldest step not yet answered.
    pub fn answer(&mut self) -> serde_json::Value {
        let line = self
            .answers
            .recv_timeout(std::time::Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("no answer from the tab: {e}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }
}

impl Drop for BrowserTab {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tests/browser/dashboard.mjs` run by node: headless Debian chromium on
/// the dashboard at `url`, waiting for the figures in `expect` (data-k name
/// → text), writing a screenshot to `screenshot`.
pub struct DashboardInBrowser {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl DashboardInBrowser {
    /// Starts it; returns once the page streams.
    pub fn open(url: &str, expect: &serde_json::Value, screenshot: &std::path::Path) -> Self {
        let expect = expect.to_string();
        let (child, lines) = browser_script(
            "dashboard.mjs",
            &[url.as_ref(), expect.as_ref(), screenshot.as_os_str()],
        );
        let first = lines
            .recv_timeout(std::time::Duration::from_secs(90))
            .unwrap_or_default();
        assert_eq!(
            first, "live",
            "the dashboard did not go live in the browser"
        );
        Self { child, lines }
    }

    /// What the page showed once every expectation held (or its deadline
    /// passed): `ok`, `figures`, `failures`, `events`, `spans`, `workers`,
    /// `errors`.
    pub fn shown(mut self) -> serde_json::Value {
        let line = self
            .lines
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("the browser reports what it shows");
        let _ = self.child.wait();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }
}

impl Drop for DashboardInBrowser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! Starting the real binaries and reading process memory.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context};

/// The `peer` and `signal-server` binaries, found next to this one (one
/// `cargo build --release` builds all three; `scripts/bench` does).
#[derive(Debug, Clone)]
pub(crate) struct Bins {
    pub(crate) peer: PathBuf,
    pub(crate) signal_server: PathBuf,
}

impl Bins {
    pub(crate) fn find() -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("this binary's path")?;
        let dir = exe.parent().context("this binary's directory")?;
        let bins = Self {
            peer: dir.join("peer"),
            signal_server: dir.join("signal-server"),
        };
        for b in [&bins.peer, &bins.signal_server] {
            if !b.exists() {
                bail!(
                    "{} is missing: build the workspace's binaries first (scripts/bench does: cargo build --release --bins)",
                    b.display()
                );
            }
        }
        Ok(bins)
    }
}

/// A child process, killed and reaped when dropped.
#[derive(Debug)]
pub(crate) struct Proc {
    pub(crate) child: Child,
    /// Its first stdout line (the ready line of `signal-server` and `peer`).
    pub(crate) ready: String,
}

impl Proc {
    /// Starts `cmd` and waits for its first stdout line.
    pub(crate) fn start(cmd: &mut Command) -> anyhow::Result<Self> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let mut ready = String::new();
        std::io::BufReader::new(stdout).read_line(&mut ready)?;
        if ready.is_empty() {
            let status = child.wait()?;
            bail!("{cmd:?} exited ({status}) before its ready line");
        }
        Ok(Self { child, ready })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now, in MiB.
    pub(crate) fn rss_mib(&self) -> anyhow::Result<f64> {
        status_kib(self.pid(), "VmRSS").map(|k| k as f64 / 1024.0)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user + system) process `pid` has used, in seconds: fields 14
/// and 15 of `/proc/PID/stat`, in Linux's fixed 100 ticks per second.
pub(crate) fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("/proc/{pid}/stat"))?;
    // After the command name, which may hold spaces, in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    // utime and stime are fields 14 and 15: 11 and 12 after the name.
    match (tick(11), tick(12)) {
        (Some(u), Some(s)) => Ok((u + s) as f64 / 100.0),
        _ => bail!("no CPU times in /proc/{pid}/stat"),
    }
}

/// A `/proc/PID/status` field (`VmRSS`, `VmHWM`) in KiB.
pub(crate) fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// `signal-server` on 127.0.0.1:0 (plus `args`) and its WebSocket URL.
pub(crate) fn signal_server(bins: &Bins, args: &[&str]) -> anyhow::Result<(Proc, String)> {
    let p = Proc::start(
        Command::new(&bins.signal_server)
            .args(["--listen", "127.0.0.1:0", "--open"])
            .args(args),
    )?;
    let url = p
        .ready
        .split_whitespace()
        .find(|w| w.starts_with("ws://"))
        .with_context(|| format!("no ws:// URL in {:?}", p.ready))?
        .to_owned();
    Ok((p, url))
}

/// Slots of every bench worker: for no-op jobs a slot is only a pipelining
/// window (jobs a submitter may have in flight on the worker), as in
/// `examples/echo-bench.rs`.
pub(crate) const WORKER_SLOTS: &str = "64";

/// A `peer` daemon process in `pool` running `caps` (`""`: submit only)
/// with [`WORKER_SLOTS`], its control socket at `control`.
pub(crate) fn peer(
    bins: &Bins,
    url: &str,
    pool: &str,
    name: &str,
    caps: &str,
    control: &Path,
) -> anyhow::Result<Proc> {
    peer_with(bins, url, pool, name, caps, control, &[])
}

/// [`peer`] with `extra` flags.
pub(crate) fn peer_with(
    bins: &Bins,
    url: &str,
    pool: &str,
    name: &str,
    caps: &str,
    control: &Path,
    extra: &[&str],
) -> anyhow::Result<Proc> {
    let control = control
        .to_str()
        .context("control socket path is not UTF-8")?;
    Proc::start(
        Command::new(&bins.peer)
            .args(["--signal", url, "--pool", pool, "--name", name, "--open"])
            .args(["--capabilities", caps, "--control", control])
            .args(["--data-dir", &format!("{control}.data")])
            .args(["--slots", WORKER_SLOTS])
            .args(extra)
            .env_remove("JOBMESH_CONFIG"),
    )
}

/// Debian's `nats-server` on 127.0.0.1 (stopped when dropped), with its
/// monitoring port for the traffic counters.
pub(crate) struct Nats {
    _proc: Proc,
    /// `nats://127.0.0.1:PORT`.
    pub(crate) url: String,
    monitor: u16,
}

/// nats-server's counters (`/varz`): messages and bytes, in and out added.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NatsTraffic {
    pub(crate) msgs: u64,
    pub(crate) bytes: u64,
}

impl NatsTraffic {
    /// The traffic between `earlier` and this.
    pub(crate) fn since(&self, earlier: &Self) -> Self {
        Self {
            msgs: self.msgs.saturating_sub(earlier.msgs),
            bytes: self.bytes.saturating_sub(earlier.bytes),
        }
    }
}

impl Nats {
    /// Starts it on free ports and waits until it accepts connections.
    pub(crate) fn start() -> anyhow::Result<Self> {
        let program = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .context("signal-cluster needs Debian's nats-server: run scripts/setup")?;
        let free = || -> anyhow::Result<u16> {
            Ok(std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port())
        };
        let (port, monitor) = (free()?, free()?);
        let child = Command::new(program)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(["-m", &monitor.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {program}"))?;
        let proc = Proc {
            child,
            ready: String::new(),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", monitor)).is_err()
        {
            if std::time::Instant::now() > deadline {
                bail!("nats-server did not listen on {port} and {monitor} within 10 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(Self {
            _proc: proc,
            url: format!("nats://127.0.0.1:{port}"),
            monitor,
        })
    }

    /// Its message and byte counters now.
    pub(crate) async fn traffic(&self) -> anyhow::Result<NatsTraffic> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.monitor))
            .await
            .context("nats-server's monitoring port")?;
        s.write_all(b"GET /varz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut response = Vec::new();
        s.read_to_end(&mut response).await?;
        let body = memchr::memmem::find(&response, b"\r\n\r\n")
            .and_then(|at| response.get(at + 4..))
            .context("no body in nats-server's /varz answer")?;
        let varz: serde_json::Value =
            serde_json::from_slice(body).context("nats-server's /varz")?;
        let field = |k: &str| varz.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
        Ok(NatsTraffic {
            msgs: field("in_msgs") + field("out_msgs"),
            bytes: field("in_bytes") + field("out_bytes"),
        })
    }
}

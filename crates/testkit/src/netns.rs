//! A bad network link for tests, built from Linux network namespaces: two
//! namespaces joined by a veth pair, with random packet loss (iptables'
//! `statistic` match) and a rate limit (a `tbf` qdisc) on demand. The
//! kernel's `netem` qdisc would do both, but is not built into every kernel
//! these tests run on.
//!
//! Needs root (`CAP_NET_ADMIN`, `CAP_SYS_ADMIN`) and the `ip`, `tc` and
//! `iptables` programs; `scripts/setup` installs them and the root package's
//! `build.rs` sets `cfg(netns_tests)` when they are all there. Every command
//! that fails panics with the command line and its stderr.
//!
//! The namespaces have only their loopback and their end of the veth, so the
//! traffic of processes started in them (with [`Namespace::command`]) stays
//! between them: nothing reaches the host's network, and the only way from
//! one to the other is the veth. Files are shared as usual, so a daemon in a
//! namespace still serves its Unix control socket to the test.

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Namespaces made by this process so far (names and subnets are unique).
static LINKS: AtomicU32 = AtomicU32::new(0);
/// Every namespace this module makes is named `<PREFIX><pid>-<n><a|b>`.
const PREFIX: &str = "jobmesh-";
/// The veth end's name in each namespace (names are per namespace).
const VETH: &str = "veth0";

/// One end of a [`Link`]: a network namespace with its loopback up and one
/// veth end with an address.
#[derive(Debug)]
pub struct Namespace {
    name: String,
    addr: Ipv4Addr,
}

impl Namespace {
    /// A namespace of this module's naming scheme, `<PREFIX><pid>-<n><suffix>`
    /// with `n` fresh, whose main address will be `addr`; made by the caller.
    pub(crate) fn named(suffix: &str, addr: Ipv4Addr) -> Self {
        let n = LINKS.fetch_add(1, Ordering::Relaxed);
        Self {
            name: format!("{PREFIX}{}-{n}{suffix}", std::process::id()),
            addr,
        }
    }

    /// Runs `f` on a thread inside this namespace: sockets it opens are
    /// the namespace's (setns(2) moves only the calling thread).
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let file =
                        std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                        .unwrap_or_else(|e| panic!("setns {path}: {e}"));
                    f()
                })
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    /// Its name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its veth end's address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// Its veth end's interface name.
    pub fn veth(&self) -> &str {
        VETH
    }

    /// A command running `program` inside this namespace (`ip netns exec`,
    /// which execs it: the child's pid is the program's). Add its
    /// arguments and environment as usual.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `program args` inside this namespace to success; its stdout.
    pub fn run(&self, program: &str, args: &[&str]) -> String {
        let mut c = self.command(program);
        c.args(args);
        output(
            &mut c,
            &format!("ip netns exec {} {program} {}", self.name, args.join(" ")),
        )
    }

    /// Drops each packet arriving over the veth with `probability` (0..1),
    /// at random: an iptables rule in this namespace's INPUT chain. Traffic
    /// inside the namespace (its loopback) is not touched.
    pub fn drop_randomly(&self, probability: f64) {
        assert!(
            (0.0..1.0).contains(&probability),
            "a probability in 0..1, not {probability}"
        );
        self.run(
            "iptables",
            &[
                "-w",
                "-A",
                "INPUT",
                "-i",
                VETH,
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &probability.to_string(),
                "-j",
                "DROP",
            ],
        );
    }

    /// Drops every packet arriving over the veth until [`mend`](Self::mend)
    /// (a rule first in this namespace's INPUT chain): a cut cable.
    pub fn cut(&self) {
        self.run(
            "iptables",
            &["-w", "-I", "INPUT", "1", "-i", VETH, "-j", "DROP"],
        );
    }

    /// Takes [`cut`](Self::cut)'s rule out again.
    pub fn mend(&self) {
        self.run("iptables", &["-w", "-D", "INPUT", "-i", VETH, "-j", "DROP"]);
    }

    /// Packets the [`drop_randomly`](Self::drop_randomly) rule dropped so far.
    pub fn dropped_packets(&self) -> u64 {
        let table = self.run("iptables", &["-w", "-L", "INPUT", "-v", "-x", "-n"]);
        table
            .lines()
            .filter(|l| l.contains("statistic"))
            .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }

    /// Limits what this end sends over the veth to `rate` (`tc` units:
    /// `"2mbit"`), with a token bucket (`tbf`) that queues up to 400 ms of
    /// traffic and drops past that, as a slow link's router would.
    pub fn limit_rate(&self, rate: &str) {
        let args = [
            "-n", &self.name, "qdisc", "replace", "dev", VETH, "root", "tbf", "rate", rate,
            "burst", "32kbit", "latency", "400ms",
        ];
        output(
            Command::new("tc").args(args),
            &format!("tc {}", args.join(" ")),
        );
    }

    /// Bytes received over the veth so far.
    pub fn received_bytes(&self) -> u64 {
        let path = format!("/sys/class/net/{VETH}/statistics/rx_bytes");
        let text = self.run("cat", &[&path]);
        text.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{path} in {}: {e}: {text:?}", self.name))
    }
}

/// Two network namespaces `a` (10.X.Y.1/24) and `b` (10.X.Y.2/24) joined by
/// a veth pair, a subnet of their own per link. Dropping it deletes both
/// namespaces, and with them the veth, its qdiscs and the iptables rules.
/// Processes still running in them keep their namespace alive but
/// unreachable: stop them first (drop their guards before the link's).
#[derive(Debug)]
pub struct Link {
    /// The first end: 10.X.Y.1.
    pub a: Namespace,
    /// The second end: 10.X.Y.2.
    pub b: Namespace,
}

impl Link {
    /// Makes the two namespaces and the veth between them, with both
    /// loopbacks and both veth ends up. Panics when that fails (not root,
    /// `ip` missing).
    pub fn new() -> Self {
        remove_stale();
        let pid = std::process::id();
        let n = LINKS.fetch_add(1, Ordering::Relaxed);
        // A subnet per link, so addresses differ even between links of one
        // test process (the namespaces would keep equal ones apart anyway).
        let (x, y) = ((pid % 250) as u8, (n % 256) as u8);
        let a = Namespace {
            name: format!("{PREFIX}{pid}-{n}a"),
            addr: Ipv4Addr::new(10, x, y, 1),
        };
        let b = Namespace {
            name: format!("{PREFIX}{pid}-{n}b"),
            addr: Ipv4Addr::new(10, x, y, 2),
        };
        // The guard first: a failure below still deletes what was made.
        let link = Self { a, b };
        for ns in [&link.a, &link.b] {
            ip(&["netns", "add", &ns.name]);
        }
        // Created inside the namespaces, so the names never meet in the
        // host's namespace.
        ip(&[
            "link",
            "add",
            VETH,
            "netns",
            &link.a.name,
            "type",
            "veth",
            "peer",
            "name",
            VETH,
            "netns",
            &link.b.name,
        ]);
        for ns in [&link.a, &link.b] {
            let cidr = format!("{}/24", ns.addr);
            ip(&["-n", &ns.name, "addr", "add", &cidr, "dev", VETH]);
            ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
            ip(&["-n", &ns.name, "link", "set", VETH, "up"]);
            // Deliberately no default or multicast route: links must form
            // on a network without a gateway (the transport turns mDNS off;
            // with it, every dial failed here with ENODEV).
        }
        link
    }

    /// Loss `probability` on every packet, both ways (see
    /// [`Namespace::drop_randomly`]).
    pub fn drop_randomly(&self, probability: f64) {
        self.a.drop_randomly(probability);
        self.b.drop_randomly(probability);
    }

    /// Cuts the link both ways (see [`Namespace::cut`]).
    pub fn cut(&self) {
        self.a.cut();
        self.b.cut();
    }

    /// Mends a [`cut`](Self::cut).
    pub fn mend(&self) {
        self.a.mend();
        self.b.mend();
    }

    /// Packets dropped by the loss rules of both ends.
    pub fn dropped_packets(&self) -> u64 {
        self.a.dropped_packets() + self.b.dropped_packets()
    }

    /// `rate` each way (see [`Namespace::limit_rate`]).
    pub fn limit_rate(&self, rate: &str) {
        self.a.limit_rate(rate);
        self.b.limit_rate(rate);
    }
}

impl Default for Link {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            // Deleting one end's namespace removes the pair; the other
            // `netns del` still has its own namespace to remove.
            let _ = Command::new("ip").args(["netns", "del", &ns.name]).status();
        }
    }
}

/// Runs `ip args` to success.
pub(crate) fn ip(args: &[&str]) {
    output(
        Command::new("ip").args(args),
        &format!("ip {}", args.join(" ")),
    );
}

/// Runs `cmd` (shown as `line`) to success; its stdout. Panics with the
/// command and its stderr otherwise.
fn output(cmd: &mut Command, line: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("`{line}` did not start: {e}"));
    assert!(
        out.status.success(),
        "`{line}` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deletes the namespaces of test processes that died without dropping
/// their links (a killed test run): a name whose pid no longer runs.
pub(crate) fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let pid = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = Command::new("ip").args(["netns", "del", name]).status();
            }
        }
    }
}

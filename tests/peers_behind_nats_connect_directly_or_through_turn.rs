//! Peers behind NATs, on the testbed of `jobmesh_testkit::natlab`: a public
//! segment with the real signal-server and Debian's coturn (STUN and TURN
//! on 203.0.113.1), homes behind NAT routers built from network namespaces
//! and iptables. The signal-server offers STUN and TURN, with a credential
//! minted per peer, in its welcome; the daemons take them from there. Each
//! test is one row of the NAT matrix (docs/networking.md):
//!
//! 1. two easy (endpoint-independent) NATs: a direct link (server- or
//!    peer-reflexive candidates), jobs and a 10 MiB file;
//! 2. one symmetric NAT: the link goes through TURN and says so;
//! 3. a network without UDP: no path (webrtc-rs 0.21 has no TURN over
//!    TCP), and the job's error says UDP was blocked;
//! 4. TURN down where only a relay would do: the job's error names the
//!    TURN server.
//!
//! They need root, `ip` and `iptables` (and coturn: `scripts/setup`);
//! `build.rs` sets `cfg(netns_tests)` where they can run, and they are
//! ignored, with that reason, where not.
//!
//! ```sh
//! cargo test --test tests peers_behind_nats -- --nocapture
//! ```

use std::path::{Path, PathBuf};

use jobmesh_peer::control::PeersReply;
use jobmesh_testkit::natlab::{Internet, Nat, SERVER, SERVER_2};
use jobmesh_testkit::process::{
    coturn_at, daemon_in, peer_in, run_peer, signal_server_in_with, stdout_json, wait_capable, Proc,
};
use jobmesh_transport::path::{CandidateKind, LinkPath};

const SECRET: &str = "the-testbed-turn-secret";
const TURN_PORT: u16 = 3478;

/// The testbed with its services, a submitter in one home and a worker
/// running `copy` (a file in, the same file out) in another.
struct Lab {
    // Processes first: they stop before the namespaces go.
    _worker: Proc,
    _submitter: Proc,
    turn: Option<Proc>,
    _server: Proc,
    dir: tempfile::TempDir,
    _net: Internet,
}

impl Lab {
    /// The submitter behind `submitter_nat`, the worker behind `worker_nat`,
    /// once the submitter sees the worker.
    async fn start(submitter_nat: Nat, worker_nat: Nat) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut net = Internet::new();
        let turn = coturn_at(
            Some(&net.public),
            &[SERVER, SERVER_2],
            TURN_PORT,
            SECRET,
            &[],
        );
        let secret = dir.path().join("turn.secret");
        std::fs::write(&secret, SECRET).expect("secret");
        // Two STUN addresses (coturn answers on both): `peer doctor` tells
        // a mapping per destination from one for all.
        let stun = format!("stun:{SERVER}:{TURN_PORT}");
        let stun_2 = format!("stun:{SERVER_2}:{TURN_PORT}");
        let turn_url = format!("turn:{SERVER}:{TURN_PORT}?transport=udp");
        let (server, url) = signal_server_in_with(
            &net.public,
            &[
                "--open",
                "--stun-url",
                &stun,
                "--stun-url",
                &stun_2,
                "--turn-url",
                &turn_url,
                "--turn-secret-file",
                secret.to_str().expect("utf-8"),
            ],
        );
        let config = dir.path().join("copy.toml");
        std::fs::write(
            &config,
            "[[handler]]\nname = \"copy\"\nargv = [\"cat\"]\nstdin = \"blob\"\nstdout = \"blob\"\n",
        )
        .expect("handler config");
        net.add_home(submitter_nat);
        net.add_home(worker_nat);
        let [s_home, w_home] = net.homes() else {
            unreachable!("two homes were added")
        };
        let config = config.to_str().expect("utf-8");
        let worker = daemon_in(
            &w_home.host,
            &url,
            "nat",
            "w",
            "copy,echo",
            dir.path(),
            &["--config", config],
        );
        let submitter = daemon_in(&s_home.host, &url, "nat", "s", "", dir.path(), &[]);
        let lab = Self {
            _worker: worker,
            _submitter: submitter,
            turn: Some(turn),
            _server: server,
            dir,
            _net: net,
        };
        wait_capable(&lab.sock(), "copy", 1).await;
        lab
    }

    /// `peer doctor --json ARGS` for the submitter, run in its home (its
    /// STUN and TURN probes leave from there): its exit code and report.
    fn doctor(&self, args: &[&str]) -> (Option<i32>, serde_json::Value) {
        let sock = self.sock();
        let mut all = vec!["doctor", "--json", "--control", path(&sock)];
        all.extend(args);
        let home = &self._net.homes()[0].host;
        let out = peer_in(home, &all).output().expect("run peer doctor");
        println!("peer doctor: {}", String::from_utf8_lossy(&out.stdout));
        (out.status.code(), stdout_json(&out))
    }

    /// The status of `check` in a doctor's report.
    fn status<'a>(report: &'a serde_json::Value, check: &str) -> &'a str {
        report["checks"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["check"] == check))
            .and_then(|c| c["status"].as_str())
            .unwrap_or("absent")
    }

    /// The submitter's control socket.
    fn sock(&self) -> PathBuf {
        self.dir.path().join("s.sock")
    }

    /// `peer ARGS --control <the submitter's socket>`.
    fn peer(&self, args: &[&str]) -> std::process::Output {
        let sock = self.sock();
        let mut all = args.to_vec();
        all.extend(["--control", sock.to_str().expect("utf-8")]);
        run_peer(&all)
    }

    /// Sends a file of `size` bytes to the worker's `copy` and checks what
    /// comes back; the submit's output.
    fn copy(&self, size: usize) -> std::process::Output {
        let input = self.dir.path().join(format!("in-{size}.bin"));
        let output = self.dir.path().join(format!("out-{size}.bin"));
        let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&input, &data).expect("input");
        let out = self.peer(&[
            "submit",
            "copy",
            "--file",
            path(&input),
            "--out",
            path(&output),
            "--timeout",
            "60",
        ]);
        if out.status.success() {
            let back = std::fs::read(&output).expect("the copy");
            assert!(back == data, "the file came back changed");
        }
        out
    }

    /// How the submitter's link to the worker connected, per `peer peers`.
    fn link_to_worker(&self) -> Option<LinkPath> {
        let out = self.peer(&["peers", "--json"]);
        let reply: PeersReply = serde_json::from_value(stdout_json(&out)).expect("peers reply");
        let worker = reply.peers.iter().find(|p| p.name == "w")?.id;
        reply.links.get(&worker).copied()
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8")
}

/// The job's error as `peer submit` printed it (stderr), after checking it
/// failed with `code`.
fn failure(out: &std::process::Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(netns_tests),
    ignore = "needs root, ip and iptables (run as root after scripts/setup)"
)]
async fn two_easy_nats_connect_directly_and_move_10_mib() {
    let lab = Lab::start(Nat::Easy, Nat::Easy).await;
    for _ in 0..3 {
        let out = lab.copy(1024);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = lab.copy(10 << 20);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = lab.link_to_worker().expect("a link to the worker");
    println!("easy NAT to easy NAT: {path}");
    assert!(
        !path.relayed(),
        "a relay where a direct path exists: {path}"
    );
    // Private addresses are not routed between homes: the pair went
    // through the NATs' mappings.
    assert_ne!(path.via(), CandidateKind::Host, "{path}");
    // The doctor agrees: every check passes, the NAT maps one way for all.
    let (code, report) = lab.doctor(&["--peer", "w"]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["nat"], "endpoint-independent", "{report}");
    for check in ["signal", "member", "stun", "turn", "link"] {
        assert_eq!(Lab::status(&report, check), "ok", "{check}: {report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(netns_tests),
    ignore = "needs root, ip and iptables (run as root after scripts/setup)"
)]
async fn a_symmetric_nat_goes_through_turn_and_says_so() {
    let lab = Lab::start(Nat::Symmetric, Nat::Easy).await;
    let out = lab.copy(1 << 20);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = lab.link_to_worker().expect("a link to the worker");
    println!("symmetric NAT to easy NAT: {path}");
    assert!(path.relayed(), "{path}");
    let peers = String::from_utf8_lossy(&lab.peer(&["peers"]).stdout).into_owned();
    assert!(
        peers.contains("relay"),
        "peer peers shows the relay:\n{peers}"
    );
    let (code, report) = lab.doctor(&["--peer", "w"]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["nat"], "destination-dependent", "{report}");
    assert_eq!(Lab::status(&report, "turn"), "ok", "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(netns_tests),
    ignore = "needs root, ip and iptables (run as root after scripts/setup)"
)]
async fn a_network_without_udp_gets_an_error_that_says_so() {
    let lab = Lab::start(Nat::UdpBlocked, Nat::Easy).await;
    let err = failure(&lab.copy(1024), 3);
    println!("UDP blocked: {err}");
    assert!(err.contains("could not reach worker"), "{err}");
    assert!(err.contains("is UDP blocked"), "{err}");
    assert!(err.contains("peer doctor"), "{err}");
    let (code, report) = lab.doctor(&[]);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["nat"], "no-udp", "{report}");
    assert_eq!(Lab::status(&report, "signal"), "ok", "{report}");
    assert_eq!(Lab::status(&report, "stun"), "fail", "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(netns_tests),
    ignore = "needs root, ip and iptables (run as root after scripts/setup)"
)]
async fn turn_down_where_only_a_relay_would_do_names_the_turn_server() {
    let mut lab = Lab::start(Nat::Symmetric, Nat::Easy).await;
    drop(lab.turn.take());
    let err = failure(&lab.copy(1024), 3);
    println!("TURN down: {err}");
    assert!(err.contains("could not reach worker"), "{err}");
    assert!(err.contains("TURN server gave no relay candidate"), "{err}");
    let (code, report) = lab.doctor(&[]);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(Lab::status(&report, "turn"), "fail", "{report}");
}

/// Link setup and `peer submit` round trips over a direct and a relayed
/// path on the testbed, for docs/performance.md ("Across NATs"):
///
/// ```sh
/// cargo test --release --test tests measure_direct_and_relayed -- --ignored --nocapture
/// ```
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check: run it by name (as root)"]
async fn measure_direct_and_relayed_paths() {
    const ROUNDS: usize = 10;
    println!("| path | link setup | no-op echo p50 | 1 MiB copy p50 |\n|---|---|---|---|");
    for (name, nat) in [
        ("direct (easy NATs)", Nat::Easy),
        ("relayed (symmetric NAT)", Nat::Symmetric),
    ] {
        let lab = Lab::start(nat, Nat::Easy).await;
        // The first job opens the link.
        let out = lab.copy(1024);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let setup = lab.link_to_worker().expect("a link").setup_ms;
        let mut echo = Vec::new();
        let mut copy = Vec::new();
        for _ in 0..ROUNDS {
            let t = std::time::Instant::now();
            let out = lab.peer(&["submit", "echo", "--input", "{}"]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            echo.push(t.elapsed());
            let t = std::time::Instant::now();
            assert!(lab.copy(1 << 20).status.success());
            copy.push(t.elapsed());
        }
        echo.sort();
        copy.sort();
        println!(
            "| {name} | {setup} ms | {:.1} ms | {:.1} ms |",
            echo[ROUNDS / 2].as_secs_f64() * 1e3,
            copy[ROUNDS / 2].as_secs_f64() * 1e3
        );
    }
}

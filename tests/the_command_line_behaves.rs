//! The `peer` command line as a new user meets it (issue 17): each
//! friction point found by trying it, fixed and held here.

use std::process::Stdio;

use jobmesh_testkit::process::{lines_of, peer};

/// The lines `child` writes to its piped stdout, as they come.
fn stdout_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    lines_of(child.stdout.take().expect("stdout piped"))
}

/// `peer jobs | head`: the reader goes away before the command writes. The
/// command ends quietly with status 0 instead of panicking ("Broken pipe",
/// status 101).
#[test]
fn a_command_whose_reader_went_away_ends_quietly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().to_str().expect("utf-8 path");
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let out = peer(&["id", "--data-dir", data_dir])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("peer id runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Where a result goes is settled before the job is submitted: `--out-dir`
/// is created, and an `--out` in a directory that does not exist is refused
/// (before, the job ran and its result was lost with exit 1).
#[test]
fn output_paths_are_settled_before_the_job_is_submitted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nowhere = dir.path().join("no-daemon.sock");
    let nowhere = nowhere.to_str().expect("utf-8 path");
    let missing = dir.path().join("missing").join("out.png");
    let out = peer(&[
        "submit",
        "echo",
        "--out",
        missing.to_str().expect("utf-8"),
        "--control",
        nowhere,
    ])
    .output()
    .expect("peer submit runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(
        !stderr.contains("no-daemon.sock"),
        "refused before connecting: {stderr}"
    );

    let made = dir.path().join("results").join("today");
    let out = peer(&[
        "submit",
        "echo",
        "--out-dir",
        made.to_str().expect("utf-8"),
        "--control",
        nowhere,
    ])
    .output()
    .expect("peer submit runs");
    assert!(!out.status.success(), "no daemon to submit to");
    assert!(made.is_dir(), "--out-dir was created first");
}

/// A one-off submit to a wrong `--signal` URL says at once what is wrong
/// and what to do, for each kind of mistake (before: 8-10 warnings, a 10 s
/// wait, then "timed out waiting for the pool").
#[test]
fn a_wrong_signal_url_is_named_at_once() {
    let (_server, url) = jobmesh_testkit::process::signal_server();
    let host_port = url
        .trim_start_matches("ws://")
        .trim_end_matches("/ws")
        .to_owned();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let free = closed.local_addr().expect("its address");
    drop(closed);
    for (url, says) in [
        (format!("http://{host_port}/ws"), "is not a WebSocket URL"),
        (
            format!("ws://{host_port}/nope"),
            "answered 404 Not Found for /nope",
        ),
        (
            format!("ws://{host_port}"),
            "the signal-server's WebSocket is at /ws",
        ),
        (
            format!("wss://{host_port}/ws"),
            "does not speak TLS: use ws://",
        ),
        (format!("ws://{free}/ws"), "nothing listens on"),
        ("ws:///ws".to_owned(), "names no host"),
    ] {
        let out = peer(&["submit", "echo", "--signal", &url, "--open", "--pool", "p"])
            .env_remove("JOBMESH_CONTROL")
            .env("XDG_RUNTIME_DIR", "/nonexistent-jobmesh-test")
            .output()
            .expect("peer submit runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url}: {stderr}");
        assert!(stderr.contains(says), "{url}: {stderr}");
        assert!(!stderr.contains("timed out"), "{url}: {stderr}");
    }
}

/// `peer doctor` on a loopback pool with no STUN or TURN: it joins for the
/// one command (no daemon runs), finds the signal-server and its membership
/// fine, skips what there is nothing to check, and exits 0; at a wrong URL
/// it names the signal check, says why, and exits 1; with several URLs it
/// checks each.
#[test]
fn peer_doctor_passes_on_one_host_and_names_an_unreachable_signal_server() {
    let (_server, url) = jobmesh_testkit::process::signal_server();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let free = closed.local_addr().expect("its address");
    drop(closed);
    let doctor = |url: &str| {
        let out = peer(&["doctor", "--json", "--signal", url, "--open", "--pool", "p"])
            .env("XDG_RUNTIME_DIR", "/nonexistent-jobmesh-test")
            .output()
            .expect("peer doctor runs");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
        (out.status.code(), report)
    };
    let (code, report) = doctor(&url);
    assert_eq!(code, Some(0), "{report}");
    let status: Vec<(&str, &str)> = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            (
                c["check"].as_str().unwrap_or(""),
                c["status"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        status,
        [
            ("signal", "ok"),
            ("member", "ok"),
            ("stun", "skip"),
            ("turn", "skip")
        ],
        "{report}"
    );
    let (code, report) = doctor(&format!("ws://{free}/ws"));
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["checks"][0]["check"], "signal", "{report}");
    assert_eq!(report["checks"][0]["status"], "fail", "{report}");
    let detail = report["checks"][0]["detail"].as_str().unwrap_or("");
    assert!(detail.contains("nothing listens on"), "{report}");
    // Several signal-servers: each is checked, and one that does not
    // answer fails the doctor (the peer could not move to it).
    let (code, report) = doctor(&format!("{url},ws://{free}/ws"));
    assert_eq!(code, Some(1), "{report}");
    let signals: Vec<(&str, &str)> = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["check"] == "signal")
        .map(|c| {
            (
                c["status"].as_str().unwrap_or(""),
                c["detail"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(signals.len(), 2, "{report}");
    assert_eq!(signals[0].0, "ok", "{report}");
    assert_eq!(signals[1].0, "fail", "{report}");
    assert!(signals[1].1.contains(&free.to_string()), "{report}");
}

/// Log lines carry colour only on a terminal (or with `--color always`):
/// a log written to a file or a pipe is plain text. And a one-off submit
/// prints what the user needs, not the webrtc stack's recovered races
/// (`WARN rtc::… password is empty`).
#[test]
fn logs_are_plain_off_a_terminal_and_free_of_webrtc_noise() {
    let (_server, url) = jobmesh_testkit::process::signal_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let _worker = jobmesh_testkit::process::daemon(&url, "plain", "w", "echo", dir.path(), &[]);
    let submit = |color: &str, log: Option<&str>| {
        let mut cmd = peer(&[
            "submit", "echo", "--input", "1", "--signal", &url, "--open", "--pool", "plain",
            "--color", color,
        ]);
        cmd.env_remove("JOBMESH_CONTROL")
            .env_remove("NO_COLOR")
            .env_remove("JOBMESH_LOG")
            .env("XDG_RUNTIME_DIR", "/nonexistent-jobmesh-test");
        if let Some(log) = log {
            cmd.env("JOBMESH_LOG", log);
        }
        cmd.output().expect("peer submit runs")
    };
    for _ in 0..5 {
        let out = submit("auto", None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
        // Nothing to say: no webrtc noise, and a submit-only peer in an
        // open pool runs nothing for anyone, so it has no warning to give.
        assert!(stderr.trim().is_empty(), "{stderr}");
    }
    // Logs asked for: plain in a pipe, coloured when asked.
    let out = submit("auto", Some("info"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is open (this peer only submits)"),
        "{stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "colour in a pipe: {stderr:?}");
    let out = submit("always", Some("info"));
    assert!(String::from_utf8_lossy(&out.stderr).contains('\u{1b}'));

    // The signal-server's log in a file is plain too.
    let mut server = std::process::Command::new(jobmesh_testkit::process::bin("signal-server"))
        .args(["--listen", "127.0.0.1:0", "--open"])
        .env_remove("NO_COLOR")
        .env_remove("JOBMESH_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("signal-server runs");
    // Its log lines as they come; the open-mode warning is among the first.
    let lines = lines_of(server.stderr.take().expect("piped"));
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("OPEN mode")) {
        match lines.recv_timeout(std::time::Duration::from_secs(20)) {
            Ok(l) => seen.push(l),
            Err(e) => {
                let _ = server.kill();
                panic!("no OPEN mode warning ({e}): {seen:?}");
            }
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    let stderr = seen.join("\n");
    assert!(!stderr.contains('\u{1b}'), "colour in a file: {stderr:?}");
}

/// `--slots 0` with capabilities made a worker that could never run a job,
/// accepted in silence.
#[test]
fn a_worker_with_no_slots_is_refused_at_start() {
    let out = peer(&[
        "--signal",
        "ws://127.0.0.1:1/ws",
        "--open",
        "--capabilities",
        "echo",
        "--slots",
        "0",
    ])
    .output()
    .expect("peer runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--slots 0 with --capabilities"), "{stderr}");
}

/// `--pool` without a name is `peer watch`'s way to watch the whole pool;
/// anywhere else it is a mistake, named before anything runs.
#[test]
fn pool_without_a_name_is_refused_outside_watch() {
    for args in [
        &["jobs", "--pool"][..],
        &["--pool", "--open", "--capabilities", "echo"],
    ] {
        let out = peer(args).output().expect("peer runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("--pool needs a pool name"),
            "{args:?}: {stderr}"
        );
    }
}

/// Two live daemons with one name in a pool: the second is refused at
/// start, saying who holds the name (before, both ran and people could not
/// tell them apart).
#[test]
fn a_second_daemon_with_a_taken_name_is_refused() {
    let (_server, url) = jobmesh_testkit::process::signal_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let _first = jobmesh_testkit::process::daemon(&url, "names", "w1", "echo", dir.path(), &[]);
    // The first holds the name before the second asks for it (its ready
    // line comes before it has joined; the other order ran the second as
    // the pool's w1, forever).
    tokio::runtime::Runtime::new().expect("a runtime").block_on(
        jobmesh_testkit::process::wait_capable(&dir.path().join("w1.sock"), "echo", 0),
    );
    let other = tempfile::tempdir().expect("tempdir");
    let sock = other.path().join("w1.sock");
    let out = peer(&[
        "--signal",
        &url,
        "--pool",
        "names",
        "--name",
        "w1",
        "--capabilities",
        "echo",
        "--open",
        "--control",
        sock.to_str().expect("utf-8"),
        "--data-dir",
        other.path().join("data").to_str().expect("utf-8"),
    ])
    .output()
    .expect("peer runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("already has a live member named \"w1\""),
        "{stderr}"
    );
}

/// A daemon started with any name or socket is found without `--control`
/// (before, only one named after the host, on its default socket), shared
/// flags go before the subcommand too, and with several daemons the command
/// says which one it used.
#[test]
fn client_commands_find_the_running_daemon_without_control() {
    let (_server, url) = jobmesh_testkit::process::signal_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = dir.path().join("run");
    let daemon = |name: &str| {
        // Self-dispatching: each is the pool's worker as well.
        let mut cmd = peer(&[]);
        cmd.env("XDG_RUNTIME_DIR", &runtime);
        jobmesh_testkit::process::spawn_daemon(cmd, &url, "find", name, "echo", dir.path(), &[])
    };
    let client = |args: &[&str]| {
        let out = peer(args)
            .env("XDG_RUNTIME_DIR", &runtime)
            .output()
            .expect("peer runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{args:?}: {stdout}{stderr}");
        (stdout, stderr)
    };

    let w9 = daemon("w9");
    let (stdout, stderr) = client(&["submit", "echo", "--input", r#"{"n":1}"#]);
    assert_eq!(stdout.trim(), r#"{"n":1}"#);
    assert!(
        !stderr.contains("note:"),
        "one daemon, nothing to say: {stderr}"
    );
    // Shared flags before the subcommand.
    client(&["--pool", "find", "--name", "w9", "jobs"]);

    let _w10 = daemon("w10");
    let (_, stderr) = client(&["jobs"]);
    assert!(
        stderr.contains("note: using w10 (pool find, pid") && stderr.contains("the newest of 2"),
        "the newest, named: {stderr}"
    );
    let (stdout, stderr) = client(&["--name", "w9", "jobs"]);
    assert!(!stderr.contains("note:"), "{stderr}");
    assert!(stdout.contains("echo"), "w9's job: {stdout}");

    // A daemon that stopped is no longer a candidate.
    drop(w9);
    let out = peer(&["--name", "w9", "jobs"])
        .env("XDG_RUNTIME_DIR", &runtime)
        .output()
        .expect("peer runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no running daemon matches --name w9 (running: w10 (pool find"),
        "{stderr}"
    );
}

/// `peer jobs` lines up (the CAPABILITY column drifted), names workers
/// instead of showing their ids, `peer result` and `peer cancel` take the
/// short ids it shows, `peer peers` says each peer's state, and `peer watch`
/// prints times people read (it printed epoch milliseconds).
#[tokio::test]
async fn tables_name_workers_and_short_ids_are_accepted() {
    let (_server, url) = jobmesh_testkit::process::signal_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let _worker = jobmesh_testkit::process::daemon(&url, "tables", "w1", "echo", dir.path(), &[]);
    let _submitter = jobmesh_testkit::process::daemon(&url, "tables", "s", "", dir.path(), &[]);
    let sock_path = dir.path().join("s.sock");
    let sock = sock_path.to_str().expect("utf-8");
    jobmesh_testkit::process::wait_capable(&sock_path, "echo", 1).await;
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--control", sock]);
        let out = peer(&all).output().expect("peer runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };

    // A watcher from before the job: its lines start with a time of day.
    let mut watcher = peer(&["watch", "--control", sock])
        .stdout(Stdio::piped())
        .spawn()
        .expect("peer watch runs");
    let lines = stdout_lines(&mut watcher);

    let job = run(&["submit", "echo", "--input", r#"{"x":1}"#, "--detach"]);
    let job = job.trim();
    let short = &job[..8];
    let result = {
        let mut out = String::new();
        jobmesh_testkit::eventually("the job's result by its short id", || {
            let o = peer(&["result", short, "--control", sock])
                .output()
                .expect("peer runs");
            out = String::from_utf8_lossy(&o.stdout).into_owned();
            o.status.success()
        })
        .await;
        out
    };
    assert_eq!(result.trim(), r#"{"x":1}"#);

    let table = run(&["jobs"]);
    let mut rows = table.lines();
    let header = rows.next().expect("a header");
    let row = rows
        .find(|l| l.starts_with(short))
        .unwrap_or_else(|| panic!("the job's row: {table}"));
    let column = |line: &str, word: &str| line.find(word).expect(word);
    assert_eq!(column(header, "CAPABILITY"), column(row, "echo"), "{table}");
    assert_eq!(
        column(header, "WORKER"),
        column(row, "w1"),
        "by name: {table}"
    );

    let peers = run(&["peers"]);
    assert!(
        peers.lines().next().is_some_and(|h| h.contains("STATE")),
        "{peers}"
    );
    assert!(
        peers
            .lines()
            .any(|l| l.starts_with("w1") && l.contains("ready")),
        "{peers}"
    );

    let mut saw = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !saw.iter().any(|l: &String| l.contains("finished")) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) => saw.push(l),
            Err(e) => panic!("no finished event from peer watch ({e}): {saw:?}"),
        }
    }
    let _ = watcher.kill();
    let _ = watcher.wait();
    for l in &saw {
        let time = l.split_whitespace().next().unwrap_or_default();
        assert!(
            time.len() == 13 && time.ends_with('Z') && time.as_bytes()[2] == b':',
            "a time of day, not epoch ms: {l}"
        );
        assert!(l.contains(short), "{l}");
    }
    assert!(
        saw.iter()
            .any(|l| l.contains("started") && l.ends_with("w1")),
        "workers by name: {saw:?}"
    );

    // Not an id at all, and a prefix nothing has.
    let out = peer(&["cancel", "zz", "--control", sock])
        .output()
        .expect("peer runs");
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a job id"));
    let out = peer(&["cancel", "ffff0000", "--control", sock])
        .output()
        .expect("peer runs");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no job of this daemon starts with"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The everyday features that were missing: the input from stdin (`-`) or
/// a file (`@FILE`), many jobs from one command (`--each`, a bad line
/// failing that line only, results in input order, a summary), and
/// `peer result --wait`.
#[tokio::test]
async fn inputs_from_stdin_or_files_many_jobs_at_once_and_waiting_for_a_result() {
    use std::io::Write;
    let (_server, url) = jobmesh_testkit::process::signal_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let _worker =
        jobmesh_testkit::process::daemon(&url, "every", "w1", "echo,sleep", dir.path(), &[]);
    let _submitter = jobmesh_testkit::process::daemon(&url, "every", "s", "", dir.path(), &[]);
    let sock_path = dir.path().join("s.sock");
    let sock = sock_path.to_str().expect("utf-8");
    jobmesh_testkit::process::wait_capable(&sock_path, "sleep", 1).await;
    let run = |args: &[&str], stdin: &str| {
        let mut all = args.to_vec();
        all.extend(["--control", sock]);
        let mut child = peer(&all)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("peer runs");
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(stdin.as_bytes())
            .expect("stdin");
        let out = child.wait_with_output().expect("peer ends");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, stdout, _) = run(&["submit", "echo", "--input", "-"], r#"{"from":"stdin"}"#);
    assert_eq!((code, stdout.trim()), (Some(0), r#"{"from":"stdin"}"#));
    let file = dir.path().join("input.json");
    std::fs::write(&file, r#"{"from":"file"}"#).expect("write");
    let at = format!("@{}", file.display());
    let (code, stdout, _) = run(&["submit", "echo", "--input", &at], "");
    assert_eq!((code, stdout.trim()), (Some(0), r#"{"from":"file"}"#));

    // Ten lines, one of them not JSON and one blank: nine jobs, in order.
    let mut lines: Vec<String> = (0..9).map(|i| format!(r#"{{"i":{i}}}"#)).collect();
    lines.insert(4, "{oops".into());
    lines.insert(7, String::new());
    let (code, stdout, stderr) = run(
        &["submit", "echo", "--each", "-", "--param", "tag=x"],
        &lines.join("\n"),
    );
    assert_eq!(code, Some(1), "a bad line fails the run: {stderr}");
    let got: Vec<&str> = stdout.lines().collect();
    let want: Vec<String> = (0..9)
        .map(|i| format!(r#"{{"i":{i},"tag":"x"}}"#))
        .collect();
    assert_eq!(got, want, "{stderr}");
    assert!(stderr.contains("line 5: not JSON"), "{stderr}");
    assert!(
        stderr.contains("10 lines") && stderr.contains("9 completed, 0 failed, 1 not a job"),
        "{stderr}"
    );

    // A detached job, waited for: no exit 4, its result once it ends.
    let (code, job, _) = run(
        &["submit", "sleep", "--input", r#"{"ms":300}"#, "--detach"],
        "",
    );
    assert_eq!(code, Some(0));
    let (code, stdout, stderr) = run(&["result", job.trim(), "--wait"], "");
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.trim(), r#"{"slept_ms":300}"#);
}

/// Shell completions and man pages come from the same definitions as the
/// flags, so they cannot drift from them.
#[test]
fn completions_and_man_pages_are_generated_from_the_flags() {
    let out = peer(&["completions", "bash"]).output().expect("peer runs");
    assert!(out.status.success());
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(
        script.contains("--each") && script.contains("submit"),
        "{script}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("peer.bash");
    std::fs::write(&path, &out.stdout).expect("write");
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .expect("bash runs");
    assert!(
        syntax.status.success(),
        "{}",
        String::from_utf8_lossy(&syntax.stderr)
    );

    let man = dir.path().join("man");
    let out = peer(&["man", "--dir", man.to_str().expect("utf-8")])
        .output()
        .expect("peer runs");
    assert!(out.status.success());
    let page = std::fs::read_to_string(man.join("peer-submit.1")).expect("peer-submit.1");
    assert!(page.contains(".TH peer-submit 1"), "{page}");
    assert!(page.contains("each"), "{page}");
    assert!(man.join("peer-pool-invite.1").exists());
}

/// One TOML file holds every flag (and the exec handlers); a flag beats its
/// JOBMESH_* variable, which beats the file; `peer config` shows each
/// setting with its source, in a form the file takes back; and a daemon
/// started from the file runs with it.
#[tokio::test]
async fn a_settings_file_holds_every_flag_and_flags_and_variables_beat_it() {
    let (_server, url) = jobmesh_testkit::process::signal_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("peer.toml");
    let sock = dir.path().join("from-file.sock");
    std::fs::write(
        &file,
        format!(
            r#"signal = "{url}"
pool = "settings"
name = "from-file"
open = true
capabilities = ["echo", "count"]
slots = 4
grace_secs = 5
control = "{}"
data-dir = "{}"

[[handler]]
name = "count"
argv = ["wc", "-c"]
stdout = "text"
"#,
            sock.display(),
            dir.path().join("data").display()
        ),
    )
    .expect("write");
    let config = |file: &std::path::Path, extra: &[&str]| {
        let mut args = vec!["--config", file.to_str().expect("utf-8")];
        args.extend_from_slice(extra);
        args.push("config");
        let out = peer(&args)
            .env("JOBMESH_GRACE_SECS", "7")
            .output()
            .expect("peer runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shown = config(&file, &["--slots", "8"]);
    let line = |key: &str| {
        shown
            .lines()
            .find(|l| l.starts_with(&format!("{key} =")))
            .unwrap_or_else(|| panic!("{key}: {shown}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(line("slots"), "slots = 8 # flag");
    assert_eq!(
        line("grace-secs"),
        "grace-secs = 7 # env JOBMESH_GRACE_SECS"
    );
    assert!(
        line("name").starts_with("name = \"from-file\" # file "),
        "{shown}"
    );
    assert!(line("capabilities").starts_with(r#"capabilities = ["echo", "count"] # file"#));
    assert_eq!(line("dispatch"), r#"dispatch = "least-loaded" # default"#);

    // What `peer config` prints is a settings file with the same values.
    let again = dir.path().join("again.toml");
    std::fs::write(&again, &shown).expect("write");
    let values = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| l.split(" #").next().unwrap_or_default().trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect()
    };
    assert_eq!(values(&config(&again, &[])), values(&shown));

    // A setting that is not a flag is named.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "slot = 3\n").expect("write");
    let out = peer(&["--config", bad.to_str().expect("utf-8"), "config"])
        .output()
        .expect("peer runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(r#"unknown setting "slot""#));

    // The daemon runs with the file alone: its name, its exec handler.
    let (_daemon, _) = jobmesh_testkit::process::Proc::spawn(
        peer(&["--config", file.to_str().expect("utf-8")]).env_remove("JOBMESH_GRACE_SECS"),
    );
    // The only worker of its pool: it runs the job itself.
    let out = peer(&[
        "submit",
        "count",
        "--input",
        "{}",
        "--control",
        sock.to_str().expect("utf-8"),
    ])
    .output()
    .expect("peer runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peers = peer(&["peers", "--control", sock.to_str().expect("utf-8")])
        .output()
        .expect("peer runs");
    assert!(String::from_utf8_lossy(&peers.stdout).contains("from-file (me)"));
}

/// The main command's mesh comes from the `peer` binary itself (it was an
/// example that built a second world): it starts, runs a demo job, is found
/// by a plain `peer submit`, and drains on SIGTERM with status 0.
#[test]
fn peer_mesh_runs_a_local_pool_from_the_binary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = dir.path().join("run");
    let mut mesh = peer(&[
        "mesh",
        "--listen",
        "127.0.0.1:0",
        "--dashboard",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--with",
        "echo,sleep",
        "--data-dir",
        dir.path().join("data").to_str().expect("utf-8"),
    ])
    .env("XDG_RUNTIME_DIR", &runtime)
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .expect("peer mesh runs");
    let lines = stdout_lines(&mut mesh);
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("Running until Ctrl-C"))
    {
        match lines.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(l) => seen.push(l),
            Err(e) => {
                let _ = mesh.kill();
                panic!("peer mesh did not come up ({e}): {seen:?}");
            }
        }
    }
    assert!(
        seen.iter()
            .any(|l| l.starts_with("demo job:") && l.contains("completed")),
        "{seen:?}"
    );
    // It serves the pool's dashboard, on the address it prints.
    let dashboard = seen
        .iter()
        .find_map(|l| l.strip_prefix("the pool's dashboard: http://"))
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no dashboard line: {seen:?}"));
    let (status, body) = jobmesh_testkit::process::http_get(dashboard, "/api/status", None);
    assert!(status.contains(" 200 "), "{status}");
    let report: serde_json::Value = serde_json::from_str(&body).expect("the status report");
    assert_eq!(report["workers"], 1, "{report}");

    let out = peer(&["submit", "sleep", "--input", r#"{"ms":5}"#])
        .env("XDG_RUNTIME_DIR", &runtime)
        .output()
        .expect("peer submit runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"slept_ms":5}"#
    );

    let killed = std::process::Command::new("kill")
        .args(["-TERM", &mesh.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(s) = mesh.try_wait().expect("wait") {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "peer mesh did not stop"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}

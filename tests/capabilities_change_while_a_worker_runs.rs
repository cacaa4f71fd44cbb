//! `peer capabilities add/remove` and SIGHUP on a running worker, over real
//! WebRTC: an exec handler of the settings file starts running when added
//! and the pool sees it; SIGHUP reads the file again and the next job runs
//! the new command; a capability removed lets its running job finish and
//! the pool stops sending it new ones; what cannot run is refused with the
//! reason.

use jobmesh_testkit::process::{
    daemon, expect_exit, run_peer, signal_server, stdout_json, wait_capable,
};

fn config(word: &str) -> String {
    format!("[[handler]]\nname = \"shout\"\nargv = [\"sh\", \"-c\", \"echo {word}\"]\nstdin = \"none\"\nstdout = \"text\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_come_and_go_while_the_worker_runs() {
    let (_server, url) = signal_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("peer.toml");
    std::fs::write(&file, config("hello")).expect("write the settings");
    let w = daemon(
        &url,
        "caps",
        "w1",
        "echo,sleep",
        dir.path(),
        &["--config", file.to_str().expect("utf-8")],
    );
    let _s = daemon(&url, "caps", "s", "", dir.path(), &[]);
    let sock = |n: &str| {
        dir.path()
            .join(format!("{n}.sock"))
            .to_str()
            .expect("utf-8")
            .to_owned()
    };
    let (ws, s) = (sock("w1"), sock("s"));
    wait_capable(std::path::Path::new(&s), "sleep", 1).await;

    let caps = |args: &[&str]| {
        let mut all = vec!["capabilities"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--control", &ws]);
        run_peer(&all)
    };
    let out = caps(&[]);
    expect_exit(&out, 0);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "echo,sleep");

    // An exec handler of the settings file, added at run time.
    let out = caps(&["add", "shout"]);
    expect_exit(&out, 0);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "echo,sleep,shout"
    );
    wait_capable(std::path::Path::new(&s), "shout", 1).await;
    let shout = || stdout_json(&run_peer(&["submit", "shout", "--json", "--control", &s]));
    let got = shout();
    assert_eq!(
        (got["status"].as_str(), got["result"]["stdout"].as_str()),
        (Some("completed"), Some("hello\n")),
        "{got}"
    );

    // SIGHUP reads the file again: the next job runs the new command.
    std::fs::write(&file, config("goodbye")).expect("rewrite the settings");
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &w.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(hup.success());
    jobmesh_testkit::eventually("the reloaded handler runs", || {
        shout()["result"]["stdout"] == "goodbye\n"
    })
    .await;

    // A capability removed while its job runs: the job finishes, and the
    // pool stops sending it new ones (no other worker runs it).
    let long = run_peer(&[
        "submit",
        "sleep",
        "--input",
        r#"{"ms":1500}"#,
        "--detach",
        "--control",
        &s,
    ]);
    expect_exit(&long, 0);
    let job = String::from_utf8_lossy(&long.stdout).trim().to_owned();
    jobmesh_testkit::eventually("the long job runs", || {
        let out = run_peer(&["jobs", "--json", "--control", &s]);
        stdout_json(&out)
            .as_array()
            .into_iter()
            .flatten()
            .any(|j| j["state"] == "running")
    })
    .await;
    let out = caps(&["remove", "sleep"]);
    expect_exit(&out, 0);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "echo,shout");
    let ended = run_peer(&["result", &job, "--wait", "--json", "--control", &s]);
    expect_exit(&ended, 0);
    assert_eq!(stdout_json(&ended)["status"], "completed");
    jobmesh_testkit::eventually("the pool no longer lists sleep on w1", || {
        let out = run_peer(&[
            "submit",
            "sleep",
            "--input",
            r#"{"ms":1}"#,
            "--json",
            "--retries",
            "0",
            "--control",
            &s,
        ]);
        stdout_json(&out)["status"] == "no_worker"
    })
    .await;

    // What cannot run is refused, and nothing changes.
    let out = caps(&["add", "no-such-thing"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-thing"));
    let out = caps(&[]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "echo,shout");
}

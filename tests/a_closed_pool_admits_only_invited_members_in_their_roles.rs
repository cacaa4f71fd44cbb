//! A closed pool, as its owner and members run it with the real binaries:
//! `peer pool init` and `peer pool invite`, a signal-server given the pool's
//! key, daemons redeeming their invitations with `--token`. Members run and
//! submit jobs in their roles; a stranger, an expired invitation, another
//! pool's invitation and a worker-only member are refused, each with a
//! message that says why.

use std::path::Path;
use std::process::Output;

use jobmesh_testkit::process::{
    daemon, expect_exit, run_peer, run_peer_elsewhere, signal_server_with, stdout_json,
    wait_capable,
};
use jobmesh_testkit::{init_tracing, within};
use serde_json::Value;

/// Runs `peer` with `args` plus `--pool-dir dir`.
fn owner(dir: &Path, args: &[&str]) -> Output {
    let mut all = args.to_vec();
    all.extend(["--pool-dir", dir.to_str().expect("utf-8")]);
    run_peer(&all)
}

/// An invitation to `pool` for `roles`, valid for `expires`, in `file`.
fn invite(dir: &Path, pool: &str, roles: &str, expires: &str, file: &Path) {
    let out = owner(
        dir,
        &[
            "pool",
            "invite",
            pool,
            "--role",
            roles,
            "--capabilities",
            "echo",
            "--expires",
            expires,
            "--out",
            file.to_str().expect("utf-8"),
        ],
    );
    expect_exit(&out, 0);
}

/// A daemon run to its end: for ones the server refuses.
async fn refused_daemon(url: &str, dir: &Path, name: &str, extra: &[&str]) -> Output {
    let data = dir.join(format!("{name}.data"));
    let sock = dir.join(format!("{name}.sock"));
    let mut args = vec![
        "--signal",
        url,
        "--name",
        name,
        "--capabilities",
        "",
        "--data-dir",
        data.to_str().expect("utf-8"),
        "--control",
        sock.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    within(
        "the refused daemon to exit",
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_peer(&args)
        }),
    )
    .await
    .expect("ran")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The `error: …` line a command printed.
fn error_line(out: &Output) -> String {
    stderr(out)
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in {}", stderr(out)))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pool_admits_only_invited_members_in_their_roles() {
    init_tracing();
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let keys = dir.join("owner");

    // The owner creates the pool and invites a worker, a submitter, a
    // worker-only member, an invitation that has expired, and one to another pool.
    let init = owner(&keys, &["pool", "init", "lab", "--json"]);
    expect_exit(&init, 0);
    let init: Value = stdout_json(&init);
    let pool_key = format!("lab={}", init["pool_key"].as_str().expect("pool_key"));
    let mode = std::fs::metadata(init["key_file"].as_str().expect("key_file"))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .expect("the key file");
    assert_eq!(mode, 0o600, "the owner key is the owner's alone");
    let again = owner(&keys, &["pool", "init", "lab"]);
    assert_ne!(again.status.code(), Some(0), "a pool is created once");
    let token = |name: &str| dir.join(format!("{name}.token"));
    invite(&keys, "lab", "worker", "1h", &token("w"));
    invite(&keys, "lab", "submitter", "1h", &token("s"));
    invite(&keys, "lab", "worker", "1h", &token("m"));
    invite(&keys, "lab", "submitter", "0s", &token("expired"));
    expect_exit(&owner(&keys, &["pool", "init", "other"]), 0);
    invite(&keys, "other", "submitter", "1h", &token("other"));

    let (_server, url) = signal_server_with(&["--pool-key", &pool_key]);
    let flag = |name: &str| token(name).to_str().expect("utf-8").to_owned();
    let _worker = daemon(&url, "lab", "w", "echo", dir, &["--token", &flag("w")]);
    let _sub = daemon(&url, "lab", "s", "", dir, &["--token", &flag("s")]);
    let s_sock = dir.join("s.sock");
    wait_capable(&s_sock, "echo", 1).await;

    // A member in its role: the job runs.
    let out = run_peer(&[
        "submit",
        "echo",
        "--input",
        r#"{"hi":1}"#,
        "--json",
        "--control",
        s_sock.to_str().expect("utf-8"),
    ]);
    expect_exit(&out, 0);
    assert_eq!(stdout_json(&out)["result"]["hi"], 1);

    // The credential was kept: the next start needs no token.
    assert!(dir.join("s.data/credential.json").exists());

    // A stranger (open mode, no credential) is refused and learns nothing;
    // the same words whether or not the pool exists.
    let stranger = refused_daemon(&url, dir, "x", &["--open", "--pool", "lab"]).await;
    assert_eq!(stranger.status.code(), Some(1), "{}", stderr(&stranger));
    assert!(
        stderr(&stranger).contains("not admitted to pool \"lab\""),
        "{}",
        stderr(&stranger)
    );
    let nowhere = refused_daemon(&url, dir, "y", &["--open", "--pool", "nowhere"]).await;
    assert_eq!(
        error_line(&nowhere).replace("nowhere", "lab"),
        error_line(&stranger)
    );
    // A stranger cannot list the pool either (a one-off command, from its own machine).
    let list = run_peer_elsewhere(&["peers", "--signal", &url, "--pool", "lab", "--open"]);
    assert_ne!(list.status.code(), Some(0));
    assert!(stderr(&list).contains("not admitted"), "{}", stderr(&list));

    // An expired invitation, and another pool's: refused, saying why.
    let expired = refused_daemon(&url, dir, "e", &["--token", &flag("expired")]).await;
    assert_ne!(expired.status.code(), Some(0));
    assert!(stderr(&expired).contains("expired"), "{}", stderr(&expired));
    let other = refused_daemon(
        &url,
        dir,
        "o",
        &["--token", &flag("other"), "--pool", "lab"],
    )
    .await;
    assert_ne!(other.status.code(), Some(0));
    assert!(
        stderr(&other).contains("the invitation is for pool \"other\""),
        "{}",
        stderr(&other)
    );

    // A member with the worker role only cannot submit.
    let _m = daemon(&url, "lab", "m", "", dir, &["--token", &flag("m")]);
    let m_sock = dir.join("m.sock");
    wait_capable(&m_sock, "echo", 1).await;
    let out = run_peer(&[
        "submit",
        "echo",
        "--control",
        m_sock.to_str().expect("utf-8"),
    ]);
    assert_ne!(out.status.code(), Some(0));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(text.contains("submitter role"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_member_is_disconnected_and_refused_while_the_others_work_on() {
    init_tracing();
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let keys = dir.join("owner");
    let init: Value = stdout_json(&owner(&keys, &["pool", "init", "lab", "--json"]));
    let pool_key = format!("lab={}", init["pool_key"].as_str().expect("pool_key"));
    let token = |name: &str| dir.join(format!("{name}.token"));
    invite(&keys, "lab", "worker", "1h", &token("w"));
    invite(&keys, "lab", "submitter", "1h", &token("s"));
    invite(&keys, "lab", "submitter", "1h", &token("r"));
    // An empty list to start with; the server re-reads it on SIGHUP.
    let listed = owner(&keys, &["pool", "revoke", "lab"]);
    expect_exit(&listed, 0);
    let list = String::from_utf8_lossy(&listed.stdout).trim().to_owned();
    let (server, url) = signal_server_with(&["--pool-key", &pool_key, "--revocations", &list]);

    let flag = |name: &str| token(name).to_str().expect("utf-8").to_owned();
    let _worker = daemon(&url, "lab", "w", "echo", dir, &["--token", &flag("w")]);
    let _sub = daemon(&url, "lab", "s", "", dir, &["--token", &flag("s")]);
    let mut revoked = daemon(&url, "lab", "r", "", dir, &["--token", &flag("r")]);
    let sock = |name: &str| {
        dir.join(format!("{name}.sock"))
            .to_str()
            .expect("utf-8")
            .to_owned()
    };
    let run = |name: &str| {
        run_peer(&[
            "submit",
            "echo",
            "--input",
            "7",
            "--json",
            "--control",
            &sock(name),
        ])
    };
    for name in ["s", "r"] {
        wait_capable(Path::new(&sock(name)), "echo", 1).await;
        expect_exit(&run(name), 0);
    }

    // The owner revokes r's key, and the server reloads its list.
    let r_data = dir.join("r.data");
    let id = stdout_json(&run_peer(&[
        "id",
        "--data-dir",
        r_data.to_str().expect("utf-8"),
        "--json",
    ]));
    let key = id["public_key"].as_str().expect("public_key");
    expect_exit(
        &owner(&keys, &["pool", "revoke", "lab", "--member", key]),
        0,
    );
    server.signal("HUP");

    // r is disconnected: the daemon stops, saying why.
    jobmesh_testkit::eventually("the revoked daemon to exit", || !revoked.is_running()).await;
    // Started again with its kept credential, it is refused.
    let again = refused_daemon(&url, dir, "r", &[]).await;
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert!(
        error_line(&again).contains("revoked"),
        "{}",
        error_line(&again)
    );
    // Everyone else works on.
    expect_exit(&run("s"), 0);
}

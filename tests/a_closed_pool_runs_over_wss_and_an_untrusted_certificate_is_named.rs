//! The signal-server over TLS (`--tls-cert`/`--tls-key`): members that
//! trust its certificate (`--ca`) join a closed pool over `wss://` and run
//! jobs; a peer that does not trust it stops at once and says what to pass.

use std::path::Path;

use jobmesh_testkit::process::{
    daemon, expect_exit, run_peer, run_peer_elsewhere, signal_server_with, stdout_json,
    wait_capable,
};
use jobmesh_testkit::{init_tracing, within};

/// A self-signed certificate for 127.0.0.1 and localhost, as PEM files.
fn self_signed(dir: &Path) -> (String, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("a certificate");
    let cert_file = dir.join("server.pem");
    let key_file = dir.join("server.key");
    std::fs::write(&cert_file, cert.cert.pem()).expect("write the certificate");
    std::fs::write(&key_file, cert.signing_key.serialize_pem()).expect("write the key");
    (
        cert_file.to_str().expect("utf-8").to_owned(),
        key_file.to_str().expect("utf-8").to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pool_runs_over_wss_and_an_untrusted_certificate_is_named() {
    init_tracing();
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let (cert, key) = self_signed(dir);
    let keys = dir.join("owner");
    let keys = keys.to_str().expect("utf-8");
    let init = run_peer(&["pool", "init", "lab", "--json", "--pool-dir", keys]);
    expect_exit(&init, 0);
    let pool_key = format!(
        "lab={}",
        stdout_json(&init)["pool_key"].as_str().expect("key")
    );
    for (name, role) in [("w", "worker"), ("s", "submitter")] {
        let out = dir.join(format!("{name}.token"));
        let invite = run_peer(&[
            "pool",
            "invite",
            "lab",
            "--role",
            role,
            "--pool-dir",
            keys,
            "--out",
            out.to_str().expect("utf-8"),
        ]);
        expect_exit(&invite, 0);
    }
    let (_server, url) = signal_server_with(&[
        "--pool-key",
        &pool_key,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    assert!(url.starts_with("wss://127.0.0.1:"), "{url}");

    let token = |n: &str| {
        dir.join(format!("{n}.token"))
            .to_str()
            .expect("utf-8")
            .to_owned()
    };
    let _w = daemon(
        &url,
        "lab",
        "w",
        "echo",
        dir,
        &["--token", &token("w"), "--ca", &cert],
    );
    let _s = daemon(
        &url,
        "lab",
        "s",
        "",
        dir,
        &["--token", &token("s"), "--ca", &cert],
    );
    let sock = dir.join("s.sock");
    wait_capable(&sock, "echo", 1).await;
    let out = run_peer(&[
        "submit",
        "echo",
        "--input",
        "5",
        "--json",
        "--control",
        sock.to_str().expect("utf-8"),
    ]);
    expect_exit(&out, 0);
    assert_eq!(stdout_json(&out)["result"], 5);

    // Without --ca the system's roots do not know this certificate: the
    // one-off command stops at once, naming the flag.
    let untrusted = within(
        "a peer that does not trust the certificate",
        tokio::task::spawn_blocking({
            let url = url.clone();
            move || run_peer_elsewhere(&["peers", "--signal", &url, "--pool", "lab", "--open"])
        }),
    )
    .await
    .expect("ran");
    assert_ne!(untrusted.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(stderr.contains("--ca FILE"), "{stderr}");
}

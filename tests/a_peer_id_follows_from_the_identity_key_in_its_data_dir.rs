//! `peer id` and the daemon agree on who a peer is: the id follows from the
//! Ed25519 key in the data dir, which is created owner-only and kept.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use jobmesh_testkit::init_tracing;
use jobmesh_testkit::process::{bin, expect_exit, run_peer, signal_server, stdout_json, Proc};

#[test]
fn a_peer_id_follows_from_the_identity_key_in_its_data_dir() {
    init_tracing();
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("w.data");
    let data_s = data.to_string_lossy().into_owned();

    let first = run_peer(&["id", "--data-dir", &data_s, "--json"]);
    expect_exit(&first, 0);
    let first = stdout_json(&first);
    let id = first["peer_id"].as_str().expect("peer_id").to_owned();
    assert_eq!(
        first["public_key"].as_str().map(str::len),
        Some(43),
        "{first}"
    );
    let key_file = data.join("identity.key");
    let mode = std::fs::metadata(&key_file)
        .expect("key file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the key file is the owner's alone");

    // The same key, the same id: asked again, and as the running daemon.
    let again = stdout_json(&run_peer(&["id", "--data-dir", &data_s, "--json"]));
    assert_eq!(again, first);
    let (_server, url) = signal_server();
    let sock = tmp.path().join("w.sock").to_string_lossy().into_owned();
    let (daemon, line) = Proc::spawn(Command::new(bin("peer")).args([
        "--signal",
        &url,
        "--open",
        "--capabilities",
        "echo",
        "--name",
        "w",
        "--control",
        &sock,
        "--data-dir",
        &data_s,
    ]));
    assert!(line.contains(&id), "the daemon runs as {id}: {line}");
    drop(daemon);

    // A key others can read is refused, with the fix.
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let refused = run_peer(&["id", "--data-dir", &data_s]);
    assert_ne!(refused.status.code(), Some(0));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("chmod 600"), "{err}");
}

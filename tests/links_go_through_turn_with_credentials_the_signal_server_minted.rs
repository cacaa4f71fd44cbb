//! TURN with the credentials a signal-server mints: real coturn
//! (`use-auth-secret`), the real `signal-server` given the same secret and
//! `--turn-url`, and two daemons that use only relayed candidates (no host
//! or reflexive path is allowed to win). The daemons take the TURN server
//! and their own short-lived credential from the welcome; a job and a
//! 256 KiB file go through the relay (the job's own timeout bounds it: a
//! relay on loopback is slow, see docs/networking.md). With a wrong secret at the signal-server
//! coturn refuses the allocations and the job finds no way to its worker.
//! Credentials of one minute outlive themselves: the signal-server renews
//! them every half minute, and a link dialled after the welcome's expired
//! still gets its relay.

use std::time::Duration;

use jobmesh_peer::{Blob, JobReport};
use jobmesh_testkit::process::{coturn, signal_server_with};
use jobmesh_testkit::{cap, within, PeerGuard};
use serde_json::json;

const SECRET: &str = "a-secret-shared-with-coturn";

/// The signal-server offering coturn at `port`, its secret in a file under `dir`.
fn signal_server_offering(
    dir: &std::path::Path,
    port: u16,
    secret: &str,
    extra: &[&str],
) -> (jobmesh_testkit::process::Proc, String) {
    let file = dir.join(format!("turn-{secret}.secret"));
    std::fs::write(&file, secret).expect("write the secret");
    let turn = format!("turn:127.0.0.1:{port}?transport=udp");
    let mut args = vec![
        "--open",
        "--turn-url",
        &turn,
        "--turn-secret-file",
        file.to_str().expect("utf-8"),
    ];
    args.extend(extra);
    signal_server_with(&args)
}

fn relayed(url: &str, name: &str, caps: &[&str]) -> PeerGuard {
    PeerGuard::start_configured(url, "turn", name, caps, 2, |c| c.rtc.relay_only = true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_and_a_file_go_through_turn_with_minted_credentials() {
    jobmesh_testkit::init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_turn, port) = coturn(SECRET);
    let (_server, url) = signal_server_offering(dir.path(), port, SECRET, &[]);
    let _worker = relayed(&url, "w", &["echo"]);
    let submitter = relayed(&url, "s", &[]);
    submitter.wait_capable("echo", 1).await;

    let data: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 253) as u8).collect();
    let job = submitter
        .handle
        .submit_with_blobs(
            cap("echo"),
            json!({ "via": "turn" }),
            vec![Blob::from_bytes(data.clone())],
            Duration::from_secs(60),
        )
        .await
        .expect("submitted");
    let report = job
        .result()
        .await
        .expect("a result within the job's timeout");
    assert_eq!(report.result.expect("completed"), json!({ "via": "turn" }));
    let back = report.blobs.first().expect("the file came back");
    assert_eq!(back.size(), data.len() as u64);
    // The link says how it connected.
    let pool = submitter.handle.pool();
    let worker = pool.peers.first().expect("the worker").id;
    let path = pool.links.get(&worker).expect("a link to the worker");
    assert!(path.relayed(), "{path}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_under_another_secret_get_no_relay() {
    jobmesh_testkit::init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_turn, port) = coturn(SECRET);
    let (_server, url) = signal_server_offering(dir.path(), port, "not-the-secret-coturn-has", &[]);
    let _worker = relayed(&url, "w", &["echo"]);
    let submitter = relayed(&url, "s", &[]);
    submitter.wait_capable("echo", 1).await;
    let report = within(
        "the job to fail",
        submitter
            .handle
            .run(cap("echo"), json!({}), Duration::from_secs(8)),
    )
    .await
    .expect("an envelope");
    // No relay, no link, and the error says where it broke.
    let err = report.result.expect_err("no relay, no link").to_string();
    assert!(err.contains("could not reach worker"), "{err}");
    assert!(err.contains("TURN server gave no relay candidate"), "{err}");
}

/// An echo job from `s` through the relay, within a minute: its report.
async fn echo(s: &PeerGuard, n: u32) -> JobReport {
    within(
        "an echo through the relay",
        s.handle
            .run(cap("echo"), json!({ "n": n }), Duration::from_secs(60)),
    )
    .await
    .expect("an envelope")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_dialled_after_the_welcome_credential_expired_still_get_a_relay() {
    jobmesh_testkit::init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_turn, port) = coturn(SECRET);
    let ttl = Duration::from_secs(60);
    let (_server, url) =
        signal_server_offering(dir.path(), port, SECRET, &["--turn-ttl-secs", "60"]);
    let w1 = relayed(&url, "w1", &["echo"]);
    let submitter = relayed(&url, "s", &[]);
    submitter.wait_capable("echo", 1).await;
    let first = echo(&submitter, 1).await;
    assert!(first.result.is_ok(), "{first:?}");
    // The welcome's credentials expire at `ttl` on coturn's clock: time has
    // to pass (nothing to wait on), with a margin for the rounding of the
    // expiry to whole seconds. The signal-server renews them meanwhile.
    tokio::time::sleep(ttl + Duration::from_secs(5)).await;
    // The link opened with them carries on, or is opened again.
    let second = echo(&submitter, 2).await;
    assert!(second.result.is_ok(), "{second:?}");
    // A worker that joins now: the submitter dials it with what it holds,
    // which is only a relay allocation if its credentials were renewed.
    let _w2 = relayed(&url, "w2", &["echo"]);
    submitter.wait_capable("echo", 2).await;
    drop(w1);
    submitter
        .wait_pool("w1 to leave", |p| {
            p.peers.iter().all(|peer| peer.name != "w1")
        })
        .await;
    let third = echo(&submitter, 3).await;
    assert!(third.result.is_ok(), "{third:?}");
    assert_eq!(third.worker.map(|(_, name)| name).as_deref(), Some("w2"));
}

//! Browser tabs in a closed pool. A tab redeems an invitation minted by
//! `peer pool invite` (WebCrypto Ed25519), shows its credential to the
//! signal-server and in every link handshake, and a Rust worker runs its
//! job. A tab holding another owner's invitation is refused by the
//! signal-server; and where a signal-server admits anybody (`--open`), the
//! daemons refuse its links themselves, so its job fails saying why. The tab
//! checks the daemons as well: it sends no job to a daemon without a
//! credential of the pool.

use std::path::Path;

use jobmesh_testkit::process::{
    daemon, expect_exit, run_peer, signal_server_with, stdout_json, wait_capable, BrowserTab,
};
use serde_json::{json, Value};

/// `peer pool init POOL` in `owner`: the pool key.
fn init(owner: &Path, pool: &str) -> String {
    let out = run_peer(&[
        "pool",
        "init",
        pool,
        "--json",
        "--pool-dir",
        owner.to_str().expect("utf-8"),
    ]);
    expect_exit(&out, 0);
    stdout_json(&out)["pool_key"]
        .as_str()
        .expect("pool_key")
        .to_owned()
}

/// An invitation to `pool` for `roles` from `owner`: the token file's path and text.
fn invite(owner: &Path, pool: &str, roles: &str, file: &Path) -> String {
    let file_arg = file.to_str().expect("utf-8");
    let owner_arg = owner.to_str().expect("utf-8");
    let out = run_peer(&[
        "pool",
        "invite",
        pool,
        "--role",
        roles,
        "--expires",
        "1h",
        "--out",
        file_arg,
        "--pool-dir",
        owner_arg,
    ]);
    expect_exit(&out, 0);
    std::fs::read_to_string(file).expect("the token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_with_an_invitation_joins_a_closed_pool_and_one_without_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (owner, other_owner) = (dir.path().join("owner"), dir.path().join("other-owner"));
    let key = init(&owner, "lab");
    init(&other_owner, "lab");
    let w_token = dir.path().join("w.token");
    invite(&owner, "lab", "worker", &w_token);
    let good = invite(&owner, "lab", "submitter", &dir.path().join("tab.token"));
    let forged = invite(
        &other_owner,
        "lab",
        "submitter",
        &dir.path().join("bad.token"),
    );

    let (_server, url) = signal_server_with(&["--pool-key", &format!("lab={key}")]);
    let _w = daemon(
        &url,
        "lab",
        "w",
        "echo",
        dir.path(),
        &["--token", w_token.to_str().expect("utf-8")],
    );
    wait_capable(&dir.path().join("w.sock"), "echo", 0).await;

    let mut tab = BrowserTab::open(&url);
    tab.step(json!({ "op": "join", "pool": "lab", "invitation": good }));
    tab.wait_workers(&["w"]).await;
    let got = tab.step(json!({ "op": "submit", "type": "echo", "payload": { "closed": true } }));
    assert_eq!(got["result"], json!({ "closed": true }), "{got}");
    assert_eq!(got["worker"], "w", "{got}");

    let mut stranger = BrowserTab::open(&url);
    stranger.start(&json!({ "op": "join", "pool": "lab", "invitation": forged }));
    let refused = stranger.answer();
    let why = refused["error"].as_str().unwrap_or_default();
    assert!(why.contains("not_admitted"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemons_refuse_a_tab_with_a_bad_credential_and_the_tab_refuses_a_stranger() {
    let dir = tempfile::tempdir().expect("tempdir");
    let owner = dir.path().join("owner");
    init(&owner, "lab");
    let w_token = dir.path().join("w.token");
    invite(&owner, "lab", "worker", &w_token);
    let good = invite(&owner, "lab", "submitter", &dir.path().join("tab.token"));

    // A signal-server that admits anybody: only the peers' checks stand.
    let (_server, url) = signal_server_with(&["--open"]);
    let _w = daemon(
        &url,
        "lab",
        "w",
        "echo",
        dir.path(),
        &["--token", w_token.to_str().expect("utf-8")],
    );
    let mut member = BrowserTab::open(&url);
    let joined = member.step(json!({ "op": "join", "pool": "lab", "invitation": good }));

    // Another tab shows the member's credential as its own: the worker
    // refuses its link, and its job fails saying so.
    let mut thief = BrowserTab::open(&url);
    thief.step(json!({ "op": "join", "pool": "lab", "credential": joined["credential"] }));
    thief.wait_workers(&["w"]).await;
    let got = thief.step(json!({ "op": "submit", "type": "echo", "payload": {} }));
    assert_eq!(got["failed"], "failed", "{got}");
    let message = got["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("link refused by") && message.contains("credential"),
        "{got}"
    );

    // A daemon without a credential (open mode, as the helper starts it)
    // gets no job from the member tab.
    let _x = daemon(&url, "lab", "x", "echo", dir.path(), &[]);
    member.wait_workers(&["w", "x"]).await;
    for _ in 0..4 {
        let got: Value = member.step(
            json!({ "op": "submit", "type": "echo", "payload": {}, "strategy": "round-robin" }),
        );
        assert_eq!(got["worker"], "w", "only the pool's member runs it: {got}");
    }
}

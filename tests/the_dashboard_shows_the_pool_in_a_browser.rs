//! `peer --http`'s dashboard in a real browser: headless Chromium (Debian's,
//! driven by playwright-core from tests/browser) opens the page against a
//! running pool; jobs are submitted, one of them failing; the page must show
//! the workers, the counts, the failure with its error and the task stream.
//! Screenshots go to target/tmp/dashboard*.png.

use jobmesh_testkit::process::{
    daemon, daemon_serving, expect_exit, http_get, http_get_as, run_peer, signal_server,
    submit_each, wait_capable, DashboardInBrowser,
};
use serde_json::json;

/// A capability that always fails, with an error worth showing.
const FAILING: &str = r#"
[[handler]]
name = "fail"
argv = ["sh", "-c", "echo 'disk full on /scratch' >&2; exit 3"]
stdin = "none"
"#;

fn screenshot(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_workers_jobs_and_a_failure() {
    let (_server, url) = signal_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("handlers.toml");
    std::fs::write(&config, FAILING).expect("write the handlers");
    let config = config.to_str().expect("utf-8");
    let worker = |name: &str| {
        daemon(
            &url,
            "board",
            name,
            "echo,fail",
            dir.path(),
            &["--config", config, "--slots", "2"],
        )
    };
    let (_w1, _w2) = (worker("w1"), worker("w2"));
    let (_s, addr) = daemon_serving("--http", &url, "board", "s", dir.path(), &[]);
    let sock = dir.path().join("s.sock");
    wait_capable(&sock, "fail", 2).await;

    // Only loopback names are answered without a token.
    let (line, _) = http_get_as(&addr, "rebound.example:80", "/api/status", None);
    assert!(line.contains(" 403 "), "{line}");
    let (line, page) = http_get(&addr, "/", None);
    assert!(
        line.contains(" 200 ") && page.contains("<jobmesh-dashboard>"),
        "{line}"
    );

    let shot = screenshot("dashboard.png");
    let browser = DashboardInBrowser::open(
        &format!("http://{addr}/"),
        &json!({
            "workers": "2", "completed": "20", "failed": "1",
            "cap-workers:echo": "2", "cap-workers:fail": "2", "run-n:echo": "20",
        }),
        &shot,
    );
    let control = sock.to_str().expect("utf-8");
    assert_eq!(submit_each(control, "echo", 20), Some(0));
    let out = run_peer(&["submit", "fail", "--retries", "0", "--control", control]);
    expect_exit(&out, 1);

    let shown = browser.shown();
    assert_eq!(shown["ok"], true, "the page never showed it: {shown:#}");
    let figures = &shown["figures"];
    assert_eq!(figures["submitters"], "1", "{shown:#}");
    assert_eq!(figures["slots"], "4", "{shown:#}");
    assert_eq!(figures["cap-free:echo"], "4", "{shown:#}");
    assert_eq!(figures["lost"], "0", "{shown:#}");
    let failures = shown["failures"].as_array().expect("failures");
    assert_eq!(failures.len(), 1, "{shown:#}");
    let failure = failures[0].as_str().unwrap_or_default();
    assert!(
        failure.contains("fail") && failure.contains("disk full on /scratch"),
        "{failure}"
    );
    assert_eq!(shown["spans"]["completed"], 20, "{shown:#}");
    assert_eq!(shown["spans"]["failed"], 1, "{shown:#}");
    let workers = shown["workers"].as_array().expect("workers");
    assert_eq!(workers, &[json!("w1"), json!("w2")], "{shown:#}");
    assert!(shot.is_file(), "no screenshot at {}", shot.display());
    println!("screenshot: {}", shot.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_with_a_token_opens_with_it_and_refuses_without() {
    let (_server, url) = signal_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "d1a7f0c3b2e94e55a0c1f2e3d4c5b6a7";
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{token}\n")).expect("write the token");
    let _w = daemon(&url, "guarded", "w1", "echo", dir.path(), &[]);
    let (_s, addr) = daemon_serving(
        "--http",
        &url,
        "guarded",
        "s",
        dir.path(),
        &["--http-token-file", file.to_str().expect("utf-8")],
    );
    wait_capable(&dir.path().join("s.sock"), "echo", 1).await;

    for path in ["/", "/api/status", "/api/dashboard", "/metrics"] {
        let (line, body) = http_get(&addr, path, None);
        assert!(line.contains(" 401 "), "{path}: {line}");
        assert!(body.contains("Authorization: Bearer"), "{path}: {body}");
    }
    let (line, _) = http_get(&addr, "/api/status", Some("not-the-token-at-all"));
    assert!(line.contains(" 401 "), "{line}");
    let (line, body) = http_get(&addr, "/api/status", Some(token));
    assert!(line.contains(" 200 "), "{line}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).expect("json")["workers"],
        1
    );

    // A browser opens it once with the token; the cookie carries the rest.
    let shown = DashboardInBrowser::open(
        &format!("http://{addr}/?token={token}"),
        &json!({ "workers": "1", "cap-workers:echo": "1" }),
        &screenshot("dashboard-token.png"),
    )
    .shown();
    assert_eq!(shown["ok"], true, "{shown:#}");
}

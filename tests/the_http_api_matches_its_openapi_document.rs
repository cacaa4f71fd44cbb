//! A property-based fuzzer (schemathesis, from PyPI, in tests/api/.venv)
//! generates requests from the checked-in OpenAPI document
//! (crates/http/openapi.json) against a token-guarded daemon of a real
//! pool: every answer must have a documented status, content type, headers
//! and schema, invalid data must be refused, a wrong token must get 401, and
//! no answer may be a 500. The budget is fixed (a seed and 40 examples an
//! operation); `JOBMESH_API_FUZZ_EXAMPLES=N` runs more.

use jobmesh_testkit::process::{daemon, daemon_serving, http_get, signal_server, wait_capable};

const TOKEN: &str = "fuzz-token-0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_answers_only_what_its_document_says() {
    let venv =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/.venv/bin/schemathesis");
    assert!(
        venv.exists(),
        "schemathesis is not installed in tests/api/.venv: run scripts/setup"
    );
    let (_server, url) = signal_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).expect("write the token");
    let _w = daemon(
        &url,
        "fuzz",
        "w1",
        "echo,sleep",
        dir.path(),
        &["--slots", "8"],
    );
    let (_s, addr) = daemon_serving(
        "--http",
        &url,
        "fuzz",
        "s",
        dir.path(),
        &["--http-token-file", token.to_str().expect("utf-8")],
    );
    wait_capable(&dir.path().join("s.sock"), "echo", 1).await;

    // The document it serves is the checked-in one.
    let (line, served) = http_get(&addr, "/v1/openapi.json", Some(TOKEN));
    assert!(line.contains(" 200 "), "{line}");
    assert_eq!(served, jobmesh_http::jobs::OPENAPI);

    let examples = std::env::var("JOBMESH_API_FUZZ_EXAMPLES").unwrap_or_else(|_| "40".into());
    let cassette = dir.path().join("cassette.yaml");
    let out = std::process::Command::new(&venv)
        .args(["run", "--base-url"])
        .arg(format!("http://{addr}"))
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/crates/http/openapi.json"
        ))
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        // Every check; 5xx are judged below (502, 503 and 504 are
        // documented answers of a pool: lost, no worker, timed out).
        .args(["--checks", "all", "--exclude-checks", "not_a_server_error"])
        .args(["--hypothesis-max-examples", &examples])
        .args(["--hypothesis-seed", "18"])
        .args(["--hypothesis-deadline", "30000"])
        .args(["--request-timeout", "30000"])
        .arg("--cassette-path")
        .arg(&cassette)
        // Hypothesis keeps no example database, and writes nothing here.
        .args(["--hypothesis-database", "none"])
        .current_dir(dir.path())
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .output()
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No 500 among the recorded answers (`code: '500'` in the cassette).
    let recorded = std::fs::read_to_string(&cassette).expect("the cassette");
    let answers = recorded.matches("code: '").count();
    assert!(
        answers > 100,
        "only {answers} requests were made:\n{report}"
    );
    assert!(!recorded.contains("code: '500'"), "a 500 answer:\n{report}");
    println!("{answers} requests, none answered 500");
}

//! The job API over HTTP, driven by `curl` as a user would: a JSON job, a
//! photo in and its thumbnail out (`curl --data-binary @photo …`), files in
//! a multipart form, detached jobs followed by id (state, events, kept
//! blobs, cancel), every error with its status and stable code, and a
//! client that disconnects cancelling its job.

use std::process::Command;

use jobmesh_testkit::process::{daemon, daemon_serving, run_peer, signal_server, wait_capable};
use serde_json::Value;

/// What curl got: status, headers (lowercase names), body.
struct Got {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `curl -sS ARGS URL`, with its status and headers.
fn curl(args: &[&str], url: &str) -> Got {
    let dir = tempfile::tempdir().expect("tempdir");
    let head = dir.path().join("head");
    let out = Command::new("curl")
        .args(["-sS", "-D"])
        .arg(&head)
        .args(args)
        .arg(url)
        .output()
        .expect("curl runs (scripts/setup installs it)");
    let head = std::fs::read_to_string(&head).unwrap_or_default();
    // The last response's head (after any 100 Continue).
    let last = head
        .rsplit("\r\n\r\n")
        .find(|h| !h.trim().is_empty())
        .unwrap_or("");
    let mut lines = last.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        // No answer at all (curl gave up, or the connection broke): 0.
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Got {
        status,
        headers,
        body: out.stdout,
    }
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_over_http_as_curl_sends_them() {
    let (_server, url) = signal_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let _w = daemon(
        &url,
        "http",
        "w1",
        "echo,sleep,thumbnail",
        dir.path(),
        &["--slots", "4"],
    );
    let (_s, addr) = daemon_serving(
        "--http",
        &url,
        "http",
        "s",
        dir.path(),
        &["--max-blob-mib", "1"],
    );
    wait_capable(&dir.path().join("s.sock"), "thumbnail", 1).await;
    let api = format!("http://{addr}/v1/jobs");

    // A JSON job; query parameters become input fields.
    let got = curl(
        &[
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"hello":"mesh"}"#,
        ],
        &format!("{api}/echo?n=3&tag=x"),
    );
    assert_eq!(got.status, 200);
    let envelope = got.json();
    assert_eq!(envelope["status"], "completed");
    assert_eq!(envelope["worker"]["name"], "w1");
    assert_eq!(
        envelope["result"],
        serde_json::json!({"hello": "mesh", "n": 3, "tag": "x"})
    );

    // A photo in, its thumbnail out, as curl sends it by default.
    let scan = fixture("scan.png");
    let got = curl(
        &["--data-binary", &format!("@{scan}")],
        &format!("{api}/thumbnail?width=64"),
    );
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.header("content-type"), Some("image/jpeg"));
    assert_eq!(&got.body[..3], &[0xFF, 0xD8, 0xFF], "a JPEG");
    let result: Value =
        serde_json::from_str(got.header("jobmesh-result").expect("the result header"))
            .expect("JSON");
    assert_eq!(result["width"], 64);
    assert_eq!(got.header("jobmesh-worker"), Some("w1"));
    // Asking for JSON gets the envelope, with the blob described.
    let got = curl(
        &[
            "-H",
            "accept: application/json",
            "--data-binary",
            &format!("@{scan}"),
        ],
        &format!("{api}/thumbnail?width=64"),
    );
    assert_eq!(got.status, 200);
    let envelope = got.json();
    assert_eq!(
        envelope["blobs"][0]["size"].as_u64(),
        result["bytes"].as_u64()
    );
    // A multipart form: an input part and a file; Accept names the type.
    let got = curl(
        &[
            "-H",
            "accept: image/jpeg",
            "-F",
            r#"input={"height":8}"#,
            "-F",
            &format!("photo=@{scan}"),
        ],
        &format!("{api}/thumbnail"),
    );
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    let result: Value =
        serde_json::from_str(got.header("jobmesh-result").expect("result")).expect("JSON");
    assert_eq!(result["height"], 8);

    // Detached: 202 with where to look; its events end with `finished`.
    let got = curl(&["-X", "POST"], &format!("{api}/sleep?ms=400&detach=true"));
    assert_eq!(got.status, 202);
    let id = got.json()["job_id"].as_str().expect("an id").to_owned();
    assert_eq!(
        got.header("location"),
        Some(format!("/v1/jobs/{id}").as_str())
    );
    let events = curl(&["-N", "--max-time", "30"], &format!("{api}/{id}/events"));
    let text = String::from_utf8_lossy(&events.body);
    assert!(text.contains("event: finished"), "{text}");
    let got = curl(&[], &format!("{api}/{id}"));
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["status"], "completed");
    // A detached thumbnail's kept blob, by name and by index.
    let got = curl(
        &["--data-binary", &format!("@{scan}")],
        &format!("{api}/thumbnail?width=32&detach=1"),
    );
    let id = got.json()["job_id"].as_str().expect("an id").to_owned();
    let ended = curl(&["-N", "--max-time", "30"], &format!("{api}/{id}/events"));
    assert!(String::from_utf8_lossy(&ended.body).contains("finished"));
    let by_index = curl(&[], &format!("{api}/{id}/blobs/0"));
    assert_eq!(by_index.status, 200);
    assert_eq!(by_index.header("content-type"), Some("image/jpeg"));
    let name = curl(&[], &format!("{api}/{id}")).json()["blobs"][0]["name"]
        .as_str()
        .expect("a named blob")
        .to_owned();
    assert_eq!(
        curl(&[], &format!("{api}/{id}/blobs/{name}")).body,
        by_index.body
    );

    // Cancel a detached job.
    let id = curl(
        &["-X", "POST"],
        &format!("{api}/sleep?ms=30000&detach=true"),
    )
    .json()["job_id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let got = curl(&["-X", "DELETE"], &format!("{api}/{id}"));
    assert_eq!(
        (got.status, got.json()["cancelled"].clone()),
        (200, Value::Bool(true))
    );
    assert_eq!(
        curl(&[], &format!("{api}/{id}")).json()["status"],
        "cancelled"
    );
    assert_eq!(
        curl(&["-X", "DELETE"], &format!("{api}/{id}")).json()["error"],
        "not_live"
    );

    // Errors: the status and the stable code.
    let cases: [(&[&str], String, u16, &str); 8] = [
        (
            &["-X", "POST"],
            format!("{api}/no%20such"),
            400,
            "bad_capability",
        ),
        (
            &["-X", "POST"],
            format!("{api}/echo?retries=many"),
            400,
            "bad_parameter",
        ),
        (
            &["-H", "content-type: application/json", "-d", "{oops"],
            format!("{api}/echo"),
            400,
            "bad_json",
        ),
        (&[], format!("{api}/not-a-job-id"), 400, "bad_job_id"),
        (
            &[],
            format!("{api}/5f0c2a1e-0000-4000-8000-000000000000"),
            404,
            "unknown_job",
        ),
        (&["-X", "POST"], format!("{api}/ocr"), 503, "no_worker"),
        (
            &["-X", "POST"],
            format!("{api}/sleep?ms=5000&timeout=0.3&retries=0"),
            504,
            "timed_out",
        ),
        (
            &["-X", "POST"],
            format!("{api}/echo?strategy=custom"),
            400,
            "bad_parameter",
        ),
    ];
    for (args, url, status, code) in cases {
        let got = curl(args, &url);
        let body = got.json();
        let said = body
            .get("error")
            .filter(|_| body.get("status").is_none())
            .unwrap_or(&body["status"]);
        assert_eq!(
            (got.status, said.as_str()),
            (status, Some(code)),
            "{url}: {body}"
        );
    }
    // A body over the blob limit (1 MiB here) is refused while it streams.
    let big = dir.path().join("big");
    std::fs::write(&big, vec![7u8; 2 << 20]).expect("write");
    let got = curl(
        &["--data-binary", &format!("@{}", big.display())],
        &format!("{api}/thumbnail?width=8"),
    );
    assert_eq!(
        (got.status, got.json()["error"].clone()),
        (413, Value::from("too_large"))
    );

    // A client that gives up cancels its job.
    let gone = curl(
        &["-X", "POST", "--max-time", "1"],
        &format!("{api}/sleep?ms=20000&tag=abandoned"),
    );
    assert_eq!(gone.status, 0, "curl gave up without an answer");
    let control = dir.path().join("s.sock");
    // (Two cancelled sleep jobs: the one DELETEd above, and this one.)
    jobmesh_testkit::eventually("the abandoned job is cancelled", || {
        let out = run_peer(&[
            "jobs",
            "--json",
            "--control",
            control.to_str().expect("utf-8"),
        ]);
        let jobs: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let cancelled = jobs
            .as_array()
            .into_iter()
            .flatten()
            .filter(|j| j["capability"] == "sleep" && j["state"] == "cancelled");
        cancelled.count() == 2
    })
    .await;
}

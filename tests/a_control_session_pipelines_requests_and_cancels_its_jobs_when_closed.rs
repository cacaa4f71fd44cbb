//! A control session: many requests on one connection, each answered with
//! its own id as soon as it is ready; malformed lines get an error and do not
//! end the session; closing the session cancels its jobs still running.

use jobmesh_peer::control::{Request, Session};
use jobmesh_testkit::{cap, init_tracing, next_event_named, within, PeerGuard, SignalGuard};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn submit(capability: &str, input: Value) -> Request {
    Request::submit(cap(capability), input)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_session_pipelines_requests_and_cancels_its_jobs_when_closed() {
    init_tracing();
    let mut server = SignalGuard::start().await;
    let _worker = PeerGuard::start(server.url(), "cs", "w", &["echo", "sleep"], 4);
    let sub = PeerGuard::start(server.url(), "cs", "sub", &[], 0);
    sub.wait_capable("sleep", 1).await;
    let control = sub.serve_control().await;
    let path = control.path.clone();

    // 300 jobs in flight at once on one connection; each answer is its own.
    let session = Session::open(&path).await.expect("open a session");
    let requests: Vec<Request> = (0..300).map(|i| submit("echo", json!(i))).collect();
    let answers = within(
        "300 pipelined jobs",
        futures_util::future::join_all(requests.iter().map(|r| session.request(r))),
    )
    .await;
    for (i, a) in answers.into_iter().enumerate() {
        let a = a.expect("an envelope");
        assert_eq!(a["status"], "completed", "{a}");
        assert_eq!(a["result"], json!(i), "answers go to their own request");
    }

    // The raw wire: answers carry their request's id; an untagged or
    // unreadable line gets an untagged error and the session goes on.
    let stream = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect");
    let (read, mut write) = stream.into_split();
    let lines = concat!(
        "{\"id\":5,\"op\":\"peers\"}\n",
        "{\"id\":6,\"op\":\"teleport\"}\n",
        "{\"op\":\"jobs\"}\n",
        "{\"id\":7,\"op\":\"watch\"}\n",
        "{\"id\":8,\"op\":\"submit\",\"capability\":\"echo\",\"input\":\"last\"}\n",
    );
    write.write_all(lines.as_bytes()).await.expect("write");
    let mut read = BufReader::new(read).lines();
    let mut got = Vec::new();
    within("five answers", async {
        while got.len() < 5 {
            let l = read.next_line().await.expect("read").expect("a line");
            got.push(serde_json::from_str::<Value>(&l).expect("JSON"));
        }
    })
    .await;
    let by_id = |id: u64| got.iter().find(|v| v["id"] == id).cloned();
    assert!(
        by_id(5).is_some_and(|v| v["me"]["name"] == "sub"),
        "{got:?}"
    );
    assert!(by_id(8).is_some_and(|v| v["result"] == "last"), "{got:?}");
    assert!(
        by_id(7).is_some_and(|v| v["daemon_error"]
            .as_str()
            .is_some_and(|e| e.contains("connection of its own"))),
        "{got:?}"
    );
    let untagged: Vec<&str> = got
        .iter()
        .filter(|v| v.get("id").is_none())
        .filter_map(|v| v["daemon_error"].as_str())
        .collect();
    assert_eq!(untagged.len(), 2, "{got:?}");
    assert!(
        untagged.iter().any(|e| e.contains("teleport")),
        "{untagged:?}"
    );
    assert!(
        untagged.iter().any(|e| e.contains("needs an \"id\"")),
        "{untagged:?}"
    );
    drop(write);
    drop(read);

    // Closing a session cancels what it still runs.
    let mut watch = sub.handle.watch();
    let pending = tokio::spawn(async move {
        let _ = session
            .request(&submit("sleep", json!({"ms": 60_000})))
            .await;
    });
    next_event_named(&mut watch, "started").await;
    pending.abort();
    let finished = next_event_named(&mut watch, "finished").await;
    assert_eq!(finished.state.as_deref(), Some("cancelled"));
    drop(control);
    server.stop().await;
}

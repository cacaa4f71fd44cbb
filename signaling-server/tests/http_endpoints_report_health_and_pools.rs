//! `GET /healthz` answers `ok`; `GET /api/pools` lists every pool with its
//! members as the registry knows them, stats included, to the holder of the
//! admin token only.

mod common;

use common::{http_get, http_get_with, Peer, Server};
use jobmesh_signal_server::ServerConfig;
use jobmesh_wire::signal::ClientMsg;
use jobmesh_wire::Stats;
use serde_json::{json, Value};

const TOKEN: &str = "an-admin-token";
const AUTH: &str = "Authorization: Bearer an-admin-token\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_endpoints_report_health_and_pools() {
    let mut server = Server::start(ServerConfig {
        admin_token: Some(TOKEN.into()),
        ..ServerConfig::open()
    })
    .await;
    let (status, body) = http_get(server.addr, "/healthz").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(body, "ok");

    for headers in [
        "",
        "Authorization: Bearer wrong\r\n",
        "Authorization: secret\r\n",
    ] {
        let (status, body) = http_get_with(server.addr, "/api/pools", headers).await;
        assert!(status.starts_with("HTTP/1.1 401"), "{status}");
        assert!(body.contains("admin token"), "{body}");
    }
    let api = |path| http_get_with(server.addr, path, AUTH);
    let (status, body) = api("/api/pools").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON"),
        json!({"pools": []})
    );

    let mut a = Peer::join(&server.url, "render", "worker-a").await;
    let mut b = Peer::join(&server.url, "render", "worker-b").await;
    let c = Peer::join(&server.url, "build", "worker-c").await;
    a.wait_member(b.id).await;
    let stats = Stats {
        slots: 2,
        running: 2,
        queued: 5,
        completed: 7,
        seq: 3,
        ..Stats::default()
    };
    b.send(&ClientMsg::Stats {
        stats: stats.clone(),
    })
    .await;
    // Once A has heard of it, the registry has it.
    let b_id = b.id;
    a.wait_view("B's stats", |v| {
        v.get(&b_id).is_some_and(|p| p.stats == stats)
    })
    .await;

    let (status, body) = api("/api/pools").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    let pools = v["pools"].as_array().expect("a pools array");
    let names: Vec<&str> = pools.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, vec!["build", "render"], "ordered by name");
    let render = &pools[1]["peers"];
    let find = |id: String| {
        render
            .as_array()
            .expect("a peers array")
            .iter()
            .find(|p| p["id"] == id.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("{id} is listed in {render}"))
    };
    let listed_b = find(b.id.to_string());
    assert_eq!(listed_b["name"], "worker-b");
    assert_eq!(listed_b["capabilities"], json!(["echo"]));
    assert_eq!(
        serde_json::from_value::<Stats>(listed_b["stats"].clone()).expect("stats"),
        stats
    );
    assert_eq!(find(a.id.to_string())["stats"]["slots"], 2);
    assert_eq!(pools[0]["peers"][0]["id"], c.id.to_string().as_str());

    let (status, _) = http_get(server.addr, "/nope").await;
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    server.stop().await;
}

//! `GET /healthz` answers `ok`; `GET /api/pools` lists the pools and
//! `GET /api/pools/{name}` a pool's members as the registry knows them,
//! stats included, a page at a time, to the holder of the admin token only.

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
        for path in ["/api/pools", "/api/pools/render", "/api/pools/nope"] {
            let (status, body) = http_get_with(server.addr, path, headers).await;
            assert!(status.starts_with("HTTP/1.1 401"), "{path}: {status}");
            assert!(body.contains("admin token"), "{body}");
        }
    }
    let api = |path| http_get_with(server.addr, path, AUTH);
    let (status, body) = api("/api/pools").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON"),
        json!({"pools": [], "next": null})
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
    assert_eq!(
        v,
        json!({"pools": [{"name": "build", "members": 1}, {"name": "render", "members": 2}], "next": null}),
        "ordered by name, with member counts"
    );
    let (_, body) = api("/api/pools?limit=1").await;
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        (v["pools"][0]["name"].as_str(), v["next"].as_str()),
        (Some("build"), Some("build"))
    );
    let (_, body) = api("/api/pools?after=build&limit=1").await;
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        (v["pools"][0]["name"].as_str(), &v["next"]),
        (Some("render"), &Value::Null)
    );
    for bad in [
        "/api/pools?limit=0",
        "/api/pools?limit=1001",
        "/api/pools?limit=x",
        "/api/pools/render?after=nope",
    ] {
        let (status, body) = api(bad).await;
        assert!(status.starts_with("HTTP/1.1 400"), "{bad}: {status}");
        assert!(body.contains("bad_request"), "{bad}: {body}");
    }
    let (status, body) = api("/api/pools/nope").await;
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    assert!(body.contains("not_found"), "{body}");

    let (status, body) = api("/api/pools/render").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        (v["name"].as_str(), v["members"].as_u64(), &v["next"]),
        (Some("render"), Some(2), &Value::Null)
    );
    let render = &v["peers"];
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
    // A page of one, then the rest after it.
    let (_, body) = api("/api/pools/render?limit=1").await;
    let first: Value = serde_json::from_str(&body).expect("JSON");
    let next = first["next"].as_str().expect("more follow").to_owned();
    assert_eq!(first["peers"][0]["id"].as_str(), Some(next.as_str()));
    let rest_path = format!("/api/pools/render?after={next}");
    let (_, body) = http_get_with(server.addr, &rest_path, AUTH).await;
    let rest: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(rest["peers"].as_array().map(Vec::len), Some(1));
    assert_ne!(rest["peers"][0]["id"], first["peers"][0]["id"]);
    let (_, body) = api("/api/pools/build").await;
    let build: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(build["peers"][0]["id"], c.id.to_string().as_str());

    let (status, _) = http_get(server.addr, "/nope").await;
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    server.stop().await;
}

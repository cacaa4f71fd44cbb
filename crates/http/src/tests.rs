use axum::http::{header, HeaderMap, HeaderValue};

use super::*;

fn with(name: header::HeaderName, value: &'static str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(name, HeaderValue::from_static(value));
    h
}

#[test]
fn only_loopback_host_names_pass_without_a_token() {
    for ok in [
        "localhost",
        "localhost:9470",
        "LOCALHOST:1",
        "127.0.0.1:9470",
        "127.0.0.2",
        "[::1]:9470",
    ] {
        assert!(loopback_host(&with(header::HOST, ok)), "{ok}");
    }
    for refused in [
        "evil.example:9470",
        "localhost.evil.example",
        "10.0.0.1:9470",
        "[::2]:1",
        "",
    ] {
        assert!(!loopback_host(&with(header::HOST, refused)), "{refused}");
    }
    assert!(!loopback_host(&HeaderMap::new()), "no Host at all");
}

#[test]
fn the_token_cookie_is_found_among_others() {
    let h = with(header::COOKIE, "a=1; jobmesh_token=secret-value; b=2");
    assert_eq!(cookie(&h, COOKIE), Some("secret-value"));
    assert_eq!(cookie(&with(header::COOKIE, "x=1"), COOKIE), None);
}

#[test]
fn a_short_token_is_refused() {
    assert!(matches!(
        Access::new(Some("short")),
        Err(HttpError::ShortToken)
    ));
    assert!(Access::new(Some("0123456789abcdef\n")).is_ok());
    assert!(Access::new(None).is_ok());
}

#[tokio::test]
async fn a_non_loopback_address_needs_a_token() {
    let open = Access::new(None).expect("no token");
    let refused = bind("--http", "0.0.0.0:0", Some(&open)).await;
    assert!(
        matches!(refused, Err(HttpError::NeedsToken { .. })),
        "{refused:?}"
    );
    let closed = Access::new(Some("0123456789abcdef")).expect("a token");
    assert!(bind("--http", "0.0.0.0:0", Some(&closed)).await.is_ok());
    assert!(bind("--http", "127.0.0.1:0", Some(&open)).await.is_ok());
}

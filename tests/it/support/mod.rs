//! Real components for the integration tests: a `redis-server` of each test's own
//! on a free loopback port, a WeChat stand-in speaking real HTTP on loopback, and
//! wxsession itself, in-process or as the binary, on a free port.

mod harness;
mod redis_server;
mod wechat;
mod wxsession;

use std::{
    net::TcpListener,
    path::PathBuf,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

pub use self::{harness::*, redis_server::*, wechat::*, wxsession::*};

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn unique_dir(tag: &str) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "wxsession-test-{tag}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An HTTP client for the tests.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Status and parsed JSON body (Null when empty or not JSON).
pub async fn send(req: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let resp = req.send().await.expect("request reaches the server");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// Asserts the contract's error shape: exactly `error` and `message`, `error` as given.
pub fn assert_error(body: &serde_json::Value, code: &str) {
    let obj = body
        .as_object()
        .unwrap_or_else(|| panic!("error body is JSON: {body}"));
    assert_eq!(obj.len(), 2, "only error and message: {body}");
    assert_eq!(obj["error"], code, "{body}");
    assert!(
        obj["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

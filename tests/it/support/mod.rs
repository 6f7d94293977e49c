//! Real components for the integration tests: a `redis-server` of each test's own
//! on a free loopback port, WeChat and Alipay stand-ins speaking real HTTP on
//! loopback (Alipay's with RSA key files made by `openssl`), and wxsession
//! itself, in-process or as the binary, on a free port. Redis also over TLS, as a
//! Cluster, behind Sentinel, or behind a proxy that can stall.

mod alipay;
mod harness;
mod proxy;
mod redis_server;
mod sentinel;
mod tls;
mod wechat;
mod wxsession;

use std::{
    io::{Read, Write},
    net::TcpListener,
    path::PathBuf,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

pub use self::{
    alipay::*, harness::*, proxy::*, redis_server::*, sentinel::*, tls::*, wechat::*, wxsession::*,
};

/// An admin token long enough for the server to accept (32 characters at least).
pub const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789abcdef";

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

/// Asserts the contract's error shape: exactly `error` and `message` (and
/// `until` for `user_banned`), `error` as given.
pub fn assert_error(body: &serde_json::Value, code: &str) {
    let obj = body
        .as_object()
        .unwrap_or_else(|| panic!("error body is JSON: {body}"));
    if code == "user_banned" {
        assert!(obj.contains_key("until"), "user_banned says until: {body}");
        assert_eq!(obj.len(), 3, "only error, message and until: {body}");
    } else {
        assert_eq!(obj.len(), 2, "only error and message: {body}");
    }
    assert_eq!(obj["error"], code, "{body}");
    assert!(
        obj["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// Raw bytes over a socket, for requests no HTTP client will send (on a
/// blocking thread, so the in-process server keeps running): everything the
/// server answers until it closes, or until `read_timeout` passes in silence.
pub async fn raw_exchange(base: &str, request: &[u8], read_timeout: Duration) -> String {
    let addr = base.trim_start_matches("http://").to_string();
    let request = request.to_vec();
    actix_web::rt::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(read_timeout)).unwrap();
        stream.write_all(&request).unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .unwrap()
}

/// Serves a platform stand-in's `app` on a thread and actix runtime of its own
/// (it outlives any one test runtime), on `listener`, which the caller binds
/// first: a request sent right after this returns waits in the backlog
/// instead of being refused. Answers the server's handle.
fn serve_stand_in<F, A, B>(
    listener: TcpListener,
    keep_alive: actix_web::http::KeepAlive,
    app: F,
) -> actix_web::dev::ServerHandle
where
    F: Fn() -> actix_web::App<A> + Send + Clone + 'static,
    A: actix_web::dev::ServiceFactory<
            actix_web::dev::ServiceRequest,
            Config = (),
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    B: actix_web::body::MessageBody + 'static,
{
    let (handle_tx, handle_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = actix_web::HttpServer::new(app)
                .workers(1)
                .disable_signals()
                .keep_alive(keep_alive)
                .shutdown_timeout(0)
                .listen(listener)
                .unwrap()
                .run();
            handle_tx.send(server.handle()).unwrap();
            let _ = server.await;
        })
    });
    handle_rx.recv().expect("the stand-in started")
}

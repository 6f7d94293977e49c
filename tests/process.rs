//! The real binary as operators run it: graceful shutdown on SIGTERM, and the
//! brute-force warning in its log.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

#[actix_web::test]
async fn sigterm_finishes_in_flight_requests_then_exits_0() {
    let redis = RedisServer::start();
    let wechat = WechatStandIn::start();
    let mut server = ServerProcess::start(
        &redis,
        &wechat.base,
        &[("WXSESSION_WECHAT_TIMEOUT_MS", "5000")],
    );
    // A login that takes 3 s (the stand-in's `slow`), in flight when SIGTERM arrives.
    let url = server.url("/login");
    let in_flight = actix_web::rt::spawn(async move {
        send(client().post(url).json(&json!({"code": "slow"}))).await
    });
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    let pid = server.pid();
    let started = Instant::now();
    let status =
        actix_web::rt::task::spawn_blocking(move || server.terminate(Duration::from_secs(15)))
            .await
            .unwrap();
    let (code, body) = in_flight.await.unwrap();
    assert_eq!(code, 200, "the in-flight login finished: {body}");
    assert!(status.success(), "exit status {status:?} (pid {pid})");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[actix_web::test]
async fn many_rejected_ids_from_one_address_log_one_warning() {
    let redis = RedisServer::start();
    let wechat = WechatStandIn::start();
    let server = ServerProcess::start(
        &redis,
        &wechat.base,
        &[("WXSESSION_SESSION_REJECT_WARN_PER_MINUTE", "5")],
    );
    for i in 0..8 {
        let id = format!("{i:032x}");
        let (status, _) = send(client().get(server.url("/session")).header("sessionid", id)).await;
        assert_eq!(status, 401);
    }
    actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    let log = server.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("rejected session ids within a minute"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains("WARN") && warnings[0].contains("127.0.0.1"),
        "{}",
        warnings[0]
    );
    let metrics = metrics(&server.url("/metrics")).await;
    assert!(
        metrics.contains("wxsession_guard_checks_total{outcome=\"unknown\"} 8"),
        "{metrics}"
    );
}

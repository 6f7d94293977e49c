//! A broken Redis: killed, frozen, restarted. Only 503 `store_unavailable`
//! while it is gone, never a 500 or a hang, and service resumes by itself.

use std::time::{Duration, Instant};

use crate::support::*;

async fn sleep_ms(ms: u64) {
    actix_web::rt::time::sleep(Duration::from_millis(ms)).await;
}

/// Polls `/readyz` until 200; answers how long that took.
pub(crate) async fn wait_ready(server: &impl Instance, within: Duration) -> Duration {
    let started = Instant::now();
    while started.elapsed() < within {
        if send(client().get(server.url("/readyz"))).await.0 == 200 {
            return started.elapsed();
        }
        sleep_ms(50).await;
    }
    panic!("not ready within {within:?}");
}

#[actix_web::test]
async fn redis_down_is_503_everywhere_and_service_resumes_after_restart() {
    let mut h = Harness::start();
    let id = h.login("ok:alice").await;

    h.redis.kill();
    for _ in 0..3 {
        let (status, body) = h.try_login("ok:bob").await;
        assert_eq!(status, 503, "{body}");
        assert_error(&body, "store_unavailable");
        for path in ["/session", "/auth"] {
            let (status, body) = send(client().get(h.url(path)).header("sessionid", &id)).await;
            assert_eq!(status, 503, "{path}: {body}");
            assert_error(&body, "store_unavailable");
        }
        let (status, body) = h.logout(&id).await;
        assert_eq!(status, 503);
        assert_error(&body, "store_unavailable");
        let (status, body) = send(client().get(h.url("/readyz"))).await;
        assert_eq!(status, 503);
        assert_error(&body, "store_unavailable");
        assert_eq!(send(client().get(h.url("/healthz"))).await.0, 200);
    }
    // Malformed ids are still rejected as such, without Redis.
    let (status, body) = h.get_session("nope").await;
    assert_eq!(status, 401);
    assert_error(&body, "invalid_session");

    h.redis.restart();
    let took = wait_ready(&h, Duration::from_secs(5)).await;
    assert!(
        took < Duration::from_secs(2),
        "ready {took:?} after Redis returned"
    );
    let fresh = h.login("ok:carol").await;
    let (status, _) = h.get_session(&fresh).await;
    assert_eq!(status, 200);
}

#[actix_web::test]
async fn a_frozen_redis_answers_503_within_the_timeout_then_recovers() {
    // The test configuration sets redis.timeout_ms = 300.
    let h = Harness::start();
    let id = h.login("ok:dora").await;

    h.redis.signal("-STOP");
    for path in ["/session", "/readyz"] {
        let started = Instant::now();
        let (status, body) = send(client().get(h.url(path)).header("sessionid", &id)).await;
        let took = started.elapsed();
        assert_eq!(status, 503, "{path}: {body}");
        assert_error(&body, "store_unavailable");
        assert!(took < Duration::from_millis(1500), "{path} took {took:?}");
    }
    let started = Instant::now();
    let (status, _) = h.try_login("ok:eve").await;
    assert_eq!(status, 503);
    assert!(started.elapsed() < Duration::from_millis(1500));

    h.redis.signal("-CONT");
    wait_ready(&h, Duration::from_secs(5)).await;
    let (status, _) = h.get_session(&id).await;
    assert_eq!(status, 200, "the session outlived the freeze");
}

#[actix_web::test]
async fn with_aof_sessions_survive_a_redis_restart() {
    let mut h = Harness::setup()
        .redis_args(&["--appendonly", "yes", "--appendfsync", "always"])
        .start();
    let id = h.login("ok:fay").await;
    h.redis.restart();
    wait_ready(&h, Duration::from_secs(5)).await;
    let (status, me) = h.get_session(&id).await;
    assert_eq!(status, 200);
    assert_eq!(me["openid"], "fay");
}

#[actix_web::test]
async fn a_wrong_password_or_a_missing_permission_is_logged_as_redis_says_it() {
    let h = Harness::setup().instances(0).start();
    // An ACL user that may do everything but the guard's GETEX.
    h.redis.cmd::<String>(&[
        "ACL",
        "SETUSER",
        "limited",
        "on",
        ">right-pass",
        "~*",
        "+@all",
        "-getex",
    ]);
    let url = |password: &str| format!("redis://limited:{password}@127.0.0.1:{}/0", h.redis.port);

    let wrong = h.start_process(&[("redis.url", &url("hunter2-wrong"))]);
    let (status, body) = send(client().get(wrong.url("/readyz"))).await;
    assert_eq!(status, 503);
    assert_error(&body, "store_unavailable");
    let log = wrong.log();
    assert!(log.contains("WRONGPASS"), "the log should say why: {log}");
    assert!(
        !log.contains("hunter2-wrong"),
        "a password in the log: {log}"
    );

    let denied = h.start_process(&[("redis.url", &url("right-pass"))]);
    let id = denied.login("ok:limited").await;
    let (status, body) = send(
        client()
            .get(denied.url("/session"))
            .header("sessionid", &id),
    )
    .await;
    assert_eq!(status, 503);
    assert_error(&body, "store_unavailable");
    let log = denied.log();
    assert!(
        log.contains("no permissions to run the 'getex' command"),
        "the log should say why: {log}"
    );
    assert!(!log.contains("right-pass"), "a password in the log: {log}");
}

//! The real binary as operators run it: graceful shutdown on SIGTERM, the
//! brute-force warning in its log, its Redis connections, bad configurations.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

#[actix_web::test]
async fn sigterm_finishes_in_flight_requests_then_exits_0() {
    let h = Harness::bare();
    let mut server = h.start_process(&[("WXSESSION_WECHAT_TIMEOUT_MS", "5000")]);
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

/// WeChat keeps connections open and wxsession reuses them from any worker. At
/// SIGTERM a worker with nothing in flight stops at once: a login in flight on
/// a connection that worker opened must still get WeChat's answer, and its session.
#[actix_web::test]
async fn logins_in_flight_at_sigterm_get_their_sessions_whoever_opened_the_connection() {
    const TRIES: usize = 4;
    const IN_FLIGHT: usize = 2;
    let h = Harness::setup()
        .instances(0)
        .wechat_keeps_connections()
        .start();
    let env = [
        ("WXSESSION_SERVER_WORKERS", "4"),
        ("WXSESSION_WECHAT_TIMEOUT_MS", "5000"),
        ("WXSESSION_SERVER_SHUTDOWN_TIMEOUT_SECS", "10"),
    ];
    // The tries run side by side, one binary each, so the test takes one slow
    // login's time rather than one per try.
    let servers: Vec<ServerProcess> = (0..TRIES).map(|_| h.start_process(&env)).collect();
    for (i, server) in servers.iter().enumerate() {
        // One worker opens a connection to WeChat; it goes back to the pool.
        server.login(&format!("ok:warm~{i}")).await;
    }
    // actix hands each new connection to the next worker: these run on other
    // workers than the one that opened the pooled connection, and take 3 s.
    let in_flight: Vec<_> = servers
        .iter()
        .enumerate()
        .flat_map(|(i, server)| {
            (0..IN_FLIGHT).map(move |j| {
                let request = client()
                    .post(server.url("/login"))
                    .json(&json!({ "code": format!("slow~{i}-{j}") }));
                actix_web::rt::spawn(send(request))
            })
        })
        .collect();
    let arrived = || {
        h.wechat
            .received()
            .iter()
            .filter(|r| r.param("js_code").is_some_and(|c| c.starts_with("slow")))
            .count()
    };
    // Within 2 s, so the first is still waiting for its 3-s answer when the last arrives.
    let deadline = Instant::now() + Duration::from_secs(2);
    while arrived() < TRIES * IN_FLIGHT {
        assert!(
            Instant::now() < deadline,
            "the slow logins reached WeChat within 2 s"
        );
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    // SIGTERM to every binary at once, while WeChat is still answering.
    let stopped = servers.into_iter().map(|mut server| {
        actix_web::rt::task::spawn_blocking(move || {
            let status = server.terminate(Duration::from_secs(15));
            (status, server)
        })
    });
    let stopped = futures_util::future::join_all(stopped).await;
    let answers = futures_util::future::join_all(in_flight).await;
    for (n, answer) in answers.into_iter().enumerate() {
        let (status, server) = stopped[n / IN_FLIGHT].as_ref().unwrap();
        let (code, body) = answer.unwrap();
        assert_eq!(
            code,
            200,
            "login {n} in flight at SIGTERM: {body}\n{}",
            server.log()
        );
        let id = body["sessionid"].as_str().unwrap();
        let stored: i64 = h.redis.cmd(&["EXISTS", &format!("wxsess:s:{id}")]);
        assert_eq!(stored, 1, "login {n}: its session is in Redis");
        assert!(status.success(), "exit status {status:?}");
    }
}

#[actix_web::test]
async fn many_rejected_ids_from_one_address_log_one_warning() {
    let h = Harness::bare();
    let server = h.start_process(&[("WXSESSION_SESSION_REJECT_WARN_PER_MINUTE", "5")]);
    for i in 0..8 {
        let id = format!("{i:032x}");
        let (status, _) = server.get_session(&id).await;
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
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("wxsession_guard_checks_total{outcome=\"unknown\"} 8"),
        "{metrics}"
    );
}

/// Each worker thread talks to Redis over a connection of its own (so no command
/// waits for another thread's driver task): an instance holds one connection per
/// worker, however many requests it serves at once.
#[actix_web::test]
async fn an_instance_holds_two_redis_connections_per_worker_and_one_for_the_clock() {
    let h = Harness::bare();
    let server = h.start_process(&[("WXSESSION_SERVER_WORKERS", "2")]);
    let (code, body) = server.try_login("ok:erin").await;
    assert_eq!(code, 200, "{body}");
    let id = body["sessionid"].as_str().unwrap().to_string();
    // Per worker: its link (RESP3, every command) and its wire (RESP2, the
    // guard's reads, opened in the background on the first one); and the main
    // thread's link, which measures the clock's offset (`TIME` every 30 s).
    let (mut links, mut wires) = (0, 0);
    for _ in 0..50 {
        // Many connections at once, so that both workers get some (actix hands
        // accepted connections to its workers in turn).
        let requests = (0..32).map(|_| {
            let (server, id) = (&server, &id);
            async move {
                // A client of its own (each step makes one): a TCP connection of its own.
                server.get_session(id).await.0
            }
        });
        let statuses = futures_util::future::join_all(requests).await;
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
        let clients: String = h.redis.cmd(&["CLIENT", "LIST"]);
        let servers: Vec<&str> = clients
            .lines()
            .filter(|line| !line.contains("cmd=client|list"))
            .collect();
        links = servers.iter().filter(|l| l.contains("resp=3")).count();
        wires = servers.iter().filter(|l| l.contains("resp=2")).count();
        assert_eq!(links + wires, servers.len(), "{clients}");
        assert!(links <= 3 && wires <= 2, "{clients}");
        if (links, wires) == (3, 2) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!((links, wires), (3, 2));
}

#[test]
fn a_bad_configuration_stops_the_start_with_one_line_naming_the_key() {
    let unknown_key =
        std::env::temp_dir().join(format!("wxsession-bad-{}.toml", std::process::id()));
    std::fs::write(&unknown_key, "[session]\nttl = 5\n").unwrap();
    let appid = ("WXSESSION_WECHAT_APPID", "wx_test_app");
    let secret = ("WXSESSION_WECHAT_SECRET", TEST_SECRET);
    // (environment, arguments, the key the one line must name)
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<&'a str>, &'a str);
    let cases: Vec<Case> = vec![
        (vec![secret], vec![], "wechat.appid"),
        (vec![appid], vec![], "wechat.secret"),
        (
            vec![appid, secret, ("WXSESSION_SESSION_TTL_SECS", "0")],
            vec![],
            "session.ttl_secs",
        ),
        (
            vec![appid, secret, ("WXSESSION_SESSION_TTL_SECS", "soon")],
            vec![],
            "session.ttl_secs",
        ),
        (
            vec![appid, secret, ("WXSESSION_WECHAT_MOCK", "maybe")],
            vec![],
            "wechat.mock",
        ),
        (
            vec![appid, secret, ("WXSESSION_REDIS_URL", "http://x")],
            vec![],
            "redis.url",
        ),
        (
            vec![
                appid,
                secret,
                ("WXSESSION_ADMIN_TOKEN", "31-characters-is-one-too-few-xx"),
            ],
            vec![],
            "admin.token",
        ),
        // The AppSecret travels in the query string: no plain HTTP unless asked.
        (
            vec![
                appid,
                secret,
                ("WXSESSION_WECHAT_API_BASE", "http://127.0.0.1:1"),
            ],
            vec![],
            "wechat.api_base",
        ),
        (
            vec![appid, secret],
            vec!["--config", unknown_key.to_str().unwrap()],
            "session.ttl",
        ),
        (
            vec![appid, secret],
            vec!["--config", "/no/such/wxsession.toml"],
            "/no/such/wxsession.toml",
        ),
    ];
    for (env, args, key) in cases {
        let (code, _, stderr) = run_binary(&env, &args);
        assert_eq!(code, 2, "{key}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(key), "names {key}: {stderr}");
        assert!(!stderr.contains(TEST_SECRET), "never the secret: {stderr}");
    }
    let _ = std::fs::remove_file(unknown_key);

    // A listen address that cannot be bound (taken, or not an address) also
    // names its key, in one line, before anything is logged as listening.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    for bind in [taken.as_str(), "nonsense:99999"] {
        let env = [appid, secret, ("WXSESSION_SERVER_BIND", bind)];
        let (code, _, stderr) = run_binary(&env, &[]);
        assert_ne!(code, 0, "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains("server.bind"), "{stderr}");
    }
}

#[test]
fn help_describes_every_flag_and_bad_usage_exits_2() {
    let (code, help, _) = run_binary(&[], &["--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--config",
        "--help",
        "--version",
        "sessions list",
        "revoke-user",
        "wechat refresh-token",
        "--force",
        "check-config",
        "--connect",
        "4 an app's API base unreachable",
    ] {
        assert!(help.contains(flag), "--help mentions {flag}");
    }
    let (code, _, stderr) = run_binary(&[], &["--bogus"]);
    assert_eq!(code, 2, "{stderr}");
    let (code, _, _) = run_binary(&[], &["sessions", "frobnicate"]);
    assert_eq!(code, 2);
}

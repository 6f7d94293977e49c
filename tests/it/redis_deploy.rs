//! Redis as it is deployed (contract §10), against real processes on loopback:
//! TLS in every mode (one node, the local cache's tracking connection, Cluster,
//! Sentinel), files that cannot work, a Sentinel failover followed without a
//! restart, half-open connections replaced in bounded time, and a Redis restart
//! under load that costs no request once `/readyz` says ready.

use std::{
    cell::{Cell, RefCell},
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::future::join_all;

use crate::{local_cache::warm, redis_faults::wait_ready, support::*};

/// `redis.timeout_ms` where a test depends on it.
const TIMEOUT_MS: u64 = 300;
/// Actix workers of the binary, each with Redis connections of its own.
const WORKERS: usize = 4;

async fn sleep_ms(ms: u64) {
    actix_web::rt::time::sleep(Duration::from_millis(ms)).await;
}

fn session_key(id: &str) -> String {
    format!("wxsess:s:{id}")
}

/// The session id of a login answer.
fn session_id(body: &serde_json::Value) -> String {
    body["sessionid"].as_str().unwrap().to_string()
}

/// 200, or 503 `store_unavailable`: the only answers allowed while Redis is
/// away or being replaced. Answers whether it was 200.
fn ok_or_unavailable(what: &str, (status, body): &(u16, serde_json::Value)) -> bool {
    if *status != 200 {
        assert_eq!(*status, 503, "{what}: {body}");
        assert_error(body, "store_unavailable");
    }
    *status == 200
}

// ---------------------------------------------------------------- dead connections

/// One round of requests on new HTTP connections, which actix hands to its
/// workers in turn, so every worker answers some: guarded GETs and `/readyz`.
async fn round(server: &impl Instance, id: &str) -> Vec<(u16, serde_json::Value)> {
    let gets = (0..2 * WORKERS).map(|_| server.get_session(id));
    let mut answers = join_all(gets).await;
    answers.push(send(client().get(server.url("/readyz"))).await);
    answers
}

#[actix_web::test]
async fn half_open_connection_is_replaced_within_bound() {
    let h = Harness::bare();
    let proxy = Proxy::start(h.redis.port);
    let server = h.start_process(&[
        ("redis.url", &proxy.url()),
        ("redis.timeout_ms", &TIMEOUT_MS.to_string()),
        ("server.workers", &WORKERS.to_string()),
    ]);
    let id = server.login("ok:halfopen").await;
    // Each worker opens its link on first use, and its wire (the guard's
    // reads) in the background then: both of them are in use once there are
    // two per worker. Up to 5 s: a wire whose first attempt timed out on a
    // loaded machine is tried again a second later.
    let opening = Instant::now();
    while opening.elapsed() < Duration::from_secs(5) {
        assert!(round(&server, &id).await.iter().all(|(s, _)| *s == 200));
        if proxy.connections() >= 2 * WORKERS {
            break;
        }
        sleep_ms(20).await;
    }
    let before = proxy.connections();
    assert!(
        before >= 2 * WORKERS,
        "{before} connections through the proxy for {WORKERS} workers"
    );

    proxy.stall();
    let stalled = Instant::now();
    let bound = Duration::from_millis(3 * TIMEOUT_MS + 1000);
    let mut first_200 = None;
    let recovered = loop {
        let answers = round(&server, &id).await;
        let ok = answers
            .iter()
            .filter(|a| ok_or_unavailable("after the stall", a))
            .count();
        if ok > 0 && first_200.is_none() {
            first_200 = Some(stalled.elapsed());
        }
        if ok == answers.len() {
            break stalled.elapsed();
        }
        assert!(
            stalled.elapsed() < bound + Duration::from_secs(4),
            "no full recovery {:?} after the connections went half-open \
             ({ok}/{} answers 200 in the last round, {} connections through the proxy, \
             {before} before the stall)",
            stalled.elapsed(),
            answers.len(),
            proxy.connections(),
        );
    };
    println!(
        "half-open: first 200 after {first_200:?}, every worker 200 again after \
         {recovered:?} (bound {bound:?}); {} connections through the proxy, {before} before",
        proxy.connections()
    );
    assert!(
        recovered <= bound,
        "recovered after {recovered:?} > {bound:?}"
    );
    assert!(
        proxy.connections() > before,
        "recovered without a new connection?"
    );
    // And it stays recovered, on every worker.
    let steady = Instant::now();
    while steady.elapsed() < Duration::from_secs(1) {
        for answer in round(&server, &id).await {
            assert_eq!(answer.0, 200, "after recovery: {}", answer.1);
        }
    }
}

// ---------------------------------------------------------------- restart under load

/// `redis-server` arguments that keep every session across a restart, so any
/// answer but 200 after one is the server's doing.
const DURABLE: [&str; 4] = ["--appendonly", "yes", "--appendfsync", "always"];

#[actix_web::test]
async fn the_guards_wire_logs_in_and_reads_the_configured_database() {
    const PASSWORD: &str = "wire-secret";
    let h = Harness::bare();
    let _: String = h.redis.cmd(&["CONFIG", "SET", "requirepass", PASSWORD]);
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/3", h.redis.port);
    a_wire_reads_database_3(&h, &url).await;
}

#[actix_web::test]
async fn the_guards_wire_goes_over_a_unix_socket() {
    /// Removed however the test ends (Redis, killed, leaves it behind).
    struct SocketFile(String);
    impl Drop for SocketFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    // Short (a socket's path has at most 107 bytes) and this process's own.
    let socket = SocketFile(format!(
        "/tmp/wxsession-it-{}-{}.sock",
        std::process::id(),
        free_port()
    ));
    let h = Harness::setup()
        .redis_args(&["--unixsocket", &socket.0, "--unixsocketperm", "700"])
        .instances(0)
        .start();
    a_wire_reads_database_3(&h, &format!("unix://{}?db=3", socket.0)).await;
}

/// A server on `url` (database 3) with one worker: its guard's wire opens in
/// the background on the first guarded reads, and a read through it restarts
/// the session's idle lifetime.
async fn a_wire_reads_database_3(h: &Harness, url: &str) {
    let server = h.start_process(&[("redis.url", url), ("server.workers", "1")]);
    let id = server.login("ok:wire").await;
    let mut admin = redis::Client::open(url).unwrap().get_connection().unwrap();
    let mut wires = 0;
    for _ in 0..50 {
        assert_eq!(server.get_session(&id).await.0, 200);
        let clients: String = redis::cmd("CLIENT").arg("LIST").query(&mut admin).unwrap();
        wires = clients
            .lines()
            .filter(|line| line.contains("resp=2") && line.contains(" db=3 "))
            .filter(|line| !line.contains("cmd=client|list"))
            .count();
        if wires == 1 {
            break;
        }
        sleep_ms(20).await;
    }
    assert_eq!(wires, 1, "no wire logged in on db 3 over {url}");
    let key = session_key(&id);
    let _: () = redis::cmd("EXPIRE")
        .arg(&key)
        .arg(60)
        .query(&mut admin)
        .unwrap();
    assert_eq!(server.get_session(&id).await.0, 200);
    let ttl: i64 = redis::cmd("TTL").arg(&key).query(&mut admin).unwrap();
    assert!(
        ttl > 60,
        "the read did not restart the idle lifetime: {ttl}"
    );
}

#[actix_web::test]
async fn a_request_on_a_connection_broken_by_a_restart_is_retried() {
    let mut h = Harness::setup().redis_args(&DURABLE).instances(0).start();
    let server = h.start_process(&[
        ("redis.timeout_ms", &TIMEOUT_MS.to_string()),
        ("server.workers", &WORKERS.to_string()),
    ]);
    let id = server.login("ok:quiet").await;
    for _ in 0..3 {
        assert!(round(&server, &id).await.iter().all(|(s, _)| *s == 200));
    }
    // Killed and back (answering PING) before any request: every worker's
    // connection is broken, and a fresh one would work.
    h.redis.restart();
    let restarted = Instant::now();
    for _ in 0..3 {
        for (status, body) in round(&server, &id).await {
            assert_eq!(
                status,
                200,
                "{:?} after Redis restarted, a request on a broken connection: {body}",
                restarted.elapsed()
            );
        }
    }
}

#[actix_web::test]
async fn every_redis_connection_keeps_alive() {
    let h = Harness::setup().instances(0).start();
    let server = h.start_process(&[("server.workers", &WORKERS.to_string())]);
    let id = server.login("ok:alive").await;
    round(&server, &id).await;
    // The kernel shows a keepalive timer on an idle socket that has one; a
    // socket without it shows none (or "on" only while data is unacknowledged).
    let listing = std::process::Command::new("ss")
        .args(["-tnopH", "state", "established"])
        .arg(format!("( dport = :{} )", h.redis.port))
        .output()
        .expect("ss (iproute2) must be installed");
    let listing = String::from_utf8_lossy(&listing.stdout);
    // Only the server's: the test's own checks connect to Redis too.
    let connections: Vec<&str> = listing
        .lines()
        .filter(|line| line.contains("\"wxsession\""))
        .collect();
    assert!(
        !connections.is_empty(),
        "no connection of wxsession to Redis: {listing}"
    );
    for connection in connections {
        assert!(
            connection.contains("timer:(keepalive"),
            "a Redis connection without TCP keepalive: {connection}"
        );
    }
}

/// One request of the load: when it started and ended, what it was, its
/// status, its error code.
struct Sample {
    started: Instant,
    finished: Instant,
    login: bool,
    status: u16,
    error: String,
}

#[actix_web::test]
async fn redis_restart_under_load_loses_no_request_after_ready() {
    let redis = RedisServer::start_with(&DURABLE);
    let wechat = WechatStandIn::start();
    let server = ServerProcess::start(
        &redis,
        &wechat.base,
        &[
            ("redis.timeout_ms", &TIMEOUT_MS.to_string()),
            ("server.workers", &WORKERS.to_string()),
        ],
    );
    let ids = join_all((0..16).map(|i| {
        let server = &server;
        async move { server.login(&format!("ok:load{i}")).await }
    }))
    .await;

    let stop = Cell::new(false);
    let samples = RefCell::new(Vec::new());
    let clients = (0..16).map(|c| {
        let (server, ids, stop, samples) = (&server, &ids, &stop, &samples);
        async move {
            let mut n = 0;
            while !stop.get() {
                n += 1;
                // Every tenth request of a quarter of the clients logs in.
                let login = c % 4 == 0 && n % 10 == 0;
                let started = Instant::now();
                let (status, body) = if login {
                    server.try_login(&format!("ok:load{c}-{n}")).await
                } else {
                    server.get_session(&ids[(c + n) % ids.len()]).await
                };
                let error = body["error"].as_str().unwrap_or_default().to_string();
                samples.borrow_mut().push(Sample {
                    started,
                    finished: Instant::now(),
                    login,
                    status,
                    error,
                });
            }
        }
    });
    let outage = async {
        sleep_ms(1000).await;
        let mut redis = redis;
        let killed = Instant::now();
        redis.kill();
        sleep_ms(1000).await;
        // Off the test's thread, so the load goes on while Redis starts.
        let (redis, restarted) = actix_web::rt::task::spawn_blocking(move || {
            redis.restart();
            (redis, Instant::now())
        })
        .await
        .unwrap();
        let to_ready = wait_ready(&server, Duration::from_secs(10)).await;
        let ready = Instant::now();
        sleep_ms(3000).await;
        stop.set(true);
        (redis, killed, restarted, to_ready, ready)
    };
    let (_, (_redis, killed, restarted, to_ready, ready)) =
        futures_util::future::join(join_all(clients), outage).await;

    let samples = samples.into_inner();
    // Requests are counted by when they started, except that those still in
    // flight at the kill count as during the outage.
    let tally = |from: Instant, to: Instant| {
        let mut by_answer = BTreeMap::new();
        for s in samples.iter().filter(|s| {
            let at = if s.finished >= killed && s.started < killed {
                killed
            } else {
                s.started
            };
            at >= from && at < to
        }) {
            let kind = if s.login { "login" } else { "GET" };
            *by_answer
                .entry(format!("{kind} {} {}", s.status, s.error))
                .or_insert(0) += 1;
        }
        by_answer
    };
    let first = samples.iter().map(|s| s.started).min().unwrap();
    let before = tally(first, killed);
    let during = tally(killed, ready);
    let after = tally(ready, Instant::now());
    println!(
        "restart under load: /readyz 200 {to_ready:?} after redis-server was up again \
         ({:?} after the kill)\n  before the kill: {before:?}\n  kill → ready: {during:?}\n  \
         after ready: {after:?}",
        restarted - killed
    );
    assert!(
        before.keys().all(|k| k.ends_with(" 200 ")),
        "before the kill: {before:?}"
    );
    let unavailable: usize = samples
        .iter()
        .filter(|s| s.started >= ready && s.error == "store_unavailable")
        .count();
    assert_eq!(
        unavailable, 0,
        "503 store_unavailable after /readyz said 200: {after:?}"
    );
    assert!(
        after.keys().all(|k| k.ends_with(" 200 ")),
        "after ready: {after:?}"
    );
    assert!(
        after.values().sum::<usize>() > 100,
        "load after ready: {after:?}"
    );
}

// ---------------------------------------------------------------- TLS

#[actix_web::test]
async fn tls_one_node_serves_sessions() {
    let certs = Certs::get();
    let h = Harness::setup().tls(&certs).start();
    assert!(h.redis.url().starts_with("rediss://"));
    let id = h.login("ok:tls").await;
    let (status, me) = h.get_session(&id).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["openid"], "tls");
    assert_eq!(send(client().get(h.url("/readyz"))).await.0, 200);
    // Seen by redis-cli over verified TLS: it is the TLS port that holds it.
    assert_eq!(h.redis.cli(&["EXISTS", &session_key(&id)]), "1");
    // The guard's hand-written connection does not speak TLS: over TLS
    // every read goes through the link (RESP3), none through a wire (RESP2).
    for _ in 0..10 {
        assert_eq!(h.get_session(&id).await.0, 200);
    }
    let clients = h.redis.cli(&["CLIENT", "LIST"]);
    let wires = clients
        .lines()
        .filter(|line| line.contains("resp=2") && !line.contains("cmd=client|list"));
    assert_eq!(wires.count(), 0, "{clients}");
    assert_eq!(h.logout(&id).await.0, 204);
    assert_eq!(h.redis.cli(&["EXISTS", &session_key(&id)]), "0");
}

#[actix_web::test]
async fn tls_local_cache_tracks_over_tls() {
    let certs = Certs::get();
    let h = Harness::setup()
        .tls(&certs)
        .set(&[("session.local_cache", "true")])
        .start();
    let id = h.login("ok:tlscache").await;
    // Served from memory only once the tracking connection is confirmed.
    warm(&h, &id).await;
    // A change by someone else reaches the cache as an invalidation pushed on
    // the tracking connection, which is TLS here.
    assert_eq!(h.redis.cli(&["DEL", &session_key(&id)]), "1");
    let deleted = Instant::now();
    while h.get_session(&id).await.0 != 401 {
        assert!(
            deleted.elapsed() < Duration::from_secs(1),
            "a redis-cli DEL over TLS never reached the cache"
        );
    }
    println!(
        "local cache over TLS: DEL seen as 401 after {:?}",
        deleted.elapsed()
    );
}

#[actix_web::test]
async fn tls_cluster_serves_sessions() {
    let certs = Certs::get();
    let cluster = RedisCluster::start_tls(&certs);
    let wechat = WechatStandIn::start();
    let url = cluster.url();
    let cluster_keys = [
        ("redis.url", url.as_str()),
        ("redis.cluster", "true"),
        // Six TLS handshakes on first use, on a shared 2-core machine.
        ("redis.timeout_ms", "1000"),
    ];
    let cfg = config(
        &cluster.nodes[0],
        &wechat.base,
        &[&cluster_keys[..], &certs.client_keys()].concat(),
    );
    let server = TestServer::start(&cfg);

    // Enough users for their sessions to land on all three masters.
    let mut masters = BTreeSet::new();
    for i in 0..15 {
        let id = server.login(&format!("ok:tlsc{i}")).await;
        let (status, me) = server.get_session(&id).await;
        assert_eq!(status, 200, "{me}");
        let master = cluster.master_of(&session_key(&id));
        // MOVED and CLUSTER SLOTS answer a TLS client with the TLS ports.
        assert_eq!(
            cluster.nodes[master].cli(&["EXISTS", &session_key(&id)]),
            "1"
        );
        masters.insert(master);
    }
    assert_eq!(masters.len(), 3, "sessions on every master: {masters:?}");
    assert_eq!(send(client().get(server.url("/readyz"))).await.0, 200);
}

#[actix_web::test]
async fn tls_wrong_ca_is_unready_and_logs_why() {
    let certs = Certs::get();
    let h = Harness::setup().tls(&certs).instances(0).start();
    // A valid CA that did not sign the server's certificate: nothing to see in
    // the files, only the handshake fails.
    let server = h.start_process(&[
        ("redis.timeout_ms", &TIMEOUT_MS.to_string()),
        ("redis.tls_ca_file", &certs.other_ca),
        ("redis.tls_cert_file", &certs.client_cert),
        ("redis.tls_key_file", &certs.client_key),
    ]);
    for _ in 0..3 {
        let (status, body) = send(client().get(server.url("/readyz"))).await;
        assert_eq!(status, 503, "{body}");
        assert_error(&body, "store_unavailable");
        sleep_ms(200).await;
    }
    let (status, body) = server.try_login("ok:wrongca").await;
    assert_eq!(status, 503, "{body}");
    assert_error(&body, "store_unavailable");
    let started = Instant::now();
    loop {
        let log = server.log();
        if log
            .lines()
            .any(|l| l.to_lowercase().contains("certificate"))
        {
            assert!(!log.contains(TEST_SECRET));
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no log line says the certificate failed: {log}"
        );
        sleep_ms(100).await;
    }
}

#[test]
fn tls_files_that_cannot_work_stop_the_start() {
    let certs = Certs::get();
    let redis = RedisServer::start_tls(&certs, &[]);
    let (url, bind) = (redis.url(), format!("127.0.0.1:{}", free_port()));
    let base = [
        ("wechat.appid", "wx_test_app"),
        ("wechat.secret", TEST_SECRET),
        ("redis.url", url.as_str()),
        ("server.bind", bind.as_str()),
    ];
    // The same keys with working files do work: the CLI counts over TLS.
    let (code, out, err) = run_binary(
        &[&base[..], &certs.client_keys()].concat(),
        &["sessions", "stats"],
    );
    assert_eq!(code, 0, "working TLS files: {out} {err}");
    assert!(out.contains("sessions: 0"), "{out}");

    let missing = format!("{}.missing", certs.ca);
    let cases: [(&str, &[(&str, &str)]); 4] = [
        (
            "redis.tls_ca_file",
            &[
                ("redis.tls_ca_file", &missing),
                ("redis.tls_cert_file", &certs.client_cert),
                ("redis.tls_key_file", &certs.client_key),
            ],
        ),
        (
            "redis.tls_ca_file",
            &[
                ("redis.tls_ca_file", &certs.not_pem),
                ("redis.tls_cert_file", &certs.client_cert),
                ("redis.tls_key_file", &certs.client_key),
            ],
        ),
        (
            "redis.tls_key_file",
            &[
                ("redis.tls_ca_file", &certs.ca),
                ("redis.tls_cert_file", &certs.client_cert),
            ],
        ),
        (
            "redis.tls_cert_file",
            &[
                ("redis.tls_ca_file", &certs.ca),
                ("redis.tls_key_file", &certs.client_key),
            ],
        ),
    ];
    for (key, files) in cases {
        let (code, _, stderr) = run_binary(&[&base[..], files].concat(), &[]);
        assert_eq!(code, 2, "{key} in {files:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(key), "names {key}: {stderr}");
        assert!(!stderr.contains(TEST_SECRET), "never the secret: {stderr}");
    }
}

// ---------------------------------------------------------------- Sentinel

/// Sessions written before a forced failover (and replicated) are served after
/// it by the same running server, from the new master; new logins land there.
async fn sessions_survive_a_sentinel_failover(tls: Option<&Arc<Certs>>) {
    let set = SentinelSet::start(tls);
    let wechat = WechatStandIn::start();
    let url = set.url();
    let mut env = vec![
        ("redis.url", url.as_str()),
        ("redis.sentinel_master", SENTINEL_MASTER),
        ("redis.timeout_ms", "1000"),
        ("server.workers", "2"),
    ];
    if let Some(certs) = tls {
        env.extend(certs.client_keys());
    }
    let server = ServerProcess::start(set.master(), &wechat.base, &env);
    // Asking the sentinels may take a moment after the start.
    wait_ready(&server, Duration::from_secs(5)).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        let id = server.login(&format!("ok:sent{i}")).await;
        assert_eq!(server.get_session(&id).await.0, 200);
        ids.push(id);
    }
    let old = set.master();
    assert_eq!(old.cli(&["EXISTS", &session_key(&ids[0])]), "1");
    assert_eq!(
        old.cli(&["WAIT", "1", "1000"]),
        "1",
        "the replica has every session"
    );

    let started = Instant::now();
    let infra = set.failover();
    let done = Instant::now();
    let new = set.master();
    assert_ne!(new.client_port(), old.client_port());
    // The old master goes on taking writes until the sentinels convert it,
    // about 10 s later, and then drops them in its resync from the new master:
    // a login stored there is a session lost. Only the new master counts.
    let (mut n, mut lost) = (0, 0);
    let landed = loop {
        n += 1;
        let answer = server.try_login(&format!("ok:after{n}")).await;
        if ok_or_unavailable("login after the failover", &answer) {
            let key = session_key(&session_id(&answer.1));
            if new.cli(&["EXISTS", &key]) == "1" {
                break started.elapsed();
            }
            lost += 1;
        }
        assert!(
            done.elapsed() < Duration::from_secs(5),
            "no login stored on the new master within 5 s of the sentinels agreeing \
             ({lost} logins answered 200 were stored elsewhere)"
        );
        sleep_ms(50).await;
    };
    println!(
        "sentinel (tls: {}): SENTINEL FAILOVER → every sentinel names the replica and it \
         says role:master: {infra:?}; → first login stored on the new master: {landed:?} \
         ({lost} stored on the old master before that)",
        tls.is_some()
    );
    // From then on, every login lands on the new master.
    for i in 0..5 {
        let id = server.login(&format!("ok:settled{i}")).await;
        assert_eq!(new.cli(&["EXISTS", &session_key(&id)]), "1", "login {i}");
    }

    for id in &ids {
        // Cut its idle lifetime on the new master only: a guarded request that
        // reaches the new master (a sliding GETEX) puts it back.
        let _: i64 = new.cmd(&["EXPIRE", &session_key(id), "100"]);
        let (status, me) = server.get_session(id).await;
        assert_eq!(status, 200, "a session from before the failover: {me}");
        let ttl: i64 = new.cmd(&["TTL", &session_key(id)]);
        assert!(ttl > 100, "served from the new master (ttl there {ttl})");
    }
    assert_eq!(send(client().get(server.url("/readyz"))).await.0, 200);
}

#[actix_web::test]
async fn sentinel_failover_keeps_sessions() {
    sessions_survive_a_sentinel_failover(None).await;
}

#[actix_web::test]
async fn sentinel_failover_keeps_sessions_over_tls() {
    sessions_survive_a_sentinel_failover(Some(&Certs::get())).await;
}

// ---------------------------------------------------------------- the infrastructure itself
//
// These pass whatever the server does: they show that what the tests above
// stand on behaves as they assume, checked with redis-rs and redis-cli.

#[test]
fn infra_proxy_stall_leaves_connections_half_open() {
    let redis = RedisServer::start_with(&[]);
    let proxy = Proxy::start(redis.port);
    let open = || {
        let conn = redis::Client::open(proxy.url())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(1))
            .unwrap();
        conn.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        conn
    };
    let ping = |conn: &mut redis::Connection| redis::cmd("PING").query::<String>(conn);
    let mut old = open();
    assert_eq!(ping(&mut old).unwrap(), "PONG");
    assert_eq!(proxy.connections(), 1);

    proxy.stall();
    // No answer and no close: the client can only time out.
    let err = ping(&mut old).unwrap_err();
    assert!(err.is_timeout(), "stalled, not closed: {err}");
    let mut new = open();
    assert_eq!(
        ping(&mut new).unwrap(),
        "PONG",
        "new connections still work"
    );
    assert_eq!(proxy.connections(), 2);
    let err = ping(&mut old).unwrap_err();
    assert!(err.is_timeout(), "still stalled: {err}");
}

#[test]
fn infra_tls_servers_take_only_verified_clients() {
    let certs = Certs::get();
    let redis = RedisServer::start_tls(&certs, &[]);
    assert_eq!(redis.cli(&["SET", "k", "over-tls"]), "OK");
    assert_eq!(redis.cmd::<String>(&["GET", "k"]), "over-tls");
    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &redis.client_port().to_string()])
            .args(args)
            .arg("PING")
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let other_ca = ["--tls", "--cacert", &certs.other_ca];
    let no_client_cert = ["--tls", "--cacert", &certs.ca];
    assert!(cli(&other_ca).contains("certificate verify failed"));
    assert!(!cli(&no_client_cert).contains("PONG"));
    assert!(!cli(&[]).contains("PONG"), "no plain text on the TLS port");

    // A Cluster over TLS answers a TLS client with TLS ports (the replicas
    // join CLUSTER SLOTS a moment after the cluster is ok: masters only).
    let cluster = RedisCluster::start_tls(&certs);
    let port_of = |n: &RedisServer, tls: bool| if tls { n.client_port() } else { n.port };
    let listed = |tls: bool| {
        let slots = cluster.nodes[0].cli(&["CLUSTER", "SLOTS"]);
        cluster
            .nodes
            .iter()
            .filter(|n| slots.lines().any(|l| l == port_of(n, tls).to_string()))
            .count()
    };
    assert!(listed(true) >= 3, "the masters by their TLS ports");
    assert_eq!(listed(false), 0, "no plain port to a TLS client");
    assert_eq!(cluster.nodes[0].cli(&["-c", "SET", "{a}", "1"]), "OK");
    assert_eq!(cluster.nodes[0].cli(&["-c", "SET", "{b}", "1"]), "OK");
}

#[test]
fn infra_sentinel_failover_over_tls() {
    let certs = Certs::get();
    let started = Instant::now();
    let set = SentinelSet::start(Some(&certs));
    let up = started.elapsed();
    let old = set.master();
    let addr = set.sentinels[1].cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER]);
    assert_eq!(addr, format!("127.0.0.1\n{}", old.client_port()));
    assert_eq!(old.cli(&["SET", "before", "1"]), "OK");
    assert_eq!(old.cli(&["WAIT", "1", "1000"]), "1");

    let took = set.failover();
    let new = set.master();
    assert_ne!(new.client_port(), old.client_port());
    assert_eq!(new.cli(&["GET", "before"]), "1");
    assert_eq!(new.cli(&["SET", "after", "1"]), "OK");
    println!("sentinel over TLS: set up in {up:?}; SENTINEL FAILOVER done in {took:?}");
}

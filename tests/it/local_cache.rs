//! `session.local_cache = true` (contract §8 and §13): guarded requests from
//! memory, revocation still seen by every instance within 10 ms, failing closed
//! (503, never a 401 for a live session), and no unknown id in Redis's
//! tracking table.

use std::time::{Duration, Instant};

use crate::support::*;

/// The cache on, plus `extra`; the admin token is for the revocation by the admin route.
fn cached(extra: &[(&str, &str)]) -> Setup {
    Harness::setup()
        .set(&[
            ("session.local_cache", "true"),
            ("admin.token", ADMIN_TOKEN),
        ])
        .set(extra)
}

async fn status(server: &impl Instance, id: &str) -> u16 {
    server.get_session(id).await.0
}

/// Waits until the instance's tracking connection is confirmed (served from memory).
pub(crate) async fn warm(server: &impl Instance, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        for _ in 0..3 {
            assert_eq!(status(server, id).await, 200);
        }
        let metrics = server.metrics().await;
        let hits: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("wxsession_cache_lookups_total{result=\"hit\"} "))
            .unwrap()
            .parse()
            .unwrap();
        if hits > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "cache never served: {metrics}");
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `tracking_total_keys` from `INFO stats`: keys in Redis's tracking table.
fn tracked_keys(redis: &RedisServer) -> u64 {
    let info: String = redis.cmd(&["INFO", "stats"]);
    info.lines()
        .find_map(|l| l.strip_prefix("tracking_total_keys:"))
        .expect("INFO stats has tracking_total_keys")
        .trim()
        .parse()
        .unwrap()
}

/// The id of the instance's tracking connection (`t` among its `CLIENT LIST`
/// flags), once it is up.
fn tracking_client(redis: &RedisServer) -> Option<String> {
    let clients: String = redis.cmd(&["CLIENT", "LIST"]);
    clients
        .lines()
        .find(|l| {
            l.split(' ')
                .any(|f| f.strip_prefix("flags=").is_some_and(|f| f.contains('t')))
        })
        .and_then(|l| l.split(' ').next()?.strip_prefix("id="))
        .map(str::to_string)
}

/// Polls B until it answers 401; answers how long that took.
async fn time_to_401(server: &impl Instance, id: &str) -> Duration {
    let started = Instant::now();
    while status(server, id).await != 401 {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "never revoked on the other instance"
        );
    }
    started.elapsed()
}

#[actix_web::test]
async fn warm_cache_serves_without_redis_commands() {
    let h = cached(&[]).start();
    let ids: Vec<String> = futures_util::future::join_all((0..20).map(|i| {
        let h = &h;
        async move { h.login(&format!("ok:c{i}")).await }
    }))
    .await;
    warm(&h, &ids[0]).await;
    for id in &ids {
        assert_eq!(status(&h, id).await, 200);
    }
    h.redis.cmd::<String>(&["CONFIG", "RESETSTAT"]);
    let requests = 1000;
    for n in 0..requests {
        assert_eq!(status(&h, &ids[n % ids.len()]).await, 200);
    }
    let per_request = h.redis.commands_but_pings() as f64 / requests as f64;
    println!("Redis commands per guarded request, warm cache: {per_request:.4}");
    assert!(per_request <= 0.02, "{per_request}");
}

#[actix_web::test]
async fn every_kind_of_revocation_reaches_the_other_instance_within_10ms() {
    let h = cached(&[]).instances(2).start();
    let (a, b) = (&h.servers[0], &h.servers[1]);
    let warmup = a.login("ok:warm").await;
    warm(b, &warmup).await;

    // Logout on A, a few hundred times.
    let mut delays = Vec::new();
    for i in 0..200 {
        let id = a.login(&format!("ok:u{i}")).await;
        assert_eq!(status(b, &id).await, 200);
        assert_eq!(status(b, &id).await, 200, "from B's memory now");
        let (code, _) = a.logout(&id).await;
        assert_eq!(code, 204);
        delays.push(time_to_401(b, &id).await);
    }
    delays.sort();
    let p50 = delays[delays.len() / 2];
    let p99 = delays[delays.len() * 99 / 100];
    println!(
        "logout on A → 401 on B: p50 {p50:?}, p99 {p99:?} over {} logouts",
        delays.len()
    );
    assert!(p99 <= Duration::from_millis(10), "p99 {p99:?}");

    // Admin revoke, redis-cli DEL, FLUSHDB, expiry.
    let id = a.login("ok:adm").await;
    status(b, &id).await;
    status(b, &id).await;
    send(
        client()
            .delete(a.url("/admin/users/adm/sessions"))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}")),
    )
    .await;
    assert!(time_to_401(b, &id).await <= Duration::from_millis(10));

    let id = a.login("ok:del").await;
    status(b, &id).await;
    status(b, &id).await;
    h.redis.cmd::<i64>(&["DEL", &format!("wxsess:s:{id}")]);
    assert!(time_to_401(b, &id).await <= Duration::from_millis(10));

    let id = a.login("ok:flush").await;
    status(b, &id).await;
    status(b, &id).await;
    h.redis.cmd::<String>(&["FLUSHDB"]);
    assert!(time_to_401(b, &id).await <= Duration::from_millis(10));

    let id = a.login("ok:expire").await;
    status(b, &id).await;
    status(b, &id).await;
    h.redis
        .cmd::<i64>(&["PEXPIRE", &format!("wxsess:s:{id}"), "1"]);
    actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    // Redis expires keys lazily on access or in its 10 Hz sweep; a read by
    // anyone (here redis-cli) makes the expiry, and its invalidation, happen.
    h.redis
        .cmd::<Option<String>>(&["GET", &format!("wxsess:s:{id}")]);
    assert!(time_to_401(b, &id).await <= Duration::from_millis(10));
}

#[actix_web::test]
async fn a_read_racing_a_logout_never_leaves_a_dead_session_cached() {
    let h = cached(&[]).instances(2).start();
    let (a, b) = (&h.servers[0], &h.servers[1]);
    let warmup = a.login("ok:warm").await;
    warm(b, &warmup).await;
    for round in 0..30 {
        let id = a.login(&format!("ok:race{round}")).await;
        let readers = (0..16).map(|_| {
            let (b, id) = (b, &id);
            async move {
                for _ in 0..10 {
                    status(b, id).await;
                }
            }
        });
        let logout = async {
            actix_web::rt::time::sleep(Duration::from_millis(2)).await;
            a.logout(&id).await
        };
        let (_, (code, _)) =
            futures_util::future::join(futures_util::future::join_all(readers), logout).await;
        assert_eq!(code, 204);
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
        for _ in 0..20 {
            assert_eq!(
                status(b, &id).await,
                401,
                "round {round}: B still serves a dead session"
            );
        }
    }
}

#[actix_web::test]
async fn redis_down_or_frozen_never_gives_a_stale_200() {
    let mut h = cached(&[]).start();
    let id = h.login("ok:fc").await;
    warm(&h, &id).await;

    h.redis.kill();
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..20 {
        let (code, body) = h.get_session(&id).await;
        assert_eq!(code, 503, "{body}");
        assert_error(&body, "store_unavailable");
    }
    h.redis.restart();
    // Redis came back empty (no persistence): the session is gone, and the
    // refilled cache must say so too.
    let started = Instant::now();
    loop {
        let code = status(&h, &id).await;
        assert!(code == 503 || code == 401, "{code}");
        if code == 401 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(3));
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let fresh = h.login("ok:fc2").await;
    warm(&h, &fresh).await;

    h.redis.signal("-STOP");
    actix_web::rt::time::sleep(Duration::from_millis(1000)).await;
    for _ in 0..5 {
        let (code, body) = h.get_session(&fresh).await;
        assert_eq!(code, 503, "frozen Redis: {body}");
    }
    h.redis.signal("-CONT");
    let started = Instant::now();
    while status(&h, &fresh).await != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "no recovery after SIGCONT"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn lifetimes_hold_with_the_cache_on() {
    let h = cached(&[
        ("session.ttl_secs", "2"),
        ("session.max_lifetime_secs", "4"),
        ("session.touch_interval_secs", "1"),
    ])
    .start();
    let warmup = h.login("ok:lw").await;
    warm(&h, &warmup).await;
    // Sliding: used every 0.8 s it lives past the 2 s ttl, until the absolute 4 s.
    let id = h.login("ok:life").await;
    let started = Instant::now();
    let mut last_ok = Duration::ZERO;
    while started.elapsed() < Duration::from_millis(5500) {
        if status(&h, &id).await == 200 {
            last_ok = started.elapsed();
        }
        actix_web::rt::time::sleep(Duration::from_millis(800)).await;
    }
    assert!(
        last_ok >= Duration::from_millis(2400),
        "sliding kept it alive past ttl: {last_ok:?}"
    );
    assert!(
        last_ok < Duration::from_secs(4),
        "never past the absolute lifetime: {last_ok:?}"
    );

    // Idle: dead within ttl (2 s) of its last use, never later.
    let idle = h.login("ok:idle").await;
    assert_eq!(status(&h, &idle).await, 200);
    actix_web::rt::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(status(&h, &idle).await, 401);
}

#[actix_web::test]
async fn an_unknown_id_never_enters_the_tracking_table() {
    let h = cached(&[]).start();
    let id = h.login("ok:known").await;
    warm(&h, &id).await;
    let before = tracked_keys(&h.redis);
    for _ in 0..200 {
        let unknown = wxsession::session::SessionId::generate();
        assert_eq!(status(&h, unknown.as_str()).await, 401);
    }
    assert_eq!(
        tracked_keys(&h.redis),
        before,
        "200 unknown ids left keys in Redis's tracking table"
    );
    // A real session is still cached, and still hears of a change by anyone.
    let real = h.login("ok:real").await;
    assert_eq!(status(&h, &real).await, 200);
    assert_eq!(tracked_keys(&h.redis), before + 1);
    h.redis.cmd::<String>(&["CONFIG", "RESETSTAT"]);
    assert_eq!(status(&h, &real).await, 200);
    assert_eq!(h.redis.commands_but_pings(), 0, "served from memory");
    h.redis.cmd::<i64>(&["DEL", &format!("wxsess:s:{real}")]);
    assert!(time_to_401(&h, &real).await <= Duration::from_millis(10));
}

#[actix_web::test]
async fn a_tracking_connection_dropped_mid_read_is_503_never_401() {
    // Redis's answers arrive 20 ms late: reads are on their way when their
    // connection drops.
    let h = Harness::bare();
    let proxy = Proxy::start(h.redis.port);
    proxy.delay(Duration::ZERO, Duration::from_millis(20));
    let server = h.start_server(&[
        ("redis.url", &proxy.url()),
        ("redis.timeout_ms", "1000"),
        ("session.local_cache", "true"),
    ]);
    let ids: Vec<String> = futures_util::future::join_all((0..50).map(|i| {
        let server = &server;
        async move { server.login(&format!("ok:drop{i}")).await }
    }))
    .await;
    warm(&server, &ids[0]).await;
    let stop = std::cell::Cell::new(false);
    let readers = (0..16).map(|r| {
        let (server, ids, stop) = (&server, &ids, &stop);
        async move {
            let (mut n, mut unavailable) = (r, 0);
            while !stop.get() {
                let (code, body) = server.get_session(&ids[n % ids.len()]).await;
                match code {
                    200 => {}
                    503 => {
                        assert_error(&body, "store_unavailable");
                        unavailable += 1;
                    }
                    _ => panic!("a live session answered {code}: {body}"),
                }
                n += 7;
            }
            unavailable
        }
    });
    let killer = async {
        let started = Instant::now();
        let mut kills = 0;
        while started.elapsed() < Duration::from_secs(4) {
            match tracking_client(&h.redis) {
                Some(client) => {
                    // Just after a reconnection every session is cold, read
                    // through the new tracking connection: drop it under them.
                    let after = rand::random_range(20..45);
                    actix_web::rt::time::sleep(Duration::from_millis(after)).await;
                    kills += h.redis.cmd::<i64>(&["CLIENT", "KILL", "ID", &client]);
                }
                None => actix_web::rt::time::sleep(Duration::from_millis(5)).await,
            }
        }
        stop.set(true);
        kills
    };
    let (unavailable, kills) =
        futures_util::future::join(futures_util::future::join_all(readers), killer).await;
    let unavailable: u64 = unavailable.iter().sum();
    println!("{kills} tracking connections killed; {unavailable} reads answered 503");
    assert!(kills >= 5, "{kills}");
    assert!(
        unavailable > 0,
        "no read was on its way when its connection dropped"
    );
}

#[actix_web::test]
async fn a_read_racing_its_own_logout_is_never_served_after_it() {
    // The tracking connection gets Redis's answers and invalidations 150 ms
    // late; the worker's connection reaches Redis 60 ms late.
    const TRACKING_LATE: Duration = Duration::from_millis(150);
    const WORKER_LATE: Duration = Duration::from_millis(60);
    let h = Harness::bare();
    let proxy = Proxy::start(h.redis.port);
    proxy.delay(Duration::ZERO, TRACKING_LATE);
    let server = h.start_server(&[
        ("redis.url", &proxy.url()),
        ("redis.timeout_ms", "2000"),
        ("session.local_cache", "true"),
    ]);
    // The tracking connection and the clock's (`TIME`) open at start, the
    // worker's on first use.
    let started = Instant::now();
    while proxy.connections() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no tracking connection"
        );
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.delay(WORKER_LATE, Duration::ZERO);
    let warmup = server.login("ok:warm").await;
    assert_eq!(
        proxy.connections(),
        3,
        "tracking, clock and one worker connection"
    );
    warm(&server, &warmup).await;
    for round in 0..5 {
        let id = server.login(&format!("ok:own{round}")).await;
        assert_eq!(status(&server, &id).await, 200);
        assert_eq!(status(&server, &id).await, 200, "cached");
        // The logout forgets the session at once, and its GETDEL runs in Redis
        // 60 ms later. A read 20 ms in misses, reaches Redis before that GETDEL,
        // and gets its answer 170 ms in, after the logout has answered and 40 ms
        // before Redis's invalidation for the GETDEL.
        let logout = server.logout(&id);
        let read = async {
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
            status(&server, &id).await
        };
        let (logout, read) = futures_util::future::join(logout, read).await;
        assert_eq!((logout.0, read), (204, 200), "round {round}");
        assert_eq!(
            status(&server, &id).await,
            401,
            "round {round}: served from memory after its own logout"
        );
    }
}

/// A Redis user for the server with the README's least ACL, but refused
/// `CLIENT TRACKING`, as by a managed Redis or a cautious operator
/// (`+@connection` grants `client|tracking`, so it is taken away by name).
/// Answers the `redis.url` that logs in as it.
fn user_refusing_tracking(redis: &RedisServer) -> String {
    let acl = "on >tracking-pass ~wxsess:* resetchannels +@read +@write +@keyspace \
               +@connection +@scripting -@dangerous -client|tracking";
    let mut args = vec!["ACL", "SETUSER", "wxsession"];
    args.extend(acl.split(' '));
    redis.cmd::<String>(&args);
    format!("redis://wxsession:tracking-pass@127.0.0.1:{}/0", redis.port)
}

/// `CLIENT TRACKING` commands Redis refused for lack of permission.
fn refused_tracking(redis: &RedisServer) -> u64 {
    let info: String = redis.cmd(&["INFO", "commandstats"]);
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_client|tracking:"))
        .and_then(|l| {
            l.split("rejected_calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// The value of one series on `/metrics`.
async fn metric(server: &impl Instance, series: &str) -> u64 {
    let metrics = server.metrics().await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in {metrics}"))
        .parse()
        .unwrap()
}

const TRACKING_REFUSED: &str = "wxsession_cache_tracking{state=\"refused\"}";
const TRACKING_ON: &str = "wxsession_cache_tracking{state=\"on\"}";
const CACHE_HITS: &str = "wxsession_cache_lookups_total{result=\"hit\"}";

fn warnings(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains(" WARN ")).collect()
}

#[actix_web::test]
async fn redis_refusing_tracking_serves_every_request_from_redis_and_warns_once() {
    let h = Harness::bare();
    let url = user_refusing_tracking(&h.redis);
    let started = Instant::now();
    let server = h.start_process(&[("redis.url", &url), ("session.local_cache", "true")]);
    let id = server.login("ok:refused").await;
    let other = server.login("ok:refused2").await;

    // Not CONFIG RESETSTAT: the refusals are counted in the same statistics.
    let before = h.redis.commands_but_pings();
    for _ in 0..20 {
        assert_eq!(status(&server, &id).await, 200);
    }
    assert!(
        h.redis.commands_but_pings() - before >= 20,
        "every guarded request reaches Redis"
    );
    assert_eq!(metric(&server, CACHE_HITS).await, 0, "nothing from memory");
    assert_eq!(metric(&server, TRACKING_REFUSED).await, 1);
    assert_eq!(metric(&server, TRACKING_ON).await, 0);

    // Never stale: a logout here, a DEL by anyone else, at once.
    assert_eq!(server.logout(&id).await.0, 204);
    assert_eq!(status(&server, &id).await, 401);
    assert_eq!(status(&server, &other).await, 200);
    h.redis.cmd::<i64>(&["DEL", &format!("wxsess:s:{other}")]);
    assert_eq!(status(&server, &other).await, 401);

    // Past the first retry (5 s after the refusal): asked again, not warned again.
    actix_web::rt::time::sleep(Duration::from_millis(6500).saturating_sub(started.elapsed())).await;
    let refusals = refused_tracking(&h.redis);
    let log = server.log();
    assert_eq!(refusals, 2, "at start and once 5 s later: {log}");
    let warned = warnings(&log);
    assert_eq!(warned.len(), 1, "one warning: {log}");
    assert!(
        warned[0].contains("no permissions to run the 'client|tracking' command")
            && warned[0].contains("served from Redis"),
        "what Redis answered, and what the server does: {}",
        warned[0]
    );
    assert_eq!(metric(&server, TRACKING_REFUSED).await, 1);
}

#[actix_web::test]
async fn the_cache_starts_once_redis_allows_tracking_without_a_restart() {
    let h = Harness::bare();
    let url = user_refusing_tracking(&h.redis);
    let started = Instant::now();
    let server = h.start_process(&[("redis.url", &url), ("session.local_cache", "true")]);
    let id = server.login("ok:allowed").await;
    assert_eq!(status(&server, &id).await, 200);
    assert_eq!(metric(&server, TRACKING_REFUSED).await, 1);

    h.redis
        .cmd::<String>(&["ACL", "SETUSER", "wxsession", "+client|tracking"]);
    // The first retry comes 5 s after the refusal at start.
    while metric(&server, TRACKING_ON).await != 1 {
        assert!(
            started.elapsed() < Duration::from_secs(7),
            "tracking not asked for again: {}",
            server.log()
        );
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(metric(&server, TRACKING_REFUSED).await, 0);
    warm(&server, &id).await;
    h.redis.cmd::<String>(&["CONFIG", "RESETSTAT"]);
    for _ in 0..100 {
        assert_eq!(status(&server, &id).await, 200);
    }
    assert_eq!(h.redis.commands_but_pings(), 0, "served from memory");
    // And coherent: a change by anyone reaches it.
    h.redis.cmd::<i64>(&["DEL", &format!("wxsess:s:{id}")]);
    assert!(time_to_401(&server, &id).await <= Duration::from_millis(10));
    let log = server.log();
    assert_eq!(warnings(&log).len(), 1, "{log}");
    assert!(log.contains("accepts CLIENT TRACKING now"), "{log}");
}

#[actix_web::test]
async fn a_full_cache_keeps_its_capacity_and_the_sessions_in_use() {
    let h = cached(&[("session.local_cache_capacity", "100")]).start();
    let ids: Vec<String> = futures_util::future::join_all((0..300).map(|i| {
        let h = &h;
        async move { h.login(&format!("ok:full{i}")).await }
    }))
    .await;
    let (hot, cold) = ids.split_at(20);
    warm(&h, &hot[0]).await;
    // 280 sessions read once, through a cache of 100, while 20 are in use.
    for (n, id) in cold.iter().enumerate() {
        assert_eq!(status(&h, id).await, 200);
        if n % 10 == 0 {
            for id in hot {
                assert_eq!(status(&h, id).await, 200);
            }
        }
    }
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    let entries = metric(&h, "wxsession_cache_entries").await;
    assert!((20..=100).contains(&entries), "{entries} sessions cached");
    h.redis.cmd::<String>(&["CONFIG", "RESETSTAT"]);
    for id in hot {
        assert_eq!(status(&h, id).await, 200);
    }
    assert_eq!(h.redis.commands_but_pings(), 0, "the ones in use stayed");
    // Whatever was dropped is read again; whatever is held hears of changes.
    for id in ids.iter().step_by(7) {
        h.redis.cmd::<i64>(&["DEL", &format!("wxsess:s:{id}")]);
        assert!(time_to_401(&h, id).await <= Duration::from_millis(10));
    }
    for id in ids.iter().skip(1).step_by(7) {
        assert_eq!(status(&h, id).await, 200);
    }
}

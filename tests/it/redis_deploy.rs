//! Redis as it is deployed (contract §10), against real processes on loopback:
//! TLS in every mode (one node, the local cache's tracking connection, Cluster,
//! Sentinel), TLS files that cannot work, and a Sentinel failover followed
//! without a restart.

use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{local_cache::warm, redis_faults::wait_ready, support::*};

/// `redis.timeout_ms` where a test depends on it.
const TIMEOUT_MS: u64 = 300;

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

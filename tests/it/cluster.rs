//! `redis.cluster = true` against a real 6-node Redis Cluster on loopback:
//! the whole session life, then a master killed and its replica promoted.

use std::time::{Duration, Instant};

use crate::support::*;

const TOKEN: &str = "cluster-admin-token-0123456789abcdef";

#[actix_web::test]
async fn sessions_live_on_a_cluster_and_survive_a_failover() {
    let mut cluster = RedisCluster::start();
    let wechat = WechatStandIn::start();
    let mut cfg = config(
        &cluster.nodes[0],
        &wechat.base,
        &[
            ("redis.cluster", "true"),
            ("admin.token", TOKEN),
            ("redis.timeout_ms", "1000"),
        ],
    );
    cfg.redis.url = wxsession::Secret::new(cluster.url());
    let server = TestServer::start(&cfg);

    // Many users, so their keys spread over all three masters.
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(server.login(&format!("union:user{i}")).await);
    }
    let extra = server.login("ok:user0~2").await;
    for id in &ids {
        let (status, _) = server.get_session(id).await;
        assert_eq!(status, 200);
    }
    let (status, _) = server.logout(&ids[1]).await;
    assert_eq!(status, 204);
    let (status, _) = server.get_session(&ids[1]).await;
    assert_eq!(status, 401);
    let admin =
        |req: reqwest::RequestBuilder| req.header("authorization", format!("Bearer {TOKEN}"));
    let (_, listed) = send(admin(
        client().get(server.url("/admin/users/user0/sessions")),
    ))
    .await;
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 2, "{listed}");
    let (_, revoked) = send(admin(
        client().delete(server.url("/admin/users/user0/sessions")),
    ))
    .await;
    assert_eq!(revoked["revoked"], 2);
    assert_eq!(server.get_session(&extra).await.0, 401);

    // The CLI counts across all three masters.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wxsession"))
        .env_clear()
        .env("WXSESSION_WECHAT_APPID", "wx_test_app")
        .env("WXSESSION_WECHAT_SECRET", TEST_SECRET)
        .env("WXSESSION_REDIS_URL", cluster.url())
        .env("WXSESSION_REDIS_CLUSTER", "true")
        .current_dir(std::env::temp_dir())
        .args(["sessions", "stats"])
        .output()
        .unwrap();
    let stats = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stats} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stats.contains("sessions: 28") && stats.contains("users:    28"),
        "{stats}"
    );

    // Replicate everything, then kill the master of a live session.
    for node in &cluster.nodes {
        let role: Vec<redis::Value> = node.cmd(&["ROLE"]);
        if matches!(&role[0], redis::Value::BulkString(b) if b == b"master") {
            let _: i64 = node.cmd(&["WAIT", "1", "2000"]);
        }
    }
    let victim_id = ids[5].clone();
    let master = cluster.master_of(&format!("wxsess:s:{victim_id}"));
    cluster.nodes[master].kill();
    let killed = Instant::now();
    let mut served_again = None;
    while killed.elapsed() < Duration::from_secs(15) {
        let (status, _) = server.get_session(&victim_id).await;
        assert!(
            status == 200 || status == 503,
            "only 503 while failing over, got {status}"
        );
        if status == 200 {
            served_again = Some(killed.elapsed());
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    let took = served_again.expect("served again after the replica took over");
    println!("failover: the session was served again {took:?} after its master died");
    for (i, id) in ids.iter().enumerate() {
        if i == 1 || i == 0 {
            continue;
        }
        let (status, _) = server.get_session(id).await;
        assert_eq!(status, 200, "session {i} written before the kill");
    }
    server.login("ok:after-failover").await;
    assert_eq!(send(client().get(server.url("/readyz"))).await.0, 200);
}

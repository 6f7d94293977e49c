//! A Redis Sentinel deployment on loopback: a master, one replica, and three
//! `redis-sentinel`s watching them (quorum 2), in plain TCP or all over TLS.

use std::{
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use super::{node_urls, Certs, RedisServer};

/// The name the sentinels know the master by (`redis.sentinel_master`).
pub const SENTINEL_MASTER: &str = "wxmaster";

/// Master, replica and sentinels, all stopped when dropped (the sentinels
/// first, so that none reacts to the nodes going away).
pub struct SentinelSet {
    pub sentinels: Vec<RedisServer>,
    /// The two data nodes; which one is master changes with [`SentinelSet::failover`].
    pub nodes: Vec<RedisServer>,
}

impl SentinelSet {
    /// Starts the nodes, waits until the replica is in sync, then the sentinels,
    /// and waits until each knows the replica and the two other sentinels (so a
    /// quorum of 2 can form). With `tls`, clients, replication and the
    /// sentinels' own links are all TLS.
    pub fn start(tls: Option<&Arc<Certs>>) -> SentinelSet {
        let start_node = |extra: &[&str]| match tls {
            None => RedisServer::start_with(extra),
            Some(certs) => {
                RedisServer::start_tls(certs, &[extra, &["--tls-replication", "yes"]].concat())
            }
        };
        let master = start_node(&[]);
        let master_port = master.client_port().to_string();
        let replica = start_node(&["--replicaof", "127.0.0.1", &master_port]);
        wait_until(Duration::from_secs(10), "replica in sync", || {
            replica
                .cmd::<String>(&["INFO", "replication"])
                .contains("master_link_status:up")
        });
        let mut config = vec![
            "--sentinel",
            "monitor",
            SENTINEL_MASTER,
            "127.0.0.1",
            &master_port,
            "2",
        ];
        for (key, value) in [
            ("down-after-milliseconds", "1000"),
            ("failover-timeout", "5000"),
        ] {
            config.extend(["--sentinel", key, SENTINEL_MASTER, value]);
        }
        // Sentinel's own outgoing links (to the nodes and to the other
        // sentinels, which announce their TLS port) are TLS with this flag.
        if tls.is_some() {
            config.extend(["--tls-replication", "yes"]);
        }
        let sentinels: Vec<RedisServer> = (0..3)
            .map(|_| RedisServer::start_sentinel(tls, &config))
            .collect();
        let set = SentinelSet {
            sentinels,
            nodes: vec![master, replica],
        };
        // Sentinels find each other through hello messages every 2 s.
        wait_until(Duration::from_secs(15), "sentinels know each other", || {
            set.sentinels.iter().all(|s| {
                let state = master_state(s);
                state
                    .iter()
                    .any(|(k, v)| k == "num-other-sentinels" && v == "2")
                    && state.iter().any(|(k, v)| k == "num-slaves" && v == "1")
            })
        });
        set
    }

    /// `redis.url` for the server: every sentinel, comma-separated.
    pub fn url(&self) -> String {
        node_urls(&self.sentinels)
    }

    /// The node the first sentinel names as master now.
    pub fn master(&self) -> &RedisServer {
        let port = master_port(&self.sentinels[0]);
        self.nodes
            .iter()
            .find(|n| n.client_port() == port)
            .unwrap_or_else(|| panic!("sentinel names an unknown master on port {port}"))
    }

    /// `SENTINEL FAILOVER`, then waits until every sentinel names the other
    /// node and that node says `role:master`; answers how long that took.
    ///
    /// The old master keeps saying `role:master` (and taking writes) until the
    /// sentinels convert it, about 10 s later: a client that does not follow
    /// the sentinels keeps writing to it meanwhile.
    pub fn failover(&self) -> Duration {
        let old = self.master().client_port();
        let new = self.nodes.iter().find(|n| n.client_port() != old).unwrap();
        let started = Instant::now();
        // Refused (NOGOODSLAVE) until the sentinel has fresh INFO from the replica.
        wait_until(
            Duration::from_secs(10),
            "SENTINEL FAILOVER accepted",
            || {
                redis::cmd("SENTINEL")
                    .arg("FAILOVER")
                    .arg(SENTINEL_MASTER)
                    .query::<String>(&mut self.sentinels[0].conn())
                    .is_ok()
            },
        );
        wait_until(Duration::from_secs(15), "failover", || {
            self.sentinels
                .iter()
                .all(|s| master_port(s) == new.client_port())
                && new
                    .cmd::<String>(&["INFO", "replication"])
                    .contains("role:master")
        });
        started.elapsed()
    }
}

/// `SENTINEL MASTER <name>` as field/value pairs.
fn master_state(sentinel: &RedisServer) -> Vec<(String, String)> {
    let flat: Vec<String> = sentinel.cmd(&["SENTINEL", "MASTER", SENTINEL_MASTER]);
    flat.chunks(2)
        .map(|kv| (kv[0].clone(), kv[1].clone()))
        .collect()
}

fn master_port(sentinel: &RedisServer) -> u16 {
    let addr: Vec<String> = sentinel.cmd(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER]);
    addr[1].parse().unwrap()
}

fn wait_until(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

//! Real `redis-server`s on loopback: one of a test's own, or a six-node Cluster,
//! in plain TCP or over TLS.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{atomic::Ordering, Arc},
    thread,
    time::{Duration, Instant},
};

use super::{free_port, unique_dir, Certs};

/// A real `redis-server` on 127.0.0.1, stopped when dropped.
///
/// With TLS it listens on two ports: the TLS port, the only one the server
/// under test is told about ([`RedisServer::url`], and what Cluster and
/// Sentinel answer a TLS client), and the plain `port`, a side door through
/// which the tests' own checks (`conn`, `cmd`, `keys`, start-up, cluster
/// state) keep using redis-rs, which is built here without TLS.
/// [`RedisServer::cli`] checks over TLS with `redis-cli`.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    extra_args: Vec<String>,
    tls: Option<(u16, Arc<Certs>)>,
    /// Arguments before all others: a sentinel's config file and `--sentinel`.
    leading_args: Vec<String>,
}

impl RedisServer {
    /// `extra` are additional `redis-server` arguments, e.g. `["--appendonly", "yes"]`.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        RedisServer::start_on(free_port(), extra)
    }

    pub fn start_on(port: u16, extra: &[&str]) -> RedisServer {
        RedisServer::launched(port, None, false, extra)
    }

    /// A server whose clients must use TLS on a port of its own, with `certs`.
    pub fn start_tls(certs: &Arc<Certs>, extra: &[&str]) -> RedisServer {
        RedisServer::start_tls_on(free_port(), certs, extra)
    }

    /// Over TLS on `tls_port` (a cluster node's bus is this port + 10000).
    pub fn start_tls_on(tls_port: u16, certs: &Arc<Certs>, extra: &[&str]) -> RedisServer {
        RedisServer::launched(free_port(), Some((tls_port, certs.clone())), false, extra)
    }

    /// `redis-server --sentinel` with an empty config file of its own (Sentinel
    /// insists on a writable one) and `extra` as its configuration, e.g.
    /// `["--sentinel", "monitor", "name", "127.0.0.1", "6379", "2"]`.
    pub fn start_sentinel(tls: Option<&Arc<Certs>>, extra: &[&str]) -> RedisServer {
        RedisServer::launched(
            free_port(),
            tls.map(|c| (free_port(), c.clone())),
            true,
            extra,
        )
    }

    fn launched(
        port: u16,
        tls: Option<(u16, Arc<Certs>)>,
        sentinel: bool,
        extra: &[&str],
    ) -> RedisServer {
        let dir = unique_dir("redis");
        let mut leading_args = Vec::new();
        if sentinel {
            let conf = dir.join("sentinel.conf");
            std::fs::write(&conf, "").unwrap();
            leading_args = vec![conf.display().to_string(), "--sentinel".into()];
        }
        let mut server = RedisServer {
            child: None,
            port,
            dir,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            tls,
            leading_args,
        };
        server.launch();
        server
    }

    fn launch(&mut self) {
        let mut args = self.leading_args.clone();
        args.extend([
            "--port".to_string(),
            self.port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            "".into(),
            "--dir".into(),
            self.dir.display().to_string(),
        ]);
        if let Some((tls_port, certs)) = &self.tls {
            args.extend(certs.server_args(*tls_port));
        }
        if !self.extra_args.iter().any(|a| a == "--appendonly") {
            args.extend(["--appendonly".into(), "no".into()]);
        }
        args.extend(self.extra_args.iter().cloned());
        let child = Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut c) = self.try_connection() {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return;
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not start", self.port);
    }

    /// `redis.url` for the server under test: `rediss://` on the TLS port for a TLS server.
    pub fn url(&self) -> String {
        format!("{}/0", self.node_url())
    }

    /// `redis://127.0.0.1:PORT` or `rediss://127.0.0.1:TLS_PORT`, no database:
    /// one entry of a Cluster's or Sentinel's address list.
    pub fn node_url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.client_port())
    }

    /// The port clients under test use: the TLS port for a TLS server.
    pub fn client_port(&self) -> u16 {
        self.tls.as_ref().map_or(self.port, |(port, _)| *port)
    }

    /// `redis-cli` on [`RedisServer::client_port`], over verified TLS with the
    /// client certificate for a TLS server: what it printed, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cli = Command::new("redis-cli");
        cli.args(["-p", &self.client_port().to_string()]);
        if let Some((_, certs)) = &self.tls {
            cli.args(certs.cli_args());
        }
        let out = cli.args(args).output().expect("redis-cli");
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success(),
            "redis-cli {args:?}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Through the plain port, also for a TLS server (see [`RedisServer`]).
    fn try_connection(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(format!("redis://127.0.0.1:{}/0", self.port))?
            .get_connection_with_timeout(Duration::from_secs(1))
    }

    /// A plain synchronous client, for looking at what the server wrote.
    pub fn conn(&self) -> redis::Connection {
        self.try_connection().expect("connect to the test redis")
    }

    /// Runs one command and returns its answer.
    pub fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut self.conn()).expect("redis command")
    }

    /// Every key matching `pattern`.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys = self.cmd::<Vec<String>>(&["KEYS", pattern]);
        keys.sort();
        keys
    }

    /// The session keys (`wxsess:s:*`) that hold a live session, not the
    /// tombstone of one that ended with a reason.
    pub fn live_session_keys(&self) -> Vec<String> {
        self.keys("wxsess:s:*")
            .into_iter()
            .filter(|key| {
                let value: Option<String> = self.cmd(&["GET", key]);
                value.is_some_and(|v| !v.starts_with(r#"{"ended":"#))
            })
            .collect()
    }

    /// Calls of the commands requests send since the last `CONFIG RESETSTAT`:
    /// not INFO and CONFIG (the test's own), TIME (each server measures its clock
    /// offset at start and every 30 s) or a new connection's HELLO, CLIENT and SELECT.
    pub fn commands_served(&self) -> u64 {
        const NOT_COUNTED: [&str; 6] = ["info", "config", "time", "hello", "client", "select"];
        let info: String = self.cmd(&["INFO", "commandstats"]);
        info.lines()
            .filter(|l| {
                l.strip_prefix("cmdstat_").is_some_and(|rest| {
                    let name = rest.split([':', '|']).next().unwrap_or_default();
                    !NOT_COUNTED.contains(&name)
                })
            })
            .filter_map(|l| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }

    /// [`RedisServer::commands_served`] without the local cache's heartbeat
    /// `PING`s (4 a second), which are not guard work.
    pub fn commands_but_pings(&self) -> u64 {
        let info: String = self.cmd(&["INFO", "commandstats"]);
        let pings: u64 = info
            .lines()
            .find(|l| l.starts_with("cmdstat_ping:"))
            .and_then(|l| l.split("calls=").nth(1)?.split(',').next()?.parse().ok())
            .unwrap_or(0);
        self.commands_served() - pings
    }

    /// Kills the server (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// SIGSTOP or SIGCONT: a frozen Redis accepts connections but never answers.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
    }
}

/// A port that is free, and so is the port 10000 above it (a cluster node's bus).
pub fn free_cluster_port() -> u16 {
    use std::sync::atomic::AtomicU16;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = 20000 + (std::process::id() % 9000) as u16;
    loop {
        let port = start + NEXT.fetch_add(1, Ordering::SeqCst) % 9000;
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10000) {
            return port;
        }
    }
}

/// A real Redis Cluster on loopback: 3 masters, 3 replicas, node timeout 1.5 s.
///
/// Over TLS, a node answers a plain client (the tests' checks) with the nodes'
/// plain ports and a TLS client (the server under test) with their TLS ports,
/// so [`RedisCluster::master_of`] works the same on both.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        RedisCluster::launched(None)
    }

    /// The same over TLS: clients, replication and the cluster bus.
    pub fn start_tls(certs: &Arc<Certs>) -> RedisCluster {
        RedisCluster::launched(Some(certs))
    }

    fn launched(tls: Option<&Arc<Certs>>) -> RedisCluster {
        let args = ["--cluster-enabled", "yes", "--cluster-node-timeout", "1500"];
        let tls_args = [
            &args[..],
            &["--tls-cluster", "yes", "--tls-replication", "yes"],
        ]
        .concat();
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| match tls {
                None => RedisServer::start_on(free_cluster_port(), &args),
                // The bus listens 10000 above the TLS port when the bus is TLS.
                Some(certs) => RedisServer::start_tls_on(free_cluster_port(), certs, &tls_args),
            })
            .collect();
        let mut create = Command::new("redis-cli");
        if let Some(certs) = tls {
            create.args(certs.cli_args());
        }
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.client_port()));
        }
        let out = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_ok(Duration::from_secs(20));
        cluster
    }

    /// `redis.url` for the server: every node, comma-separated.
    pub fn url(&self) -> String {
        node_urls(&self.nodes)
    }

    /// Waits until every live node says `cluster_state:ok`.
    pub fn wait_ok(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let ok = self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
                n.try_connection()
                    .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c))
                    .is_ok_and(|info| info.contains("cluster_state:ok"))
            });
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cluster not ok within {within:?}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The node serving `key` as master.
    pub fn master_of(&self, key: &str) -> usize {
        let slot: i64 = self.nodes[0].cmd(&["CLUSTER", "KEYSLOT", key]);
        for (i, n) in self.nodes.iter().enumerate() {
            if n.child.is_none() {
                continue;
            }
            let role: Vec<redis::Value> = n.cmd(&["ROLE"]);
            let is_master = matches!(&role[0], redis::Value::BulkString(b) if b == b"master");
            if !is_master {
                continue;
            }
            let slots: Vec<Vec<redis::Value>> = n.cmd(&["CLUSTER", "SLOTS"]);
            for range in slots {
                let (from, to) = match (&range[0], &range[1]) {
                    (redis::Value::Int(a), redis::Value::Int(b)) => (*a, *b),
                    _ => continue,
                };
                let port = match &range[2] {
                    redis::Value::Array(m) => match &m[1] {
                        redis::Value::Int(p) => *p as u16,
                        _ => continue,
                    },
                    _ => continue,
                };
                if (from..=to).contains(&slot) && port == n.port {
                    return i;
                }
            }
        }
        panic!("no master for {key}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal("-CONT");
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `redis.url` listing `servers`, comma-separated.
pub fn node_urls(servers: &[RedisServer]) -> String {
    servers
        .iter()
        .map(RedisServer::node_url)
        .collect::<Vec<_>>()
        .join(",")
}

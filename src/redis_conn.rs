//! `RedisConn`: the server's one connection to Redis — a single node through a
//! self-reconnecting multiplexed `ConnectionManager`, or a Redis Cluster
//! (`redis.cluster = true`) through redis-rs's cluster client, which follows
//! `MOVED`/`ASK` and fails over to promoted replicas by itself.
//!
//! Both connect lazily, so a server starts (and answers `/readyz` with 503)
//! while Redis is still down. Everything that keeps state in Redis (the session
//! store, the login-code record, the WeChat access_token) shares one handle.
//!
//! On a single node, each thread that uses the handle gets a connection of its
//! own ([`PerThread`]), opened on that thread's runtime the first time it is
//! needed. An actix worker then talks to Redis without handing every command to
//! a driver task on another thread and waiting to be woken from there, which
//! costs measurably less CPU per guarded request (README, Performance).
//!
//! [`bounded`] is the one way an operation on Redis is bounded in time: every
//! user of the handle wraps a whole operation (all its round trips, connecting
//! included) in it, rather than timing each command.

use std::{
    cell::RefCell,
    future::Future,
    sync::{Arc, Weak},
    time::Duration,
};

use redis::{
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::{ClusterClient, ClusterConfig},
    cluster_async::ClusterConnection,
    Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisFuture, Value,
};

use crate::config::Config;

/// An operation on Redis that did not finish within its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut(pub Duration);

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no answer within {} ms", self.0.as_millis())
    }
}

/// Runs `op` (any number of Redis round trips) to its end or for `timeout`,
/// whichever comes first; a late answer becomes the caller's error for
/// [`TimedOut`].
pub async fn bounded<T, E: From<TimedOut>>(
    timeout: Duration,
    op: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    tokio::time::timeout(timeout, op)
        .await
        .unwrap_or_else(|_| Err(TimedOut(timeout).into()))
}

#[derive(Clone)]
pub enum RedisConn {
    /// A single node, one connection per thread.
    PerThread(PerThread),
    /// One connection to one node: this thread's own (see
    /// [`RedisConn::for_this_thread`]), or a cluster node reached directly.
    Connection(ConnectionManager),
    /// The cluster connection, and how to reach one node of it directly (the
    /// first configured node's settings, for per-node `SCAN`).
    Cluster(ClusterConnection, ConnectionInfo),
}

impl RedisConn {
    /// Must be called inside a Tokio runtime (the connections' driver tasks live there).
    pub fn connect(config: &Config) -> Result<RedisConn, redis::RedisError> {
        let timeout = config.redis_timeout();
        let url = config.redis.url.expose();
        if config.redis.cluster {
            let nodes: Vec<&str> = url
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .collect();
            let first = nodes
                .first()
                .copied()
                .unwrap_or(url)
                .into_connection_info()?;
            let client = ClusterClient::builder(nodes).retries(2).build()?;
            let cluster = ClusterConfig::new()
                .set_connection_timeout(timeout)
                .set_response_timeout(timeout);
            return Ok(RedisConn::Cluster(
                client.get_pending_async_connection_with_config(cluster),
                first,
            ));
        }
        let client = redis::Client::open(url)?;
        // No response timeout per command: every user of this handle bounds its
        // whole operation by `redis.timeout_ms` (the store's `bounded`), and a
        // second timer per command showed in callgrind profiles of the guard.
        // (A timed-out command does not make redis-rs reconnect either way.)
        // Reconnect attempts are capped at a short delay so service resumes within
        // about a second of Redis coming back.
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(None)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        Ok(RedisConn::PerThread(PerThread::new(client, manager)?))
    }

    /// The handle to use on this thread now: for a single node, this thread's
    /// own connection, so that using it touches no counter shared with other
    /// threads. Do not keep it: on another thread it would hop back to this one.
    pub fn for_this_thread(&self) -> RedisConn {
        match self {
            RedisConn::PerThread(node) => match node.connection() {
                Ok(conn) => RedisConn::Connection(conn),
                // Fails again, with its error, when used.
                Err(_) => self.clone(),
            },
            _ => self.clone(),
        }
    }

    /// Connections to the nodes that hold the keyspace: one per master of a
    /// cluster (from `CLUSTER NODES`), or the single node itself. For commands
    /// that must see every key, such as `SCAN`.
    pub async fn masters(&mut self) -> Result<Vec<RedisConn>, redis::RedisError> {
        match self {
            RedisConn::PerThread(_) | RedisConn::Connection(_) => Ok(vec![self.clone()]),
            RedisConn::Cluster(cluster, template) => {
                let nodes: String = redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query_async(cluster)
                    .await?;
                let mut masters = Vec::new();
                for line in nodes.lines() {
                    let mut fields = line.split(' ');
                    let addr = fields.nth(1).and_then(|a| a.split('@').next());
                    let flags = fields.next().unwrap_or("");
                    let (Some(addr), true) =
                        (addr, flags.contains("master") && !flags.contains("fail"))
                    else {
                        continue;
                    };
                    let Some((host, port)) = addr.rsplit_once(':') else {
                        continue;
                    };
                    let Ok(port) = port.parse() else { continue };
                    let info = template
                        .clone()
                        .set_addr(ConnectionAddr::Tcp(host.to_string(), port));
                    let node = redis::Client::open(info)?;
                    let manager = ConnectionManagerConfig::new()
                        .set_number_of_retries(1)
                        .set_connection_timeout(Some(Duration::from_secs(1)))
                        .set_response_timeout(Some(Duration::from_secs(1)));
                    masters.push(RedisConn::Connection(
                        ConnectionManager::new_with_config(node, manager).await?,
                    ));
                }
                Ok(masters)
            }
        }
    }
}

/// How to reach one Redis node; the connections themselves are per thread.
#[derive(Clone)]
pub struct PerThread(Arc<NodeSettings>);

struct NodeSettings {
    client: redis::Client,
    manager: ConnectionManagerConfig,
}

thread_local! {
    /// This thread's connection to each node it has used. Entries whose
    /// `PerThread` is gone are dropped when the next one is added.
    static THREAD_CONNECTIONS: RefCell<Vec<(Weak<NodeSettings>, ConnectionManager)>> =
        const { RefCell::new(Vec::new()) };
}

impl PerThread {
    fn new(
        client: redis::Client,
        manager: ConnectionManagerConfig,
    ) -> Result<PerThread, redis::RedisError> {
        // Refuse now, not on first use, what the connection would refuse.
        ConnectionManager::new_lazy_with_config(client.clone(), manager.clone())?;
        Ok(PerThread(Arc::new(NodeSettings { client, manager })))
    }

    /// This thread's connection, created (without connecting) on first use;
    /// its driver task runs on this thread's runtime.
    fn connection(&self) -> Result<ConnectionManager, redis::RedisError> {
        THREAD_CONNECTIONS.with(|connections| {
            let mut connections = connections.borrow_mut();
            let ours = Arc::as_ptr(&self.0);
            if let Some((_, conn)) = connections.iter().find(|(node, _)| node.as_ptr() == ours) {
                return Ok(conn.clone());
            }
            let settings = &self.0;
            let conn = ConnectionManager::new_lazy_with_config(
                settings.client.clone(),
                settings.manager.clone(),
            )?;
            connections.retain(|(node, _)| node.strong_count() > 0);
            connections.push((Arc::downgrade(&self.0), conn.clone()));
            Ok(conn)
        })
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::PerThread(node) => {
                let conn = node.connection();
                Box::pin(async move { conn?.send_packed_command(cmd).await })
            }
            RedisConn::Connection(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c, _) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::PerThread(node) => {
                let conn = node.connection();
                Box::pin(async move { conn?.send_packed_commands(cmd, offset, count).await })
            }
            RedisConn::Connection(c) => c.req_packed_commands(cmd, offset, count),
            RedisConn::Cluster(c, _) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::PerThread(node) => node.0.client.get_connection_info().redis_settings().db(),
            RedisConn::Connection(c) => c.get_db(),
            RedisConn::Cluster(c, _) => c.get_db(),
        }
    }
}

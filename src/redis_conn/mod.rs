//! `RedisConn`: the server's one handle on Redis — a single node (at a fixed
//! address, or the master a set of Sentinels names), or a Redis Cluster
//! (`redis.cluster = true`) through redis-rs's cluster client, which follows
//! `MOVED`/`ASK` and fails over to promoted replicas by itself.
//!
//! - `endpoint`: where the node is and how every connection is made (TLS from
//!   `rediss://` and `redis.tls_*_file`, TCP keepalive and `TCP_USER_TIMEOUT`).
//! - `deadline`: [`bounded`], the time limit on one operation (a sweeper per
//!   thread, not a timer per operation).
//! - `link`: one thread's connection to a single node; replaced when it closes
//!   or stalls, and the one place a command is retried.
//! - `wire`: the guard's `GETEX` on a connection of the link's, written and
//!   read by hand (a fast path over plain TCP or a Unix socket; anything else
//!   goes the usual way).
//!
//! Everything connects lazily, so a server starts (and answers `/readyz` with
//! 503) while Redis is still down. Everything that keeps state in Redis (the
//! session store, the login-code record, the WeChat access_token) shares one
//! handle.
//!
//! On a single node, each thread that uses the handle gets a link of its own,
//! opened on that thread's runtime the first time it is needed. An actix worker
//! then talks to Redis without handing every command to a driver task on
//! another thread and waiting to be woken from there, which costs measurably
//! less CPU per guarded request (README, Performance).
//!
//! [`bounded`] is the one way an operation on Redis is bounded in time: every
//! user of the handle wraps a whole operation (all its round trips, connecting
//! included) in it, rather than timing each command.

mod deadline;
mod endpoint;
mod link;
mod wire;

pub use deadline::bounded;

use std::{
    cell::RefCell,
    sync::{Arc, Weak},
    time::Duration,
};

use redis::{
    aio::{ConnectionLike, MultiplexedConnection},
    cluster::{ClusterClient, ClusterConfig},
    cluster_async::ClusterConnection,
    AsyncConnectionConfig, Cmd, ConnectionInfo, Pipeline, RedisFuture, Value,
};

use crate::config::Config;
use endpoint::{Dialer, Endpoint};
use link::Link;

/// An operation on Redis that did not finish within its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut(pub Duration);

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no answer within {} ms", self.0.as_millis())
    }
}

#[derive(Clone)]
pub enum RedisConn {
    /// A single node; each thread reaches it over a link of its own.
    Node(Arc<Node>),
    /// This thread's link to the node (see [`RedisConn::for_this_thread`]).
    Link(Arc<Link>),
    /// The cluster connection, and how to reach one of its nodes directly (the
    /// first configured node's settings, for per-node `SCAN`).
    Cluster(ClusterConnection, Arc<ClusterNodes>),
    /// One Cluster master, reached directly.
    ClusterNode(MultiplexedConnection),
}

/// A single node and how this server's threads connect to it.
pub struct Node {
    endpoint: Arc<Endpoint>,
    dialer: Dialer,
    timeout: Duration,
}

/// How to reach one Cluster node directly.
pub struct ClusterNodes {
    template: ConnectionInfo,
    dialer: Dialer,
}

thread_local! {
    /// This thread's link to each node it has used. Entries whose node is gone
    /// are dropped when the next one is added.
    static THREAD_LINKS: RefCell<Vec<(Weak<Node>, Arc<Link>)>> = const { RefCell::new(Vec::new()) };
}

impl RedisConn {
    /// Must be called inside a Tokio runtime (the connections' driver tasks live there).
    pub fn connect(config: &Config) -> Result<RedisConn, redis::RedisError> {
        let timeout = config.redis_timeout();
        let dialer = Dialer::new(config)?;
        if config.redis.cluster {
            let nodes = config.redis.addresses();
            let template = config.redis.first_address()?;
            let mut client = ClusterClient::builder(nodes)
                .retries(2)
                .tcp_settings(dialer.tcp().clone());
            if let Some(certificates) = dialer.certificates() {
                client = client.certs(certificates.clone());
            }
            let cluster = ClusterConfig::new()
                .set_connection_timeout(timeout)
                .set_response_timeout(timeout);
            return Ok(RedisConn::Cluster(
                client
                    .build()?
                    .get_pending_async_connection_with_config(cluster),
                Arc::new(ClusterNodes { template, dialer }),
            ));
        }
        let endpoint = Arc::new(Endpoint::new(config, &dialer)?);
        if config.redis.sentinel_master.is_some() {
            tokio::spawn(endpoint::follow_switches(Arc::downgrade(&endpoint)));
        }
        Ok(RedisConn::Node(Arc::new(Node {
            endpoint,
            dialer,
            timeout,
        })))
    }

    /// The handle to use on this thread now: for a single node, this thread's
    /// own link, so that using it touches no counter shared with other
    /// threads. Do not keep it: on another thread it would hop back to this one.
    pub fn for_this_thread(&self) -> RedisConn {
        match self {
            RedisConn::Node(node) => RedisConn::Link(node.link()),
            _ => self.clone(),
        }
    }

    /// A new connection of its own to the single node (not shared with any
    /// thread), made with the server's TLS and TCP settings; for connections
    /// that carry their own state, such as the local cache's tracking.
    pub async fn dedicated(
        &self,
        config: AsyncConnectionConfig,
    ) -> Result<MultiplexedConnection, redis::RedisError> {
        match self {
            RedisConn::Node(node) => node.endpoint.connect(&config).await,
            RedisConn::Link(link) => link.endpoint().connect(&config).await,
            _ => Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "a dedicated connection needs a single Redis node",
            ))),
        }
    }

    /// Connections to the nodes that hold the keyspace: one per master of a
    /// cluster (from `CLUSTER NODES`), or the single node itself. For commands
    /// that must see every key, such as `SCAN`.
    pub async fn masters(&mut self) -> Result<Vec<RedisConn>, redis::RedisError> {
        let RedisConn::Cluster(cluster, nodes) = self else {
            return Ok(vec![self.for_this_thread()]);
        };
        let listing: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(cluster)
            .await?;
        let mut masters = Vec::new();
        for line in listing.lines() {
            let mut fields = line.split(' ');
            let addr = fields.nth(1).and_then(|a| a.split('@').next());
            let flags = fields.next().unwrap_or("");
            let (Some(addr), true) = (addr, flags.contains("master") && !flags.contains("fail"))
            else {
                continue;
            };
            let Some((host, port)) = addr.rsplit_once(':') else {
                continue;
            };
            let Ok(port) = port.parse() else { continue };
            let client = nodes.dialer.client_at(&nodes.template, host, port)?;
            masters.push(RedisConn::ClusterNode(
                client
                    .get_multiplexed_async_connection_with_config(&nodes.dialer.connection_config())
                    .await?,
            ));
        }
        Ok(masters)
    }
}

impl Node {
    /// This thread's link, created (without connecting) on first use; its
    /// connection's driver task runs on this thread's runtime.
    fn link(self: &Arc<Node>) -> Arc<Link> {
        THREAD_LINKS.with(|links| {
            let mut links = links.borrow_mut();
            let ours = Arc::as_ptr(self);
            if let Some((_, link)) = links.iter().find(|(node, _)| node.as_ptr() == ours) {
                return link.clone();
            }
            let link = Arc::new(Link::new(
                self.endpoint.clone(),
                self.dialer.connection_config(),
                self.timeout,
            ));
            links.retain(|(node, _)| node.strong_count() > 0);
            links.push((Arc::downgrade(self), link.clone()));
            link
        })
    }
}

impl RedisConn {
    /// `GETEX <key> EX <ttl_secs>` (the key given in pieces), the guard's read:
    /// on a single node through this thread's wire when it has one, otherwise
    /// (and whenever the wire has no answer) as any other command.
    pub async fn get_ex(
        &self,
        key: [&[u8]; 3],
        ttl_secs: u64,
    ) -> Result<Option<String>, redis::RedisError> {
        if let RedisConn::Node(node) = self {
            if let Some(wire) = node.link().wire() {
                if let Some(call) = wire.get_ex(key, ttl_secs) {
                    if let Some(Ok(value)) =
                        call.await.map(|v| v.map(String::from_utf8).transpose())
                    {
                        return Ok(value);
                    }
                }
            }
        }
        self.get_ex_as_command(key, ttl_secs).await
    }

    /// [`RedisConn::get_ex`] the usual way, as any other command: out of line,
    /// and boxed, for redis-rs's future for one command is about 2.5 KiB, and
    /// inline it would make the guard's future as big, which is copied whole
    /// each time it is handed down (README, Performance).
    #[cold]
    #[inline(never)]
    fn get_ex_as_command<'a>(
        &'a self,
        key: [&'a [u8]; 3],
        ttl_secs: u64,
    ) -> RedisFuture<'a, Option<String>> {
        Box::pin(async move {
            let mut getex = Cmd::new();
            getex.arg("GETEX").arg(key.concat()).arg("EX").arg(ttl_secs);
            let value = match self {
                RedisConn::Node(node) => node.link().send(&getex).await?,
                RedisConn::Link(link) => link.send(&getex).await?,
                other => other.clone().req_packed_command(&getex).await?,
            };
            Ok(redis::from_redis_value(value.extract_error()?)?)
        })
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Node(node) => {
                let link = node.link();
                Box::pin(async move { link.send(cmd).await })
            }
            RedisConn::Link(link) => Box::pin(link.send(cmd)),
            RedisConn::Cluster(c, _) => c.req_packed_command(cmd),
            RedisConn::ClusterNode(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Node(node) => {
                let link = node.link();
                Box::pin(async move { link.send_pipeline(cmd, offset, count).await })
            }
            RedisConn::Link(link) => Box::pin(link.send_pipeline(cmd, offset, count)),
            RedisConn::Cluster(c, _) => c.req_packed_commands(cmd, offset, count),
            RedisConn::ClusterNode(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Node(node) => node.endpoint.db(),
            RedisConn::Link(link) => link.endpoint().db(),
            RedisConn::Cluster(c, _) => c.get_db(),
            RedisConn::ClusterNode(c) => c.get_db(),
        }
    }
}

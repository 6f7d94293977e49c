//! `RedisConn`: the server's one connection to Redis — a single node through a
//! self-reconnecting multiplexed `ConnectionManager`, or a Redis Cluster
//! (`redis.cluster = true`) through redis-rs's cluster client, which follows
//! `MOVED`/`ASK` and fails over to promoted replicas by itself.
//!
//! Both connect lazily, so a server starts (and answers `/readyz` with 503)
//! while Redis is still down. Everything that keeps state in Redis (the session
//! store, the login-code record, the WeChat access_token) shares one handle.

use std::time::Duration;

use redis::{
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::{ClusterClient, ClusterConfig},
    cluster_async::ClusterConnection,
    Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisFuture, Value,
};

use crate::config::Config;

#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
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
        // Reconnect attempts are capped at a short delay so service resumes within
        // about a second of Redis coming back.
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        Ok(RedisConn::Single(ConnectionManager::new_lazy_with_config(
            client, manager,
        )?))
    }

    /// Connections to the nodes that hold the keyspace: one per master of a
    /// cluster (from `CLUSTER NODES`), or the single node itself. For commands
    /// that must see every key, such as `SCAN`.
    pub async fn masters(&mut self) -> Result<Vec<RedisConn>, redis::RedisError> {
        match self {
            RedisConn::Single(_) => Ok(vec![self.clone()]),
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
                    masters.push(RedisConn::Single(
                        ConnectionManager::new_with_config(node, manager).await?,
                    ));
                }
                Ok(masters)
            }
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
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
            RedisConn::Single(c) => c.req_packed_commands(cmd, offset, count),
            RedisConn::Cluster(c, _) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c, _) => c.get_db(),
        }
    }
}

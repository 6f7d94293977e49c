//! `Endpoint`: where the node that takes writes is, and how a connection to it
//! is made — the same TLS material and TCP settings for every connection the
//! server opens (a thread's link, the local cache's tracking connection, a
//! Cluster node reached directly).
//!
//! A fixed address is one `redis::Client`. With Sentinel, the master changes on
//! failover, so every new connection asks the Sentinels which node is master
//! (redis-rs then checks that node's `ROLE`) instead of reusing an address, and
//! [`follow_switches`] listens for the Sentinels' `+switch-master` so that
//! connections to the old master are left at once.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Weak,
    },
    time::Duration,
};

use futures_util::StreamExt;

use redis::{
    aio::MultiplexedConnection,
    io::tcp::{socket2::TcpKeepalive, TcpSettings},
    sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType},
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, ProtocolVersion,
    TlsCertificates, TlsMode,
};
use tokio::sync::Mutex;

use crate::config::Config;

/// How every connection is made: TLS material and TCP settings.
#[derive(Clone)]
pub struct Dialer {
    certificates: Option<TlsCertificates>,
    tcp: TcpSettings,
    timeout: Duration,
}

impl Dialer {
    pub fn new(config: &Config) -> Result<Dialer, redis::RedisError> {
        let certificates = config.redis.tls_certificates().map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "tls", e.to_string()))
        })?;
        Ok(Dialer {
            certificates,
            tcp: tcp_settings(config.redis_timeout()),
            timeout: config.redis_timeout(),
        })
    }

    /// A client for `info` with this dialer's TLS material and TCP settings.
    pub fn client(&self, info: ConnectionInfo) -> Result<redis::Client, redis::RedisError> {
        let info = info.set_tcp_settings(self.tcp.clone());
        match (&self.certificates, info.addr()) {
            (Some(certificates), ConnectionAddr::TcpTls { .. }) => {
                redis::Client::build_with_tls(info, certificates.clone())
            }
            _ => redis::Client::open(info),
        }
    }

    /// A client for another node at `host:port`, reached like `template`.
    pub fn client_at(
        &self,
        template: &ConnectionInfo,
        host: &str,
        port: u16,
    ) -> Result<redis::Client, redis::RedisError> {
        let addr = match template.addr() {
            ConnectionAddr::TcpTls { insecure, .. } => ConnectionAddr::TcpTls {
                host: host.to_string(),
                port,
                insecure: *insecure,
                tls_params: None,
            },
            _ => ConnectionAddr::Tcp(host.to_string(), port),
        };
        self.client(template.clone().set_addr(addr))
    }

    /// Connection settings: a connection attempt is bounded by `redis.timeout_ms`;
    /// commands are not timed here, callers bound whole operations (`bounded`).
    pub fn connection_config(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(None)
    }

    pub fn tcp(&self) -> &TcpSettings {
        &self.tcp
    }

    pub fn certificates(&self) -> Option<&TlsCertificates> {
        self.certificates.as_ref()
    }
}

/// A peer that vanishes without a word (a crashed host, a moved VIP, a
/// firewall dropping state) leaves a socket that looks open. Keepalive probes
/// find an idle one; `TCP_USER_TIMEOUT` ends one with unacknowledged data after
/// about twice the operation bound, so the kernel closes it and the link
/// reconnects (the link's own stall count covers what the kernel cannot see,
/// such as a proxy that still acknowledges).
fn tcp_settings(timeout: Duration) -> TcpSettings {
    let dead_after = (timeout * 2).max(Duration::from_secs(1));
    TcpSettings::default()
        .set_keepalive(
            TcpKeepalive::new()
                .with_time(dead_after)
                .with_interval(Duration::from_secs(1))
                .with_retries(3),
        )
        .set_user_timeout(dead_after)
}

/// `info`, speaking RESP3: a connection then reports its own close (see `link`).
fn resp3(info: ConnectionInfo) -> ConnectionInfo {
    let settings = info.redis_settings().clone();
    info.set_redis_settings(settings.set_protocol(ProtocolVersion::RESP3))
}

/// The node this server writes to.
pub enum Endpoint {
    Fixed(redis::Client),
    Sentinel(Sentinels),
}

pub struct Sentinels {
    /// Asks the Sentinels for the master (one question at a time).
    resolver: Mutex<SentinelClient>,
    /// One client per Sentinel, for `+switch-master`.
    announcers: Vec<redis::Client>,
    master: String,
    db: i64,
    /// Masters announced since start: a connection made before the latest
    /// announcement is to a former master.
    switches: AtomicU64,
    /// The master the last connection went to, and `switches` then.
    last_master: std::sync::Mutex<Option<(u64, Box<ConnectionInfo>)>>,
}

impl Endpoint {
    pub fn new(config: &Config, dialer: &Dialer) -> Result<Endpoint, redis::RedisError> {
        let addresses = config.redis.addresses();
        let first = config.redis.first_address()?;
        let Some(master) = &config.redis.sentinel_master else {
            return Ok(Endpoint::Fixed(dialer.client(resp3(first))?));
        };
        let infos = addresses
            .iter()
            .map(|a| a.into_connection_info())
            .collect::<Result<Vec<_>, _>>()?;
        let sentinels = infos.iter().map(|info| info.addr().clone());
        // The URLs' user, password and db are the master's; Sentinels are asked
        // without credentials.
        let data = first.redis_settings();
        let mut builder =
            SentinelClientBuilder::new(sentinels, master, SentinelServerType::Master)?
                .set_client_to_redis_protocol(ProtocolVersion::RESP3)
                .set_client_to_redis_db(data.db())
                .set_client_to_redis_tcp_settings(dialer.tcp().clone())
                .set_client_to_sentinel_tcp_settings(dialer.tcp().clone());
        if let Some(username) = data.username() {
            builder = builder.set_client_to_redis_username(username);
        }
        if let Some(password) = data.password() {
            builder = builder.set_client_to_redis_password(password);
        }
        if config.redis.uses_tls() {
            builder = builder.set_client_to_redis_tls_mode(TlsMode::Secure);
            if let Some(certificates) = dialer.certificates() {
                builder = builder
                    .set_client_to_redis_certificates(certificates.clone())
                    .set_client_to_sentinel_certificates(certificates.clone());
            }
        }
        let announcers = infos
            .into_iter()
            .map(|info| {
                let anonymous = info.set_redis_settings(Default::default());
                dialer.client(anonymous)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Endpoint::Sentinel(Sentinels {
            resolver: Mutex::new(builder.build()?),
            announcers,
            master: master.clone(),
            db: data.db(),
            switches: AtomicU64::new(0),
            last_master: std::sync::Mutex::new(None),
        }))
    }

    /// A new connection to the node: for Sentinel, to the master they name now.
    pub async fn connect(
        &self,
        config: &AsyncConnectionConfig,
    ) -> Result<MultiplexedConnection, redis::RedisError> {
        let client = match self {
            Endpoint::Fixed(client) => client.clone(),
            Endpoint::Sentinel(sentinels) => sentinels.master().await?,
        };
        client
            .get_multiplexed_async_connection_with_config(config)
            .await
    }

    /// How a hand-written connection reaches the node: its plain TCP address
    /// (and TCP settings) or Unix socket, and login; `None` if it is reached
    /// over TLS. For Sentinel, the master the last connection went to, unless
    /// a new one was announced since (then the Sentinels are asked again).
    pub async fn without_tls(&self) -> Result<Option<ConnectionInfo>, redis::RedisError> {
        let info = match self {
            Endpoint::Fixed(client) => client.get_connection_info().clone(),
            Endpoint::Sentinel(sentinels) => {
                let generation = sentinels.switches.load(Ordering::Relaxed);
                let known = sentinels
                    .last_master
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
                    .filter(|(then, _)| *then == generation);
                match known {
                    Some((_, info)) => *info,
                    None => sentinels.master().await?.get_connection_info().clone(),
                }
            }
        };
        let wire_speaks_it = match info.addr() {
            ConnectionAddr::Tcp(..) => true,
            #[cfg(unix)]
            ConnectionAddr::Unix(..) => true,
            _ => false,
        };
        Ok(wire_speaks_it.then_some(info))
    }

    pub fn db(&self) -> i64 {
        match self {
            Endpoint::Fixed(client) => client.get_connection_info().redis_settings().db(),
            Endpoint::Sentinel(sentinels) => sentinels.db,
        }
    }

    /// Changes whenever a new master is announced; connections made under an
    /// older value are to a former master.
    pub fn master_generation(&self) -> u64 {
        match self {
            Endpoint::Fixed(_) => 0,
            Endpoint::Sentinel(sentinels) => sentinels.switches.load(Ordering::Relaxed),
        }
    }
}

impl Sentinels {
    /// A client for the master the Sentinels name now (one question at a time).
    async fn master(&self) -> Result<redis::Client, redis::RedisError> {
        let generation = self.switches.load(Ordering::Relaxed);
        let client = self.resolver.lock().await.async_get_client().await?;
        *self.last_master.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((generation, Box::new(client.get_connection_info().clone())));
        Ok(client)
    }
}

/// How long the listener waits between tries, and how often it checks that
/// the endpoint is still in use.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

/// Listens on one Sentinel after another for `+switch-master` of our master.
/// A forced failover (`SENTINEL FAILOVER`) leaves the old master up and
/// writable until the Sentinels reconfigure it, seconds later: writes that
/// land there in between are lost when it resyncs, so links leave it as soon
/// as the switch is announced. Ends when the endpoint is dropped.
pub async fn follow_switches(endpoint: Weak<Endpoint>) {
    for attempt in 0.. {
        let (announcer, master) = match endpoint.upgrade().as_deref() {
            Some(Endpoint::Sentinel(s)) => (
                s.announcers[attempt % s.announcers.len()].clone(),
                s.master.clone(),
            ),
            _ => return,
        };
        if let Ok(mut pubsub) = announcer.get_async_pubsub().await {
            if pubsub.subscribe("+switch-master").await.is_ok() {
                let mut messages = pubsub.on_message();
                loop {
                    tokio::select! {
                        message = messages.next() => {
                            let Some(message) = message else { break };
                            let payload: String = message.get_payload().unwrap_or_default();
                            // "<master name> <old ip> <old port> <new ip> <new port>"
                            if payload.split(' ').next() != Some(master.as_str()) {
                                continue;
                            }
                            let Some(strong) = endpoint.upgrade() else { return };
                            if let Endpoint::Sentinel(s) = &*strong {
                                s.switches.fetch_add(1, Ordering::Relaxed);
                            }
                            log::warn!("redis: Sentinel announced a new master ({payload}); reconnecting");
                        }
                        _ = tokio::time::sleep(LISTEN_RETRY) => {
                            if endpoint.strong_count() == 0 {
                                return;
                            }
                        }
                    }
                }
            }
        }
        tokio::time::sleep(LISTEN_RETRY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_peer_is_given_up_after_twice_the_bound_and_never_under_a_second() {
        let settings = tcp_settings(Duration::from_millis(1500));
        assert_eq!(settings.user_timeout(), Some(Duration::from_secs(3)));
        assert!(settings.keepalive().is_some());
        let short = tcp_settings(Duration::from_millis(100));
        assert_eq!(short.user_timeout(), Some(Duration::from_secs(1)));
    }
}

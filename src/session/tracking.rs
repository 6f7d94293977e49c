//! The local cache's tracking connection: a RESP3 connection with `CLIENT
//! TRACKING ON`, whose invalidation pushes keep the cache coherent. This module
//! keeps one up and proves it alive with a heartbeat `PING` every 250 ms; the
//! cache serves nothing from memory while it is down or late.
//!
//! Redis may refuse `CLIENT TRACKING` itself (a proxy, a managed Redis, an ACL
//! without `client|tracking`, a renamed `CLIENT`): then every request is
//! served from Redis, as with the cache off, and tracking is asked for again
//! now and then, so that the cache starts once an operator allows it. Each
//! change of state is logged once, never each attempt.

use std::{sync::Weak, time::Duration};

use redis::{aio::MultiplexedConnection, AsyncConnectionConfig, PushInfo, RedisError};

use super::cache::{LocalCache, ALIVE_WINDOW_MS};
use crate::{redis_conn::RedisConn, telemetry::CacheTracking};

const HEARTBEAT: Duration = Duration::from_millis(250);
/// After a tracking connection dropped or could not be made: Redis may be back
/// any moment (a restart, a failover).
const RETRY: Duration = Duration::from_millis(250);
/// After Redis refused `CLIENT TRACKING`, the first attempt again; each
/// refusal doubles the wait up to [`REFUSED_RETRY_MAX`]. A refusal is a setting
/// that changes when an operator changes it, not in milliseconds, and every
/// attempt costs Redis a connection.
const REFUSED_RETRY_FIRST: Duration = Duration::from_secs(5);
const REFUSED_RETRY_MAX: Duration = Duration::from_secs(60);

/// Why no tracking connection is up.
enum Failure {
    /// No connection, or it broke: Redis is out of reach for now.
    Unreachable(RedisError),
    /// Redis answered `CLIENT TRACKING` with an error.
    Refused(RedisError),
}

/// Keeps a tracking connection up (a dedicated RESP3 connection to the node
/// `redis` writes to, made like every other) and proves it alive with a
/// heartbeat; ends when the cache is dropped.
pub(super) async fn supervise(cache: Weak<LocalCache>, redis: RedisConn, timeout: Duration) {
    // What the last attempt found; `None` before the first.
    let mut last: Option<CacheTracking> = None;
    let mut refused_wait = REFUSED_RETRY_FIRST;
    loop {
        if cache.strong_count() == 0 {
            return;
        }
        let outcome = connect(&redis, &cache, timeout).await;
        let Some(strong) = cache.upgrade() else {
            return;
        };
        let wait = match outcome {
            Ok(conn) => {
                strong.tracking_up(conn.clone());
                drop(strong);
                match last {
                    None => log::info!(
                        "local session cache on: tracking confirmed (CLIENT TRACKING ON)"
                    ),
                    Some(CacheTracking::Refused) => log::info!(
                        "local session cache on: Redis accepts CLIENT TRACKING now; \
                         guarded requests are served from memory again"
                    ),
                    _ => log::info!("local session cache: tracking connection re-established"),
                }
                last = Some(CacheTracking::On);
                refused_wait = REFUSED_RETRY_FIRST;
                heartbeat(&cache, conn, timeout).await;
                let Some(strong) = cache.upgrade() else {
                    return;
                };
                strong.tracking_lost();
                RETRY
            }
            Err(Failure::Refused(e)) => {
                strong.tracking_unavailable(CacheTracking::Refused);
                drop(strong);
                if last != Some(CacheTracking::Refused) {
                    log::warn!(
                        "local session cache off: Redis refused CLIENT TRACKING ({e}); every \
                         guarded request is served from Redis. Asking again in {} s, then at \
                         most every {} s (allow `client|tracking` to the server's Redis user, \
                         or turn session.local_cache off)",
                        REFUSED_RETRY_FIRST.as_secs(),
                        REFUSED_RETRY_MAX.as_secs(),
                    );
                }
                last = Some(CacheTracking::Refused);
                let wait = refused_wait;
                refused_wait = (refused_wait * 2).min(REFUSED_RETRY_MAX);
                wait
            }
            Err(Failure::Unreachable(e)) => {
                strong.tracking_unavailable(CacheTracking::Down);
                drop(strong);
                if last != Some(CacheTracking::Down) {
                    log::warn!(
                        "local session cache: no tracking connection ({e}); serving from Redis \
                         until there is one"
                    );
                }
                last = Some(CacheTracking::Down);
                RETRY
            }
        };
        tokio::time::sleep(wait).await;
    }
}

async fn connect(
    redis: &RedisConn,
    cache: &Weak<LocalCache>,
    timeout: Duration,
) -> Result<MultiplexedConnection, Failure> {
    let weak = cache.clone();
    let on_push = move |push: PushInfo| -> Result<(), std::convert::Infallible> {
        if let Some(cache) = weak.upgrade() {
            cache.on_push(push);
        }
        Ok(())
    };
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_push_sender(on_push);
    let mut conn = redis
        .dedicated(config)
        .await
        .map_err(Failure::Unreachable)?;
    redis::cmd("CLIENT")
        .arg("TRACKING")
        .arg("ON")
        // Our own lazy TTL pushes go through this connection: NOLOOP keeps them
        // from invalidating our own entries (other instances still hear of them).
        .arg("NOLOOP")
        .query_async::<()>(&mut conn)
        .await
        .map_err(|e| {
            // An error reply is Redis's answer, which stays the same until its
            // settings change; anything else is the connection failing.
            if e.code().is_some() {
                Failure::Refused(e)
            } else {
                Failure::Unreachable(e)
            }
        })?;
    Ok(conn)
}

/// PINGs until one fails or is late; refreshes the entries gauge on the way.
async fn heartbeat(cache: &Weak<LocalCache>, mut conn: MultiplexedConnection, timeout: Duration) {
    let late = timeout.min(Duration::from_millis(ALIVE_WINDOW_MS));
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        match cache.upgrade() {
            Some(strong) => strong.report_size(),
            None => return,
        }
        let ping = redis::cmd("PING");
        match tokio::time::timeout(late, ping.query_async::<String>(&mut conn)).await {
            Ok(Ok(_)) => match cache.upgrade() {
                Some(strong) => strong.confirm_alive(),
                None => return,
            },
            _ => return,
        }
    }
}

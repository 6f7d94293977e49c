//! The local cache's tracking connection: a RESP3 connection with `CLIENT
//! TRACKING ON`, whose invalidation pushes keep the cache coherent. This module
//! keeps one up and proves it alive with a heartbeat `PING` every 250 ms; the
//! cache serves nothing from memory while it is down or late.

use std::{sync::Weak, time::Duration};

use redis::{aio::MultiplexedConnection, AsyncConnectionConfig, PushInfo};

use super::cache::{LocalCache, ALIVE_WINDOW_MS};
use crate::redis_conn::RedisConn;

const HEARTBEAT: Duration = Duration::from_millis(250);
const RETRY: Duration = Duration::from_millis(250);

/// Keeps a tracking connection up (a dedicated RESP3 connection to the node
/// `redis` writes to, made like every other) and proves it alive with a
/// heartbeat; ends when the cache is dropped.
pub(super) async fn supervise(cache: Weak<LocalCache>, redis: RedisConn, timeout: Duration) {
    let mut confirmed_once = false;
    loop {
        if cache.strong_count() == 0 {
            return;
        }
        match connect(&redis, &cache, timeout).await {
            Ok(conn) => {
                let Some(strong) = cache.upgrade() else {
                    return;
                };
                strong.tracking_up(conn.clone());
                drop(strong);
                if !confirmed_once {
                    log::info!("local session cache on: tracking confirmed (CLIENT TRACKING ON)");
                    confirmed_once = true;
                } else {
                    log::info!("local session cache: tracking connection re-established");
                }
                heartbeat(&cache, conn, timeout).await;
            }
            Err(e) => {
                log::warn!("local session cache: no tracking connection ({e}); serving from Redis");
            }
        }
        let Some(strong) = cache.upgrade() else {
            return;
        };
        strong.tracking_lost();
        drop(strong);
        tokio::time::sleep(RETRY).await;
    }
}

async fn connect(
    redis: &RedisConn,
    cache: &Weak<LocalCache>,
    timeout: Duration,
) -> Result<MultiplexedConnection, redis::RedisError> {
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
    let mut conn = redis.dedicated(config).await?;
    let () = redis::cmd("CLIENT")
        .arg("TRACKING")
        .arg("ON")
        // Our own lazy TTL pushes go through this connection: NOLOOP keeps them
        // from invalidating our own entries (other instances still hear of them).
        .arg("NOLOOP")
        .query_async(&mut conn)
        .await?;
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

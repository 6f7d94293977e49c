//! The fleet's clock: Unix seconds and milliseconds as Redis's clock tells them,
//! read in one place.
//!
//! Session lifetimes (`created_at`, the absolute deadline, `EXPIREAT`), the
//! shared access_token's `expires_at` and a login code's settle time are Unix
//! times that one instance writes to Redis and another compares with its own
//! "now". On host clocks alone, an instance 5 s ahead would end every session
//! 5 s before its absolute lifetime. So each process measures the offset of its
//! host clock from Redis's `TIME` (at start, then every `RESYNC`) and every
//! time here is the host clock plus that offset: one clock for the fleet, the one
//! Redis also expires keys by. Until the first measurement the offset is 0.

use std::{
    sync::atomic::{AtomicI64, Ordering::Relaxed},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crate::redis_conn::RedisConn;

/// How often the offset is measured again: clocks drift, and NTP steps them.
const RESYNC: Duration = Duration::from_secs(30);
/// After a failed measurement (Redis down), the next attempt.
const RETRY: Duration = Duration::from_secs(2);
/// A measurement whose round trip took longer says too little: the answer's
/// time could lie anywhere in it.
const MAX_ROUND_TRIP: Duration = Duration::from_millis(100);
/// An offset this large is worth a warning: the host is not running NTP.
const WARN_OFFSET_MS: i64 = 1000;

/// Redis's clock minus this host's, in milliseconds.
static OFFSET_MS: AtomicI64 = AtomicI64::new(0);

fn host_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Milliseconds since the Unix epoch by Redis's clock (0 for a clock set before it).
pub fn unix_millis() -> u64 {
    (host_millis() + OFFSET_MS.load(Relaxed)).max(0) as u64
}

/// Whole seconds since the Unix epoch by Redis's clock, floored.
pub fn unix_secs() -> u64 {
    unix_millis() / 1000
}

/// Redis's clock minus this host's, as last measured (milliseconds).
pub fn offset_ms() -> i64 {
    OFFSET_MS.load(Relaxed)
}

/// Measures the offset once: `TIME`, compared with the midpoint of the round trip.
async fn measure(redis: &RedisConn, timeout: Duration) -> Result<i64, String> {
    let sent = Instant::now();
    let before = host_millis();
    let (command, mut conn) = (redis::cmd("TIME"), redis.for_this_thread());
    let time = command.query_async(&mut conn);
    let (secs, micros): (i64, i64) = tokio::time::timeout(timeout, time)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
        .map_err(|e| e.to_string())?;
    let round_trip = sent.elapsed();
    if round_trip > MAX_ROUND_TRIP {
        return Err(format!("TIME took {round_trip:?}"));
    }
    let midpoint = before + (round_trip.as_millis() as i64) / 2;
    Ok(secs * 1000 + micros / 1000 - midpoint)
}

/// Keeps the offset measured while the returned guard is held. Must be called
/// inside a Tokio runtime.
pub(crate) fn follow(redis: RedisConn, timeout: Duration) -> Following {
    let task = tokio::spawn(async move {
        loop {
            match measure(&redis, timeout).await {
                Ok(offset) => {
                    let previous = OFFSET_MS.swap(offset, Relaxed);
                    if offset.abs() >= WARN_OFFSET_MS && (offset - previous).abs() >= 500 {
                        log::warn!(
                            "this host's clock is {:.1} s {} Redis's; session times follow \
                             Redis's clock (keep NTP running on every host)",
                            offset.abs() as f64 / 1000.0,
                            if offset < 0 { "ahead of" } else { "behind" },
                        );
                    }
                    tokio::time::sleep(RESYNC).await;
                }
                Err(e) => {
                    log::debug!("clock offset not measured: {e}");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    });
    Following(task.abort_handle())
}

/// While held, the offset is kept measured.
pub(crate) struct Following(tokio::task::AbortHandle);

impl Drop for Following {
    fn drop(&mut self) {
        self.0.abort();
    }
}

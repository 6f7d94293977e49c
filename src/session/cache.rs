//! `LocalCache`: sessions served from this instance's memory, kept coherent by
//! Redis server-assisted client-side caching (`session.local_cache = true`).
//!
//! - A dedicated RESP3 connection runs `CLIENT TRACKING ON`; every session read
//!   for the cache goes through it (`GET` + `PTTL`: read-only, so Redis tracks
//!   them — it does not track keys read by `GETEX`).
//! - Redis then pushes `invalidate` for any change to those keys by anyone
//!   (logout, admin or CLI revoke, `redis-cli DEL`, expiry, another instance's
//!   lazy TTL push — ours go through the tracking connection itself, with
//!   `NOLOOP`); a null payload (`FLUSHDB`/`FLUSHALL`) or a lost connection clears
//!   everything. Pushes are handled inline in the connection's driver, in order.
//! - The read/invalidate race: a key is marked pending (with a ticket) before
//!   its read, an invalidation clears the mark, and the answer is inserted only
//!   if the mark is still ours and no full flush happened meanwhile — all under
//!   one lock with the invalidation handler. redis-rs's own `cache-aio` is not
//!   used because (reading its 1.6 source) it inserts an answer after the driver
//!   may already have handled that key's invalidation, the race lettuce fixed
//!   in #3769.
//! - Fail closed: a heartbeat `PING` every 250 ms; if the tracking connection
//!   has not answered within 750 ms, or has dropped, nothing is served from
//!   memory (requests go to Redis, which answers or fails as without the cache).
//! - Lifetimes: each entry carries its idle and absolute deadlines and is never
//!   served past them; the idle lifetime is pushed to Redis at most once per
//!   `touch_interval_secs`, so an idle session lives between
//!   `ttl − touch_interval` and `ttl` after its last request.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex, Weak,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use redis::{
    aio::MultiplexedConnection, AsyncConnectionConfig, IntoConnectionInfo, ProtocolVersion,
    PushInfo, PushKind, Value,
};

use super::StoredSession;
use crate::telemetry::Metrics;

const HEARTBEAT: Duration = Duration::from_millis(250);
const ALIVE_WINDOW_MS: u64 = 750;
const RETRY: Duration = Duration::from_millis(250);

/// Where a session sits in the cache: the first 128 bits of its handle (the id
/// itself, or its SHA-256), which is all the key a 16-byte id needs and keeps
/// each entry small.
pub(super) fn slot(handle: &str) -> u128 {
    handle
        .get(..32)
        .and_then(|hex| u128::from_str_radix(hex, 16).ok())
        .unwrap_or(0)
}

/// One cached session and its deadlines (unix milliseconds).
pub(super) struct CachedSession {
    pub stored: Arc<StoredSession>,
    pub idle_deadline_ms: AtomicU64,
    pub absolute_deadline_ms: u64,
    pub pushed_at_ms: AtomicU64,
}

/// A read in flight for the cache: insert its answer only if still current.
pub(super) struct Ticket {
    slot: u128,
    ticket: u64,
    epoch: u64,
}

pub(super) struct LocalCache {
    entries: moka::sync::Cache<u128, Arc<CachedSession>>,
    pending: Mutex<HashMap<u128, u64>>,
    next_ticket: AtomicU64,
    /// Bumped by every full flush.
    epoch: AtomicU64,
    tracking: Mutex<Option<MultiplexedConnection>>,
    last_ok_ms: AtomicU64,
    session_prefix: String,
    pub touch_interval_ms: u64,
    metrics: Arc<Metrics>,
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl LocalCache {
    /// Starts the cache and its tracking connection's supervisor (a Tokio task).
    pub fn start(
        redis_url: &str,
        session_prefix: String,
        capacity: u64,
        touch_interval_ms: u64,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<LocalCache>, redis::RedisError> {
        let info = redis_url.into_connection_info()?;
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(resp3))?;
        let cache = Arc::new(LocalCache {
            entries: moka::sync::Cache::new(capacity),
            pending: Mutex::new(HashMap::new()),
            next_ticket: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            tracking: Mutex::new(None),
            last_ok_ms: AtomicU64::new(0),
            session_prefix,
            touch_interval_ms,
            metrics,
        });
        tokio::spawn(supervise(Arc::downgrade(&cache), client, timeout));
        Ok(cache)
    }

    /// Whether the tracking connection has shown it is alive: only then may
    /// anything be served from memory.
    /// Lock-free: the supervisor zeroes `last_ok_ms` whenever the connection goes.
    pub fn alive(&self) -> bool {
        now_ms().saturating_sub(self.last_ok_ms.load(Relaxed)) < ALIVE_WINDOW_MS
    }

    pub fn get(&self, slot: u128) -> Option<Arc<CachedSession>> {
        let entry = self.entries.get(&slot);
        self.metrics
            .cache_lookups
            .inc(if entry.is_some() { "hit" } else { "miss" });
        entry
    }

    pub fn remove(&self, slot: u128) {
        let _pending = self.pending.lock().expect("pending lock");
        self.entries.invalidate(&slot);
    }

    /// The connection to read and touch through (the tracking one), and a
    /// ticket for the answer; `None` when the tracking connection is not up.
    pub fn tracking_connection(&self) -> Option<MultiplexedConnection> {
        self.tracking.lock().expect("tracking lock").clone()
    }

    pub fn begin_read(&self, slot: u128) -> Option<(MultiplexedConnection, Ticket)> {
        let conn = self.tracking.lock().expect("tracking lock").clone()?;
        let ticket = self.next_ticket.fetch_add(1, Relaxed);
        let epoch = self.epoch.load(Relaxed);
        self.pending
            .lock()
            .expect("pending lock")
            .insert(slot, ticket);
        Some((
            conn,
            Ticket {
                slot,
                ticket,
                epoch,
            },
        ))
    }

    /// Inserts a read's answer unless an invalidation (of this key, or of
    /// everything) arrived since [`LocalCache::begin_read`].
    pub fn finish_read(&self, ticket: Ticket, entry: Option<Arc<CachedSession>>) {
        let mut pending = self.pending.lock().expect("pending lock");
        let current = pending.get(&ticket.slot) == Some(&ticket.ticket)
            && self.epoch.load(Relaxed) == ticket.epoch;
        if current {
            pending.remove(&ticket.slot);
            if let Some(entry) = entry {
                self.entries.insert(ticket.slot, entry);
            }
        }
    }

    fn invalidate(&self, slot: u128) {
        let mut pending = self.pending.lock().expect("pending lock");
        pending.remove(&slot);
        self.entries.invalidate(&slot);
        self.metrics.cache_invalidations.inc("key");
    }

    fn flush(&self, why: &str) {
        let mut pending = self.pending.lock().expect("pending lock");
        pending.clear();
        self.epoch.fetch_add(1, Relaxed);
        self.entries.invalidate_all();
        self.metrics.cache_invalidations.inc("flush");
        log::debug!("local session cache flushed: {why}");
    }

    /// Runs inside the tracking connection's driver, in arrival order.
    fn on_push(&self, push: PushInfo) {
        match push.kind {
            PushKind::Invalidate => match push.data.first() {
                Some(Value::Array(keys)) => {
                    for key in keys {
                        if let Value::BulkString(key) = key {
                            if let Some(handle) = std::str::from_utf8(key)
                                .ok()
                                .and_then(|k| k.strip_prefix(&self.session_prefix))
                            {
                                self.invalidate(slot(handle));
                            }
                        }
                    }
                }
                _ => self.flush("FLUSHDB/FLUSHALL"),
            },
            PushKind::Disconnection => {
                self.last_ok_ms.store(0, Relaxed);
                self.flush("tracking connection lost");
            }
            _ => {}
        }
    }

    fn entry_count(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }
}

/// Keeps a tracking connection up and proves it alive with a heartbeat;
/// ends when the cache is dropped.
async fn supervise(cache: Weak<LocalCache>, client: redis::Client, timeout: Duration) {
    let mut confirmed_once = false;
    loop {
        let Some(strong) = cache.upgrade() else {
            return;
        };
        match connect_tracking(&client, &cache, timeout).await {
            Ok(conn) => {
                *strong.tracking.lock().expect("tracking lock") = Some(conn.clone());
                strong.last_ok_ms.store(now_ms(), Relaxed);
                if !confirmed_once {
                    log::info!("local session cache on: tracking confirmed (CLIENT TRACKING ON)");
                    confirmed_once = true;
                } else {
                    log::info!("local session cache: tracking connection re-established");
                }
                drop(strong);
                heartbeat(&cache, conn, timeout).await;
            }
            Err(e) => {
                log::warn!("local session cache: no tracking connection ({e}); serving from Redis");
                drop(strong);
            }
        }
        let Some(strong) = cache.upgrade() else {
            return;
        };
        strong.last_ok_ms.store(0, Relaxed);
        *strong.tracking.lock().expect("tracking lock") = None;
        strong.flush("tracking connection lost");
        drop(strong);
        tokio::time::sleep(RETRY).await;
    }
}

async fn connect_tracking(
    client: &redis::Client,
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
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
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
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        let Some(strong) = cache.upgrade() else {
            return;
        };
        strong
            .metrics
            .cache_entries
            .store(strong.entry_count(), Relaxed);
        drop(strong);
        let ping = redis::cmd("PING");
        let late = timeout.min(Duration::from_millis(ALIVE_WINDOW_MS));
        match tokio::time::timeout(late, ping.query_async::<String>(&mut conn)).await {
            Ok(Ok(_)) => match cache.upgrade() {
                Some(strong) => strong.last_ok_ms.store(now_ms(), Relaxed),
                None => return,
            },
            _ => return,
        }
    }
}

//! The local cache (`session.local_cache = true`): sessions held in this
//! instance's memory ([`LocalCache`]), kept coherent by Redis server-assisted
//! client-side caching. The guard reads through it with `CachedReader`.
//!
//! - A dedicated RESP3 connection runs `CLIENT TRACKING ON` (kept up by
//!   `tracking`); every session read for the cache goes through it, as a
//!   script that has Redis track the key only if it exists (`GETEX`, which
//!   Redis does not track, then `PTTL`, which it does): an unknown id never
//!   enters Redis's tracking table.
//! - Redis then pushes `invalidate` for any change to those keys by anyone
//!   (logout, admin or CLI revoke, `redis-cli DEL`, expiry, another instance's
//!   lazy TTL push — ours go through the tracking connection itself, with
//!   `NOLOOP`); a null payload (`FLUSHDB`/`FLUSHALL`) or a lost connection clears
//!   everything. Pushes are handled inline in the connection's driver, in order.
//! - The read/invalidate race: a key is marked pending (with a ticket) before
//!   its read, an invalidation clears the mark, and the answer is inserted only
//!   if the mark is still ours and no full flush happened meanwhile — all under
//!   one lock with the invalidation handler. A logout on this instance clears
//!   the entry and its mark itself, before and after its `GETDEL`, so a read
//!   racing it cannot put the session back while Redis's invalidation is on
//!   its way. redis-rs's own `cache-aio` is not used because (reading its 1.6
//!   source) it inserts an answer after the driver may already have handled
//!   that key's invalidation, a race lettuce also had to fix.
//! - Fail closed: if the tracking connection has not shown it is alive lately,
//!   or has dropped, nothing is served from memory (requests go to Redis, which
//!   answers or fails as without the cache).
//! - Lifetimes: each entry carries its idle and absolute deadlines and is never
//!   served past them; the idle lifetime is pushed to Redis at most once per
//!   `touch_interval_secs`, so an idle session lives between
//!   `ttl − touch_interval` and `ttl` after its last request.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use redis::{aio::MultiplexedConnection, PushInfo, PushKind, Value};

use super::layout::SessionData;
use crate::telemetry::{CacheTracking, Metrics};

/// How long after its last sign of life the tracking connection still counts
/// as alive.
pub(super) const ALIVE_WINDOW_MS: u64 = 750;

/// Where a session sits in the cache: the first 128 bits of its stored id (the
/// id itself, or its SHA-256), which is all the key a 16-byte id needs, keeps
/// each entry small and lets a lookup allocate nothing.
pub(super) fn cache_key(stored_id: &str) -> u128 {
    stored_id
        .get(..32)
        .and_then(|hex| u128::from_str_radix(hex, 16).ok())
        .unwrap_or(0)
}

/// One cached session and its deadlines (unix milliseconds).
pub(super) struct CachedSession {
    pub(super) stored: Arc<SessionData>,
    pub(super) idle_deadline_ms: AtomicU64,
    pub(super) absolute_deadline_ms: u64,
    pub(super) pushed_at_ms: AtomicU64,
}

/// A read in flight for the cache: insert its answer only if still current.
pub(super) struct Ticket {
    key: u128,
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
    /// Until when (milliseconds since `started`, a monotonic clock: the fleet's
    /// clock may be corrected by seconds) the last heartbeat vouches for the
    /// tracking connection; 0 while it is down.
    alive_until_ms: AtomicU64,
    started: Instant,
    session_prefix: String,
    pub(super) touch_interval_ms: u64,
    metrics: Arc<Metrics>,
}

impl LocalCache {
    /// An empty cache; nothing is served from it until [`LocalCache::tracking_up`].
    pub(super) fn new(
        capacity: u64,
        session_prefix: String,
        touch_interval: Duration,
        metrics: Arc<Metrics>,
    ) -> LocalCache {
        metrics.set_cache_tracking(CacheTracking::Down);
        LocalCache {
            entries: moka::sync::Cache::new(capacity),
            pending: Mutex::new(HashMap::new()),
            next_ticket: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            tracking: Mutex::new(None),
            alive_until_ms: AtomicU64::new(0),
            started: Instant::now(),
            session_prefix,
            touch_interval_ms: touch_interval.as_millis() as u64,
            metrics,
        }
    }

    /// Whether the tracking connection has shown it is alive: only then may
    /// anything be served from memory.
    /// Lock-free: `tracking` zeroes `alive_until_ms` whenever the connection goes.
    pub(super) fn alive(&self) -> bool {
        self.elapsed_ms() < self.alive_until_ms.load(Relaxed)
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub(super) fn get(&self, key: u128) -> Option<Arc<CachedSession>> {
        let entry = self.entries.get(&key);
        self.metrics
            .cache_lookups
            .inc(if entry.is_some() { "hit" } else { "miss" });
        entry
    }

    pub(super) fn remove(&self, key: u128) {
        let _pending = self.pending.lock().expect("pending lock");
        self.entries.invalidate(&key);
    }

    /// The connection to read and touch through (the tracking one); `None`
    /// when it is not up.
    pub(super) fn tracking_connection(&self) -> Option<MultiplexedConnection> {
        self.tracking.lock().expect("tracking lock").clone()
    }

    /// The tracking connection and a ticket for the answer of a read through it.
    pub(super) fn begin_read(&self, key: u128) -> Option<(MultiplexedConnection, Ticket)> {
        let conn = self.tracking_connection()?;
        let ticket = self.next_ticket.fetch_add(1, Relaxed);
        let epoch = self.epoch.load(Relaxed);
        self.pending
            .lock()
            .expect("pending lock")
            .insert(key, ticket);
        Some((conn, Ticket { key, ticket, epoch }))
    }

    /// Inserts a read's answer unless an invalidation (of this key, or of
    /// everything) arrived since [`LocalCache::begin_read`].
    pub(super) fn finish_read(&self, ticket: Ticket, entry: Option<Arc<CachedSession>>) {
        let mut pending = self.pending.lock().expect("pending lock");
        let current = pending.get(&ticket.key) == Some(&ticket.ticket)
            && self.epoch.load(Relaxed) == ticket.epoch;
        if current {
            pending.remove(&ticket.key);
            if let Some(entry) = entry {
                self.entries.insert(ticket.key, entry);
            }
        }
    }

    /// Drops a session this instance is ending, and any read of it in flight:
    /// whatever such a read answers is not inserted.
    pub(super) fn forget(&self, key: u128) {
        let mut pending = self.pending.lock().expect("pending lock");
        pending.remove(&key);
        self.entries.invalidate(&key);
    }

    fn invalidate(&self, key: u128) {
        self.forget(key);
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

    /// A new tracking connection is up and answering.
    pub(super) fn tracking_up(&self, conn: MultiplexedConnection) {
        *self.tracking.lock().expect("tracking lock") = Some(conn);
        self.confirm_alive();
        self.metrics.set_cache_tracking(CacheTracking::On);
    }

    /// No tracking connection could be made (`Down`), or Redis refused
    /// `CLIENT TRACKING` on one (`Refused`). Nothing is in memory to forget:
    /// the last connection's loss flushed it, and no read began since.
    pub(super) fn tracking_unavailable(&self, why: CacheTracking) {
        self.metrics.set_cache_tracking(why);
    }

    /// The tracking connection answered a heartbeat.
    pub(super) fn confirm_alive(&self) {
        self.alive_until_ms
            .store(self.elapsed_ms() + ALIVE_WINDOW_MS, Relaxed);
    }

    /// The tracking connection is gone: serve nothing from memory until a new
    /// one is up, and forget everything (invalidations may have been missed).
    pub(super) fn tracking_lost(&self) {
        self.alive_until_ms.store(0, Relaxed);
        *self.tracking.lock().expect("tracking lock") = None;
        self.flush("tracking connection lost");
        self.metrics.set_cache_tracking(CacheTracking::Down);
    }

    /// Runs inside the tracking connection's driver, in arrival order.
    pub(super) fn on_push(&self, push: PushInfo) {
        match push.kind {
            PushKind::Invalidate => match push.data.first() {
                Some(Value::Array(keys)) => {
                    for key in keys {
                        if let Value::BulkString(key) = key {
                            if let Some(stored_id) = std::str::from_utf8(key)
                                .ok()
                                .and_then(|k| k.strip_prefix(&self.session_prefix))
                            {
                                self.invalidate(cache_key(stored_id));
                            }
                        }
                    }
                }
                _ => self.flush("FLUSHDB/FLUSHALL"),
            },
            PushKind::Disconnection => {
                self.alive_until_ms.store(0, Relaxed);
                self.flush("tracking connection lost");
            }
            _ => {}
        }
    }

    /// Refreshes the entries gauge on `/metrics`.
    pub(super) fn report_size(&self) {
        self.entries.run_pending_tasks();
        self.metrics
            .cache_entries
            .store(self.entries.entry_count(), Relaxed);
    }
}

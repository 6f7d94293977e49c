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
//! - Memory: an entry is one 48-byte slot of a hash table (its key, its
//!   deadlines and the `Arc<SessionData>` handlers share, itself 96 bytes and
//!   the session's JSON), in one of 16 shards; a lookup takes its shard's
//!   read lock and allocates nothing. About 320 bytes per session: 100,000
//!   take 47 MiB of RSS with the server's own (`scripts/cache-rss.sh`, README,
//!   Performance); moka, used before, took 66. When full, the shard an insert
//!   lands in makes room CLOCK-style (see `Entries::insert`).

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hash, Hasher},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed},
        Arc, Mutex, RwLock,
    },
    time::{Duration, Instant},
};

use redis::{aio::MultiplexedConnection, PushInfo, PushKind, Value};

use super::layout::SessionData;
use crate::{
    clock,
    telemetry::{CacheTracking, Metrics},
};

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

/// One cached session and its deadlines (unix milliseconds). Its absolute
/// deadline is the session's own (`created_at` + `max_lifetime_secs`), which
/// the idle one never passes; so a slot is 48 bytes with its key.
pub(super) struct CachedSession {
    pub(super) stored: Arc<SessionData>,
    /// Never past the absolute deadline.
    pub(super) idle_deadline_ms: AtomicU64,
    pub(super) pushed_at_ms: AtomicU64,
    /// Found by a lookup since its shard's last sweep (see [`Entries::insert`]).
    used: AtomicBool,
}

impl CachedSession {
    /// `idle_deadline_ms` no later than the session's absolute deadline.
    pub(super) fn new(
        stored: Arc<SessionData>,
        idle_deadline_ms: u64,
        pushed_at_ms: u64,
    ) -> CachedSession {
        CachedSession {
            stored,
            idle_deadline_ms: idle_deadline_ms.into(),
            pushed_at_ms: pushed_at_ms.into(),
            // Not found by a lookup yet: a session read once and never again
            // is among the first to go when the cache is full.
            used: AtomicBool::new(false),
        }
    }

    /// Whether it may still be served at `now`.
    fn live_at(&self, now: u64) -> bool {
        now < self.idle_deadline_ms.load(Relaxed)
    }
}

/// Hashes a cache key by taking its low 64 bits. Keys are the leading bits of
/// random ids (or of their SHA-256) and only sessions Redis vouched for are
/// inserted, so they are uniform already; SipHash would only cost time.
#[derive(Default)]
struct KeyBits(u64);

impl Hasher for KeyBits {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, low_bits: u64) {
        self.0 = low_bits;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A cache key as a table holds it: a `u128` in two `u64`s, aligned to 8
/// bytes (a `u128`'s 16 would pad every slot to 64).
#[derive(Clone, Copy, PartialEq, Eq)]
struct SlotKey([u64; 2]);

impl From<u128> for SlotKey {
    fn from(key: u128) -> SlotKey {
        SlotKey([key as u64, (key >> 64) as u64])
    }
}

impl Hash for SlotKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0[0]);
    }
}

type Shard = HashMap<SlotKey, CachedSession, BuildHasherDefault<KeyBits>>;

/// One shard on cache lines of its own: the workers lock different shards
/// without taking a line from each other.
#[repr(align(128))]
struct Padded(RwLock<Shard>);

/// The sessions held: a hash table in shards chosen by the key's high bits.
struct Entries {
    shards: Box<[Padded]>,
    capacity: usize,
    /// Sessions in all shards; changed under the lock of the shard changed.
    len: AtomicUsize,
}

/// Shards of a large cache: a lookup locks one for reading, an insert or an
/// invalidation one for writing.
const SHARDS: usize = 16;
/// Below this capacity, one shard: the cache may be full while the shard an
/// insert lands in has nothing to give up.
const SHARDED_FROM: usize = 1024;

impl Entries {
    /// At most `capacity` sessions.
    fn new(capacity: u64) -> Entries {
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX).max(1);
        let shards = if capacity >= SHARDED_FROM { SHARDS } else { 1 };
        Entries {
            shards: (0..shards)
                .map(|_| Padded(RwLock::new(Shard::default())))
                .collect(),
            capacity,
            len: AtomicUsize::new(0),
        }
    }

    fn shard(&self, key: u128) -> &RwLock<Shard> {
        // The high bits: the table itself hashes by the low ones.
        &self.shards[(key >> 64) as usize % self.shards.len()].0
    }

    /// Runs `f` on the entry under the shard's read lock, and marks it used.
    fn read<R>(&self, key: u128, f: impl FnOnce(&CachedSession) -> R) -> Option<R> {
        let shard = self.shard(key).read().expect("cache shard lock");
        let entry = shard.get(&SlotKey::from(key))?;
        if !entry.used.load(Relaxed) {
            entry.used.store(true, Relaxed);
        }
        Some(f(entry))
    }

    /// Inserts or replaces. When the cache is full, the shard the key lands
    /// in makes room first: it drops what can no longer be served and what no
    /// lookup found since its last sweep (clearing the mark of the rest,
    /// CLOCK's second chance), and if that freed less than an eighth of it,
    /// entries in table order up to an eighth. So a sweep, which visits the
    /// shard once, comes at most every eighth of a shard's inserts: a few
    /// steps per insert, on the miss path only. A shard with nothing to give
    /// up (the cache is full of other shards' sessions) caches nothing.
    /// Callers insert one at a time (`LocalCache` holds `pending`), so the
    /// capacity holds exactly.
    fn insert(&self, key: u128, entry: CachedSession) {
        let mut shard = self.shard(key).write().expect("cache shard lock");
        let key = SlotKey::from(key);
        if self.len.load(Relaxed) >= self.capacity && !shard.contains_key(&key) {
            let before = shard.len();
            let now = clock::unix_millis();
            shard.retain(|_, e| e.live_at(now) && e.used.swap(false, Relaxed));
            let mut excess = shard.len().saturating_sub(before - before.div_ceil(8));
            if excess > 0 {
                shard.retain(|_, _| {
                    if excess == 0 {
                        return true;
                    }
                    excess -= 1;
                    false
                });
            }
            self.len.fetch_sub(before - shard.len(), Relaxed);
            if shard.is_empty() && self.len.load(Relaxed) >= self.capacity {
                return;
            }
        }
        if shard.insert(key, entry).is_none() {
            self.len.fetch_add(1, Relaxed);
        }
    }

    fn remove(&self, key: u128) {
        let mut shard = self.shard(key).write().expect("cache shard lock");
        if shard.remove(&SlotKey::from(key)).is_some() {
            self.len.fetch_sub(1, Relaxed);
        }
    }

    fn clear(&self) {
        for shard in &self.shards {
            let mut shard = shard.0.write().expect("cache shard lock");
            self.len.fetch_sub(shard.len(), Relaxed);
            shard.clear();
        }
    }

    fn len(&self) -> usize {
        self.len.load(Relaxed)
    }
}

/// A read in flight for the cache: insert its answer only if still current.
pub(super) struct Ticket {
    key: u128,
    ticket: u64,
    epoch: u64,
}

pub(super) struct LocalCache {
    entries: Entries,
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
            entries: Entries::new(capacity),
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

    /// Runs `f` on the session cached under `key`, if any, under its shard's
    /// read lock (keep `f` short; it must not wait on anything).
    pub(super) fn read<R>(&self, key: u128, f: impl FnOnce(&CachedSession) -> R) -> Option<R> {
        let found = self.entries.read(key, f);
        self.metrics
            .cache_lookups
            .inc(if found.is_some() { "hit" } else { "miss" });
        found
    }

    pub(super) fn remove(&self, key: u128) {
        let _pending = self.pending.lock().expect("pending lock");
        self.entries.remove(key);
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
    pub(super) fn finish_read(&self, ticket: Ticket, entry: Option<CachedSession>) {
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
        self.entries.remove(key);
    }

    fn invalidate(&self, key: u128) {
        self.forget(key);
        self.metrics.cache_invalidations.inc("key");
    }

    fn flush(&self, why: &str) {
        let mut pending = self.pending.lock().expect("pending lock");
        pending.clear();
        self.epoch.fetch_add(1, Relaxed);
        self.entries.clear();
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
        self.metrics
            .cache_entries
            .store(self.entries.len() as u64, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::super::layout::{AppIndex, StoredSession};
    use super::*;

    fn session(idle_deadline_ms: u64) -> CachedSession {
        let stored = SessionData::of(
            &StoredSession {
                openid: "o".into(),
                unionid: None,
                created_at: 0,
                device: None,
                appid: None,
                corpid: None,
                elevated_until: None,
                profile: None,
            },
            &AppIndex::for_tests(),
        );
        CachedSession::new(Arc::new(stored), idle_deadline_ms, 0)
    }

    #[test]
    fn a_slot_is_48_bytes() {
        // The memory budget of 100,000 sessions counts on it (README, Performance).
        assert!(std::mem::size_of::<(SlotKey, CachedSession)>() <= 48);
    }

    /// Distinct keys spread over all 128 bits, as random ids are.
    fn key(i: u64) -> u128 {
        u128::from(i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
    }

    /// A lookup, as the guard's: marks the entry found.
    fn find(entries: &Entries, i: u64) -> bool {
        entries.read(key(i), |_| ()).is_some()
    }

    /// Whether the entry is held, without marking it.
    fn held(entries: &Entries, i: u64) -> bool {
        let shard = entries.shard(key(i)).read().unwrap();
        shard.contains_key(&SlotKey::from(key(i)))
    }

    #[test]
    fn never_holds_more_than_its_capacity() {
        for capacity in [1, 7, 1000, 1024, 5000] {
            let entries = Entries::new(capacity);
            for i in 0..3 * capacity {
                entries.insert(key(i), session(u64::MAX));
                assert!(entries.len() as u64 <= capacity, "capacity {capacity}");
            }
            if capacity >= SHARDED_FROM as u64 {
                // A sweep empties at most the one shard it runs in.
                assert!(
                    entries.len() as u64 >= capacity * 7 / 8,
                    "capacity {capacity}"
                );
            }
            assert!(held(&entries, 3 * capacity - 1), "the last insert is kept");
        }
    }

    #[test]
    fn a_full_cache_keeps_what_was_found_since_its_last_sweep() {
        let entries = Entries::new(8);
        for i in 0..8 {
            entries.insert(key(i), session(u64::MAX));
        }
        for i in 0..4 {
            assert!(find(&entries, i));
        }
        entries.insert(key(8), session(u64::MAX));
        assert!((0..4).all(|i| held(&entries, i)), "found since");
        assert!((4..8).all(|i| !held(&entries, i)), "not found since");
        assert!(held(&entries, 8));
        // The sweep cleared the marks: only what is found again stays.
        for i in [0, 1, 8] {
            assert!(find(&entries, i));
        }
        for i in 9..12 {
            entries.insert(key(i), session(u64::MAX));
        }
        assert_eq!(entries.len(), 8);
        entries.insert(key(12), session(u64::MAX));
        assert!([0, 1, 8, 12].iter().all(|&i| held(&entries, i)));
        assert!([2, 3, 9, 10, 11].iter().all(|&i| !held(&entries, i)));
    }

    #[test]
    fn a_full_cache_drops_what_can_no_longer_be_served_first() {
        let entries = Entries::new(4);
        entries.insert(key(0), session(0));
        for i in 1..4 {
            entries.insert(key(i), session(u64::MAX));
        }
        for i in 0..4 {
            assert!(find(&entries, i));
        }
        entries.insert(key(4), session(u64::MAX));
        assert!(!held(&entries, 0), "past its idle deadline, found or not");
        assert!((1..5).all(|i| held(&entries, i)));
    }
}

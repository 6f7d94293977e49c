//! `CachedReader`: the guard's read with the local cache on — from memory while
//! an entry is within its deadlines (see `cache`), else one read through the
//! tracking connection, or straight from Redis while that connection is down.

use std::{
    sync::{atomic::Ordering::Relaxed, Arc},
    time::Duration,
};

use redis::aio::MultiplexedConnection;

use super::{
    cache::{cache_key, CachedSession, LocalCache},
    layout::{tombstone, SessionData},
    reader::RedisReader,
    tracking, EndReason, Lookup, Session, SessionId, StoreError,
};
use crate::{clock, telemetry::Metrics};

/// The guard's read with the local cache on: from memory while the entry is
/// within its deadlines, else one read through the tracking connection; from
/// Redis alone (as without the cache) while the tracking connection is down.
#[derive(Clone)]
pub(super) struct CachedReader {
    cache: Arc<LocalCache>,
    redis: RedisReader,
}

impl CachedReader {
    /// Starts the cache and its tracking connection (a Tokio task); must be
    /// called inside a Tokio runtime.
    pub(super) fn start(
        redis: RedisReader,
        capacity: u64,
        touch_interval: Duration,
        metrics: Arc<Metrics>,
    ) -> CachedReader {
        let cache = Arc::new(LocalCache::new(
            capacity,
            redis.backend.keys.session(""),
            touch_interval,
            metrics,
        ));
        tokio::spawn(tracking::supervise(
            Arc::downgrade(&cache),
            redis.backend.shared(),
            redis.backend.timeout(),
        ));
        CachedReader { cache, redis }
    }

    pub(super) fn forget(&self, stored_id: &str) {
        self.cache.forget(cache_key(stored_id));
    }

    pub(super) async fn touch(&self, id: &SessionId) -> Result<Lookup, StoreError> {
        // The paths that wait for Redis are boxed: inline, their futures would
        // make this one (and the guard's, which holds it) a few times larger,
        // copied whole on every request.
        if !self.cache.alive() {
            return Box::pin(self.redis.touch(id)).await;
        }
        // Not bounded as a whole: a hit does no I/O, and a timer per request
        // showed in profiles. Each Redis call below is bounded.
        let keys = &self.redis.backend.keys;
        let policy = &self.redis.policy;
        let stored_id = keys.stored_id(id);
        let key = cache_key(&stored_id);
        let now = clock::unix_millis();
        let ttl_ms = policy.ttl_secs * 1000;
        let served = self.cache.read(key, |entry| {
            let idle = entry.idle_deadline_ms.load(Relaxed);
            if now >= idle {
                return None;
            }
            let mut hit = Hit {
                stored: entry.stored.clone(),
                expires_at: idle,
                push_due: false,
            };
            if policy.sliding {
                let absolute = entry.stored.absolute_deadline(policy.max_lifetime_secs) * 1000;
                hit.expires_at = (now + ttl_ms).min(absolute);
                entry.idle_deadline_ms.fetch_max(hit.expires_at, Relaxed);
                let pushed = entry.pushed_at_ms.load(Relaxed);
                hit.push_due = now.saturating_sub(pushed) >= self.cache.touch_interval_ms;
                if hit.push_due {
                    entry.pushed_at_ms.store(now, Relaxed);
                }
            }
            Some(hit)
        });
        match served {
            Some(Some(hit)) => {
                if hit.push_due && !Box::pin(self.push(&stored_id, hit.expires_at)).await? {
                    self.cache.remove(key);
                    return Ok(Lookup::Unknown);
                }
                return Ok(Lookup::Live(session_of(
                    id,
                    hit.stored,
                    (hit.expires_at - now) / 1000,
                )));
            }
            // Past a deadline: never served, and no longer kept.
            Some(None) => self.cache.remove(key),
            None => {}
        }
        Box::pin(self.read_through(id, &stored_id, key, now)).await
    }

    /// Pushes a cached session's idle deadline to Redis (due once per touch
    /// interval). `false`: the key is gone from Redis.
    async fn push(&self, stored_id: &str, deadline_ms: u64) -> Result<bool, StoreError> {
        let Some(mut tracking) = self.cache.tracking_connection() else {
            return Ok(true);
        };
        let key = self.redis.backend.keys.session(stored_id);
        let found = self
            .redis
            .backend
            .bounded(read_tracked(&mut tracking, &key, Some(deadline_ms)))
            .await?;
        Ok(found.is_some())
    }

    /// A miss: one read through the tracking connection, inserted under a
    /// ticket so that an invalidation racing with it wins.
    async fn read_through(
        &self,
        id: &SessionId,
        stored_id: &str,
        key: u128,
        now: u64,
    ) -> Result<Lookup, StoreError> {
        let Some((mut tracking, ticket)) = self.cache.begin_read(key) else {
            // The tracking connection went down after `touch` found it alive:
            // read from Redis as while it is down. `None` here would be a 401
            // for a live session, and the client would drop a good id.
            return self.redis.touch(id).await;
        };
        let entry = match self.read_entry(&mut tracking, stored_id, now).await {
            Ok(entry) => entry,
            Err(e) => {
                // Leaves no pending mark behind.
                self.cache.finish_read(ticket, None);
                return Err(e);
            }
        };
        let (lookup, entry) = match entry {
            Entry::Live(entry) => {
                let idle = entry.idle_deadline_ms.load(Relaxed);
                let session = session_of(id, entry.stored.clone(), (idle - now) / 1000);
                (Lookup::Live(session), Some(entry))
            }
            // A tombstone is not cached: its client stops asking.
            Entry::Ended(reason) => (Lookup::Ended(reason), None),
            Entry::Gone => (Lookup::Unknown, None),
        };
        self.cache.finish_read(ticket, entry);
        Ok(lookup)
    }

    /// A session as Redis holds it, read through the tracking connection
    /// (with sliding on, its idle lifetime restarted in the same round trip).
    /// Only in the last idle window before the absolute lifetime does a second
    /// round trip cap the TTL, as `RedisReader` does. `None`: unknown, expired
    /// or logged out.
    async fn read_entry(
        &self,
        tracking: &mut MultiplexedConnection,
        stored_id: &str,
        now: u64,
    ) -> Result<Entry, StoreError> {
        let backend = &self.redis.backend;
        let policy = &self.redis.policy;
        let redis_key = backend.keys.session(stored_id);
        let pushed = policy.sliding.then(|| now + policy.ttl_secs * 1000);
        let found = backend
            .bounded(read_tracked(tracking, &redis_key, pushed))
            .await?;
        let Some((raw, pttl)) = found else {
            return Ok(Entry::Gone);
        };
        if let Some((reason, until_ms)) = tombstone(&raw) {
            // The push above gave it a whole idle lifetime: put its end back.
            let mut conn = backend.conn();
            let key = backend.keys.session_arg(stored_id);
            return Ok(
                match backend
                    .bounded(self.redis.ended(&mut conn, key, reason, until_ms))
                    .await?
                {
                    Lookup::Ended(reason) => Entry::Ended(reason),
                    _ => Entry::Gone,
                },
            );
        }
        let Some(stored) = SessionData::parse(raw, stored_id, &self.redis.backend.keys.apps) else {
            return Ok(Entry::Gone);
        };
        if pttl < 0 {
            return Ok(Entry::Gone);
        }
        let absolute = stored.absolute_deadline(policy.max_lifetime_secs) * 1000;
        let mut idle = pushed.unwrap_or(now + pttl as u64);
        if idle > absolute {
            idle = absolute;
            // A deadline already past deletes the key.
            if pushed.is_some()
                && backend
                    .bounded(read_tracked(tracking, &redis_key, Some(absolute)))
                    .await?
                    .is_none()
            {
                return Ok(Entry::Gone);
            }
        }
        if idle <= now {
            return Ok(Entry::Gone);
        }
        Ok(Entry::Live(CachedSession::new(Arc::new(stored), idle, now)))
    }
}

/// Reads a session key and its remaining lifetime (ms), and has Redis track
/// the key, only if it exists: `GETEX` without options changes nothing and,
/// being a write command, is not tracked; `PTTL`, a read, is, and runs only
/// on a hit. A `GET` of an unknown id would put it in Redis's tracking table,
/// where made-up ids would pile up and, past `tracking-table-max-keys`, push
/// out (and invalidate) the sessions the cache holds. Sent as `EVAL`: the
/// script is short, and redis-rs is built without its `Script` helper.
const READ_IF_LIVE: &str = "local value = redis.call('GETEX', KEYS[1]) \
    if not value then return false end \
    return {value, redis.call('PTTL', KEYS[1])}";

/// Reads a session for the cache through the tracking connection with
/// [`READ_IF_LIVE`], in one round trip; with `push_ms`, first pushes its idle
/// deadline to Redis. The push comes before the read because with `NOLOOP`
/// our own write drops the key from Redis's tracking table without telling
/// us, and only a read puts it back. It is a command of its own rather than
/// part of the script so that `NOLOOP` covers it on every Redis we support
/// (Redis 6 checks `NOLOOP` against a script's own client, not its caller).
/// `None`: the key is gone.
async fn read_tracked(
    tracking: &mut MultiplexedConnection,
    key: &str,
    push_ms: Option<u64>,
) -> Result<Option<(String, i64)>, StoreError> {
    let mut pipe = redis::pipe();
    if let Some(deadline_ms) = push_ms {
        pipe.pexpire_at(key, deadline_ms as i64).ignore();
    }
    pipe.cmd("EVAL").arg(READ_IF_LIVE).arg(1).arg(key);
    let (found,): (Option<(String, i64)>,) = pipe.query_async(tracking).await?;
    Ok(found)
}

/// What a cold read found in Redis.
enum Entry {
    Live(CachedSession),
    Ended(EndReason),
    Gone,
}

/// What a lookup found in the cache, taken out of its shard's lock.
struct Hit {
    stored: Arc<SessionData>,
    expires_at: u64,
    /// This request pushes the idle deadline to Redis.
    push_due: bool,
}

fn session_of(id: &SessionId, stored: Arc<SessionData>, expires_in: u64) -> Session {
    Session {
        id: id.clone(),
        data: stored,
        expires_in,
    }
}

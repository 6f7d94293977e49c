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
    layout::StoredSession,
    reader::RedisReader,
    tracking, Session, SessionId, StoreError,
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
        self.cache.remove(cache_key(stored_id));
    }

    pub(super) async fn touch(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        if !self.cache.alive() {
            return self.redis.touch(id).await;
        }
        // Not bounded as a whole: a hit does no I/O, and a timer per request
        // showed in profiles. Each Redis call below is bounded.
        let keys = &self.redis.backend.keys;
        let policy = &self.redis.policy;
        let stored_id = keys.stored_id(id);
        let key = cache_key(&stored_id);
        let now = clock::unix_millis();
        let ttl_ms = policy.ttl_secs * 1000;
        if let Some(entry) = self.cache.get(key) {
            let idle = entry.idle_deadline_ms.load(Relaxed);
            if now < idle && now < entry.absolute_deadline_ms {
                let mut expires_at = idle;
                if policy.sliding {
                    expires_at = (now + ttl_ms).min(entry.absolute_deadline_ms);
                    entry.idle_deadline_ms.fetch_max(expires_at, Relaxed);
                    if !self
                        .push_if_due(&entry, &stored_id, now, expires_at)
                        .await?
                    {
                        self.cache.remove(key);
                        return Ok(None);
                    }
                }
                return Ok(Some(session_of(
                    id,
                    &entry.stored,
                    (expires_at - now) / 1000,
                )));
            }
            self.cache.remove(key);
        }
        self.read_through(id, &stored_id, key, now).await
    }

    /// Pushes a cached entry's idle deadline to Redis if the last push is older
    /// than the touch interval. `false`: the key is gone from Redis.
    async fn push_if_due(
        &self,
        entry: &CachedSession,
        stored_id: &str,
        now: u64,
        deadline_ms: u64,
    ) -> Result<bool, StoreError> {
        let pushed = entry.pushed_at_ms.load(Relaxed);
        if now.saturating_sub(pushed) < self.cache.touch_interval_ms {
            return Ok(true);
        }
        entry.pushed_at_ms.store(now, Relaxed);
        let Some(mut tracking) = self.cache.tracking_connection() else {
            return Ok(true);
        };
        let key = self.redis.backend.keys.session(stored_id);
        self.redis
            .backend
            .bounded(push_idle_deadline(&mut tracking, &key, deadline_ms))
            .await
    }

    /// A miss: one read through the tracking connection, inserted under a
    /// ticket so that an invalidation racing with it wins.
    async fn read_through(
        &self,
        id: &SessionId,
        stored_id: &str,
        key: u128,
        now: u64,
    ) -> Result<Option<Session>, StoreError> {
        let backend = &self.redis.backend;
        let policy = &self.redis.policy;
        let redis_key = backend.keys.session(stored_id);
        let Some((mut tracking, ticket)) = self.cache.begin_read(key) else {
            return Ok(None);
        };
        let (raw, pttl): (Option<String>, i64) = backend
            .bounded(async {
                Ok(redis::pipe()
                    .get(&redis_key)
                    .pttl(&redis_key)
                    .query_async(&mut tracking)
                    .await?)
            })
            .await?;
        let Some(stored) = raw.and_then(|raw| StoredSession::parse(&raw, stored_id)) else {
            self.cache.finish_read(ticket, None);
            return Ok(None);
        };
        let absolute = stored.absolute_deadline(policy.max_lifetime_secs) * 1000;
        if absolute <= now || pttl < 0 {
            self.cache.finish_read(ticket, None);
            return Ok(None);
        }
        let idle = if policy.sliding {
            let deadline = (now + policy.ttl_secs * 1000).min(absolute);
            let pushed = push_idle_deadline(&mut tracking, &redis_key, deadline);
            if !backend.bounded(pushed).await? {
                self.cache.finish_read(ticket, None);
                return Ok(None);
            }
            deadline
        } else {
            now + pttl as u64
        };
        let stored = Arc::new(stored);
        let session = session_of(id, &stored, (idle - now) / 1000);
        self.cache.finish_read(
            ticket,
            Some(Arc::new(CachedSession {
                stored,
                idle_deadline_ms: idle.into(),
                absolute_deadline_ms: absolute,
                pushed_at_ms: now.into(),
            })),
        );
        Ok(Some(session))
    }
}

/// Pushes a cached session's idle deadline to Redis through the tracking
/// connection, and reads the key again in the same round trip: with `NOLOOP`
/// our own write drops the key from Redis's tracking table without telling us,
/// and only a read puts it back. `false`: the key is gone.
async fn push_idle_deadline(
    tracking: &mut MultiplexedConnection,
    key: &str,
    deadline_ms: u64,
) -> Result<bool, StoreError> {
    let (_, exists): (bool, bool) = redis::pipe()
        .pexpire_at(key, deadline_ms as i64)
        .exists(key)
        .query_async(tracking)
        .await?;
    Ok(exists)
}

fn session_of(id: &SessionId, stored: &Arc<StoredSession>, expires_in: u64) -> Session {
    Session {
        id: id.clone(),
        data: stored.clone(),
        expires_in,
    }
}

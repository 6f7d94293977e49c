//! `SessionStore`: sessions in Redis — create, touch (the guard's one round trip),
//! revoke — plus the per-user index and the user's current `session_key`.
//!
//! Key layout (every key starts with `redis.key_prefix`, every key expires):
//!
//! | key | type | holds | TTL |
//! |---|---|---|---|
//! | `{p}s:<handle>` | string (JSON) | `openid`, `unionid`, `created_at` | remaining idle lifetime |
//! | `{p}user:{<openid>}` | hash | `session_key`, `unionid`, `updated_at` | `max_lifetime_secs` from the last login |
//! | `{p}user:{<openid>}:sessions` | sorted set | session handles scored by creation time (ms) | `max_lifetime_secs` from the last login |
//! | `{p}user:{<openid>}:profile` | string (JSON) | the decrypted profile (nickName, avatarUrl, …) | `max_lifetime_secs` from when it was stored |
//! | `{p}code:<sha256 of code>` | string | a login code's outcome (see `codes`) | 300 s |
//!
//! The `session_key` lives once per user, not per session: WeChat rotates it on
//! every `wx.login`, and every live session of that user must decrypt with the
//! newest one. The user keys share a `{<openid>}` hash tag so a Redis Cluster
//! keeps them in one slot; a session key lives in a slot of its own, so no step
//! that touches both a session and its user's keys is atomic (see `create`).
//!
//! A session's *handle* names it in Redis and in the admin tools: the id itself,
//! or with `session.hash_ids` the hex SHA-256 of the id, so that a Redis dump,
//! replica or `SCAN` holds no usable bearer token.
//!
//! Commands that span slots are sent as concurrent single-key commands rather
//! than one pipeline: on a multiplexed connection they travel together anyway,
//! and a Redis Cluster refuses cross-slot pipelines.

use std::{
    borrow::Cow,
    future::Future,
    sync::{atomic::Ordering::Relaxed, Arc},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures_util::future::try_join_all;
use sha2::{Digest, Sha256};

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::{
    bounded,
    cache::{self, CachedSession, LocalCache},
    log_handle, now_secs, LoginCodes, NewSession, Session, SessionId, SessionPolicy, StoreError,
};
use crate::{config::Config, redis_conn::RedisConn, secret::Secret, telemetry::Metrics};

/// Names of the keys the server writes; the one place that knows the layout.
/// (Joined with `concat`, not `format!`: the formatting machinery cost ~1,200
/// instructions per guarded request in callgrind, `concat` ~100.)
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn session(&self, handle: &str) -> String {
        [&self.prefix, "s:", handle].concat()
    }
    fn user(&self, openid: &str) -> String {
        [&self.prefix, "user:{", openid, "}"].concat()
    }
    fn user_sessions(&self, openid: &str) -> String {
        [&self.prefix, "user:{", openid, "}:sessions"].concat()
    }
    fn user_profile(&self, openid: &str) -> String {
        [&self.prefix, "user:{", openid, "}:profile"].concat()
    }
}

/// What a session key holds, as `redis-cli GET` shows it.
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct StoredSession {
    pub(super) openid: String,
    pub(super) unionid: Option<String>,
    pub(super) created_at: u64,
    /// A copy of the user's profile, once `/session/userinfo` has stored one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) profile: Option<serde_json::Value>,
}

/// A session as the admin tools see it, by handle, without touching it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionRecord {
    /// The session id, or its SHA-256 with `session.hash_ids`.
    #[serde(rename = "sessionid")]
    pub handle: String,
    #[serde(skip)]
    pub openid: String,
    #[serde(skip)]
    pub unionid: Option<String>,
    pub created_at: u64,
    /// Seconds of idle lifetime left.
    pub expires_in: u64,
}

/// Counts for `wxsession sessions stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    pub sessions: u64,
    pub users: u64,
}

/// Sessions in one Redis (or Cluster), shared by every instance of the server.
///
/// It talks to Redis over multiplexed connections that reconnect by themselves,
/// one per thread ([`RedisConn`]), not a pool: a pool's per-checkout health
/// check (deadpool sends `UNWATCH` + `PING`) would double the guard's round
/// trips, and a multiplexed connection already serves concurrent requests.
#[derive(Clone)]
pub struct SessionStore {
    redis: RedisConn,
    /// With `session.local_cache`: this instance's coherent copy of sessions.
    cache: Option<Arc<LocalCache>>,
    keys: Keys,
    policy: SessionPolicy,
    hash_ids: bool,
    timeout: Duration,
}

impl SessionStore {
    /// Builds the store from `[redis]` and `[session]`. Connecting is lazy, so a
    /// server can start (and answer `/readyz` with 503) while Redis is still down.
    /// Must be called inside a Tokio runtime (the connection's driver task lives there).
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<SessionStore, StoreError> {
        let timeout = config.redis_timeout();
        let redis = RedisConn::connect(config).map_err(|e| StoreError::Config(e.to_string()))?;
        let cache = if config.session.local_cache {
            let touch_interval = config
                .session
                .touch_interval_secs
                .unwrap_or(config.session.ttl_secs / 10)
                .max(1);
            Some(
                LocalCache::start(
                    config.redis.url.expose(),
                    format!("{}s:", config.redis.key_prefix),
                    config.session.local_cache_capacity,
                    touch_interval * 1000,
                    timeout,
                    metrics,
                )
                .map_err(|e| StoreError::Config(e.to_string()))?,
            )
        } else {
            None
        };
        Ok(SessionStore {
            redis,
            cache,
            keys: Keys {
                prefix: config.redis.key_prefix.clone(),
            },
            policy: SessionPolicy::from_config(config),
            hash_ids: config.session.hash_ids,
            timeout,
        })
    }

    pub fn policy(&self) -> &SessionPolicy {
        &self.policy
    }

    /// The name of a session in Redis and in the admin tools.
    pub fn handle<'a>(&self, id: &'a SessionId) -> Cow<'a, str> {
        if self.hash_ids {
            Cow::Owned(hex::encode(Sha256::digest(id.as_str().as_bytes())))
        } else {
            Cow::Borrowed(id.as_str())
        }
    }

    /// What an operator typed as a session: a session id, or (with `hash_ids`)
    /// a handle. `None` if it is neither.
    pub fn parse_handle(&self, text: &str) -> Option<String> {
        if let Ok(id) = SessionId::parse(text.as_bytes()) {
            return Some(self.handle(&id).into_owned());
        }
        let is_hash =
            text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        (self.hash_ids && is_hash).then(|| text.to_string())
    }

    /// Creates a session for a freshly verified WeChat identity: an atomic
    /// `SET NX` that can never overwrite an existing id, then the user's
    /// `session_key` and index (one pipeline, one slot), then pruning the index
    /// and enforcing `max_per_user`.
    ///
    /// Not atomic as a whole: if the connection fails between the session key and
    /// the index, the session lives unindexed (invisible to `list`/`revoke-user`)
    /// until its idle TTL ends; the next login of that user re-reads the index.
    pub async fn create(&self, new: &NewSession<'_>) -> Result<Session, StoreError> {
        self.bounded(async {
            let mut conn = self.conn();
            let now_millis = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let now = now_millis / 1000;
            let stored = StoredSession {
                openid: new.openid.to_string(),
                unionid: new.unionid.map(str::to_string),
                created_at: now,
                profile: None,
            };
            let value = serde_json::to_string(&stored).expect("plain struct serializes");
            let ttl = self.policy.ttl_secs.min(self.policy.max_lifetime_secs);
            let mut id = SessionId::generate();
            // A collision of 128 random bits will not happen; the loop only makes
            // the "never overwrite" promise hold without relying on that.
            for _ in 0..3 {
                let created: Option<String> = redis::cmd("SET")
                    .arg(self.keys.session(&self.handle(&id)))
                    .arg(&value)
                    .arg("NX")
                    .arg("EX")
                    .arg(ttl)
                    .query_async(&mut conn)
                    .await?;
                if created.is_some() {
                    break;
                }
                id = SessionId::generate();
            }
            let handle = self.handle(&id);

            let user = self.keys.user(new.openid);
            let index = self.keys.user_sessions(new.openid);
            let keep = self.policy.max_lifetime_secs;
            let mut pipe = redis::pipe();
            pipe.hset(&user, "session_key", new.session_key.expose())
                .ignore()
                .hset(&user, "updated_at", now)
                .ignore();
            if let Some(unionid) = new.unionid {
                pipe.hset(&user, "unionid", unionid).ignore();
            }
            pipe.expire(&user, keep as i64)
                .ignore()
                // Scored in milliseconds, so sessions made in one second keep their order.
                .zadd(&index, &handle, now_millis)
                .ignore()
                .cmd("ZREMRANGEBYSCORE")
                .arg(&index)
                .arg("-inf")
                .arg(now_millis.saturating_sub(keep * 1000))
                .ignore()
                .expire(&index, keep as i64)
                .ignore()
                .zrange(&index, 0, -1)
                .get(self.keys.user_profile(new.openid))
                .hget(&user, "unionid");
            let (members, profile, known_unionid): (Vec<String>, Option<String>, Option<String>) =
                pipe.query_async(&mut conn).await?;
            // A user who shared a profile before: the new session carries it, and
            // the unionid learnt from it, too.
            let profile: Option<serde_json::Value> =
                profile.and_then(|p| serde_json::from_str(&p).ok());
            let unionid = stored.unionid.clone().or(known_unionid);
            if profile.is_some() || unionid != stored.unionid {
                self.amend_session(&handle, |s| {
                    s.profile = profile.clone();
                    s.unionid = unionid.clone();
                })
                .await?;
            }
            let live = self.prune_index(&index, members).await?;
            let limit = self.policy.max_per_user as usize;
            if limit > 0 && live.len() > limit {
                // Oldest first (the index is ordered by created_at); the new one is last.
                let excess = &live[..live.len() - limit];
                self.delete_sessions(excess).await?;
                let _: i64 = conn.zrem(&index, excess).await?;
                log::info!(
                    "openid={} over max_per_user: revoked {} oldest",
                    new.openid,
                    excess.len()
                );
            }

            Ok(Session {
                id,
                data: Arc::new(StoredSession {
                    unionid,
                    profile,
                    ..stored
                }),
                expires_in: ttl,
            })
        })
        .await
    }

    /// The guard's read: fetches the session and, with sliding on, restarts its idle
    /// lifetime in the same command (`GETEX … EX ttl`). Only in the last idle window
    /// before the absolute lifetime does a second command (`EXPIREAT`) cap the TTL;
    /// the absolute lifetime is also checked here on every read, so it holds even
    /// if that second command is lost. Lifetimes count whole seconds from
    /// `created_at`, so a session's absolute end falls up to 1 s before
    /// login + `max_lifetime_secs`, never after. `None`: unknown, expired or logged out.
    pub async fn touch(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        if let Some(cache) = self.cache.as_ref().filter(|c| c.alive()) {
            // Not bounded as a whole: a hit does no I/O, and a timer per request
            // showed in profiles. Each Redis call inside is bounded.
            return self.touch_cached(cache, id).await;
        }
        self.bounded(async {
            let mut conn = self.conn();
            let handle = self.handle(id);
            let key = self.keys.session(&handle);
            let now = now_secs();
            let ttl = self.policy.ttl_secs;
            let (raw, remaining): (Option<String>, i64) = if self.policy.sliding {
                let raw = redis::cmd("GETEX")
                    .arg(&key)
                    .arg("EX")
                    .arg(ttl)
                    .query_async(&mut conn)
                    .await?;
                (raw, ttl as i64)
            } else {
                redis::pipe()
                    .get(&key)
                    .ttl(&key)
                    .query_async(&mut conn)
                    .await?
            };
            let Some(raw) = raw else { return Ok(None) };
            let Some(stored) = parse_stored(&raw, &handle) else {
                return Ok(None);
            };
            let deadline = stored
                .created_at
                .saturating_add(self.policy.max_lifetime_secs);
            if deadline <= now {
                let _: i64 = conn.del(&key).await?;
                return Ok(None);
            }
            let mut expires_in = remaining.max(0) as u64;
            // `>=`: Redis counts the TTL from the current instant, `now` is floored
            // to the second, so equality may still reach past the deadline.
            if now + expires_in >= deadline {
                expires_in = deadline - now;
                let _: bool = conn.expire_at(&key, deadline as i64).await?;
            }
            Ok(Some(Session {
                id: id.clone(),
                data: Arc::new(stored),
                expires_in,
            }))
        })
        .await
    }

    /// The guard's read with the local cache: from memory while the entry is
    /// within its deadlines (pushing the idle lifetime to Redis at most once per
    /// touch interval), else one read through the tracking connection.
    async fn touch_cached(
        &self,
        cache: &LocalCache,
        id: &SessionId,
    ) -> Result<Option<Session>, StoreError> {
        // The hit path allocates nothing: the cache is keyed by the id's bits.
        let handle = self.handle(id);
        let slot = cache::slot(&handle);
        let now = cache::now_ms();
        let ttl_ms = self.policy.ttl_secs * 1000;
        if let Some(entry) = cache.get(slot) {
            let idle = entry.idle_deadline_ms.load(Relaxed);
            if now < idle && now < entry.absolute_deadline_ms {
                let mut expires_at = idle;
                if self.policy.sliding {
                    expires_at = (now + ttl_ms).min(entry.absolute_deadline_ms);
                    entry.idle_deadline_ms.fetch_max(expires_at, Relaxed);
                    let pushed = entry.pushed_at_ms.load(Relaxed);
                    if now.saturating_sub(pushed) >= cache.touch_interval_ms {
                        entry.pushed_at_ms.store(now, Relaxed);
                        if let Some(mut tracking) = cache.tracking_connection() {
                            let key = self.keys.session(&handle);
                            let push = push_idle_deadline(&mut tracking, &key, expires_at);
                            if !self.bounded(push).await? {
                                cache.remove(slot);
                                return Ok(None);
                            }
                        }
                    }
                }
                return Ok(Some(session_of(
                    id,
                    &entry.stored,
                    (expires_at - now) / 1000,
                )));
            }
            cache.remove(slot);
        }
        let key = self.keys.session(&handle);
        let Some((mut tracking, ticket)) = cache.begin_read(slot) else {
            return Ok(None);
        };
        let (raw, pttl): (Option<String>, i64) = self
            .bounded(async {
                Ok(redis::pipe()
                    .get(&key)
                    .pttl(&key)
                    .query_async(&mut tracking)
                    .await?)
            })
            .await?;
        let Some(stored) = raw.and_then(|raw| parse_stored(&raw, &handle)) else {
            cache.finish_read(ticket, None);
            return Ok(None);
        };
        let absolute = stored
            .created_at
            .saturating_add(self.policy.max_lifetime_secs)
            * 1000;
        if absolute <= now || pttl < 0 {
            cache.finish_read(ticket, None);
            return Ok(None);
        }
        let idle = if self.policy.sliding {
            let deadline = (now + ttl_ms).min(absolute);
            if !self
                .bounded(push_idle_deadline(&mut tracking, &key, deadline))
                .await?
            {
                cache.finish_read(ticket, None);
                return Ok(None);
            }
            deadline
        } else {
            now + pttl as u64
        };
        let stored = Arc::new(stored);
        let session = session_of(id, &stored, (idle - now) / 1000);
        cache.finish_read(
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

    /// Logout: deletes the session key, so the id is dead for every instance at once.
    /// Returns whether the session existed.
    pub async fn revoke(&self, id: &SessionId) -> Result<bool, StoreError> {
        self.revoke_handle(&self.handle(id)).await
    }

    /// Revokes one session by handle (admin tools, logout).
    pub async fn revoke_handle(&self, handle: &str) -> Result<bool, StoreError> {
        if let Some(cache) = &self.cache {
            cache.remove(cache::slot(handle));
        }
        self.bounded(async {
            let mut conn = self.conn();
            let raw: Option<String> = redis::cmd("GETDEL")
                .arg(self.keys.session(handle))
                .query_async(&mut conn)
                .await?;
            let Some(raw) = raw else { return Ok(false) };
            if let Some(stored) = parse_stored(&raw, handle) {
                let _: i64 = conn
                    .zrem(self.keys.user_sessions(&stored.openid), handle)
                    .await?;
            }
            Ok(true)
        })
        .await
    }

    /// One session by handle, without renewing it.
    pub async fn peek(&self, handle: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.bounded(async {
            let key = self.keys.session(handle);
            let (raw, ttl): (Option<String>, i64) = redis::pipe()
                .get(&key)
                .ttl(&key)
                .query_async(&mut self.conn())
                .await?;
            Ok(raw
                .and_then(|raw| parse_stored(&raw, handle))
                .map(|stored| SessionRecord {
                    handle: handle.to_string(),
                    openid: stored.openid,
                    unionid: stored.unionid,
                    created_at: stored.created_at,
                    expires_in: ttl.max(0) as u64,
                }))
        })
        .await
    }

    /// The live sessions of an openid, oldest first; dead index entries are pruned.
    pub async fn list_user(&self, openid: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let index = self.keys.user_sessions(openid);
        let members: Vec<String> = self
            .bounded(async { Ok(self.conn().zrange(&index, 0, -1).await?) })
            .await?;
        let records = self
            .bounded(try_join_all(members.iter().map(|handle| self.peek(handle))))
            .await?;
        let dead: Vec<&String> = members
            .iter()
            .zip(&records)
            .filter_map(|(m, r)| r.is_none().then_some(m))
            .collect();
        if !dead.is_empty() {
            self.bounded(async { Ok(self.conn().zrem::<_, _, i64>(&index, dead).await?) })
                .await?;
        }
        Ok(records.into_iter().flatten().collect())
    }

    /// Revokes every session of an openid at once; answers how many were live.
    pub async fn revoke_user(&self, openid: &str) -> Result<u64, StoreError> {
        let index = self.keys.user_sessions(openid);
        self.bounded(async {
            let members: Vec<String> = self.conn().zrange(&index, 0, -1).await?;
            let revoked = self.delete_sessions(&members).await?;
            let _: i64 = self.conn().del(&index).await?;
            Ok(revoked)
        })
        .await
    }

    /// Live sessions and users, counted with `SCAN` (never `KEYS`), on every
    /// master of a cluster.
    pub async fn stats(&self) -> Result<StoreStats, StoreError> {
        let sessions = self.count_keys(&format!("{}s:*", self.keys.prefix)).await?;
        let users = self
            .count_keys(&format!("{}user:{{*}}:sessions", self.keys.prefix))
            .await?;
        Ok(StoreStats { sessions, users })
    }

    async fn count_keys(&self, pattern: &str) -> Result<u64, StoreError> {
        let nodes = self
            .bounded(async { Ok(self.conn().masters().await?) })
            .await?;
        let mut count = 0;
        for mut node in nodes {
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = self
                    .bounded(async {
                        Ok(redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(pattern)
                            .arg("COUNT")
                            .arg(1000)
                            .query_async(&mut node)
                            .await?)
                    })
                    .await?;
                count += keys.len() as u64;
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(count)
    }

    /// The user's current `session_key`: the one from their latest login, which
    /// every live session of theirs decrypts with.
    pub async fn session_key(&self, openid: &str) -> Result<Option<Secret>, StoreError> {
        self.bounded(async {
            let key: Option<String> = self
                .conn()
                .hget(self.keys.user(openid), "session_key")
                .await?;
            Ok(key.map(Secret::new))
        })
        .await
    }

    /// Stores the user's decrypted profile, for their later logins and in every
    /// live session of theirs (so `GET /session` shows it without a second read);
    /// a `unionid` learnt from it fills theirs when WeChat's login gave none.
    pub async fn save_profile(
        &self,
        openid: &str,
        profile: &serde_json::Value,
        unionid: Option<&str>,
    ) -> Result<(), StoreError> {
        self.bounded(async {
            let keep = self.policy.max_lifetime_secs;
            let mut pipe = redis::pipe();
            pipe.set_ex(self.keys.user_profile(openid), profile.to_string(), keep)
                .ignore();
            if let Some(unionid) = unionid {
                // Only where none is known: HSETNX.
                pipe.cmd("HSETNX")
                    .arg(self.keys.user(openid))
                    .arg("unionid")
                    .arg(unionid)
                    .ignore();
            }
            pipe.zrange(self.keys.user_sessions(openid), 0, -1);
            let (handles,): (Vec<String>,) = pipe.query_async(&mut self.conn()).await?;
            try_join_all(handles.iter().map(|handle| async move {
                self.amend_session(handle, |stored| {
                    stored.profile = Some(profile.clone());
                    if stored.unionid.is_none() {
                        stored.unionid = unionid.map(str::to_string);
                    }
                })
                .await
            }))
            .await?;
            Ok(())
        })
        .await
    }

    /// Rewrites one session's value in place: `XX` never resurrects a session
    /// logged out meanwhile, `KEEPTTL` renews nothing.
    async fn amend_session(
        &self,
        handle: &str,
        change: impl FnOnce(&mut StoredSession),
    ) -> Result<(), StoreError> {
        let key = self.keys.session(handle);
        let raw: Option<String> = self.conn().get(&key).await?;
        let Some(mut stored) = raw.and_then(|raw| parse_stored(&raw, handle)) else {
            return Ok(());
        };
        change(&mut stored);
        let _: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(serde_json::to_string(&stored).expect("plain struct serializes"))
            .arg("XX")
            .arg("KEEPTTL")
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// One `PING`, for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(async {
            let _: String = redis::cmd("PING").query_async(&mut self.conn()).await?;
            Ok(())
        })
        .await
    }

    /// The store's Redis connection, for the few other parts that keep shared
    /// state in the same Redis (the WeChat access_token).
    pub fn connection(&self) -> RedisConn {
        self.redis.clone()
    }

    /// The record of login codes, on the same connection.
    pub fn login_codes(&self) -> LoginCodes {
        LoginCodes::new(self.redis.clone(), self.keys.prefix.clone(), self.timeout)
    }

    /// Drops index members whose session key is gone (idle-expired or deleted by
    /// hand); answers the live ones, in index order.
    async fn prune_index(
        &self,
        index: &str,
        members: Vec<String>,
    ) -> Result<Vec<String>, StoreError> {
        let alive: Vec<bool> = try_join_all(members.iter().map(|m| async move {
            Ok::<bool, StoreError>(self.conn().exists(self.keys.session(m)).await?)
        }))
        .await?;
        let mut live = Vec::with_capacity(members.len());
        let mut dead = Vec::new();
        for (member, alive) in members.into_iter().zip(alive) {
            if alive {
                live.push(member);
            } else {
                dead.push(member);
            }
        }
        if !dead.is_empty() {
            let _: i64 = self.conn().zrem(index, dead).await?;
        }
        Ok(live)
    }

    /// Deletes session keys by handle, one command each (they live in different
    /// slots); answers how many existed.
    async fn delete_sessions(&self, handles: &[String]) -> Result<u64, StoreError> {
        let deleted: Vec<i64> = try_join_all(handles.iter().map(|h| async move {
            Ok::<i64, StoreError>(self.conn().del(self.keys.session(h)).await?)
        }))
        .await?;
        Ok(deleted.into_iter().sum::<i64>() as u64)
    }

    /// This thread's connection, for one operation (cheap: a handle on a
    /// multiplexed connection).
    fn conn(&self) -> RedisConn {
        self.redis.for_this_thread()
    }

    async fn bounded<T>(
        &self,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        bounded(self.timeout, op).await
    }
}

/// Pushes a cached session's idle deadline to Redis through the tracking
/// connection, and reads the key again in the same round trip: with `NOLOOP`
/// our own write drops the key from Redis's tracking table without telling us,
/// and only a read puts it back. `false`: the key is gone.
async fn push_idle_deadline(
    tracking: &mut redis::aio::MultiplexedConnection,
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

/// A session value, or `None` (with a warning) if someone wrote something else there.
fn parse_stored(raw: &str, handle: &str) -> Option<StoredSession> {
    let parsed = serde_json::from_str(raw);
    if parsed.is_err() {
        log::warn!(
            "session #{} holds a value that is not a session; treated as invalid",
            log_handle(handle.as_bytes())
        );
    }
    parsed.ok()
}

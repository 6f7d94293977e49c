//! `SessionStore`: sessions in Redis — create, touch (the guard's one round
//! trip), revoke, look up — shared by every instance of the server. The per-user
//! side (index, `session_key`, profile) is in `users`; the key layout in `layout`.
//!
//! The `session_key` lives once per user, not per session: WeChat rotates it on
//! every `wx.login`, and every live session of that user must decrypt with the
//! newest one. A session key and its user's keys live in different Cluster
//! slots, so no step that touches both is atomic (see [`SessionStore::create`]).
//!
//! Commands that span slots are sent as concurrent single-key commands rather
//! than one pipeline: on a multiplexed connection they travel together anyway,
//! and a Redis Cluster refuses cross-slot pipelines.

use std::{future::Future, sync::Arc};

use futures_util::future::{try_join_all, Either};

use redis::AsyncCommands;

use super::{
    backend::Backend,
    cached::CachedReader,
    layout::{
        is_tombstone, tombstone_fields, AppIndex, Keys, SessionData, SessionRecord, StoredSession,
        UserKey, AMEND_SESSION, END_SESSION,
    },
    log_tag,
    reader::RedisReader,
    EndReason, LoginCodes, LoginRate, Lookup, NewSession, Session, SessionId, SessionPolicy,
    StoreError,
};
use crate::{clock, config::Config, redis_conn::RedisConn, secret::Secret, telemetry::Metrics};

/// Rewrites of one session that may each find it changed before `amend` gives up.
const AMEND_ATTEMPTS: usize = 4;

/// The guard's two ways to read a session, dispatched without boxing: straight
/// from Redis, or through this instance's local cache.
#[derive(Clone)]
enum Reader {
    Redis(RedisReader),
    Cached(CachedReader),
}

impl Reader {
    fn touch<'a>(
        &'a self,
        id: &'a SessionId,
    ) -> impl Future<Output = Result<Lookup, StoreError>> + 'a {
        match self {
            Reader::Redis(reader) => Either::Left(reader.touch(id)),
            Reader::Cached(reader) => Either::Right(reader.touch(id)),
        }
    }

    /// Drops what this instance remembers of a session it is ending, reads of
    /// it in flight included.
    fn forget(&self, stored_id: &str) {
        if let Reader::Cached(reader) = self {
            reader.forget(stored_id);
        }
    }
}

/// Counts for `wxsession sessions stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    pub sessions: u64,
    pub users: u64,
}

/// Sessions in one Redis (or Cluster), shared by every instance of the server.
///
/// It talks to Redis over multiplexed connections that are replaced when they break,
/// one per thread ([`RedisConn`]), not a pool: a pool's per-checkout health
/// check (deadpool sends `UNWATCH` + `PING`) would triple the guard's commands,
/// and a multiplexed connection already serves concurrent requests.
#[derive(Clone)]
pub struct SessionStore {
    pub(super) backend: Backend,
    reader: Reader,
    pub(super) policy: SessionPolicy,
    /// Every time the store writes or compares is by Redis's clock (see `clock`).
    _clock: Arc<clock::Following>,
}

impl SessionStore {
    /// Builds the store from `[redis]` and `[session]`. Connecting is lazy, so a
    /// server can start (and answer `/readyz` with 503) while Redis is still down.
    /// Must be called inside a Tokio runtime (the connection's driver task lives there).
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<SessionStore, StoreError> {
        let redis = RedisConn::connect(config).map_err(|e| StoreError::Config(e.to_string()))?;
        let keys = Keys::new(
            config.redis.key_prefix.clone(),
            config.session.hash_ids,
            AppIndex::new(config.apps()),
        );
        let backend = Backend::new(redis, keys, config.redis_timeout());
        let policy = SessionPolicy::from_config(config);
        let redis_reader = RedisReader {
            backend: backend.clone(),
            policy: policy.clone(),
        };
        let reader = if config.session.local_cache {
            Reader::Cached(CachedReader::start(
                redis_reader,
                config.session.local_cache_capacity,
                config.session.touch_interval(),
                metrics,
            ))
        } else {
            Reader::Redis(redis_reader)
        };
        Ok(SessionStore {
            _clock: Arc::new(clock::follow(backend.shared(), backend.timeout())),
            backend,
            reader,
            policy,
        })
    }

    pub fn policy(&self) -> &SessionPolicy {
        &self.policy
    }

    /// The user `openid` of app `appid`, as the per-user keys name them.
    pub fn user_key(&self, appid: &str, openid: &str) -> UserKey {
        self.backend.keys.user_key(Some(appid), openid)
    }

    /// The user a session belongs to.
    pub fn user_of(&self, session: &Session) -> UserKey {
        self.user_key(session.appid(), session.openid())
    }

    /// What an operator typed as a session: a session id, or (with
    /// `session.hash_ids`) its stored id. `None` if it is neither.
    pub fn parse_stored_id(&self, text: &str) -> Option<String> {
        self.backend.keys.parse_stored_id(text)
    }

    /// Creates a session for a freshly verified identity: an atomic `SET NX`
    /// that can never overwrite an existing id, then the user's `session_key`
    /// and index, then what the user shared before, then `one_per_device` and
    /// `max_per_user`.
    ///
    /// Not atomic as a whole: if the connection fails between the session key and
    /// the index, the session lives unindexed (invisible to `list`/`revoke-user`)
    /// until its idle TTL ends; the next login of that user re-reads the index.
    pub async fn create(&self, new: &NewSession<'_>) -> Result<Session, StoreError> {
        self.backend
            .bounded(async {
                let now_millis = clock::unix_millis();
                let stored = StoredSession {
                    openid: new.openid.to_string(),
                    unionid: new.unionid.map(str::to_string),
                    created_at: now_millis / 1000,
                    device: new.device.map(|d| d.as_str().to_string()),
                    appid: Some(new.appid.to_string()),
                    corpid: new.corpid.map(str::to_string),
                    elevated_until: None,
                    profile: None,
                };
                let ttl = self.policy.ttl_secs.min(self.policy.max_lifetime_secs);
                let id = self.insert(&stored, ttl).await?;
                let stored_id = self.backend.keys.stored_id(&id);
                let user_key = self.backend.keys.user_key(Some(new.appid), new.openid);
                let mut user = self
                    .index_login(new, &user_key, &stored_id, now_millis)
                    .await?;
                let stored = self.carry_user_data(&stored_id, stored, &user).await?;
                if let Some(unionid) = &stored.unionid {
                    self.index_union(unionid, &stored_id, now_millis).await?;
                }
                if let (Some(device), true) = (new.device, self.policy.one_per_device) {
                    self.replace_on_device(&user_key, device, &stored_id, &mut user.live)
                        .await?;
                }
                self.enforce_max_per_user(&user_key, user.live).await?;
                Ok(Session {
                    id,
                    data: Arc::new(SessionData::of(&stored, &self.backend.keys.apps)),
                    expires_in: ttl,
                })
            })
            .await
    }

    /// Writes a new session under a fresh id with `SET NX`: never over another.
    async fn insert(&self, stored: &StoredSession, ttl: u64) -> Result<SessionId, StoreError> {
        let value = stored.to_json();
        let mut conn = self.backend.conn();
        // A collision of 128 random bits will not happen; the loop only makes
        // the "never overwrite" promise hold without relying on that.
        for _ in 0..3 {
            let id = SessionId::generate();
            let created: Option<String> = redis::cmd("SET")
                .arg(self.backend.keys.session(&self.backend.keys.stored_id(&id)))
                .arg(&value)
                .arg("NX")
                .arg("EX")
                .arg(ttl)
                .query_async(&mut conn)
                .await?;
            if created.is_some() {
                return Ok(id);
            }
        }
        Err(StoreError::Unavailable(
            "three fresh session ids were all taken".into(),
        ))
    }

    /// The guard's read: one Redis command, or none from a warm local cache
    /// (two for a session that ended with a reason: see `reader`).
    pub fn touch<'a>(
        &'a self,
        id: &'a SessionId,
    ) -> impl Future<Output = Result<Lookup, StoreError>> + 'a {
        // Futures handed down, not wrapped in `async fn`s: each wrapper would
        // copy the guard's future once more per request.
        self.reader.touch(id)
    }

    /// Logout: deletes the session key, so the id is dead for every instance at once.
    /// Returns whether the session existed.
    pub async fn revoke(&self, id: &SessionId) -> Result<bool, StoreError> {
        self.revoke_stored_id(&self.backend.keys.stored_id(id))
            .await
    }

    /// Ends one session by stored id and leaves nothing of it (logout).
    pub async fn revoke_stored_id(&self, stored_id: &str) -> Result<bool, StoreError> {
        self.end_one(stored_id, async {
            Ok(redis::cmd("GETDEL")
                .arg(self.backend.keys.session(stored_id))
                .query_async(&mut self.backend.conn())
                .await?)
        })
        .await
    }

    /// An operator ends one session by stored id: its client learns
    /// `session_revoked` (a logout, [`SessionStore::revoke`], leaves nothing).
    pub async fn end_stored_id(&self, stored_id: &str) -> Result<bool, StoreError> {
        self.end_one(stored_id, async {
            let ended = self
                .end(&[stored_id.to_string()], EndReason::Revoked)
                .await?;
            Ok(ended.into_iter().next().flatten())
        })
        .await
    }

    /// Ends one session with `take` (which answers the value it took, if the
    /// session was live), takes it out of its user's index and out of this
    /// instance's cache. Answers whether it was live.
    async fn end_one(
        &self,
        stored_id: &str,
        take: impl Future<Output = Result<Option<String>, StoreError>>,
    ) -> Result<bool, StoreError> {
        self.reader.forget(stored_id);
        let ended = self
            .backend
            .bounded(async {
                let Some(raw) = take.await? else {
                    return Ok(false);
                };
                if let Some(stored) = StoredSession::parse(&raw, stored_id) {
                    let user = self
                        .backend
                        .keys
                        .user_key(stored.appid.as_deref(), &stored.openid);
                    // Two slots, side by side.
                    let unindex_union = async {
                        match &stored.unionid {
                            Some(unionid) => self.unindex_union(unionid, stored_id).await,
                            None => Ok(()),
                        }
                    };
                    tokio::try_join!(self.unindex(&user, stored_id), unindex_union)?;
                }
                Ok(true)
            })
            .await;
        // A read of this session that reached Redis before it ended can answer
        // after the first forget, and before Redis's invalidation reaches this
        // instance: forgetting again (its pending read included) keeps it out of
        // this instance's cache once the caller hears the session is gone.
        self.reader.forget(stored_id);
        ended
    }

    /// One session by stored id, without renewing it.
    pub async fn peek(&self, stored_id: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.backend
            .bounded(async {
                let key = self.backend.keys.session(stored_id);
                let (raw, ttl): (Option<String>, i64) = redis::pipe()
                    .get(&key)
                    .ttl(&key)
                    .query_async(&mut self.backend.conn())
                    .await?;
                Ok(raw
                    .and_then(|raw| StoredSession::parse(&raw, stored_id))
                    .map(|stored| SessionRecord {
                        stored_id: stored_id.to_string(),
                        appid: self.backend.keys.apps.appid_of(stored.appid),
                        openid: stored.openid,
                        unionid: stored.unionid,
                        created_at: stored.created_at,
                        device: stored.device,
                        expires_in: ttl.max(0) as u64,
                    }))
            })
            .await
    }

    /// Rewrites one session's value in place if Redis still holds the value
    /// read (`layout::AMEND_SESSION`): a session that ended meanwhile (deleted,
    /// or turned into a tombstone) is never brought back, `KEEPTTL` renews
    /// nothing, and a rewrite in between makes it read again. Answers whether
    /// the session was live and rewritten.
    pub(super) async fn amend(
        &self,
        stored_id: &str,
        change: impl Fn(&mut StoredSession),
    ) -> Result<bool, StoreError> {
        let key = self.backend.keys.session(stored_id);
        for _ in 0..AMEND_ATTEMPTS {
            let raw: Option<String> = self.backend.conn().get(&key).await?;
            let Some(raw) = raw else { return Ok(false) };
            let Some(mut stored) = StoredSession::parse(&raw, stored_id) else {
                return Ok(false);
            };
            change(&mut stored);
            let rewritten: bool = redis::cmd("EVAL")
                .arg(AMEND_SESSION)
                .arg(1)
                .arg(&key)
                .arg(&raw)
                .arg(stored.to_json())
                .query_async(&mut self.backend.conn())
                .await?;
            if rewritten {
                return Ok(true);
            }
        }
        Err(StoreError::Unavailable(format!(
            "session #{} changed under {AMEND_ATTEMPTS} rewrites in a row",
            log_tag(stored_id.as_bytes())
        )))
    }

    /// Step-up: the session is elevated until `until` (unix seconds), and its
    /// user's `session_key` is the one the fresh `code2Session` gave (WeChat
    /// has replaced the old one, so it is stored even if the session ended
    /// meanwhile). Answers whether the session was still live.
    pub async fn elevate(
        &self,
        session: &Session,
        session_key: &Secret,
        unionid: Option<&str>,
        until: u64,
    ) -> Result<bool, StoreError> {
        let stored_id = self.backend.keys.stored_id(session.id());
        let elevated = self
            .backend
            .bounded(async {
                self.store_session_key(&self.user_of(session), session_key, unionid)
                    .await?;
                self.amend(&stored_id, |stored| stored.elevated_until = Some(until))
                    .await
            })
            .await;
        // This instance's cache must not answer the value from before; other
        // instances hear of the rewrite from Redis.
        self.reader.forget(&stored_id);
        elevated
    }

    /// Ends live sessions with a reason their clients learn for a while
    /// (`layout::END_SESSION`, one script per session: they live in different
    /// slots). Answers the ended sessions' values, `None` where none was live.
    pub(super) async fn end(
        &self,
        stored_ids: &[String],
        reason: EndReason,
    ) -> Result<Vec<Option<String>>, StoreError> {
        let keep_ms = self.policy.ttl_secs * 1000;
        let fields = tombstone_fields(reason);
        let fields = &fields;
        try_join_all(stored_ids.iter().map(|stored_id| async move {
            Ok::<_, StoreError>(
                redis::cmd("EVAL")
                    .arg(END_SESSION)
                    .arg(1)
                    .arg(self.backend.keys.session(stored_id))
                    .arg(fields)
                    .arg(keep_ms)
                    .query_async::<Option<String>>(&mut self.backend.conn())
                    .await?,
            )
        }))
        .await
    }

    /// Live sessions and users, counted with `SCAN` (never `KEYS`), on every
    /// master of a cluster.
    pub async fn stats(&self) -> Result<StoreStats, StoreError> {
        let keys = &self.backend.keys;
        let sessions = self.count_keys(&keys.session_pattern(), true).await?;
        let users = self
            .count_keys(&keys.user_sessions_pattern(), false)
            .await?;
        Ok(StoreStats { sessions, users })
    }

    /// Keys matching `pattern`, on every master; with `live_sessions`, not
    /// the tombstones of ended sessions (told apart by their first bytes, one
    /// pipeline per batch of keys).
    async fn count_keys(&self, pattern: &str, live_sessions: bool) -> Result<u64, StoreError> {
        let nodes = self
            .backend
            .bounded(async { Ok(self.backend.conn().masters().await?) })
            .await?;
        let mut count = 0;
        for mut node in nodes {
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = self
                    .backend
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
                count += if live_sessions && !keys.is_empty() {
                    let mut starts = redis::pipe();
                    for key in &keys {
                        starts.cmd("GETRANGE").arg(key).arg(0).arg(9);
                    }
                    let starts: Vec<String> = self
                        .backend
                        .bounded(async { Ok(starts.query_async(&mut node).await?) })
                        .await?;
                    starts
                        .iter()
                        .filter(|start| !start.is_empty() && !is_tombstone(start))
                        .count() as u64
                } else {
                    keys.len() as u64
                };
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(count)
    }

    /// One `PING`, for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.backend
            .bounded(async {
                let _: String = redis::cmd("PING")
                    .query_async(&mut self.backend.conn())
                    .await?;
                Ok(())
            })
            .await
    }

    /// The store's Redis connection, for the few other parts that keep shared
    /// state in the same Redis (the WeChat access_token).
    pub fn connection(&self) -> RedisConn {
        self.backend.shared()
    }

    /// Logins per client address across the fleet, on the same connection.
    pub fn login_rate(&self, per_minute: u64) -> LoginRate {
        LoginRate::new(self.backend.clone(), per_minute)
    }

    /// The record of login codes, on the same connection.
    pub fn login_codes(&self) -> LoginCodes {
        LoginCodes::new(self.backend.clone())
    }
}

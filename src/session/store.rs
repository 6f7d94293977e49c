//! `SessionStore`: sessions in Redis — create, touch (the guard's one round trip),
//! revoke — plus the per-user index and the user's current `session_key`.
//!
//! Key layout (every key starts with `redis.key_prefix`, every key expires):
//!
//! | key | type | holds | TTL |
//! |---|---|---|---|
//! | `{p}s:<sessionid>` | string (JSON) | `openid`, `unionid`, `created_at` | remaining idle lifetime |
//! | `{p}user:{<openid>}` | hash | `session_key`, `unionid`, `updated_at` | `max_lifetime_secs` from the last login |
//! | `{p}user:{<openid>}:sessions` | sorted set | session ids scored by `created_at` | `max_lifetime_secs` from the last login |
//! | `{p}user:{<openid>}:profile` | string (JSON) | the decrypted profile (nickName, avatarUrl, …) | `max_lifetime_secs` from when it was stored |
//! | `{p}code:<sha256 of code>` | string | a login code's outcome (see `codes`) | 300 s |
//!
//! The `session_key` lives once per user, not per session: WeChat rotates it on
//! every `wx.login`, and every live session of that user must decrypt with the
//! newest one. The user keys share a `{<openid>}` hash tag so a Redis Cluster
//! keeps them in one slot.

use std::{future::Future, time::Duration};

use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    AsyncCommands,
};
use serde::{Deserialize, Serialize};

use super::{
    bounded, now_secs, LoginCodes, NewSession, Session, SessionId, SessionPolicy, StoreError,
};
use crate::secret::Secret;

/// Names of the keys the server writes; the one place that knows the layout.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn session(&self, id: &str) -> String {
        format!("{}s:{id}", self.prefix)
    }
    fn user(&self, openid: &str) -> String {
        format!("{}user:{{{openid}}}", self.prefix)
    }
    fn user_sessions(&self, openid: &str) -> String {
        format!("{}user:{{{openid}}}:sessions", self.prefix)
    }
    fn user_profile(&self, openid: &str) -> String {
        format!("{}user:{{{openid}}}:profile", self.prefix)
    }
}

/// What a session key holds, as `redis-cli GET` shows it.
#[derive(Serialize, Deserialize)]
struct StoredSession {
    openid: String,
    unionid: Option<String>,
    created_at: u64,
}

/// Sessions in one Redis, shared by every instance of the server.
///
/// It talks to Redis over one multiplexed connection that reconnects by itself
/// (`ConnectionManager`), not a pool: a pool's per-checkout health check (deadpool
/// sends `UNWATCH` + `PING`) would double the guard's round trips, and a
/// multiplexed connection already serves concurrent requests.
#[derive(Clone)]
pub struct SessionStore {
    redis: ConnectionManager,
    keys: Keys,
    policy: SessionPolicy,
    timeout: Duration,
}

impl SessionStore {
    /// Builds the store; connections are made lazily, so a server can start (and
    /// answer `/readyz` with 503) while Redis is still down.
    /// Must be called inside a Tokio runtime (the connection's driver task lives there).
    pub fn new(
        redis_url: &str,
        key_prefix: &str,
        timeout: Duration,
        policy: SessionPolicy,
    ) -> Result<SessionStore, StoreError> {
        let client =
            redis::Client::open(redis_url).map_err(|e| StoreError::Config(e.to_string()))?;
        // Reconnect attempts are capped at a short delay so service resumes within
        // about a second of Redis coming back.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let redis = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| StoreError::Config(e.to_string()))?;
        Ok(SessionStore {
            redis,
            keys: Keys {
                prefix: key_prefix.to_string(),
            },
            policy,
            timeout,
        })
    }

    pub fn policy(&self) -> &SessionPolicy {
        &self.policy
    }

    /// Creates a session for a freshly verified WeChat identity: an atomic
    /// `SET NX` that can never overwrite an existing id, then the user's
    /// `session_key` and index.
    pub async fn create(&self, new: &NewSession<'_>) -> Result<Session, StoreError> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            let now = now_secs();
            let stored = StoredSession {
                openid: new.openid.to_string(),
                unionid: new.unionid.map(str::to_string),
                created_at: now,
            };
            let value = serde_json::to_string(&stored).expect("plain struct serializes");
            let ttl = self.policy.ttl_secs.min(self.policy.max_lifetime_secs);
            let mut id = SessionId::generate();
            // A collision of 128 random bits will not happen; the loop only makes
            // the "never overwrite" promise hold without relying on that.
            for _ in 0..3 {
                let created: Option<String> = redis::cmd("SET")
                    .arg(self.keys.session(id.as_str()))
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
                .zadd(&index, id.as_str(), now)
                .ignore()
                .cmd("ZREMRANGEBYSCORE")
                .arg(&index)
                .arg("-inf")
                .arg(now.saturating_sub(keep))
                .ignore()
                .expire(&index, keep as i64)
                .ignore()
                .zrange(&index, 0, -1);
            let (members,): (Vec<String>,) = pipe.query_async(&mut conn).await?;
            self.prune_index(&mut conn, &index, &members, &id).await?;

            Ok(Session {
                id,
                openid: stored.openid,
                unionid: stored.unionid,
                created_at: now,
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
        self.bounded(async {
            let mut conn = self.conn().await?;
            let key = self.keys.session(id.as_str());
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
            let Ok(stored) = serde_json::from_str::<StoredSession>(&raw) else {
                log::warn!(
                    "session #{} holds a value that is not a session; treated as invalid",
                    id.log_handle()
                );
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
                openid: stored.openid,
                unionid: stored.unionid,
                created_at: stored.created_at,
                expires_in,
            }))
        })
        .await
    }

    /// Logout: deletes the session key, so the id is dead for every instance at once.
    /// Returns whether the session existed.
    pub async fn revoke(&self, id: &SessionId) -> Result<bool, StoreError> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            let raw: Option<String> = redis::cmd("GETDEL")
                .arg(self.keys.session(id.as_str()))
                .query_async(&mut conn)
                .await?;
            let Some(raw) = raw else { return Ok(false) };
            if let Ok(stored) = serde_json::from_str::<StoredSession>(&raw) {
                let _: i64 = conn
                    .zrem(self.keys.user_sessions(&stored.openid), id.as_str())
                    .await?;
            }
            Ok(true)
        })
        .await
    }

    /// The user's current `session_key`: the one from their latest login, which
    /// every live session of theirs decrypts with.
    pub async fn session_key(&self, openid: &str) -> Result<Option<Secret>, StoreError> {
        self.bounded(async {
            let key: Option<String> = self
                .conn()
                .await?
                .hget(self.keys.user(openid), "session_key")
                .await?;
            Ok(key.map(Secret::new))
        })
        .await
    }

    /// Stores the user's decrypted profile; a `unionid` learnt from it fills the
    /// session's and the user's when WeChat's login gave none.
    pub async fn save_profile(
        &self,
        session: &Session,
        profile: &serde_json::Value,
        unionid: Option<&str>,
    ) -> Result<(), StoreError> {
        self.bounded(async {
            let keep = self.policy.max_lifetime_secs;
            let mut pipe = redis::pipe();
            pipe.set_ex(
                self.keys.user_profile(&session.openid),
                profile.to_string(),
                keep,
            )
            .ignore();
            if let (None, Some(unionid)) = (&session.unionid, unionid) {
                let stored = StoredSession {
                    openid: session.openid.clone(),
                    unionid: Some(unionid.to_string()),
                    created_at: session.created_at,
                };
                // XX: never resurrect a session logged out meanwhile; KEEPTTL: no renewal.
                pipe.cmd("SET")
                    .arg(self.keys.session(session.id.as_str()))
                    .arg(serde_json::to_string(&stored).expect("plain struct serializes"))
                    .arg("XX")
                    .arg("KEEPTTL")
                    .ignore()
                    .hset(self.keys.user(&session.openid), "unionid", unionid)
                    .ignore();
            }
            let () = pipe.query_async(&mut self.conn().await?).await?;
            Ok(())
        })
        .await
    }

    /// The user's stored profile, if any.
    pub async fn profile(&self, openid: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.bounded(async {
            let raw: Option<String> = self
                .conn()
                .await?
                .get(self.keys.user_profile(openid))
                .await?;
            Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
        })
        .await
    }

    /// One `PING`, for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            let _: String = redis::cmd("PING").query_async(&mut conn).await?;
            Ok(())
        })
        .await
    }

    /// Drops index members whose session key is gone (idle-expired or deleted by hand).
    async fn prune_index(
        &self,
        conn: &mut ConnectionManager,
        index: &str,
        members: &[String],
        current: &SessionId,
    ) -> Result<(), StoreError> {
        let others: Vec<&String> = members.iter().filter(|m| *m != current.as_str()).collect();
        if others.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for member in &others {
            pipe.exists(self.keys.session(member));
        }
        let alive: Vec<bool> = pipe.query_async(conn).await?;
        let dead: Vec<&String> = others
            .into_iter()
            .zip(alive)
            .filter_map(|(m, alive)| (!alive).then_some(m))
            .collect();
        if !dead.is_empty() {
            let _: i64 = conn.zrem(index, dead).await?;
        }
        Ok(())
    }

    /// A handle on the shared connection (cheap: the connection is multiplexed).
    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        Ok(self.redis.clone())
    }

    /// The record of login codes, on the same connection.
    pub fn login_codes(&self) -> LoginCodes {
        LoginCodes::new(self.redis.clone(), self.keys.prefix.clone(), self.timeout)
    }

    async fn bounded<T>(
        &self,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        bounded(self.timeout, op).await
    }
}

//! `RedisReader`: the guard's read straight from Redis, one round trip per
//! request (and the local cache's fallback).

use std::{future::Future, sync::Arc};

use futures_util::{future::BoxFuture, FutureExt};
use redis::AsyncCommands;

use super::{
    backend::Backend,
    layout::{tombstone, SessionData, SessionKey},
    EndReason, Lookup, Session, SessionId, SessionPolicy, StoreError,
};
use crate::{clock, redis_conn::RedisConn};

/// One round trip to Redis per guarded request.
#[derive(Clone)]
pub(super) struct RedisReader {
    pub(super) backend: Backend,
    pub(super) policy: SessionPolicy,
}

impl RedisReader {
    /// Fetches the session and, with sliding on, restarts its idle lifetime in the
    /// same command (`GETEX … EX ttl`). Only in the last idle window before the
    /// absolute lifetime does a second command (`EXPIREAT`) cap the TTL; the
    /// absolute lifetime is also checked here on every read, so it holds even if
    /// that second command is lost. Lifetimes count whole seconds from
    /// `created_at`, so a session's absolute end falls up to 1 s before login +
    /// `max_lifetime_secs`, never after. `None`: unknown, expired or logged out.
    pub(super) fn touch<'a>(
        &'a self,
        id: &'a SessionId,
    ) -> impl Future<Output = Result<Lookup, StoreError>> + 'a {
        self.backend.bounded(self.read(id))
    }

    async fn read(&self, id: &SessionId) -> Result<Lookup, StoreError> {
        let stored_id = self.backend.keys.stored_id(id);
        let key = self.backend.keys.session_arg(&stored_id);
        let now = clock::unix_secs();
        let ttl = self.policy.ttl_secs;
        // Only `GETEX` is awaited inline; every other command is made and
        // boxed out of line, so that the future of every guarded request stays
        // small (it is copied whole as it is handed down) and its code too
        // (what the guard does not run would crowd what it runs out of the
        // instruction cache).
        let (raw, remaining): (Option<String>, i64) = if self.policy.sliding {
            (self.backend.get_ex(key, ttl).await?, ttl as i64)
        } else {
            self.get_with_ttl(key).await?
        };
        let Some(raw) = raw else {
            return Ok(Lookup::Unknown);
        };
        if let Some((reason, until_ms)) = tombstone(&raw) {
            return self.end_read(key, reason, until_ms).await;
        }
        let Some(stored) = SessionData::parse(raw, &stored_id, &self.backend.keys.apps) else {
            return Ok(Lookup::Unknown);
        };
        let deadline = stored.absolute_deadline(self.policy.max_lifetime_secs);
        if deadline <= now {
            return self.delete(key).await;
        }
        let mut expires_in = remaining.max(0) as u64;
        // `>=`: Redis counts the TTL from the current instant, `now` is floored
        // to the second, so equality may still reach past the deadline.
        if now + expires_in >= deadline {
            expires_in = deadline - now;
            self.expire_at(key, deadline).await?;
        }
        Ok(Lookup::Live(Session {
            id: id.clone(),
            data: Arc::new(stored),
            expires_in,
        }))
    }

    /// The value and its TTL, with sliding off.
    #[cold]
    #[inline(never)]
    fn get_with_ttl<'a>(
        &'a self,
        key: SessionKey<'a>,
    ) -> BoxFuture<'a, Result<(Option<String>, i64), StoreError>> {
        async move {
            let mut conn = self.backend.conn();
            Ok(redis::pipe()
                .get(key)
                .ttl(key)
                .query_async(&mut conn)
                .await?)
        }
        .boxed()
    }

    /// A session past its absolute end: deleted, and unknown from now on.
    #[cold]
    #[inline(never)]
    fn delete<'a>(&'a self, key: SessionKey<'a>) -> BoxFuture<'a, Result<Lookup, StoreError>> {
        async move {
            let _: i64 = self.backend.conn().del(key).await?;
            Ok(Lookup::Unknown)
        }
        .boxed()
    }

    /// Its TTL capped at its absolute end (the last idle window before it).
    #[cold]
    #[inline(never)]
    fn expire_at<'a>(
        &'a self,
        key: SessionKey<'a>,
        deadline: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let _: bool = self.backend.conn().expire_at(key, deadline as i64).await?;
            Ok(())
        }
        .boxed()
    }

    /// A tombstone read, out of line (see `ended`).
    #[cold]
    #[inline(never)]
    fn end_read<'a>(
        &'a self,
        key: SessionKey<'a>,
        reason: EndReason,
        until_ms: u64,
    ) -> BoxFuture<'a, Result<Lookup, StoreError>> {
        async move {
            self.ended(&mut self.backend.conn(), key, reason, until_ms)
                .await
        }
        .boxed()
    }

    /// A tombstone read: `GETEX … EX` just gave it a whole idle lifetime, so
    /// a second command puts its end back (a time already past deletes it),
    /// or a client asking again and again would keep it forever.
    pub(super) async fn ended(
        &self,
        conn: &mut RedisConn,
        key: SessionKey<'_>,
        reason: EndReason,
        until_ms: u64,
    ) -> Result<Lookup, StoreError> {
        if self.policy.sliding {
            let _: bool = conn.pexpire_at(key, until_ms as i64).await?;
        }
        Ok(if until_ms > clock::unix_millis() {
            Lookup::Ended(reason)
        } else {
            Lookup::Unknown
        })
    }
}

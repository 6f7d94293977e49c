//! `RedisReader`: the guard's read straight from Redis, one round trip per
//! request (and the local cache's fallback).

use std::{future::Future, sync::Arc};

use redis::{AsyncCommands, Cmd};

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
        // Only `GETEX` is awaited inline; the other commands are boxed, so
        // that the future of every guarded request stays small (it is copied
        // whole as it is handed down) and its code too (what the guard does
        // not run would crowd what it runs out of the instruction cache).
        let (raw, remaining): (Option<String>, i64) = if self.policy.sliding {
            let mut getex = Cmd::with_capacity(4, key.len() + 32);
            getex.arg("GETEX").arg(key).arg("EX").arg(ttl);
            (self.backend.query(&getex).await?, ttl as i64)
        } else {
            Box::pin(
                redis::pipe()
                    .get(key)
                    .ttl(key)
                    .query_async(&mut self.backend.conn()),
            )
            .await?
        };
        let Some(raw) = raw else {
            return Ok(Lookup::Unknown);
        };
        if let Some((reason, until_ms)) = tombstone(&raw) {
            return Box::pin(self.ended(&mut self.backend.conn(), key, reason, until_ms)).await;
        }
        let Some(stored) = SessionData::parse(raw, &stored_id, &self.backend.keys.apps) else {
            return Ok(Lookup::Unknown);
        };
        let deadline = stored.absolute_deadline(self.policy.max_lifetime_secs);
        if deadline <= now {
            let _: i64 = Box::pin(self.backend.conn().del(key)).await?;
            return Ok(Lookup::Unknown);
        }
        let mut expires_in = remaining.max(0) as u64;
        // `>=`: Redis counts the TTL from the current instant, `now` is floored
        // to the second, so equality may still reach past the deadline.
        if now + expires_in >= deadline {
            expires_in = deadline - now;
            let _: bool = Box::pin(self.backend.conn().expire_at(key, deadline as i64)).await?;
        }
        Ok(Lookup::Live(Session {
            id: id.clone(),
            data: Arc::new(stored),
            expires_in,
        }))
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

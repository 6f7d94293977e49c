//! `Backend`: what every part of the session store shares — this thread's
//! Redis connection, the key layout, and the bound on one operation.

use std::{future::Future, time::Duration};

use futures_util::future::try_join_all;

use super::{
    layout::{Keys, SessionKey},
    StoreError,
};
use crate::redis_conn::{self, RedisConn};

#[derive(Clone)]
pub(super) struct Backend {
    redis: RedisConn,
    pub(super) keys: Keys,
    timeout: Duration,
}

impl Backend {
    pub(super) fn new(redis: RedisConn, keys: Keys, timeout: Duration) -> Backend {
        Backend {
            redis,
            keys,
            timeout,
        }
    }

    /// The guard's read: `GETEX <session key> EX <ttl_secs>` (see
    /// [`RedisConn::get_ex`]).
    pub(super) async fn get_ex(
        &self,
        key: SessionKey<'_>,
        ttl_secs: u64,
    ) -> Result<Option<String>, StoreError> {
        Ok(self.redis.get_ex(key.pieces(), ttl_secs).await?)
    }

    /// This thread's connection, for one operation (cheap: a handle on a
    /// multiplexed connection).
    pub(super) fn conn(&self) -> RedisConn {
        self.redis.for_this_thread()
    }

    /// The shared handle itself, for parts that keep other state in the same Redis.
    pub(super) fn shared(&self) -> RedisConn {
        self.redis.clone()
    }

    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Every store operation, connection included, ends within `redis.timeout_ms`.
    pub(super) fn bounded<T>(
        &self,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> impl Future<Output = Result<T, StoreError>> {
        redis_conn::bounded(self.timeout, op)
    }

    /// Sends `command` (`EXISTS`: one key, an integer answer) for each
    /// session, concurrently and one command each: they live in different slots.
    pub(super) async fn on_each_session(
        &self,
        command: &str,
        stored_ids: &[String],
    ) -> Result<Vec<i64>, StoreError> {
        try_join_all(stored_ids.iter().map(|stored_id| async move {
            Ok::<i64, StoreError>(
                redis::cmd(command)
                    .arg(self.keys.session(stored_id))
                    .query_async(&mut self.conn())
                    .await?,
            )
        }))
        .await
    }
}

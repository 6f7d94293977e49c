//! One person across apps: every session with a `unionid` is in that unionid's
//! index (`{p}union:{<unionid>}:sessions`, whatever its app), so an operator can
//! list them and end them all at once. The index is pruned as the per-user one
//! is: entries past the absolute lifetime at each login, dead ones at each
//! listing, and it expires `max_lifetime_secs` after its newest session.

use futures_util::future::try_join_all;
use redis::AsyncCommands;

use super::{
    layout::{SessionRecord, StoredSession},
    EndReason, SessionStore, StoreError,
};

impl SessionStore {
    /// Adds a session to its unionid's index (one pipeline on that slot),
    /// dropping entries older than the absolute lifetime.
    pub(super) async fn index_union(
        &self,
        unionid: &str,
        stored_id: &str,
        created_ms: u64,
    ) -> Result<(), StoreError> {
        let index = self.backend.keys.union_sessions(unionid);
        let keep = self.policy.max_lifetime_secs;
        let () = redis::pipe()
            .zadd(&index, stored_id, created_ms)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&index)
            .arg("-inf")
            .arg(created_ms.saturating_sub(keep * 1000))
            .ignore()
            .expire(&index, keep as i64)
            .ignore()
            .query_async(&mut self.backend.conn())
            .await?;
        Ok(())
    }

    /// Takes an ended session out of its unionid's index.
    pub(super) async fn unindex_union(
        &self,
        unionid: &str,
        stored_id: &str,
    ) -> Result<(), StoreError> {
        let _: i64 = self
            .backend
            .conn()
            .zrem(self.backend.keys.union_sessions(unionid), stored_id)
            .await?;
        Ok(())
    }

    /// The live sessions of one person in every app, oldest first; dead index
    /// entries are pruned.
    pub async fn list_union(&self, unionid: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let index = self.backend.keys.union_sessions(unionid);
        self.list_index(&index).await
    }

    /// Ends every session of one person, in every app, at once (their clients
    /// learn `session_revoked`); answers how many were live. As for one user,
    /// only the members read are taken out of the index, so a login landing
    /// meanwhile is either ended or stays findable.
    pub async fn revoke_union(&self, unionid: &str) -> Result<u64, StoreError> {
        let index = self.backend.keys.union_sessions(unionid);
        self.backend
            .bounded(async {
                let members: Vec<String> = self.backend.conn().zrange(&index, 0, -1).await?;
                if members.is_empty() {
                    return Ok(0);
                }
                let ended = self.end(&members, EndReason::Revoked).await?;
                // Each ended session leaves its user's index too.
                try_join_all(members.iter().zip(&ended).filter_map(|(id, value)| {
                    let stored = StoredSession::parse(value.as_deref()?, id)?;
                    Some(async move {
                        let user = self
                            .backend
                            .keys
                            .user_key(stored.appid.as_deref(), &stored.openid);
                        self.unindex(&user, id).await
                    })
                }))
                .await?;
                let _: i64 = self.backend.conn().zrem(&index, &members).await?;
                Ok(ended.iter().filter(|value| value.is_some()).count() as u64)
            })
            .await
    }
}

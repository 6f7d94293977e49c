//! One person across apps: every session with a `unionid` is in that unionid's
//! index (`{p}union:{<unionid>}:sessions`, whatever its app), so an operator can
//! list them and end them all at once. The index is pruned as the per-user one
//! is: entries past the absolute lifetime at each login, dead ones at each
//! listing, and it expires `max_lifetime_secs` after its newest session.

use futures_util::future::try_join_all;

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
        let mut pipe = redis::pipe();
        self.add_to_index_commands(&mut pipe, &index, stored_id, created_ms);
        let () = pipe.query_async(&mut self.backend.conn()).await?;
        Ok(())
    }

    /// Takes an ended session out of its unionid's index.
    pub(super) async fn unindex_union(
        &self,
        unionid: &str,
        stored_id: &str,
    ) -> Result<(), StoreError> {
        self.remove_from_index(&self.backend.keys.union_sessions(unionid), stored_id)
            .await
    }

    /// The live sessions of one person in every app, oldest first; dead index
    /// entries are pruned.
    pub async fn list_union(&self, unionid: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let index = self.backend.keys.union_sessions(unionid);
        self.list_index(&index).await
    }

    /// Ends every session of one person, in every app, at once (their clients
    /// learn `session_revoked`), each also out of its user's index; answers how
    /// many were live.
    pub async fn revoke_union(&self, unionid: &str) -> Result<u64, StoreError> {
        let index = self.backend.keys.union_sessions(unionid);
        self.backend
            .bounded(async {
                let ended = self.end_indexed(&index, EndReason::Revoked).await?;
                let live: Vec<(&str, StoredSession)> = ended
                    .iter()
                    .filter_map(|(id, value)| {
                        Some((id.as_str(), StoredSession::parse(value.as_deref()?, id)?))
                    })
                    .collect();
                try_join_all(live.iter().map(|(id, stored)| {
                    let user = self
                        .backend
                        .keys
                        .user_key(stored.appid.as_deref(), &stored.openid);
                    async move { self.unindex(&user, id).await }
                }))
                .await?;
                Ok(ended.iter().filter(|(_, value)| value.is_some()).count() as u64)
            })
            .await
    }
}

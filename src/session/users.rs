//! The per-user side of [`SessionStore`] (a user: one openid of one app, see
//! [`UserKey`]): each user's index of sessions (to
//! list and revoke them all), its current `session_key`, and the profile it
//! shared. The index never outgrows the live sessions for long: dead entries
//! are pruned at each login and listing, and the index expires with the user.

use std::cell::Cell;

use futures_util::future::try_join_all;
use redis::AsyncCommands;

use super::{
    layout::SessionRecord, layout::StoredSession, layout::UserKey, Ban, Device, EndReason,
    NewSession, SessionStore, StoreError,
};
use crate::{clock, secret::Secret};

/// What a login finds on its user's keys after indexing itself.
pub(super) struct UserAtLogin {
    /// The user's live sessions, oldest first, the new one last.
    pub(super) live: Vec<String>,
    /// The profile the user shared before, if any.
    profile: Option<serde_json::Value>,
    /// A unionid known from an earlier login or profile.
    unionid: Option<String>,
}

impl SessionStore {
    /// Stores the user's `session_key` and adds the session to their index (one
    /// pipeline, one slot), pruning entries older than the absolute lifetime.
    pub(super) async fn index_login(
        &self,
        new: &NewSession<'_>,
        user: &UserKey,
        stored_id: &str,
        now_millis: u64,
    ) -> Result<UserAtLogin, StoreError> {
        let keys = &self.backend.keys;
        let index = keys.user_sessions(user);
        let mut pipe = redis::pipe();
        self.user_key_commands(&mut pipe, user, new.session_key, new.unionid, now_millis);
        self.add_to_index_commands(&mut pipe, &index, stored_id, now_millis);
        pipe.zrange(&index, 0, -1)
            .get(keys.user_profile(user))
            .hget(keys.user(user), "unionid");
        let (members, profile, unionid): (Vec<String>, Option<String>, Option<String>) =
            pipe.query_async(&mut self.backend.conn()).await?;
        Ok(UserAtLogin {
            live: self.prune_index(&index, members).await?,
            profile: profile.and_then(|p| serde_json::from_str(&p).ok()),
            unionid,
        })
    }

    /// The user hash as a fresh `code2Session` leaves it (a login, a step-up):
    /// the newest `session_key`, the unionid if it named one, and the absolute
    /// lifetime from now.
    fn user_key_commands(
        &self,
        pipe: &mut redis::Pipeline,
        user: &UserKey,
        session_key: &Secret,
        unionid: Option<&str>,
        now_millis: u64,
    ) {
        let user = self.backend.keys.user(user);
        // Alipay's login gives none: the hash then holds no session_key.
        if !session_key.is_empty() {
            pipe.hset(&user, "session_key", session_key.expose())
                .ignore();
        }
        pipe.hset(&user, "updated_at", now_millis / 1000).ignore();
        if let Some(unionid) = unionid {
            pipe.hset(&user, "unionid", unionid).ignore();
        }
        pipe.expire(&user, self.policy.max_lifetime_secs as i64)
            .ignore();
    }

    /// Stores the user's newest `session_key` after a step-up.
    pub(super) async fn store_session_key(
        &self,
        user: &UserKey,
        session_key: &Secret,
        unionid: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        self.user_key_commands(&mut pipe, user, session_key, unionid, clock::unix_millis());
        let () = pipe.query_async(&mut self.backend.conn()).await?;
        Ok(())
    }

    /// A user who shared a profile before: the new session carries it, and the
    /// unionid learnt from it, too.
    pub(super) async fn carry_user_data(
        &self,
        stored_id: &str,
        stored: StoredSession,
        user: &UserAtLogin,
    ) -> Result<StoredSession, StoreError> {
        let unionid = stored.unionid.clone().or_else(|| user.unionid.clone());
        if user.profile.is_none() && unionid == stored.unionid {
            return Ok(stored);
        }
        let carried = StoredSession {
            unionid,
            profile: user.profile.clone(),
            ..stored
        };
        self.amend(stored_id, |s| {
            s.profile = carried.profile.clone();
            s.unionid = carried.unionid.clone();
        })
        .await?;
        Ok(carried)
    }

    /// `session.one_per_device`: makes the new session the user's one session
    /// of `device` and ends the one it replaces. The swap is one transaction on
    /// the user's slot, so of logins racing on one device each ends the one
    /// before it and exactly one, the last, stays. The replaced session leaves
    /// `live`, so `max_per_user` does not count it again.
    pub(super) async fn replace_on_device(
        &self,
        user: &UserKey,
        device: &Device,
        stored_id: &str,
        live: &mut Vec<String>,
    ) -> Result<(), StoreError> {
        let devices = self.backend.keys.user_devices(user);
        let (replaced,): (Option<String>,) = redis::pipe()
            .atomic()
            .hget(&devices, device.as_str())
            .hset(&devices, device.as_str(), stored_id)
            .ignore()
            .expire(&devices, self.policy.max_lifetime_secs as i64)
            .ignore()
            .query_async(&mut self.backend.conn())
            .await?;
        let Some(replaced) = replaced.filter(|r| r != stored_id) else {
            return Ok(());
        };
        self.end(std::slice::from_ref(&replaced), EndReason::Replaced)
            .await?;
        self.unindex(user, &replaced).await?;
        live.retain(|id| *id != replaced);
        log::info!(
            "user {} new session on device {}: replaced the previous one",
            user.as_str(),
            device.as_str()
        );
        Ok(())
    }

    /// Over `session.max_per_user`: revokes the oldest of `live` (index order).
    pub(super) async fn enforce_max_per_user(
        &self,
        user: &UserKey,
        live: Vec<String>,
    ) -> Result<(), StoreError> {
        let limit = self.policy.max_per_user as usize;
        if limit == 0 || live.len() <= limit {
            return Ok(());
        }
        let excess = &live[..live.len() - limit];
        self.end(excess, EndReason::Replaced).await?;
        let _: i64 = self
            .backend
            .conn()
            .zrem(self.backend.keys.user_sessions(user), excess)
            .await?;
        log::info!(
            "user {} over max_per_user: revoked {} oldest",
            user.as_str(),
            excess.len()
        );
        Ok(())
    }

    /// Takes one ended session out of its user's index.
    pub(super) async fn unindex(&self, user: &UserKey, stored_id: &str) -> Result<(), StoreError> {
        self.remove_from_index(&self.backend.keys.user_sessions(user), stored_id)
            .await
    }

    /// Adds a session to an index (a user's, a unionid's), scored by its
    /// creation time in milliseconds (so sessions made in one second keep their
    /// order), dropping entries past the absolute lifetime; the index expires
    /// that long after its newest entry.
    pub(super) fn add_to_index_commands(
        &self,
        pipe: &mut redis::Pipeline,
        index: &str,
        stored_id: &str,
        created_ms: u64,
    ) {
        let keep = self.policy.max_lifetime_secs;
        pipe.zadd(index, stored_id, created_ms)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(index)
            .arg("-inf")
            .arg(created_ms.saturating_sub(keep * 1000))
            .ignore()
            .expire(index, keep as i64)
            .ignore();
    }

    /// Takes one session out of an index (a user's, a unionid's).
    pub(super) async fn remove_from_index(
        &self,
        index: &str,
        stored_id: &str,
    ) -> Result<(), StoreError> {
        let _: i64 = self.backend.conn().zrem(index, stored_id).await?;
        Ok(())
    }

    /// The live sessions of a user, oldest first; dead index entries are pruned.
    pub async fn list_user(&self, user: &UserKey) -> Result<Vec<SessionRecord>, StoreError> {
        self.list_index(&self.backend.keys.user_sessions(user))
            .await
    }

    /// The live sessions an index (a user's, a unionid's) names, oldest first;
    /// dead entries are taken out of it.
    pub(super) async fn list_index(&self, index: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let members: Vec<String> = self
            .backend
            .bounded(async { Ok(self.backend.conn().zrange(index, 0, -1).await?) })
            .await?;
        let records = self
            .backend
            .bounded(try_join_all(members.iter().map(|m| self.peek(m))))
            .await?;
        let dead: Vec<&String> = members
            .iter()
            .zip(&records)
            .filter_map(|(m, r)| r.is_none().then_some(m))
            .collect();
        if !dead.is_empty() {
            self.backend
                .bounded(async { Ok(self.backend.conn().zrem::<_, _, i64>(index, dead).await?) })
                .await?;
        }
        Ok(records.into_iter().flatten().collect())
    }

    /// Revokes every session of a user at once; answers how many were live.
    ///
    /// Takes out of the index only the members it read and deleted, never the
    /// index as a whole: a login landing meanwhile (its key written, then its
    /// `ZADD`) is either among them, and revoked, or stays indexed, so no live
    /// session is ever lost from the index. Each step is one single-key command
    /// (or one per session key), as a Redis Cluster requires.
    pub async fn revoke_user(&self, user: &UserKey) -> Result<u64, StoreError> {
        self.end_user(user, EndReason::Revoked).await
    }

    /// Bans a user: their ban key (expiring with the ban), then every session
    /// of theirs ended with `user_banned` at once. Answers the ban and how many
    /// sessions it ended. A login after `code2Session` checks the key.
    pub async fn ban(
        &self,
        user: &UserKey,
        for_secs: Option<u64>,
        reason: Option<&str>,
    ) -> Result<(Ban, u64), StoreError> {
        let ban = Ban {
            until: for_secs.map(|secs| clock::unix_secs() + secs),
            reason: reason.map(str::to_string),
        };
        let value = serde_json::to_string(&ban).expect("plain struct serializes");
        let key = self.backend.keys.user_ban(user);
        self.backend
            .bounded(async {
                let mut set = redis::cmd("SET");
                set.arg(&key).arg(&value);
                if let Some(secs) = for_secs {
                    set.arg("EX").arg(secs);
                }
                let _: () = set.query_async(&mut self.backend.conn()).await?;
                Ok(())
            })
            .await?;
        let ended = self
            .end_user(user, EndReason::Banned { until: ban.until })
            .await?;
        Ok((ban, ended))
    }

    /// Lifts a ban; `false` if there was none.
    pub async fn unban(&self, user: &UserKey) -> Result<bool, StoreError> {
        let key = self.backend.keys.user_ban(user);
        self.backend
            .bounded(async {
                let removed: i64 = self.backend.conn().del(&key).await?;
                Ok(removed > 0)
            })
            .await
    }

    /// The user's ban, while it lasts.
    pub async fn ban_of(&self, user: &UserKey) -> Result<Option<Ban>, StoreError> {
        let key = self.backend.keys.user_ban(user);
        self.backend
            .bounded(async {
                let raw: Option<String> = self.backend.conn().get(&key).await?;
                Ok(raw.map(|raw| {
                    serde_json::from_str(&raw).unwrap_or(Ban {
                        until: None,
                        reason: None,
                    })
                }))
            })
            .await
    }

    /// Ends every session of a user at once with `reason`; answers how many
    /// were live.
    async fn end_user(&self, user: &UserKey, reason: EndReason) -> Result<u64, StoreError> {
        let index = self.backend.keys.user_sessions(user);
        self.backend
            .bounded(async {
                let ended = self.end_indexed(&index, reason).await?;
                Ok(ended.iter().filter(|(_, value)| value.is_some()).count() as u64)
            })
            .await
    }

    /// Ends every session an index (a user's, a unionid's) names with
    /// `reason`, then takes exactly the members it read out of the index, never
    /// the index as a whole: a login landing meanwhile is either among them, and
    /// ended, or stays indexed. Answers each member with its value if it was live.
    pub(super) async fn end_indexed(
        &self,
        index: &str,
        reason: EndReason,
    ) -> Result<Vec<(String, Option<String>)>, StoreError> {
        let members: Vec<String> = self.backend.conn().zrange(index, 0, -1).await?;
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let ended = self.end(&members, reason).await?;
        let _: i64 = self.backend.conn().zrem(index, &members).await?;
        Ok(members.into_iter().zip(ended).collect())
    }

    /// The user's current `session_key`: the one from their latest login, which
    /// every live session of theirs decrypts with.
    pub async fn session_key(&self, user: &UserKey) -> Result<Option<Secret>, StoreError> {
        self.backend
            .bounded(async {
                let key: Option<String> = self
                    .backend
                    .conn()
                    .hget(self.backend.keys.user(user), "session_key")
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
        user: &UserKey,
        profile: &serde_json::Value,
        unionid: Option<&str>,
    ) -> Result<(), StoreError> {
        let keys = &self.backend.keys;
        self.backend
            .bounded(async {
                let keep = self.policy.max_lifetime_secs;
                let mut pipe = redis::pipe();
                pipe.set_ex(keys.user_profile(user), profile.to_string(), keep)
                    .ignore();
                if let Some(unionid) = unionid {
                    // Only where none is known: HSETNX.
                    pipe.cmd("HSETNX")
                        .arg(keys.user(user))
                        .arg("unionid")
                        .arg(unionid)
                        .ignore();
                }
                pipe.zrange(keys.user_sessions(user), 0, -1);
                let (members,): (Vec<String>,) = pipe.query_async(&mut self.backend.conn()).await?;
                try_join_all(members.iter().map(|stored_id| async move {
                    // Set when this rewrite gave the session the unionid: its
                    // creation time (ms), by which the unionid's index scores it.
                    let learnt = Cell::new(None);
                    let live = self
                        .amend(stored_id, |stored| {
                            stored.profile = Some(profile.clone());
                            learnt.set(None);
                            if stored.unionid.is_none() && unionid.is_some() {
                                stored.unionid = unionid.map(str::to_string);
                                learnt.set(Some(stored.created_at * 1000));
                            }
                        })
                        .await?;
                    match (live, unionid, learnt.get()) {
                        (true, Some(unionid), Some(created_ms)) => {
                            self.index_union(unionid, stored_id, created_ms).await
                        }
                        _ => Ok(()),
                    }
                }))
                .await?;
                Ok(())
            })
            .await
    }

    /// Drops index members whose session key is gone (idle-expired or deleted by
    /// hand); answers the live ones, in index order.
    async fn prune_index(
        &self,
        index: &str,
        members: Vec<String>,
    ) -> Result<Vec<String>, StoreError> {
        let alive = self.backend.on_each_session("EXISTS", &members).await?;
        let (live, dead): (Vec<_>, Vec<_>) = members
            .into_iter()
            .zip(alive)
            .partition(|(_, alive)| *alive == 1);
        if !dead.is_empty() {
            let dead: Vec<String> = dead.into_iter().map(|(m, _)| m).collect();
            let _: i64 = self.backend.conn().zrem(index, dead).await?;
        }
        Ok(live.into_iter().map(|(m, _)| m).collect())
    }
}

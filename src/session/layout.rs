//! Where sessions live in Redis: the key names ([`Keys`]) and what a session
//! key holds ([`StoredSession`]). The one place that knows the layout.
//!
//! | key | type | holds | TTL |
//! |---|---|---|---|
//! | `{p}s:<stored id>` | string (JSON) | `openid`, `unionid`, `created_at` | remaining idle lifetime |
//! | `{p}user:{<openid>}` | hash | `session_key`, `unionid`, `updated_at` | `max_lifetime_secs` from the last login |
//! | `{p}user:{<openid>}:sessions` | sorted set | stored ids scored by creation time (ms) | `max_lifetime_secs` from the last login |
//! | `{p}user:{<openid>}:profile` | string (JSON) | the decrypted profile (nickName, avatarUrl, …) | `max_lifetime_secs` from when it was stored |
//! | `{p}code:<sha256 of code>` | string | a login code's outcome (see `codes`) | 300 s |
//! | `{p}login_rate:<address>` | string | logins from one client address in its window (see `login_rate`) | 60 s from its first login |
//!
//! A session's *stored id* names it in Redis and in the admin tools: the id
//! itself, or with `session.hash_ids` the hex SHA-256 of the id, so that a Redis
//! dump, replica or `SCAN` holds no usable bearer token.
//!
//! The user keys share a `{<openid>}` hash tag so a Redis Cluster keeps them in
//! one slot; a session key lives in a slot of its own.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{log_tag, SessionId};

/// Names of the keys the server writes. Joined with `concat`, not `format!`:
/// key names are built on every guarded request, and the formatting machinery
/// is measurably dearer there (README, Performance).
#[derive(Debug, Clone)]
pub(super) struct Keys {
    pub(super) prefix: String,
    hash_ids: bool,
}

impl Keys {
    pub(super) fn new(prefix: String, hash_ids: bool) -> Keys {
        Keys { prefix, hash_ids }
    }

    /// The name of a session in Redis and in the admin tools.
    pub(super) fn stored_id<'a>(&self, id: &'a SessionId) -> Cow<'a, str> {
        if self.hash_ids {
            Cow::Owned(hex::encode(Sha256::digest(id.as_str().as_bytes())))
        } else {
            Cow::Borrowed(id.as_str())
        }
    }

    /// What an operator typed as a session: a session id, or (with `hash_ids`)
    /// a stored id. `None` if it is neither.
    pub(super) fn parse_stored_id(&self, text: &str) -> Option<String> {
        if let Ok(id) = SessionId::parse(text.as_bytes()) {
            return Some(self.stored_id(&id).into_owned());
        }
        let is_hash =
            text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        (self.hash_ids && is_hash).then(|| text.to_string())
    }

    pub(super) fn session(&self, stored_id: &str) -> String {
        [&self.prefix, "s:", stored_id].concat()
    }
    pub(super) fn session_pattern(&self) -> String {
        [&self.prefix, "s:*"].concat()
    }
    pub(super) fn user(&self, openid: &str) -> String {
        [&self.prefix, "user:{", openid, "}"].concat()
    }
    pub(super) fn user_sessions(&self, openid: &str) -> String {
        [&self.prefix, "user:{", openid, "}:sessions"].concat()
    }
    pub(super) fn user_sessions_pattern(&self) -> String {
        [&self.prefix, "user:{*}:sessions"].concat()
    }
    pub(super) fn user_profile(&self, openid: &str) -> String {
        [&self.prefix, "user:{", openid, "}:profile"].concat()
    }
    pub(super) fn login_code(&self, code_hash: &str) -> String {
        [&self.prefix, "code:", code_hash].concat()
    }
    pub(super) fn login_rate(&self, client: &str) -> String {
        [&self.prefix, "login_rate:", client].concat()
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

impl StoredSession {
    /// A session value, or `None` (with a warning) if someone wrote something
    /// else there.
    pub(super) fn parse(raw: &str, stored_id: &str) -> Option<StoredSession> {
        let parsed = serde_json::from_str(raw);
        if parsed.is_err() {
            log::warn!(
                "session #{} holds a value that is not a session; treated as invalid",
                log_tag(stored_id.as_bytes())
            );
        }
        parsed.ok()
    }

    pub(super) fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain struct serializes")
    }

    /// Unix seconds at which no renewal keeps it alive any longer.
    pub(super) fn absolute_deadline(&self, max_lifetime_secs: u64) -> u64 {
        self.created_at.saturating_add(max_lifetime_secs)
    }
}

/// A session as the admin tools see it, by stored id, without touching it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionRecord {
    /// The session id, or its SHA-256 with `session.hash_ids`.
    #[serde(rename = "sessionid")]
    pub stored_id: String,
    #[serde(skip)]
    pub openid: String,
    #[serde(skip)]
    pub unionid: Option<String>,
    pub created_at: u64,
    /// Seconds of idle lifetime left.
    pub expires_in: u64,
}

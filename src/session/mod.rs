//! Sessions: the id ([`SessionId`]), what a live session says ([`Session`]),
//! the lifetime rules ([`SessionPolicy`]), their home in Redis ([`SessionStore`]),
//! the record of login codes already used ([`LoginCodes`]), logins per client
//! address ([`LoginRate`]), and the optional
//! per-instance cache behind `SessionStore::touch` (handlers never know whether
//! it is on).
//!
//! - `id`: [`SessionId`], parsing and generating ids.
//! - `device`: [`Device`], the device type a login names.
//! - `layout`: the key names and what a session key holds (where every key is named).
//! - `backend`: the connection, key layout and time bound the parts below share.
//! - `store`: [`SessionStore`]: create (where every TTL is set), touch, revoke, look up.
//! - `users`: the per-user index, `session_key` and profile.
//! - `unions`: the per-unionid index: one person's sessions in every app.
//! - `reader` and `cached`: the guard's read, straight from Redis or through the
//!   local cache (`store` dispatches between them).
//! - `cache` and `tracking`: the local cache and its `CLIENT TRACKING` connection.
//! - `codes`: [`LoginCodes`], login codes already sent to WeChat.
//! - `login_rate`: [`LoginRate`], logins per client address across the fleet.
//!
//! This module knows neither HTTP nor WeChat: the HTTP layer hands it a verified
//! identity ([`NewSession`]) and asks it about ids.

mod backend;
mod cache;
mod cached;
mod codes;
mod device;
mod id;
mod layout;
mod login_rate;
mod reader;
mod store;
mod tracking;
mod unions;
mod users;

use std::sync::Arc;

pub use codes::{CodeClaim, LoginCodes};
pub use device::{Device, InvalidDevice};
pub use id::{log_tag, MalformedId, SessionId};
use layout::SessionData;
pub use layout::{Ban, SessionRecord, UserKey};
pub use login_rate::LoginRate;
pub use store::{SessionStore, StoreStats};

use crate::{config::Platform, secret::Secret};

/// Lifetimes of a session, from `[session]` in the configuration.
#[derive(Debug, Clone)]
pub struct SessionPolicy {
    /// Idle lifetime: the TTL a session gets at login and, with `sliding`, on each use.
    pub ttl_secs: u64,
    pub sliding: bool,
    /// Absolute lifetime from `created_at`; no renewal goes past it.
    pub max_lifetime_secs: u64,
    /// Live sessions one openid may hold; 0 = no limit.
    pub max_per_user: u64,
    /// A login naming a device ends the user's other sessions of that device.
    pub one_per_device: bool,
}

impl SessionPolicy {
    pub fn from_config(config: &crate::config::Config) -> SessionPolicy {
        SessionPolicy {
            ttl_secs: config.session.ttl_secs,
            sliding: config.session.sliding,
            max_lifetime_secs: config.session.max_lifetime_secs,
            max_per_user: config.session.max_per_user,
            one_per_device: config.session.one_per_device,
        }
    }
}

/// A verified identity of one app's user, about to get a session.
pub struct NewSession<'a> {
    /// The app it logged in to.
    pub appid: &'a str,
    pub openid: &'a str,
    /// `wecom`: the user's corporation.
    pub corpid: Option<&'a str>,
    pub unionid: Option<&'a str>,
    pub session_key: &'a Secret,
    /// The device type the login named, if any.
    pub device: Option<&'a Device>,
}

/// A live session, as the guard hands it to a handler.
///
/// Take it as a handler argument (`async fn me(session: Session)`) and the request
/// is rejected with 401 before the handler runs unless it carries a live session id.
#[derive(Clone)]
pub struct Session {
    id: SessionId,
    /// What Redis holds for it; shared with the local cache, never copied per request.
    data: Arc<SessionData>,
    expires_in: u64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("openid", &self.data.openid())
            .field("created_at", &self.data.created_at)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub fn id(&self) -> &SessionId {
        &self.id
    }
    pub fn openid(&self) -> &str {
        self.data.openid()
    }
    pub fn unionid(&self) -> Option<&str> {
        self.data.unionid()
    }
    /// Unix seconds.
    pub fn created_at(&self) -> u64 {
        self.data.created_at
    }
    /// Seconds until the session expires unless used again.
    pub fn expires_in(&self) -> u64 {
        self.expires_in
    }
    /// The profile the user shared through `/session/userinfo`, if any
    /// (read from the session value on each call).
    pub fn profile(&self) -> Option<serde_json::Value> {
        self.data.profile()
    }
    /// The device type its login named, if any.
    pub fn device(&self) -> Option<&str> {
        self.data.device()
    }

    /// The app it was made for (a session from before apps: the `default` app's).
    pub fn appid(&self) -> &str {
        self.data.appid()
    }

    /// Its app's platform.
    pub fn platform(&self) -> Platform {
        self.data.platform()
    }

    /// `wecom`: the corporation of its user (whose `userid` is the openid).
    pub fn corpid(&self) -> Option<&str> {
        self.data.corpid()
    }

    /// Unix seconds until which a step-up (`POST /session/elevate`) holds, if
    /// it holds now.
    pub fn elevated_until(&self) -> Option<u64> {
        self.data
            .elevated_until()
            .filter(|&until| until > crate::clock::unix_secs())
    }

    /// The session as `GET /session` shows it: `openid`, `unionid`,
    /// `created_at`, `device`, `appid`, `corpid` (WeCom), `elevated_until`,
    /// `profile` (when shared), `platform` and `expires_in`, as a JSON object.
    /// Written from the stored value as it is, the missing fields spliced in,
    /// not parsed and serialized again (but for a run-out step-up of a session
    /// holding a profile): the guard's answer is the hottest path of the server.
    pub fn to_json(&self) -> Vec<u8> {
        self.data.json_with_expires_in(self.expires_in)
    }
}

/// Why a session ended, as its client may learn for a while (`ttl_secs` at
/// most) instead of a bare `invalid_session`. A logout or an expiry has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// A newer login took its place (`one_per_device`, `max_per_user`).
    Replaced,
    /// An operator ended it (admin route or CLI).
    Revoked,
    /// Its user was banned, until then (unix seconds; `None`: until unbanned).
    Banned { until: Option<u64> },
}

impl EndReason {
    /// The contract's error code, which is also how the reason is stored.
    pub fn code(self) -> &'static str {
        match self {
            EndReason::Replaced => "session_replaced",
            EndReason::Revoked => "session_revoked",
            EndReason::Banned { .. } => "user_banned",
        }
    }
}

/// What the guard's lookup of a session id found.
#[derive(Debug)]
pub enum Lookup {
    Live(Session),
    /// Ended a short while ago, for this reason.
    Ended(EndReason),
    /// Unknown, expired, logged out, or ended too long ago.
    Unknown,
}

/// Why the store could not answer.
#[derive(Debug, Clone)]
pub enum StoreError {
    /// Redis unreachable, failing or too slow; the detail is for logs only.
    Unavailable(String),
    /// The Redis URL is unusable.
    Config(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Unavailable(detail) => write!(f, "redis unavailable: {detail}"),
            StoreError::Config(detail) => write!(f, "redis configuration: {detail}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<crate::redis_conn::TimedOut> for StoreError {
    fn from(e: crate::redis_conn::TimedOut) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

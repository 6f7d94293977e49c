//! Where sessions live in Redis: the key names ([`Keys`]) and what a session
//! key holds ([`StoredSession`]). The one place that knows the layout.
//!
//! | key | type | holds | TTL |
//! |---|---|---|---|
//! | `{p}s:<stored id>` | string (JSON) | `openid`, `unionid`, `created_at`, `device`, `appid`, `corpid` (WeCom), `elevated_until` (once elevated), `profile` (once shared); or a tombstone (see `tombstone`) | remaining idle lifetime; a tombstone: until its `until_ms` |
//! | `{p}user:{<user>}` | hash | `session_key`, `unionid`, `updated_at` | `max_lifetime_secs` from the last login |
//! | `{p}user:{<user>}:sessions` | sorted set | stored ids scored by creation time (ms) | `max_lifetime_secs` from the last login |
//! | `{p}user:{<user>}:devices` | hash | device → stored id of its session (`session.one_per_device`) | `max_lifetime_secs` from the last login on a device |
//! | `{p}user:{<user>}:ban` | string (JSON) | `until` (unix secs or null), `reason` | until the ban ends (none for a ban without end) |
//! | `{p}user:{<user>}:profile` | string (JSON) | the decrypted profile (nickName, avatarUrl, …) | `max_lifetime_secs` from when it was stored |
//! | `{p}union:{<unionid>}:sessions` | sorted set | stored ids of every session with that unionid, in any app, scored by creation time (ms) | `max_lifetime_secs` from the newest |
//! | `{p}code:<sha256 of appid:code>` | string | a login code's outcome (see `codes`) | 300 s |
//! | `{p}login_rate:<address>` | string | logins from one client address in its window (see `login_rate`) | 60 s from its first login |
//!
//! The other keys the server writes, each WeChat or WeCom app's shared
//! access_token and its lock (`{p}wechat:access_token` for the `default` app,
//! `{p}wechat:<appid>:access_token` for others), are named in `wechat::token`,
//! which knows no sessions.
//!
//! A session's *stored id* names it in Redis and in the admin tools: the id
//! itself, or with `session.hash_ids` the hex SHA-256 of the id, so that a Redis
//! dump, replica or `SCAN` holds no usable bearer token.
//!
//! A *user* is one openid of one app ([`UserKey`]): `<openid>` for the app
//! named `default` (`[wechat]`'s, whose keys kept their names from before apps
//! existed), `<appid>/<openid>` for any other, so users of two apps never share
//! a key. The user keys share a `{<user>}` hash tag so a Redis Cluster keeps
//! them in one slot; a session key lives in a slot of its own.

use std::{borrow::Cow, collections::HashMap, io::Write, ops::Range, sync::Arc};

use redis::{RedisWrite, ToRedisArgs, ToSingleRedisArg};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{log_tag, EndReason, SessionId};
use crate::config::{App, Platform, DEFAULT_APP};

/// The apps whose sessions the store answers for: each appid's platform, and
/// the app that owns sessions written before apps existed (`default`).
#[derive(Debug)]
pub(super) struct AppIndex {
    platforms: HashMap<String, Platform>,
    /// The `default` app's appid and platform, compared before any hashing:
    /// most deployments' sessions are all of it.
    default: Option<(String, Platform)>,
}

impl AppIndex {
    pub(super) fn new(apps: &[App]) -> AppIndex {
        AppIndex {
            platforms: apps.iter().map(|a| (a.appid.clone(), a.platform)).collect(),
            default: apps
                .iter()
                .find(|a| a.name == DEFAULT_APP)
                .map(|a| (a.appid.clone(), a.platform)),
        }
    }

    /// `wxd`, the default app's, and `tt1`, a Douyin app's.
    #[cfg(test)]
    pub(super) fn for_tests() -> AppIndex {
        let app = |name: &str, platform, appid: &str| App {
            name: name.into(),
            platform,
            appid: appid.into(),
            secret: Default::default(),
            api_base: String::new(),
            mock: true,
            corpid: None,
            private_key_file: None,
            alipay_public_key_file: None,
            section: String::new(),
        };
        AppIndex::new(&[
            app(DEFAULT_APP, Platform::Wechat, "wxd"),
            app("tt", Platform::Douyin, "tt1"),
        ])
    }

    /// The app a stored session names, or for one from before apps the
    /// `default` app's appid (empty without one).
    pub(super) fn appid_of(&self, written: Option<String>) -> String {
        written
            .or_else(|| self.default_appid().map(str::to_owned))
            .unwrap_or_default()
    }

    fn default_appid(&self) -> Option<&str> {
        self.default.as_ref().map(|(appid, _)| appid.as_str())
    }

    /// The platform of a session's app (`None`: written before apps, so
    /// `default`'s); `None` when that app is not configured (any more): such
    /// a session is no session.
    fn platform_of(&self, appid: Option<&str>) -> Option<Platform> {
        match (appid, &self.default) {
            (None, Some((_, platform))) => Some(*platform),
            (Some(appid), Some((default, platform))) if appid == default => Some(*platform),
            (Some(appid), _) => self.platform_of_other(appid),
            (None, None) => None,
        }
    }

    /// Looked up out of line: the hashing stays out of the guard's code for
    /// the one-app server's sessions.
    #[inline(never)]
    fn platform_of_other(&self, appid: &str) -> Option<Platform> {
        self.platforms.get(appid).copied()
    }
}

/// One user of one app, as the per-user keys name them (see the module's doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserKey(String);

impl UserKey {
    /// The user's part of its key names (inside the `{…}` hash tag).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Names of the keys the server writes. Joined with `concat`, not `format!`:
/// key names are built on every guarded request, and the formatting machinery
/// is measurably dearer there (README, Performance).
#[derive(Debug, Clone)]
pub(super) struct Keys {
    pub(super) prefix: String,
    hash_ids: bool,
    pub(super) apps: Arc<AppIndex>,
}

impl Keys {
    pub(super) fn new(prefix: String, hash_ids: bool, apps: AppIndex) -> Keys {
        Keys {
            prefix,
            hash_ids,
            apps: Arc::new(apps),
        }
    }

    /// The user `openid` of app `appid` (`None`: a session from before apps).
    pub(super) fn user_key(&self, appid: Option<&str>, openid: &str) -> UserKey {
        match appid {
            Some(appid) if self.apps.default_appid() != Some(appid) => {
                UserKey([appid, "/", openid].concat())
            }
            _ => UserKey(openid.to_string()),
        }
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
    /// [`Keys::session`] as a command argument, written straight into the
    /// command: the guard's read builds no key of its own.
    pub(super) fn session_arg<'a>(&'a self, stored_id: &'a str) -> SessionKey<'a> {
        SessionKey {
            prefix: &self.prefix,
            stored_id,
        }
    }
    pub(super) fn session_pattern(&self) -> String {
        [&self.prefix, "s:*"].concat()
    }
    pub(super) fn user(&self, user: &UserKey) -> String {
        [&self.prefix, "user:{", user.as_str(), "}"].concat()
    }
    pub(super) fn user_sessions(&self, user: &UserKey) -> String {
        [&self.prefix, "user:{", user.as_str(), "}:sessions"].concat()
    }
    pub(super) fn user_sessions_pattern(&self) -> String {
        [&self.prefix, "user:{*}:sessions"].concat()
    }
    pub(super) fn user_devices(&self, user: &UserKey) -> String {
        [&self.prefix, "user:{", user.as_str(), "}:devices"].concat()
    }
    pub(super) fn user_ban(&self, user: &UserKey) -> String {
        [&self.prefix, "user:{", user.as_str(), "}:ban"].concat()
    }
    pub(super) fn user_profile(&self, user: &UserKey) -> String {
        [&self.prefix, "user:{", user.as_str(), "}:profile"].concat()
    }
    pub(super) fn union_sessions(&self, unionid: &str) -> String {
        [&self.prefix, "union:{", unionid, "}:sessions"].concat()
    }
    pub(super) fn login_code(&self, code_hash: &str) -> String {
        [&self.prefix, "code:", code_hash].concat()
    }
    pub(super) fn login_rate(&self, client: &str) -> String {
        [&self.prefix, "login_rate:", client].concat()
    }
}

/// A session's key name, in pieces (see [`Keys::session_arg`]).
#[derive(Clone, Copy)]
pub(super) struct SessionKey<'a> {
    prefix: &'a str,
    stored_id: &'a str,
}

impl<'a> SessionKey<'a> {
    /// The key's pieces, to be joined.
    pub(super) fn pieces(&self) -> [&'a [u8]; 3] {
        [self.prefix.as_bytes(), b"s:", self.stored_id.as_bytes()]
    }
}

impl ToRedisArgs for SessionKey<'_> {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        let mut arg = out.writer_for_next_arg();
        for piece in self.pieces() {
            // Writing into the command's own buffer cannot fail.
            let _ = arg.write_all(piece);
        }
    }
}

impl ToSingleRedisArg for SessionKey<'_> {}

/// What a session key holds, as `redis-cli GET` shows it.
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct StoredSession {
    pub(super) openid: String,
    pub(super) unionid: Option<String>,
    pub(super) created_at: u64,
    /// The device type its login named (sessions written before devices
    /// existed have no such field).
    #[serde(default)]
    pub(super) device: Option<String>,
    /// The app it was made for (sessions written before apps have none: they
    /// are the `default` app's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) appid: Option<String>,
    /// `wecom`: the corporation of its user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) corpid: Option<String>,
    /// Unix seconds until which a step-up (`POST /session/elevate`) holds;
    /// absent until the first one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) elevated_until: Option<u64>,
    /// A copy of the user's profile, once `/session/userinfo` has stored one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) profile: Option<serde_json::Value>,
}

impl StoredSession {
    /// A session value, or `None` (with a warning) if someone wrote something
    /// else there.
    pub(super) fn parse(raw: &str, stored_id: &str) -> Option<StoredSession> {
        let parsed = serde_json::from_str(raw);
        if parsed.is_err() && tombstone(raw).is_none() {
            warn_not_a_session(stored_id);
        }
        parsed.ok()
    }

    pub(super) fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain struct serializes")
    }
}

/// What a session key holds for a while after its session ended with a reason
/// the client may learn: `{"ended":"session_replaced","until_ms":…}`, expiring
/// at `until_ms`, when the session would have expired or `ttl_secs` after its
/// end, whichever is sooner. `None`: not a tombstone.
pub(super) fn tombstone(raw: &str) -> Option<(EndReason, u64)> {
    if !is_tombstone(raw) {
        return None;
    }
    read_tombstone(raw)
}

/// Cold: the guard reads a tombstone only for a while after a session ended.
#[cold]
#[inline(never)]
fn read_tombstone(raw: &str) -> Option<(EndReason, u64)> {
    #[derive(Deserialize)]
    struct Tombstone<'a> {
        ended: &'a str,
        until_ms: u64,
        #[serde(default)]
        ban_until: Option<u64>,
    }
    let tombstone: Tombstone = serde_json::from_str(raw).ok()?;
    let reason = match tombstone.ended {
        "session_replaced" => EndReason::Replaced,
        "session_revoked" => EndReason::Revoked,
        "user_banned" => EndReason::Banned {
            until: tombstone.ban_until,
        },
        _ => return None,
    };
    Some((reason, tombstone.until_ms))
}

/// What a tombstone says besides its end (`END_SESSION`'s ARGV[1]).
pub(super) fn tombstone_fields(reason: EndReason) -> String {
    match reason {
        EndReason::Banned { until } => format!(
            r#""ended":"user_banned","ban_until":{}"#,
            until.map_or("null".to_string(), |u| u.to_string())
        ),
        other => format!(r#""ended":"{}""#, other.code()),
    }
}

/// A user's ban, as `{p}user:{<openid>}:ban` holds it (expiring with the ban).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ban {
    /// Unix seconds; `None`: until unbanned.
    pub until: Option<u64>,
    pub reason: Option<String>,
}

/// Whether a session key's value (or its first ten bytes) is a tombstone.
pub(super) fn is_tombstone(raw: &str) -> bool {
    raw.starts_with(r#"{"ended":""#)
}

/// Ends a live session with a reason (ARGV[1], the tombstone's fields but
/// `until_ms`, see `tombstone_fields`): its key becomes its tombstone,
/// for what is left of its idle lifetime and at most ARGV[2] ms, by Redis's
/// clock. Answers the session's value, or nothing if there was no live
/// session (gone, or already ended). One key: a Cluster runs it on its slot.
pub(super) const END_SESSION: &str = r#"local old = redis.call('GET', KEYS[1])
if not old or string.sub(old, 1, 10) == '{"ended":"' then return false end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then return false end
local keep = math.min(left, tonumber(ARGV[2]))
local now = redis.call('TIME')
local until_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + keep
redis.call('SET', KEYS[1], string.format('{%s,"until_ms":%d}', ARGV[1], until_ms), 'PXAT', until_ms)
return old"#;

/// Rewrites a session key (ARGV[2]) only if it still holds ARGV[1], keeping
/// its TTL: 1 if rewritten, 0 if it changed or is gone.
pub(super) const AMEND_SESSION: &str = r#"if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1"#;

/// Someone wrote something else than a session under a session key.
#[cold]
fn warn_not_a_session(stored_id: &str) {
    log::warn!(
        "session #{} holds a value that is not a session; treated as invalid",
        log_tag(stored_id.as_bytes())
    );
}

/// A session value as the guard read it: the JSON exactly as Redis holds it, and
/// where its fields are in it. Parsed without copying a field (only a field
/// written with JSON escapes, which WeChat never sends, gets a copy), and kept
/// whole so that `GET /session` can answer it as it is, with `expires_in`
/// spliced in: a session value holds nothing a client may not see. The
/// profile, which no guard check needs, is parsed when asked for.
///
/// Small on purpose (96 bytes, one allocation for the text): the local cache
/// holds one per session, 100,000 of them within its memory budget.
pub(super) struct SessionData {
    /// The JSON (`text[..json_len]`), then the texts of fields that are not in
    /// it as they are: written with escapes, or the `default` app's appid for
    /// a session from before apps. For almost every session, nothing.
    text: Box<str>,
    json_len: u32,
    platform: Platform,
    /// Whether the JSON has a `device` field (null or not): older sessions lack it.
    device_written: bool,
    /// Whether the JSON names the app (sessions from before apps do not).
    app_written: bool,
    elevated_written: bool,
    pub(super) created_at: u64,
    /// `None` also when the JSON has no such field.
    elevated_until: Option<u64>,
    openid: Text,
    unionid: Text,
    device: Text,
    appid: Text,
    corpid: Text,
    /// Where its digits are in the JSON (read without serde), so that a
    /// run-out step-up is answered as `null` in place.
    elevated_at: Text,
}

/// Where a field's text is in [`SessionData::text`]; [`Text::NONE`]: absent or null.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Text {
    start: u32,
    end: u32,
}

impl Text {
    const NONE: Text = Text {
        start: u32::MAX,
        end: u32::MAX,
    };

    fn at(range: Range<usize>) -> Text {
        Text {
            start: range.start as u32,
            end: range.end as u32,
        }
    }

    fn range(self) -> Option<Range<usize>> {
        (self != Text::NONE).then_some(self.start as usize..self.end as usize)
    }
}

/// A string field as a parser found it: where it is in the JSON, or (written
/// with escapes) its text.
enum Found {
    At(Range<usize>),
    Unescaped(String),
}

/// The fields the guard reads, borrowed from the JSON where they can be.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow)]
    openid: Cow<'a, str>,
    #[serde(borrow, default)]
    unionid: Option<Cow<'a, str>>,
    created_at: u64,
    /// Absent, null, or a device.
    #[serde(default, deserialize_with = "present")]
    device: Option<Option<String>>,
    #[serde(borrow, default)]
    appid: Option<Cow<'a, str>>,
    #[serde(default)]
    corpid: Option<String>,
    #[serde(default, deserialize_with = "present")]
    elevated_until: Option<Option<u64>>,
}

/// A field that is there, as `Some` even when it is null.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct ProfileOnly {
    #[serde(default)]
    profile: Option<serde_json::Value>,
}

impl SessionData {
    /// A session value, or `None`: with a warning if someone wrote something
    /// else there, quietly for a session of an app no longer configured.
    pub(super) fn parse(json: String, stored_id: &str, apps: &AppIndex) -> Option<SessionData> {
        let Some(written) = as_written(&json).or_else(|| as_serde_reads(&json)) else {
            warn_not_a_session(stored_id);
            return None;
        };
        let written_appid = written.appid.as_ref().map(|appid| match appid {
            Found::At(range) => &json[range.clone()],
            Found::Unescaped(appid) => appid.as_str(),
        });
        let Some(platform) = apps.platform_of(written_appid) else {
            log::debug!(
                "session #{} is of an app not configured; treated as invalid",
                log_tag(stored_id.as_bytes())
            );
            return None;
        };
        let app_written = written.appid.is_some();
        let appid = match written.appid {
            Some(appid) => appid,
            None => default_appid(apps),
        };
        let json_len = u32::try_from(json.len()).ok()?;
        let mut text = json;
        let mut place = |field: Option<Found>| match field {
            None => Text::NONE,
            Some(Found::At(range)) => Text::at(range),
            Some(Found::Unescaped(s)) => append(&mut text, &s),
        };
        let openid = place(Some(written.openid));
        let unionid = place(written.unionid);
        let device = place(written.device);
        let appid = place(Some(appid));
        let corpid = place(written.corpid);
        Some(SessionData {
            // No copy: Redis's answer is allocated at its exact length.
            text: text.into_boxed_str(),
            json_len,
            platform,
            device_written: written.device_written,
            app_written,
            elevated_written: written.elevated_written,
            created_at: written.created_at,
            elevated_until: written.elevated_until,
            openid,
            unionid,
            device,
            appid,
            corpid,
            elevated_at: written.elevated_at.map_or(Text::NONE, Text::at),
        })
    }

    /// What a new session holds, as it was just written (for an app in `apps`).
    pub(super) fn of(stored: &StoredSession, apps: &AppIndex) -> SessionData {
        SessionData::parse(stored.to_json(), "", apps).expect("a new session parses")
    }

    fn json(&self) -> &str {
        &self.text[..self.json_len as usize]
    }

    fn text(&self, field: Text) -> Option<&str> {
        field.range().map(|range| &self.text[range])
    }

    pub(super) fn appid(&self) -> &str {
        self.text(self.appid).unwrap_or_default()
    }

    pub(super) fn platform(&self) -> Platform {
        self.platform
    }

    pub(super) fn corpid(&self) -> Option<&str> {
        self.text(self.corpid)
    }

    pub(super) fn openid(&self) -> &str {
        self.text(self.openid).unwrap_or_default()
    }

    pub(super) fn unionid(&self) -> Option<&str> {
        self.text(self.unionid)
    }

    pub(super) fn device(&self) -> Option<&str> {
        self.text(self.device)
    }

    pub(super) fn elevated_until(&self) -> Option<u64> {
        self.elevated_until
    }

    /// Parsed on each call: not kept, to keep a cached session small.
    pub(super) fn profile(&self) -> Option<serde_json::Value> {
        serde_json::from_str::<ProfileOnly>(self.json())
            .ok()
            .and_then(|p| p.profile)
    }

    /// Unix seconds at which no renewal keeps it alive any longer.
    pub(super) fn absolute_deadline(&self, max_lifetime_secs: u64) -> u64 {
        self.created_at.saturating_add(max_lifetime_secs)
    }

    /// The stored JSON object with `"expires_in":<expires_in>` added, and
    /// `"device"`, `"appid"` (a session from before apps) and
    /// `"elevated_until"` where it has none, and `"platform"`. A step-up that
    /// has run out shows as `null`: its digits replaced in place, or (a value
    /// serde had to read, which has a profile) the answer rebuilt. Only a
    /// session once elevated reads the clock.
    pub(super) fn json_with_expires_in(&self, expires_in: u64) -> Vec<u8> {
        let ran_out = self
            .elevated_until
            .is_some_and(|until| until <= crate::clock::unix_secs());
        let elevated_at = self.elevated_at.range();
        if ran_out && elevated_at.is_none() {
            let mut object: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(self.json()).expect("a parsed session is a JSON object");
            object.insert("elevated_until".into(), serde_json::Value::Null);
            object.entry("device").or_insert(serde_json::Value::Null);
            object.insert("appid".into(), self.appid().into());
            object.insert("platform".into(), self.platform.as_str().into());
            object.insert("expires_in".into(), expires_in.into());
            return serde_json::to_vec(&object).expect("a JSON object serializes");
        }
        let object = self.json().trim_end();
        let body = object[..object.len() - 1].trim_end();
        let mut out = Vec::with_capacity(body.len() + 80);
        match (elevated_at, ran_out) {
            (Some(digits), true) => {
                out.extend_from_slice(&body.as_bytes()[..digits.start]);
                out.extend_from_slice(b"null");
                out.extend_from_slice(&body.as_bytes()[digits.end..]);
            }
            _ => out.extend_from_slice(body.as_bytes()),
        }
        if !body.ends_with('{') {
            out.push(b',');
        }
        if !self.device_written {
            out.extend_from_slice(b"\"device\":null,");
        }
        if !self.elevated_written {
            out.extend_from_slice(b"\"elevated_until\":null,");
        }
        if !self.app_written {
            out.extend_from_slice(b"\"appid\":");
            serde_json::to_writer(&mut out, self.appid()).expect("a string serializes");
            out.push(b',');
        }
        out.extend_from_slice(b"\"platform\":\"");
        out.extend_from_slice(self.platform.as_str().as_bytes());
        out.extend_from_slice(b"\",\"expires_in\":");
        out.extend_from_slice(itoa::Buffer::new().format(expires_in).as_bytes());
        out.push(b'}');
        out
    }
}

/// The `default` app's appid, for a session from before apps.
#[cold]
#[inline(never)]
fn default_appid(apps: &AppIndex) -> Found {
    Found::Unescaped(apps.default_appid().unwrap_or_default().to_owned())
}

/// Adds a field's text after the JSON (one written with escapes, or the
/// `default` app's appid); where it is.
#[cold]
#[inline(never)]
fn append(text: &mut String, field: &str) -> Text {
    let start = text.len();
    text.push_str(field);
    Text::at(start..text.len())
}

/// What a session value says, where its strings are.
struct Written {
    openid: Found,
    unionid: Option<Found>,
    created_at: u64,
    device: Option<Found>,
    device_written: bool,
    appid: Option<Found>,
    corpid: Option<Found>,
    elevated_until: Option<u64>,
    elevated_written: bool,
    /// Where its digits are, when read without serde.
    elevated_at: Option<Range<usize>>,
}

/// Any other session value (escapes, a profile, blanks, fields in another
/// order), read by serde. Out of line and cold: the guard's path is
/// `as_written`, and code it does not run would crowd it out of the
/// instruction cache.
#[cold]
#[inline(never)]
fn as_serde_reads(json: &str) -> Option<Written> {
    let found = |field: Cow<'_, str>| match field {
        Cow::Borrowed(s) => {
            let start = s.as_ptr() as usize - json.as_ptr() as usize;
            Found::At(start..start + s.len())
        }
        Cow::Owned(s) => Found::Unescaped(s),
    };
    // serde refuses anything after the object but blanks, so the JSON ends
    // with its `}`, which `json_with_expires_in` splices before.
    serde_json::from_str::<Fields>(json).ok().map(|f| Written {
        openid: found(f.openid),
        unionid: f.unionid.map(found),
        created_at: f.created_at,
        device_written: f.device.is_some(),
        device: f.device.flatten().map(Found::Unescaped),
        appid: f.appid.map(found),
        corpid: f.corpid.map(Found::Unescaped),
        elevated_written: f.elevated_until.is_some(),
        elevated_until: f.elevated_until.flatten(),
        elevated_at: None,
    })
}

/// The value exactly as [`StoredSession::to_json`] writes it for a session
/// without a profile, `{"openid":"…","unionid":null|"…","created_at":N,"device":null|"…"`,
/// `,"appid":"…"`, `,"corpid":"…"` (WeCom) and `,"elevated_until":N` (once
/// elevated), then `}` (or without `device` and `appid`, as sessions were
/// written before them), read without a
/// JSON parser (a third of the guard's parsing cost); anything else, escapes
/// included, is left to serde.
#[inline(never)]
fn as_written(json: &str) -> Option<Written> {
    let mut c = Cursor {
        bytes: json.as_bytes(),
        at: 0,
    };
    c.literal(br#"{"openid":""#).then_some(())?;
    let openid = c.string()?;
    c.literal(br#","unionid":"#).then_some(())?;
    let unionid = c.null_or_string()?;
    c.literal(br#","created_at":"#).then_some(())?;
    let created_at = c.number()?;
    let device_written = c.literal(br#","device":"#);
    let device = if device_written {
        c.null_or_string()?
    } else {
        None
    };
    let appid = match c.literal(br#","appid":""#) {
        true => Some(c.string()?),
        false => None,
    };
    let corpid = match c.literal(br#","corpid":""#) {
        true => Some(c.string()?),
        false => None,
    };
    let elevated_written = c.literal(br#","elevated_until":"#);
    let digits_from = c.at;
    let elevated_until = if elevated_written {
        Some(c.number()?)
    } else {
        None
    };
    let elevated_at = elevated_written.then_some(digits_from..c.at);
    (&c.bytes[c.at..] == b"}").then_some(Written {
        openid,
        unionid,
        created_at,
        device,
        device_written,
        appid,
        corpid,
        elevated_until,
        elevated_written,
        elevated_at,
    })
}

/// Where [`as_written`] is in a session value. The steps that loop are one
/// out-of-line copy each rather than inlined at every field: the guard runs
/// them on every request, and the smaller its code, the less it crowds
/// actix's, tokio's and redis-rs's out of the instruction cache (which, not
/// instructions, is what the guard's path is short of; README, Performance).
/// Both loops read eight bytes at a time.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    /// Steps over `literal` if it comes next. Inlined: a compare of a known
    /// length is a few loads, less code than a call to `memcmp`.
    #[inline(always)]
    fn literal<const N: usize>(&mut self, literal: &[u8; N]) -> bool {
        let next = self.bytes.get(self.at..self.at + N) == Some(literal.as_slice());
        if next {
            self.at += N;
        }
        next
    }

    /// The rest of a string whose opening quote is behind. It ends at its
    /// first quote; an escape or a control character before it is serde's business.
    #[inline(never)]
    fn string(&mut self) -> Option<Found> {
        let len = first_special(&self.bytes[self.at..])?;
        if self.bytes[self.at + len] != b'"' {
            return None;
        }
        let range = self.at..self.at + len;
        self.at += len + 1;
        Some(Found::At(range))
    }

    fn null_or_string(&mut self) -> Option<Option<Found>> {
        if self.literal(b"null") {
            return Some(None);
        }
        self.literal(b"\"").then_some(())?;
        self.string().map(Some)
    }

    /// One to 19 decimal digits (so the number fits a `u64` without a check
    /// per digit; a longer one is serde's business).
    #[inline(never)]
    fn number(&mut self) -> Option<u64> {
        const MAX_DIGITS: usize = 19;
        let rest = &self.bytes[self.at..];
        let mut n = 0;
        let mut len = 0;
        while len + 8 <= MAX_DIGITS {
            let Some(word) = rest.get(len..len + 8).map(word) else {
                break;
            };
            if !all_digits(word) {
                break;
            }
            n = n * 100_000_000 + eight_digits(word);
            len += 8;
        }
        while let Some(digit) = rest.get(len).map(|b| b.wrapping_sub(b'0')) {
            if digit > 9 {
                break;
            }
            if len == MAX_DIGITS {
                return None;
            }
            n = n * 10 + u64::from(digit);
            len += 1;
        }
        if len == 0 {
            return None;
        }
        self.at += len;
        Some(n)
    }
}

const ONES: u64 = u64::from_le_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);

/// Eight bytes as one number, the first in the lowest bits.
fn word(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("eight bytes"))
}

/// The high bit of each byte below `limit` in `word`. A byte's borrow can
/// only mark a later byte, so the lowest mark is always a true one.
fn bytes_below(word: u64, limit: u8) -> u64 {
    word.wrapping_sub(ONES * u64::from(limit)) & !word & HIGHS
}

/// Where the first `"`, `\\` or control character is, eight bytes at a time.
fn first_special(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(eight) = bytes.get(at..at + 8).map(word) {
        let marks = bytes_below(eight ^ (ONES * u64::from(b'"')), 1)
            | bytes_below(eight ^ (ONES * u64::from(b'\\')), 1)
            | bytes_below(eight, 0x20);
        if marks != 0 {
            return Some(at + marks.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    let special = |b: u8| (b == b'"') | (b == b'\\') | (b < 0x20);
    Some(at + bytes[at..].iter().position(|&b| special(b))?)
}

/// Whether all eight bytes are ASCII digits: their high halves are all 3,
/// and still 3 with 6 added (so the low halves are at most 9).
fn all_digits(word: u64) -> bool {
    let threes = ONES * 0x30;
    let high_halves = ONES * 0xf0;
    (word & high_halves == threes) & (word.wrapping_add(ONES * 6) & high_halves == threes)
}

/// Eight ASCII digits, the first the most significant: pairs, then fours,
/// then all eight, each step one multiply.
fn eight_digits(word: u64) -> u64 {
    let digits = word & (ONES * 0x0f);
    let pairs = (digits.wrapping_mul(10 * 256 + 1) >> 8) & 0x00ff_00ff_00ff_00ff;
    let fours = (pairs.wrapping_mul(100 * 65_536 + 1) >> 16) & 0x0000_ffff_0000_ffff;
    fours.wrapping_mul(10_000 * (1 << 32) + 1) >> 32
}

/// A session as the admin tools see it, by stored id, without touching it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionRecord {
    /// The session id, or its SHA-256 with `session.hash_ids`.
    #[serde(rename = "sessionid")]
    pub stored_id: String,
    /// The app it was made for.
    pub appid: String,
    #[serde(skip)]
    pub openid: String,
    #[serde(skip)]
    pub unionid: Option<String>,
    pub created_at: u64,
    /// The device type its login named.
    pub device: Option<String>,
    /// Seconds of idle lifetime left.
    pub expires_in: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apps() -> AppIndex {
        AppIndex::for_tests()
    }

    fn answer(json: &str, expires_in: u64) -> serde_json::Value {
        let data = SessionData::parse(json.to_string(), "", &apps()).unwrap();
        serde_json::from_slice(&data.json_with_expires_in(expires_in)).unwrap()
    }

    #[test]
    fn the_answer_is_the_stored_value_with_expires_in() {
        let stored = StoredSession {
            openid: "o_x-1".into(),
            unionid: None,
            created_at: 1_700_000_000,
            device: Some("pad".into()),
            appid: None,
            corpid: None,
            elevated_until: None,
            profile: Some(serde_json::json!({"nickName": "A \"b\" 中"})),
        };
        let expected = serde_json::json!({
            "openid": "o_x-1", "unionid": null, "created_at": 1_700_000_000u64,
            "device": "pad", "elevated_until": null, "profile": {"nickName": "A \"b\" 中"},
            "appid": "wxd", "platform": "wechat", "expires_in": 7200,
        });
        // A session from before apps is the default app's.
        assert_eq!(answer(&stored.to_json(), 7200), expected);
        // However it was written: spaces, another order, no unionid key; a
        // session from before devices answers `"device": null`.
        assert_eq!(
            answer(" {\"created_at\": 5 , \"openid\": \"o\" }\n", 0),
            serde_json::json!({"openid": "o", "created_at": 5, "device": null,
                "elevated_until": null, "appid": "wxd", "platform": "wechat", "expires_in": 0})
        );
        assert_eq!(
            answer(r#"{"openid":"o","unionid":null,"created_at":5}"#, 1),
            serde_json::json!({"openid": "o", "unionid": null, "created_at": 5, "device": null,
                "elevated_until": null, "appid": "wxd", "platform": "wechat", "expires_in": 1})
        );
        assert_eq!(
            answer(
                r#"{"created_at":5,"device":null,"openid":"o","appid":"tt1"}"#,
                1
            ),
            serde_json::json!({"openid": "o", "created_at": 5, "device": null,
                "elevated_until": null, "appid": "tt1", "platform": "douyin", "expires_in": 1})
        );
        // An app no longer configured: no session.
        assert!(SessionData::parse(
            r#"{"openid":"o","unionid":null,"created_at":5,"device":null,"appid":"gone"}"#.into(),
            "",
            &apps()
        )
        .is_none());
    }

    #[test]
    fn a_step_up_shows_while_it_holds() {
        let now = crate::clock::unix_secs();
        let elevated = |until: u64, profile: Option<serde_json::Value>| StoredSession {
            openid: "o".into(),
            unionid: Some("u".into()),
            created_at: 5,
            device: None,
            appid: Some("tt1".into()),
            corpid: None,
            elevated_until: Some(until),
            profile,
        };
        for profile in [None, Some(serde_json::json!({"nickName": "n"}))] {
            let holding = answer(&elevated(now + 60, profile.clone()).to_json(), 3);
            assert_eq!(holding["elevated_until"], now + 60);
            assert_eq!(holding["expires_in"], 3);
            assert_eq!(holding["device"], serde_json::Value::Null);
            // Run out: null, everything else as it was.
            let over = answer(&elevated(now - 1, profile.clone()).to_json(), 3);
            let mut expected = holding.clone();
            expected["elevated_until"] = serde_json::Value::Null;
            assert_eq!(over, expected);
            let data = SessionData::of(&elevated(now - 1, profile), &apps());
            assert_eq!(data.elevated_until(), Some(now - 1));
        }
        // A hand-written null is not answered twice.
        let written_null = r#"{"openid":"o","unionid":null,"created_at":5,"elevated_until":null}"#;
        let data = SessionData::parse(written_null.into(), "", &apps()).unwrap();
        assert_eq!(data.elevated_until(), None);
        let text = String::from_utf8(data.json_with_expires_in(1)).unwrap();
        assert_eq!(text.matches("elevated_until").count(), 1, "{text}");
    }

    #[test]
    fn a_cached_session_stays_small() {
        // The local cache's memory budget counts on it (README, Performance).
        assert!(std::mem::size_of::<SessionData>() <= 96);
    }

    #[test]
    fn fields_are_read_in_place_or_unescaped() {
        let data = SessionData::parse(
            r#"{"openid":"o\u0041b","unionid":"u1","created_at":7,"profile":{"a":1}}"#.into(),
            "",
            &apps(),
        )
        .unwrap();
        assert_eq!(data.openid(), "oAb");
        assert_eq!(data.unionid(), Some("u1"));
        assert_eq!(data.created_at, 7);
        assert_eq!(data.profile(), Some(serde_json::json!({"a": 1})));
        assert_eq!(data.device(), None);
        assert_eq!(data.appid(), "wxd");
        // Copies follow the JSON in one text; the JSON answered is unchanged.
        let json = r#"{"openid":"o\u0041b","unionid":"\u0055","created_at":7,"device":"p\u0063","appid":"t\u00741","corpid":"w\u0077"}"#;
        let escaped = SessionData::parse(json.into(), "", &apps()).unwrap();
        assert_eq!(
            (
                escaped.openid(),
                escaped.unionid(),
                escaped.device(),
                escaped.appid(),
                escaped.corpid(),
                escaped.platform()
            ),
            (
                "oAb",
                Some("U"),
                Some("pc"),
                "tt1",
                Some("ww"),
                Platform::Douyin
            )
        );
        assert_eq!(escaped.json(), json);
        let plain = SessionData::of(
            &StoredSession {
                openid: "o2".into(),
                unionid: None,
                created_at: 1,
                device: Some("pc".into()),
                appid: Some("wxd".into()),
                corpid: None,
                elevated_until: Some(9),
                profile: None,
            },
            &apps(),
        );
        assert_eq!(
            (
                plain.openid(),
                plain.unionid(),
                plain.device(),
                plain.profile()
            ),
            ("o2", None, Some("pc"), None)
        );
    }

    #[test]
    fn the_written_layout_is_read_as_serde_reads_it() {
        let written = |unionid: Option<&str>, device: Option<&str>, elevated_until: Option<u64>| {
            StoredSession {
                openid: "oAbc_12-x".into(),
                unionid: unionid.map(str::to_string),
                created_at: 1_700_000_123,
                device: device.map(str::to_string),
                appid: device.map(|_| "tt1".to_string()),
                corpid: elevated_until.map(|_| "ww-corp".to_string()),
                elevated_until,
                profile: None,
            }
            .to_json()
        };
        let before_devices = r#"{"openid":"oAbc_12-x","unionid":"uX","created_at":1700000123}"#;
        for json in [
            written(None, None, None),
            written(Some("uX"), Some("phone"), None),
            written(Some(""), None, None),
            written(None, Some("pc"), Some(1_700_000_500)),
            written(None, None, Some(0)),
            before_devices.to_string(),
        ] {
            let read = as_written(&json).expect(&json);
            let data = SessionData::parse(json.clone(), "", &apps()).unwrap();
            let serde: StoredSession = serde_json::from_str(&json).unwrap();
            let text = |field: Found| match field {
                Found::At(range) => json[range].to_string(),
                Found::Unescaped(text) => text,
            };
            assert_eq!(text(read.openid), serde.openid);
            assert_eq!(read.unionid.map(text), serde.unionid);
            assert_eq!(read.created_at, serde.created_at);
            assert_eq!(read.device.map(text), serde.device);
            assert_eq!(read.device_written, json.contains("\"device\""));
            assert_eq!(read.elevated_until, serde.elevated_until);
            assert_eq!(read.appid.map(text), serde.appid);
            assert_eq!(read.corpid.map(text), serde.corpid);
            assert_eq!(
                (data.openid(), data.unionid(), data.device(), data.corpid()),
                (
                    serde.openid.as_str(),
                    serde.unionid.as_deref(),
                    serde.device.as_deref(),
                    serde.corpid.as_deref()
                )
            );
            assert_eq!(read.elevated_written, json.contains("\"elevated_until\""));
        }
        // Anything else goes to serde: escapes, a profile, spaces, a bad number.
        for other in [
            r#"{"openid":"o\"x","unionid":null,"created_at":1}"#,
            r#"{"openid":"o","unionid":null,"created_at":1,"profile":{}}"#,
            r#"{"openid":"o", "unionid":null,"created_at":1}"#,
            r#"{"openid":"o","unionid":null,"created_at":}"#,
            r#"{"openid":"o","unionid":null,"created_at":1"#,
            r#"{"openid":"o","unionid":null,"created_at":1,"device":"p\u0063"}"#,
            r#"{"openid":"o","unionid":null,"created_at":1,"device":1}"#,
            r#"{"openid":"o","unionid":null,"created_at":1,"device":null,"elevated_until":}"#,
            r#"{"openid":"o","unionid":null,"created_at":1,"device":null,"elevated_until":null}"#,
            r#"{"openid":"o","unionid":null,"created_at":18446744073709551615}"#,
        ] {
            assert!(as_written(other).is_none(), "{other}");
        }
        // Up to 19 digits read here, 20 by serde, and what no u64 holds is no session.
        let created = |n: &str| {
            let json = format!(r#"{{"openid":"o","unionid":null,"created_at":{n}}}"#);
            SessionData::parse(json, "", &apps()).map(|s| s.created_at)
        };
        assert_eq!(
            created("9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        assert!(
            as_written(r#"{"openid":"o","unionid":null,"created_at":9999999999999999999}"#)
                .is_some()
        );
        assert_eq!(created("18446744073709551615"), Some(u64::MAX));
        assert_eq!(created("18446744073709551616"), None);
    }

    #[test]
    fn the_first_special_byte_is_found_wherever_it_is() {
        let special = |b: u8| b == b'"' || b == b'\\' || b < 0x20;
        // Every byte value at every place in and after the first words, after
        // plain ASCII or after UTF-8 (bytes of their own above 0x7f).
        for filler in [b'a', 0xe4] {
            for len in 0..40 {
                for byte in 0..=255u8 {
                    let mut bytes = vec![filler; len];
                    bytes.extend_from_slice(&[byte, b'"', b'b']);
                    let expected = if special(byte) { len } else { len + 1 };
                    assert_eq!(first_special(&bytes), Some(expected), "{len} {byte}");
                }
                assert_eq!(first_special(&vec![filler; len]), None);
            }
        }
    }

    #[test]
    fn numbers_are_read_as_rust_reads_them() {
        let read = |text: &str| {
            let mut c = Cursor {
                bytes: text.as_bytes(),
                at: 0,
            };
            c.number().map(|n| (n, c.at))
        };
        for len in 1..=19 {
            for digit in [b'0', b'1', b'5', b'9'] {
                let digits = String::from_utf8(vec![digit; len]).unwrap();
                let expected = digits.parse::<u64>().unwrap();
                for after in ["", "}", ",", "x", "/", ":", "\u{e4}"] {
                    assert_eq!(read(&format!("{digits}{after}")), Some((expected, len)));
                }
            }
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let n = seed >> (seed % 64);
            let text = format!("{n},");
            let digits = text.len() - 1;
            let expected = (digits <= 19).then_some((n, digits));
            assert_eq!(read(&text), expected, "{text}");
        }
        for none in [
            "",
            "x",
            "-1",
            "}",
            "12345678901234567890",
            "99999999999999999999}",
        ] {
            assert_eq!(read(none), None, "{none}");
        }
    }

    #[test]
    fn a_session_key_argument_is_the_session_key() {
        let keys = Keys::new("wxsess:".into(), false, apps());
        let key = keys.session_arg("ab12");
        let mut cmd = redis::cmd("GET");
        cmd.arg(key).arg("x");
        let args: Vec<_> = cmd.args_iter().collect();
        let expected = keys.session("ab12");
        assert!(matches!(args[1], redis::Arg::Simple(a) if a == expected.as_bytes()));
        assert!(matches!(args[2], redis::Arg::Simple(b"x")));
        assert_eq!(key.pieces().concat(), expected.as_bytes());
    }

    #[test]
    fn what_is_no_session_is_refused() {
        for bad in [
            "",
            "[]",
            "{}",
            r#"{"openid":"o"}"#,
            r#"{"openid":1,"created_at":1}"#,
            "null",
        ] {
            assert!(
                SessionData::parse(bad.into(), "", &apps()).is_none(),
                "{bad}"
            );
        }
    }
}

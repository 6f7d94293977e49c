//! Typed configuration: `config.toml` plus `WXSESSION_<SECTION>_<KEY>` overrides.
//!
//! This module owns every configuration key: its type and default (a field of a
//! section struct and that struct's `Default`), how its value is read, normalised
//! and validated, and the one-line [`ConfigError`] that names it. The environment
//! is laid over the parsed file as text, then both go through one deserialization
//! (see `read`), so a key means the same thing wherever it comes from and an
//! unknown key is an error in both.

mod apps;
mod ip_range;
mod read;
mod redis_section;
#[cfg(test)]
mod tests;

use std::{fmt, path::Path, time::Duration};

use serde::Deserialize;

use crate::secret::Secret;
pub use apps::{pick_app, App, AppTable, Platform, UnknownApp, DEFAULT_APP};
pub use ip_range::IpRange;
use read::{overlay_env, Node};

/// The shortest `admin.token` accepted: the admin routes face whoever reaches them.
pub const ADMIN_TOKEN_MIN_CHARS: usize = 32;

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "WXSESSION_";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub redis: RedisConfig,
    pub wechat: WechatConfig,
    pub session: SessionConfig,
    pub login: LoginConfig,
    pub admin: AdminConfig,
    /// `[apps.<name>]` as written; [`Config::apps`] is what they mean.
    #[serde(rename = "apps")]
    pub app_tables: std::collections::BTreeMap<String, AppTable>,
    /// Resolved from `[wechat]` and `app_tables` when loaded.
    #[serde(skip)]
    apps: Vec<App>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Listen address, `host:port`.
    pub bind: String,
    /// actix worker threads; 0 = one per core.
    pub workers: usize,
    /// On SIGTERM/SIGINT: stop accepting, then give in-flight requests this long.
    pub shutdown_timeout_secs: u64,
    /// Peers whose `X-Forwarded-For` is believed (load balancers, nginx); from
    /// any other peer the header is ignored.
    pub trusted_proxies: Vec<IpRange>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: "127.0.0.1:8080".into(),
            workers: 0,
            shutdown_timeout_secs: 10,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    pub url: Secret,
    pub key_prefix: String,
    /// Bound on one store operation, connection included: a dead or hung Redis
    /// becomes a 503 after at most this long.
    pub timeout_ms: u64,
    pub cluster: bool,
    /// PEM CA that a `rediss://` server's certificate must chain to, instead of
    /// the system roots.
    pub tls_ca_file: Option<String>,
    /// PEM client certificate (and its key) presented over `rediss://`.
    pub tls_cert_file: Option<String>,
    pub tls_key_file: Option<String>,
    /// With a name, `url` lists Sentinels, which are asked for this master.
    pub sentinel_master: Option<String>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: Secret::new("redis://127.0.0.1:6379/0"),
            key_prefix: "wxsess:".into(),
            timeout_ms: 1000,
            cluster: false,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            sentinel_master: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WechatConfig {
    /// Required; empty until set.
    pub appid: String,
    /// Required unless `mock`; empty until set.
    pub secret: Secret,
    /// Must be `https://`: the AppSecret travels in its query strings.
    pub api_base: String,
    pub timeout_ms: u64,
    pub mock: bool,
    /// Lets `api_base` be `http://`, for tests against a local stand-in.
    pub allow_insecure_api_base: bool,
    /// `code2Session` calls one instance makes at once (0 = no cap); a login
    /// beyond it is `wechat_busy` at once rather than queued behind a slow WeChat.
    pub max_in_flight: usize,
}

impl Default for WechatConfig {
    fn default() -> Self {
        WechatConfig {
            appid: String::new(),
            secret: Secret::default(),
            api_base: "https://api.weixin.qq.com".into(),
            timeout_ms: 5000,
            mock: false,
            allow_insecure_api_base: false,
            max_in_flight: 256,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    pub ttl_secs: u64,
    pub sliding: bool,
    pub max_lifetime_secs: u64,
    pub header: String,
    pub hash_ids: bool,
    pub max_per_user: u64,
    /// A login naming a `device` ends the user's other sessions of that device.
    pub one_per_device: bool,
    /// How long a step-up (`POST /session/elevate`) holds.
    pub elevate_secs: u64,
    pub local_cache: bool,
    pub local_cache_capacity: u64,
    /// Unset by default; read it through [`SessionConfig::touch_interval`].
    pub touch_interval_secs: Option<u64>,
    /// Log a warning when one client address sends this many rejected session
    /// ids within a minute (0 = never).
    pub reject_warn_per_minute: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            ttl_secs: 7200,
            sliding: true,
            max_lifetime_secs: 2_592_000,
            header: "sessionid".into(),
            hash_ids: false,
            max_per_user: 0,
            one_per_device: false,
            elevate_secs: 300,
            local_cache: false,
            local_cache_capacity: 100_000,
            touch_interval_secs: None,
            reject_warn_per_minute: 30,
        }
    }
}

impl SessionConfig {
    /// How often at most the local cache pushes a session's idle lifetime to Redis:
    /// `touch_interval_secs`, else a tenth of the idle lifetime, so a cached session
    /// loses at most a tenth of it; never under a second, so short lifetimes still
    /// batch their renewals.
    pub fn touch_interval(&self) -> Duration {
        Duration::from_secs(
            self.touch_interval_secs
                .unwrap_or(self.ttl_secs / 10)
                .max(1),
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginConfig {
    /// Logins one client address may attempt per minute, counted across the
    /// fleet in Redis (0 = no limit).
    pub rate_per_minute: u64,
    /// How long after a login a repeat of its code still gets its session;
    /// later the repeat is `invalid_code`, so a code seen in passing is no key.
    pub repeat_window_secs: u64,
}

impl Default for LoginConfig {
    fn default() -> Self {
        LoginConfig {
            rate_per_minute: 0,
            repeat_window_secs: 30,
        }
    }
}

impl LoginConfig {
    pub fn repeat_window(&self) -> Duration {
        Duration::from_secs(self.repeat_window_secs)
    }
}

/// Both unset by default; an empty value also leaves them unset.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    pub token: Option<Secret>,
    pub bind: Option<String>,
}

/// A configuration that cannot work, reported as one line naming the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "configuration error: {}: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads `path` (a missing file is an error only when `required`), then the
    /// `WXSESSION_*` variables of this process, then validates.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => String::new(),
            Err(e) => return Err(ConfigError::new(path.display().to_string(), e.to_string())),
        };
        Config::from_sources(&text, std::env::vars())
    }

    /// Builds a configuration from TOML text and `(name, value)` environment pairs;
    /// variables not starting with [`ENV_PREFIX`] are ignored.
    pub fn from_sources(
        toml_text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = toml_text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::new("config.toml", one_line(&e)))?;
        // Checked before deserializing, where a stray top-level key would only be
        // called unknown: the likely mistake is a key above its [section].
        if let Some((section, _)) = table.iter().find(|(_, keys)| !keys.is_table()) {
            return Err(ConfigError::new(section.as_str(), "expected a [section]"));
        }
        let env_names = overlay_env(&mut table, env)?;
        let mut config = Config::deserialize(Node(toml::Value::Table(table))).map_err(|e| {
            let key = e.path.join(".");
            match env_names.get(&key) {
                Some(name) => ConfigError::new(format!("{key} ({name})"), e.message),
                None => ConfigError::new(key, e.message),
            }
        })?;
        config.normalise();
        config.apps = apps::resolve(&config.wechat, &config.app_tables)?;
        config.validate()?;
        Ok(config)
    }

    /// Puts each value that has one canonical form into it, however it was written.
    fn normalise(&mut self) {
        // Blanks around a value are a copy-paste accident, except in the key prefix,
        // where they would be part of every Redis key: that is kept as written.
        let trim = |s: &mut String| *s = s.trim().to_string();
        trim(&mut self.server.bind);
        self.redis.url = Secret::new(self.redis.url.expose().trim());
        trim(&mut self.wechat.appid);
        self.wechat.secret = Secret::new(self.wechat.secret.expose().trim());
        self.wechat.api_base = self.wechat.api_base.trim().trim_end_matches('/').into();
        self.session.header = self.session.header.trim().to_ascii_lowercase();
        self.admin.token = self
            .admin
            .token
            .take()
            .and_then(|token| non_empty(token.expose().trim()).map(Secret::new));
        let optional = |v: &mut Option<String>| {
            *v = v
                .take()
                .and_then(|v| non_empty(v.trim()).map(str::to_string));
        };
        optional(&mut self.admin.bind);
        optional(&mut self.redis.tls_ca_file);
        optional(&mut self.redis.tls_cert_file);
        optional(&mut self.redis.tls_key_file);
        optional(&mut self.redis.sentinel_master);
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, message: &str| Err(ConfigError::new(key, message));
        if self.server.bind.is_empty() || !self.server.bind.contains(':') {
            return fail("server.bind", "expected host:port");
        }
        self.redis.validate()?;
        if self.wechat.timeout_ms == 0 {
            return fail("wechat.timeout_ms", "must be at least 1");
        }
        if self.session.ttl_secs == 0 {
            return fail("session.ttl_secs", "must be at least 1");
        }
        if self.session.elevate_secs == 0 {
            return fail("session.elevate_secs", "must be at least 1");
        }
        if self.session.max_lifetime_secs == 0 {
            return fail("session.max_lifetime_secs", "must be at least 1");
        }
        if actix_web::http::header::HeaderName::from_bytes(self.session.header.as_bytes()).is_err()
        {
            return fail("session.header", "not a valid HTTP header name");
        }
        if self.session.local_cache && self.redis.cluster {
            return fail(
                "session.local_cache",
                "needs a single Redis node (client-side caching is not set up per cluster node)",
            );
        }
        if self.session.local_cache_capacity == 0 {
            return fail("session.local_cache_capacity", "must be at least 1");
        }
        if self
            .admin
            .token
            .as_ref()
            .is_some_and(|t| t.expose().chars().count() < ADMIN_TOKEN_MIN_CHARS)
        {
            return fail(
                "admin.token",
                "must be at least 32 characters (e.g. `openssl rand -hex 16`)",
            );
        }
        if self.admin.bind.is_some() && self.admin.token.is_none() {
            return fail(
                "admin.bind",
                "needs admin.token (the admin routes exist only with a token)",
            );
        }
        if self.admin.bind.as_ref().is_some_and(|b| !b.contains(':')) {
            return fail("admin.bind", "expected host:port");
        }
        Ok(())
    }

    /// Every app the server logs in for: `[wechat]`'s (named `default`) first,
    /// then `[apps.*]` by name. Never empty once loaded.
    pub fn apps(&self) -> &[App] {
        &self.apps
    }

    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis.timeout_ms)
    }

    pub fn wechat_timeout(&self) -> Duration {
        Duration::from_millis(self.wechat.timeout_ms)
    }
}

fn non_empty(v: &str) -> Option<&str> {
    (!v.is_empty()).then_some(v)
}

fn one_line(e: &impl fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

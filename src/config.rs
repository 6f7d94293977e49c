//! Typed configuration: `config.toml` plus `WXSESSION_<SECTION>_<KEY>` overrides.
//!
//! The file and the environment go through one setter ([`Config::set`]), so a key
//! means the same thing wherever it comes from, an unknown key is an error in both,
//! and every error names the key it is about in one line.

use std::{fmt, path::Path, time::Duration};

use crate::secret::Secret;

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "WXSESSION_";

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub redis: RedisConfig,
    pub wechat: WechatConfig,
    pub session: SessionConfig,
    pub login: LoginConfig,
    pub admin: AdminConfig,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listen address, `host:port`.
    pub bind: String,
    /// actix worker threads; 0 = one per core.
    pub workers: usize,
    /// On SIGTERM/SIGINT: stop accepting, then give in-flight requests this long.
    pub shutdown_timeout_secs: u64,
}

#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: Secret,
    pub key_prefix: String,
    /// Bound on one store operation, connection included: a dead or hung Redis
    /// becomes a 503 after at most this long.
    pub timeout_ms: u64,
    pub cluster: bool,
}

#[derive(Debug, Clone)]
pub struct WechatConfig {
    pub appid: String,
    pub secret: Secret,
    pub api_base: String,
    pub timeout_ms: u64,
    pub mock: bool,
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub ttl_secs: u64,
    pub sliding: bool,
    pub max_lifetime_secs: u64,
    pub header: String,
    pub hash_ids: bool,
    pub max_per_user: u64,
    pub local_cache: bool,
    pub local_cache_capacity: u64,
    pub touch_interval_secs: Option<u64>,
    /// Log a warning when one client address sends this many rejected session
    /// ids within a minute (0 = never).
    pub reject_warn_per_minute: u64,
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

#[derive(Debug, Clone, Default)]
pub struct LoginConfig {
    /// Logins one client address may attempt per minute on one instance (0 = no limit).
    pub rate_per_minute: u64,
}

#[derive(Debug, Clone, Default)]
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

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig {
                bind: "127.0.0.1:8080".into(),
                workers: 0,
                shutdown_timeout_secs: 10,
            },
            redis: RedisConfig {
                url: Secret::new("redis://127.0.0.1:6379/0"),
                key_prefix: "wxsess:".into(),
                timeout_ms: 1000,
                cluster: false,
            },
            wechat: WechatConfig {
                appid: String::new(),
                secret: Secret::default(),
                api_base: "https://api.weixin.qq.com".into(),
                timeout_ms: 5000,
                mock: false,
            },
            session: SessionConfig {
                ttl_secs: 7200,
                sliding: true,
                max_lifetime_secs: 2_592_000,
                header: "sessionid".into(),
                hash_ids: false,
                max_per_user: 0,
                local_cache: false,
                local_cache_capacity: 100_000,
                touch_interval_secs: None,
                reject_warn_per_minute: 30,
            },
            login: LoginConfig::default(),
            admin: AdminConfig::default(),
        }
    }
}

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
        let mut config = Config::default();
        let table: toml::Table = toml_text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::new("config.toml", one_line(&e)))?;
        for (section, keys) in &table {
            let toml::Value::Table(keys) = keys else {
                return Err(ConfigError::new(section.as_str(), "expected a [section]"));
            };
            for (key, value) in keys {
                let text = match value {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    _ => {
                        return Err(ConfigError::new(
                            format!("{section}.{key}"),
                            "expected a string, an integer or a boolean",
                        ))
                    }
                };
                config.set(section, key, &text)?;
            }
        }
        let mut overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX))
            .collect();
        overrides.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, value) in overrides {
            let rest = name[ENV_PREFIX.len()..].to_ascii_lowercase();
            let Some((section, key)) = rest.split_once('_') else {
                return Err(ConfigError::new(
                    name,
                    "not a WXSESSION_<SECTION>_<KEY> variable",
                ));
            };
            config
                .set(section, key, &value)
                .map_err(|e| ConfigError::new(format!("{} ({name})", e.key), e.message))?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Sets one key from its text form; the single place that knows every key.
    pub fn set(&mut self, section: &str, key: &str, value: &str) -> Result<(), ConfigError> {
        let name = format!("{section}.{key}");
        let v = value.trim();
        match (section, key) {
            ("server", "bind") => self.server.bind = v.to_string(),
            ("server", "workers") => self.server.workers = parse(&name, v)?,
            ("server", "shutdown_timeout_secs") => {
                self.server.shutdown_timeout_secs = parse(&name, v)?
            }
            ("redis", "url") => self.redis.url = Secret::new(v),
            ("redis", "key_prefix") => self.redis.key_prefix = value.to_string(),
            ("redis", "timeout_ms") => self.redis.timeout_ms = parse(&name, v)?,
            ("redis", "cluster") => self.redis.cluster = parse_bool(&name, v)?,
            ("wechat", "appid") => self.wechat.appid = v.to_string(),
            ("wechat", "secret") => self.wechat.secret = Secret::new(v),
            ("wechat", "api_base") => self.wechat.api_base = v.trim_end_matches('/').to_string(),
            ("wechat", "timeout_ms") => self.wechat.timeout_ms = parse(&name, v)?,
            ("wechat", "mock") => self.wechat.mock = parse_bool(&name, v)?,
            ("session", "ttl_secs") => self.session.ttl_secs = parse(&name, v)?,
            ("session", "sliding") => self.session.sliding = parse_bool(&name, v)?,
            ("session", "max_lifetime_secs") => self.session.max_lifetime_secs = parse(&name, v)?,
            ("session", "header") => self.session.header = v.to_ascii_lowercase(),
            ("session", "hash_ids") => self.session.hash_ids = parse_bool(&name, v)?,
            ("session", "max_per_user") => self.session.max_per_user = parse(&name, v)?,
            ("session", "local_cache") => self.session.local_cache = parse_bool(&name, v)?,
            ("session", "local_cache_capacity") => {
                self.session.local_cache_capacity = parse(&name, v)?
            }
            ("session", "touch_interval_secs") => {
                self.session.touch_interval_secs = Some(parse(&name, v)?)
            }
            ("session", "reject_warn_per_minute") => {
                self.session.reject_warn_per_minute = parse(&name, v)?
            }
            ("login", "rate_per_minute") => self.login.rate_per_minute = parse(&name, v)?,
            ("admin", "token") => self.admin.token = non_empty(v).map(Secret::new),
            ("admin", "bind") => self.admin.bind = non_empty(v).map(str::to_string),
            _ => return Err(ConfigError::new(name, "unknown key")),
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, message: &str| Err(ConfigError::new(key, message));
        if self.server.bind.is_empty() || !self.server.bind.contains(':') {
            return fail("server.bind", "expected host:port");
        }
        let url = self.redis.url.expose();
        if !["redis://", "rediss://", "unix://", "redis+unix://"]
            .iter()
            .any(|scheme| url.starts_with(scheme))
        {
            return fail("redis.url", "expected a redis:// or rediss:// URL");
        }
        if self.redis.timeout_ms == 0 {
            return fail("redis.timeout_ms", "must be at least 1");
        }
        if self.wechat.appid.is_empty() {
            return fail(
                "wechat.appid",
                "is required (set it in config.toml or WXSESSION_WECHAT_APPID)",
            );
        }
        if self.wechat.secret.is_empty() && !self.wechat.mock {
            return fail(
                "wechat.secret",
                "is required unless wechat.mock = true (set WXSESSION_WECHAT_SECRET)",
            );
        }
        let base = &self.wechat.api_base;
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return fail("wechat.api_base", "expected an http:// or https:// URL");
        }
        if self.wechat.timeout_ms == 0 {
            return fail("wechat.timeout_ms", "must be at least 1");
        }
        if self.session.ttl_secs == 0 {
            return fail("session.ttl_secs", "must be at least 1");
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

    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis.timeout_ms)
    }

    pub fn wechat_timeout(&self) -> Duration {
        Duration::from_millis(self.wechat.timeout_ms)
    }
}

fn parse<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, ConfigError> {
    v.parse()
        .map_err(|_| ConfigError::new(key, format!("expected a non-negative integer, got {v:?}")))
}

fn parse_bool(key: &str, v: &str) -> Result<bool, ConfigError> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(ConfigError::new(
            key,
            format!("expected true or false, got {v:?}"),
        )),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const MINIMAL: &str = "[wechat]\nappid = \"wx1\"\nsecret = \"s\"\n";

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::from_sources(MINIMAL, env(&[])).unwrap();
        assert_eq!(c.server.bind, "127.0.0.1:8080");
        assert_eq!(c.redis.url.expose(), "redis://127.0.0.1:6379/0");
        assert_eq!(c.redis.key_prefix, "wxsess:");
        assert_eq!(c.wechat.api_base, "https://api.weixin.qq.com");
        assert_eq!(c.wechat.timeout_ms, 5000);
        assert!(!c.wechat.mock);
        assert_eq!(c.session.ttl_secs, 7200);
        assert!(c.session.sliding);
        assert_eq!(c.session.max_lifetime_secs, 2_592_000);
        assert_eq!(c.session.header, "sessionid");
    }

    #[test]
    fn environment_overrides_the_file() {
        let c = Config::from_sources(
            MINIMAL,
            env(&[
                ("WXSESSION_REDIS_URL", "redis://127.0.0.1:7000/1"),
                ("WXSESSION_SESSION_TTL_SECS", "60"),
                ("WXSESSION_REDIS_KEY_PREFIX", "x:"),
                ("WXSESSION_SESSION_SLIDING", "false"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.redis.url.expose(), "redis://127.0.0.1:7000/1");
        assert_eq!(c.session.ttl_secs, 60);
        assert_eq!(c.redis.key_prefix, "x:");
        assert!(!c.session.sliding);
    }

    #[test]
    fn errors_name_the_key() {
        let err = |toml: &str, e: &[(&str, &str)]| Config::from_sources(toml, env(e)).unwrap_err();
        assert_eq!(err("", &[]).key, "wechat.appid");
        assert_eq!(err("[wechat]\nappid = \"wx\"\n", &[]).key, "wechat.secret");
        assert_eq!(
            err(MINIMAL, &[("WXSESSION_SESSION_TTL_SECS", "0")]).key,
            "session.ttl_secs"
        );
        assert!(err(MINIMAL, &[("WXSESSION_SESSION_TTL_SECS", "soon")])
            .key
            .starts_with("session.ttl_secs"));
        assert_eq!(
            err(&format!("{MINIMAL}[session]\nttl = 5\n"), &[]).key,
            "session.ttl"
        );
        assert!(err("[wechat\n", &[])
            .to_string()
            .starts_with("configuration error: config.toml"));
        // mock mode needs no secret
        Config::from_sources("[wechat]\nappid = \"wx\"\nmock = true\n", env(&[])).unwrap();
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c = Config::from_sources(
            "[wechat]\nappid = \"wx1\"\nsecret = \"TOPSECRET\"\n[redis]\nurl = \"redis://:pw@127.0.0.1/0\"\n",
            env(&[]),
        )
        .unwrap();
        let printed = format!("{c:?}");
        assert!(
            !printed.contains("TOPSECRET") && !printed.contains(":pw@"),
            "{printed}"
        );
    }

    #[test]
    fn touch_interval_defaults_to_a_tenth_of_the_ttl_and_at_least_a_second() {
        let mut session = Config::default().session;
        assert_eq!(session.touch_interval(), Duration::from_secs(720));
        session.ttl_secs = 5;
        assert_eq!(session.touch_interval(), Duration::from_secs(1));
        session.touch_interval_secs = Some(30);
        assert_eq!(session.touch_interval(), Duration::from_secs(30));
        session.touch_interval_secs = Some(0);
        assert_eq!(session.touch_interval(), Duration::from_secs(1));
    }
}

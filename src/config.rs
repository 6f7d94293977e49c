//! Typed configuration: `config.toml` plus `WXSESSION_<SECTION>_<KEY>` overrides.
//!
//! This module owns every configuration key: its type and default (a field of a
//! section struct and that struct's `Default`), how its value is read, normalised
//! and validated, and the one-line [`ConfigError`] that names it. The environment
//! is laid over the parsed file as text, then both go through one deserialization
//! (see [`Node`]), so a key means the same thing wherever it comes from and an
//! unknown key is an error in both.

use std::{collections::BTreeMap, fmt, path::Path, time::Duration};

use serde::{
    de::{self, value::StringDeserializer, DeserializeSeed, IntoDeserializer, MapAccess, Visitor},
    forward_to_deserialize_any, Deserialize,
};

use crate::secret::Secret;

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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: "127.0.0.1:8080".into(),
            workers: 0,
            shutdown_timeout_secs: 10,
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
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: Secret::new("redis://127.0.0.1:6379/0"),
            key_prefix: "wxsess:".into(),
            timeout_ms: 1000,
            cluster: false,
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
    pub api_base: String,
    pub timeout_ms: u64,
    pub mock: bool,
}

impl Default for WechatConfig {
    fn default() -> Self {
        WechatConfig {
            appid: String::new(),
            secret: Secret::default(),
            api_base: "https://api.weixin.qq.com".into(),
            timeout_ms: 5000,
            mock: false,
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

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginConfig {
    /// Logins one client address may attempt per minute on one instance (0 = no limit).
    pub rate_per_minute: u64,
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
        self.admin.bind = self
            .admin
            .bind
            .take()
            .and_then(|bind| non_empty(bind.trim()).map(str::to_string));
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

/// Lays the `WXSESSION_<SECTION>_<KEY>` variables over `table`, each as a string;
/// returns which variable set each dotted key, so an error about it can name it.
fn overlay_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    // Sorted so that a name given twice ends with its last value, and errors come
    // in the same order on every start.
    let mut overrides: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect();
    overrides.sort_by(|a, b| a.0.cmp(&b.0));
    let mut names = BTreeMap::new();
    for (name, value) in overrides {
        let rest = name[ENV_PREFIX.len()..].to_ascii_lowercase();
        let Some((section, key)) = rest.split_once('_') else {
            return Err(ConfigError::new(
                name,
                "not a WXSESSION_<SECTION>_<KEY> variable",
            ));
        };
        let keys = table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        // Every section of the file is a table by now (from_sources checks first).
        if let toml::Value::Table(keys) = keys {
            keys.insert(key.to_string(), toml::Value::String(value));
        }
        names.insert(format!("{section}.{key}"), name);
    }
    Ok(names)
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

/// A value that does not fit its key, with the path of that key.
#[derive(Debug)]
struct DeError {
    path: Vec<String>,
    message: String,
}

impl DeError {
    fn at(mut self, key: &str) -> Self {
        self.path.insert(0, key.to_string());
        self
    }
}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(message: T) -> Self {
        DeError {
            path: Vec::new(),
            message: message.to_string(),
        }
    }

    // serde's own message repeats the key and lists every other one of its section.
    fn unknown_field(_field: &str, _expected: &'static [&'static str]) -> Self {
        de::Error::custom("unknown key")
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.join("."), self.message)
    }
}

impl std::error::Error for DeError {}

/// A value of the merged file-and-environment table, read as the type its field
/// asks for. A scalar (string, integer or boolean) is read through its text form,
/// so a variable (always a string) and a file value are read alike: `"12345"` stays
/// a string where a string is wanted, `"60"` is a number where a number is, and
/// `"soon"` there is an error naming the key.
struct Node(toml::Value);

impl Node {
    fn text(self) -> Result<String, DeError> {
        match self.0 {
            toml::Value::String(s) => Ok(s),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            _ => Err(de::Error::custom(
                "expected a string, an integer or a boolean",
            )),
        }
    }

    /// The trimmed text parsed as `T`; else an error saying what was `expected`.
    fn parse<T: std::str::FromStr>(self, expected: &str) -> Result<T, DeError> {
        let text = self.text()?;
        let v = text.trim();
        v.parse()
            .map_err(|_| de::Error::custom(format!("expected {expected}, got {v:?}")))
    }
}

impl<'de> IntoDeserializer<'de, DeError> for Node {
    type Deserializer = Node;

    fn into_deserializer(self) -> Node {
        self
    }
}

/// Integers of every width go through 64 bits; the visitor rejects what does not fit.
macro_rules! deserialize_integers {
    ($($method:ident => $visit:ident($int:ty, $expected:literal)),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            visitor.$visit(self.parse::<$int>($expected)?)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Node {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            toml::Value::String(s) => visitor.visit_string(s),
            toml::Value::Integer(i) => visitor.visit_i64(i),
            toml::Value::Float(f) => visitor.visit_f64(f),
            toml::Value::Boolean(b) => visitor.visit_bool(b),
            toml::Value::Datetime(d) => visitor.visit_string(d.to_string()),
            toml::Value::Array(items) => {
                visitor.visit_seq(de::value::SeqDeserializer::new(items.into_iter().map(Node)))
            }
            toml::Value::Table(table) => visitor.visit_map(Table::new(table)),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let text = self.text()?;
        match text.trim() {
            "true" | "1" => visitor.visit_bool(true),
            "false" | "0" => visitor.visit_bool(false),
            v => Err(de::Error::custom(format!(
                "expected true or false, got {v:?}"
            ))),
        }
    }

    deserialize_integers! {
        deserialize_u8 => visit_u64(u64, "a non-negative integer"),
        deserialize_u16 => visit_u64(u64, "a non-negative integer"),
        deserialize_u32 => visit_u64(u64, "a non-negative integer"),
        deserialize_u64 => visit_u64(u64, "a non-negative integer"),
        deserialize_i8 => visit_i64(i64, "an integer"),
        deserialize_i16 => visit_i64(i64, "an integer"),
        deserialize_i32 => visit_i64(i64, "an integer"),
        deserialize_i64 => visit_i64(i64, "an integer"),
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            toml::Value::Float(f) => visitor.visit_f64(f),
            other => visitor.visit_f64(Node(other).parse("a number")?),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_string(self.text()?)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_string(self.text()?)
    }

    // A key that is present has a value; leaving it out is how a key is unset.
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let variant: StringDeserializer<DeError> = self.text()?.into_deserializer();
        visitor.visit_enum(variant)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            toml::Value::Table(table) => visitor.visit_map(Table::new(table)),
            _ => Err(de::Error::custom("expected a table")),
        }
    }

    forward_to_deserialize_any! {
        char bytes byte_buf unit unit_struct seq tuple tuple_struct identifier ignored_any
    }
}

/// The entries of a table; an error about one is prefixed with its key.
struct Table {
    entries: toml::map::IntoIter,
    pending: Option<(String, toml::Value)>,
}

impl Table {
    fn new(table: toml::Table) -> Self {
        Table {
            entries: table.into_iter(),
            pending: None,
        }
    }
}

impl<'de> MapAccess<'de> for Table {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        let name: StringDeserializer<DeError> = key.clone().into_deserializer();
        match seed.deserialize(name) {
            Ok(name) => {
                self.pending = Some((key, value));
                Ok(Some(name))
            }
            Err(e) => {
                let mut e = e.at(&key);
                // An unknown section is named by its first key: that is what a
                // variable sets, so the variable that made the section is found.
                if let Some(first) = value.as_table().and_then(|keys| keys.keys().next()) {
                    e.path.push(first.clone());
                }
                Err(e)
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let (key, value) = self
            .pending
            .take()
            .expect("serde asks for a value only after its key");
        seed.deserialize(Node(value)).map_err(|e| e.at(&key))
    }
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
    fn the_shipped_config_toml_holds_only_keys_and_their_defaults() {
        let shipped = Config::from_sources(
            include_str!("../config.toml"),
            env(&[
                ("WXSESSION_WECHAT_APPID", "wx1"),
                ("WXSESSION_WECHAT_SECRET", "s"),
            ]),
        )
        .unwrap();
        let defaults = Config::from_sources(MINIMAL, env(&[])).unwrap();
        assert_eq!(format!("{shipped:?}"), format!("{defaults:?}"));
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

    #[test]
    fn environment_overrides_a_file_value_of_every_type() {
        let file = format!(
            "{MINIMAL}[server]\nbind = \"0.0.0.0:80\"\nworkers = 2\n\
             [session]\nhash_ids = true\ntouch_interval_secs = 5\n\
             [admin]\ntoken = \"file-token\"\nbind = \"127.0.0.1:9000\"\n"
        );
        let c = Config::from_sources(
            &file,
            env(&[
                ("WXSESSION_SERVER_BIND", "127.0.0.1:81"),
                ("WXSESSION_SERVER_WORKERS", "3"),
                ("WXSESSION_SESSION_HASH_IDS", "false"),
                ("WXSESSION_SESSION_TOUCH_INTERVAL_SECS", "7"),
                ("WXSESSION_ADMIN_TOKEN", "env-token"),
                ("WXSESSION_ADMIN_BIND", "127.0.0.1:9001"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.bind, "127.0.0.1:81");
        assert_eq!(c.server.workers, 3);
        assert!(!c.session.hash_ids);
        assert_eq!(c.session.touch_interval_secs, Some(7));
        assert_eq!(
            c.admin.token.as_ref().map(Secret::expose),
            Some("env-token")
        );
        assert_eq!(c.admin.bind.as_deref(), Some("127.0.0.1:9001"));

        // An optional key the file leaves unset is set by the environment alone,
        // and booleans keep their 1/0 spelling.
        let c = Config::from_sources(
            MINIMAL,
            env(&[
                ("WXSESSION_SESSION_TOUCH_INTERVAL_SECS", " 9 "),
                ("WXSESSION_SESSION_SLIDING", "0"),
                ("WXSESSION_WECHAT_MOCK", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(c.session.touch_interval_secs, Some(9));
        assert!(!c.session.sliding && c.wechat.mock);
    }

    #[test]
    fn a_numeric_looking_value_stays_a_string_where_a_string_is_wanted() {
        let c = Config::from_sources(
            "[wechat]\nsecret = \"s\"\n",
            env(&[
                ("WXSESSION_WECHAT_APPID", "12345"),
                ("WXSESSION_ADMIN_TOKEN", "007"),
                ("WXSESSION_REDIS_KEY_PREFIX", "true"),
            ]),
        )
        .unwrap();
        assert_eq!(c.wechat.appid, "12345");
        assert_eq!(c.admin.token.as_ref().map(Secret::expose), Some("007"));
        assert_eq!(c.redis.key_prefix, "true");
        // The file is read the same way, in both directions.
        let c = Config::from_sources(
            "[wechat]\nappid = 12345\nsecret = \"s\"\n[session]\nttl_secs = \"60\"\n",
            env(&[]),
        )
        .unwrap();
        assert_eq!((c.wechat.appid.as_str(), c.session.ttl_secs), ("12345", 60));
    }

    #[test]
    fn values_keep_their_canonical_form() {
        let c = Config::from_sources(
            "[wechat]\nappid = \" wx1 \"\nsecret = \"s\"\napi_base = \"http://127.0.0.1:9/\"\n\
             [session]\nheader = \" X-Session \"\n[redis]\nkey_prefix = \" p: \"\n\
             [admin]\ntoken = \"\"\n",
            env(&[("WXSESSION_ADMIN_BIND", "")]),
        )
        .unwrap();
        assert_eq!(c.wechat.appid, "wx1");
        assert_eq!(c.wechat.api_base, "http://127.0.0.1:9");
        assert_eq!(c.session.header, "x-session");
        assert_eq!(c.redis.key_prefix, " p: ");
        assert!(c.admin.token.is_none() && c.admin.bind.is_none());
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_it_in_the_file_and_the_environment() {
        let err = |toml: &str, e: &[(&str, &str)]| Config::from_sources(toml, env(e)).unwrap_err();
        let e = err(&format!("{MINIMAL}[session]\nttl = 5\n"), &[]);
        assert_eq!(
            (e.key.as_str(), e.message.as_str()),
            ("session.ttl", "unknown key")
        );
        let e = err(MINIMAL, &[("WXSESSION_SESSION_TTL", "5")]);
        assert_eq!(e.key, "session.ttl (WXSESSION_SESSION_TTL)");
        assert_eq!(e.message, "unknown key");
        assert_eq!(
            err(&format!("{MINIMAL}[sesion]\nttl_secs = 5\n"), &[]).key,
            "sesion.ttl_secs"
        );
        assert_eq!(
            err(MINIMAL, &[("WXSESSION_FOO_BAR", "1")]).key,
            "foo.bar (WXSESSION_FOO_BAR)"
        );
        assert_eq!(err(MINIMAL, &[("WXSESSION_FOO", "1")]).key, "WXSESSION_FOO");
        assert_eq!(
            err(&format!("appid = \"wx1\"\n{MINIMAL}"), &[]).to_string(),
            "configuration error: appid: expected a [section]"
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_is_an_error_naming_the_key() {
        let err = |toml: &str, e: &[(&str, &str)]| {
            let e = Config::from_sources(&format!("{MINIMAL}{toml}"), env(e)).unwrap_err();
            assert!(!e.to_string().contains('\n'), "one line: {e}");
            (e.key, e.message)
        };
        let pair = |key: &str, message: &str| (key.to_string(), message.to_string());
        assert_eq!(
            err("[session]\nttl_secs = \"soon\"\n", &[]),
            pair(
                "session.ttl_secs",
                "expected a non-negative integer, got \"soon\""
            )
        );
        assert_eq!(
            err("[session]\nttl_secs = -1\n", &[]),
            pair(
                "session.ttl_secs",
                "expected a non-negative integer, got \"-1\""
            )
        );
        assert_eq!(
            err("[session]\nsliding = \"yes\"\n", &[]),
            pair("session.sliding", "expected true or false, got \"yes\"")
        );
        assert_eq!(
            err("[server]\nbind = [\"127.0.0.1:1\"]\n", &[]),
            pair("server.bind", "expected a string, an integer or a boolean")
        );
        assert_eq!(
            err("[server]\nworkers = 1.5\n", &[]),
            pair(
                "server.workers",
                "expected a string, an integer or a boolean"
            )
        );
        assert_eq!(
            err("", &[("WXSESSION_SESSION_TTL_SECS", "soon")]),
            pair(
                "session.ttl_secs (WXSESSION_SESSION_TTL_SECS)",
                "expected a non-negative integer, got \"soon\""
            )
        );
    }

    #[test]
    fn debug_output_hides_secrets_from_every_source() {
        let c = Config::from_sources(
            "[wechat]\nappid = \"wx1\"\nsecret = \"FILE-SECRET\"\n[admin]\ntoken = \"FILE-TOKEN\"\n",
            env(&[
                ("WXSESSION_REDIS_URL", "redis://:ENV-PASSWORD@127.0.0.1/0"),
                ("WXSESSION_ADMIN_TOKEN", "ENV-TOKEN"),
            ]),
        )
        .unwrap();
        let printed = format!("{c:?} {:?}", c.session);
        for secret in ["FILE-SECRET", "FILE-TOKEN", "ENV-PASSWORD", "ENV-TOKEN"] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        // Nor does an error about a secret key repeat its value.
        let e = Config::from_sources(
            MINIMAL,
            env(&[("WXSESSION_REDIS_URL", "http://:ENV-PASSWORD@x")]),
        )
        .unwrap_err();
        assert!(!format!("{e} {e:?}").contains("ENV-PASSWORD"), "{e}");
    }
}

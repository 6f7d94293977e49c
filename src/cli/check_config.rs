//! `wxsession check-config [--connect]`: the configuration the server would run
//! with (loaded and validated by `main`, exactly as for `serve`), summarised
//! without any secret; with `--connect`, Redis and the WeChat API base reached
//! through the server's own connection code.
//!
//! Exit codes: 0 all fine, 2 bad configuration (from the loader, before this
//! runs), [`REDIS_UNREACHABLE`], [`WECHAT_UNREACHABLE`].

use std::{
    path::Path,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::future::join_all;
use redis::IntoConnectionInfo;

use crate::{config::Config, session::SessionStore, telemetry::Metrics, wechat};

/// Redis did not answer `PING` (also when the WeChat API base failed too).
pub const REDIS_UNREACHABLE: u8 = 3;
/// Redis answered, `wechat.api_base` gave no HTTP answer.
pub const WECHAT_UNREACHABLE: u8 = 4;

/// Prints the summary of `config` (read from `path`, or built-in defaults when
/// that default file is missing); with `connect`, one line per check.
pub fn run_check_config(config: &Config, path: &Path, connect: bool) -> ExitCode {
    let scrub = Scrubber::new(config);
    for line in summary(config, path) {
        println!("{}", scrub.clean(&line));
    }
    if !connect {
        return ExitCode::SUCCESS;
    }
    let (redis, apps) = reach(config);
    let mut code = 0;
    match redis {
        Ok(took) => println!("redis: ok (PING answered in {})", millis(took)),
        Err(reason) => {
            println!("redis: failed: {}", scrub.clean(&reason));
            code = REDIS_UNREACHABLE;
        }
    }
    for (name, base, reached) in apps {
        match reached {
            None => println!("app {name}: api_base skipped (mock = true: no call is made)"),
            Some(Ok((status, took))) => println!(
                "app {name}: api_base ok (HTTP {status} from {} in {})",
                scrub.clean(&base),
                millis(took)
            ),
            Some(Err(reason)) => {
                println!(
                    "app {name}: api_base failed: {} ({})",
                    scrub.clean(&reason),
                    scrub.clean(&base)
                );
                if code == 0 {
                    code = WECHAT_UNREACHABLE;
                }
            }
        }
    }
    ExitCode::from(code)
}

fn millis(took: Duration) -> String {
    format!("{:.1} ms", took.as_secs_f64() * 1000.0)
}

type Reached<T> = Result<T, String>;

/// One app's API base: its name, the base, and (`None` in mock mode) what
/// one `GET` of it answered.
type AppReached = (String, String, Option<Reached<(u16, Duration)>>);

/// `PING` through the server's store (its Redis handle: TLS, Sentinel, Cluster
/// as configured, bounded by `redis.timeout_ms`), and one `GET` of each app's
/// API base through the server's own clients, all side by side.
fn reach(config: &Config) -> (Reached<Duration>, Vec<AppReached>) {
    let (config, runtime) = super::one_shot(config);
    runtime.block_on(async {
        let metrics = Arc::new(Metrics::default());
        let store = match SessionStore::new(&config, metrics.clone()) {
            Ok(store) => store,
            Err(e) => return (Err(e.to_string()), Vec::new()),
        };
        let redis = async {
            let started = Instant::now();
            store
                .ping()
                .await
                .map(|()| started.elapsed())
                .map_err(|e| e.to_string())
        };
        let apps = match wechat::Apps::new(&config, store.connection(), metrics) {
            Ok(apps) => apps,
            Err(e) => return (Err(e), Vec::new()),
        };
        let reached = join_all(apps.iter().map(|client| async move {
            let outcome = if client.is_mock() {
                None
            } else {
                let started = Instant::now();
                Some(
                    client
                        .reach_api_base()
                        .await
                        .map(|status| (status, started.elapsed())),
                )
            };
            (
                client.name().to_string(),
                client.api_base().to_string(),
                outcome,
            )
        }));
        tokio::join!(redis, reached)
    })
}

/// What the server would run with, one line each; no secret, only whether it is set.
fn summary(config: &Config, path: &Path) -> Vec<String> {
    let source = if path.exists() {
        path.display().to_string()
    } else {
        format!(
            "{} (not found: built-in defaults and WXSESSION_* variables)",
            path.display()
        )
    };
    let mut overrides: Vec<String> = std::env::vars()
        .map(|(name, _)| name)
        .filter(|name| name.starts_with(crate::config::ENV_PREFIX))
        .collect();
    overrides.sort();
    let redis = &config.redis;
    let topology = match (&redis.sentinel_master, redis.cluster) {
        (Some(master), _) => format!("Sentinels, master {master:?}"),
        (None, true) => "Cluster".to_string(),
        (None, false) => "single node".to_string(),
    };
    let tls = match (redis.uses_tls(), &redis.tls_ca_file, &redis.tls_cert_file) {
        (false, _, _) => "off".to_string(),
        (true, ca, cert) => format!(
            "on (CA: {}; client certificate: {})",
            ca.as_deref().unwrap_or("system roots"),
            cert.as_deref().unwrap_or("none"),
        ),
    };
    let on_off = |on: bool| if on { "on" } else { "off" };
    let admin = match (&config.admin.token, &config.admin.bind) {
        (None, _) => "off (no admin.token)".to_string(),
        (Some(_), None) => "on, on server.bind (admin.token set)".to_string(),
        (Some(_), Some(bind)) => format!("on, on {bind} (admin.token set)"),
    };
    let mut lines = vec![
        "configuration: ok".to_string(),
        format!("  file:                {source}"),
        format!(
            "  overridden by:       {}",
            if overrides.is_empty() {
                "no WXSESSION_* variable".to_string()
            } else {
                overrides.join(", ")
            }
        ),
        format!("  server.bind:         {}", config.server.bind),
        format!("  admin routes:        {admin}"),
        format!(
            "  redis.url:           {}",
            redis
                .addresses()
                .iter()
                .map(|a| masked_url(a))
                .collect::<Vec<_>>()
                .join(",")
        ),
        format!("  redis connection:    {topology}, TLS {tls}"),
        format!("  redis.key_prefix:    {:?}", redis.key_prefix),
    ];
    for app in config.apps() {
        lines.push(format!(
            "  app {}: {} {} at {}, secret {}{}",
            app.name,
            app.platform.as_str(),
            app.appid,
            app.api_base,
            if app.secret.is_empty() {
                "not set"
            } else {
                "set"
            },
            if app.mock {
                ", MOCK: any code logs in (development only)"
            } else {
                ""
            }
        ));
    }
    lines.extend([
        format!(
            "  session:             ttl {} s, sliding {}, max lifetime {} s, header {:?}",
            config.session.ttl_secs,
            on_off(config.session.sliding),
            config.session.max_lifetime_secs,
            config.session.header
        ),
        format!(
            "  session.local_cache: {}",
            if config.session.local_cache {
                format!("on ({} sessions)", config.session.local_cache_capacity)
            } else {
                "off".to_string()
            }
        ),
    ]);
    lines
}

/// `address` with the password of its user part (or the whole user part, when
/// it has no `:`: a password is the likelier thing written there) and any
/// `pass`/`password` query value shown as `***`.
fn masked_url(address: &str) -> String {
    let Some((scheme, rest)) = address.split_once("://") else {
        return "***".into();
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{host}"),
            None => format!("***@{host}"),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        None => tail.to_string(),
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key == "pass" || key == "password" => format!("{key}=***"),
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
    };
    format!("{scheme}://{authority}{tail}")
}

/// Every secret of the configuration, to be cut out of any text printed: the
/// AppSecret, the admin token and each Redis password, as written and as
/// redis-rs reads it (percent-decoded): whatever an error message or a value
/// the masking above did not recognise might echo.
struct Scrubber {
    secrets: Vec<String>,
}

impl Scrubber {
    fn new(config: &Config) -> Scrubber {
        let mut secrets: Vec<String> = config
            .apps()
            .iter()
            .map(|app| app.secret.expose().to_string())
            .collect();
        if let Some(token) = &config.admin.token {
            secrets.push(token.expose().to_string());
        }
        for address in config.redis.addresses() {
            if let Ok(info) = address.into_connection_info() {
                if let Some(password) = info.redis_settings().password() {
                    secrets.push(password.to_string());
                }
            }
            // As written, percent-encoding and all.
            let user = address
                .split_once("://")
                .and_then(|(_, rest)| rest.rsplit_once('@'))
                .map(|(user, _)| user);
            if let Some((_, password)) = user.and_then(|u| u.split_once(':')) {
                secrets.push(password.to_string());
            }
        }
        secrets.retain(|s| !s.is_empty());
        // Longest first, so a secret that contains another is cut whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Scrubber { secrets }
    }

    fn clean(&self, text: &str) -> String {
        let mut text = text.to_string();
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "***");
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_every_password_in_a_redis_url() {
        for (url, shown) in [
            (
                "redis://127.0.0.1:6379/0",
                "redis://127.0.0.1:6379/0".to_string(),
            ),
            ("redis://:pw@h:6379/0", "redis://:***@h:6379/0".into()),
            ("rediss://app:pw@h:6379", "rediss://app:***@h:6379".into()),
            ("redis://pw@h:6379", "redis://***@h:6379".into()),
            (
                "unix:///run/redis.sock?db=1&pass=pw",
                "unix:///run/redis.sock?db=1&pass=***".into(),
            ),
            ("nonsense", "***".into()),
        ] {
            assert_eq!(masked_url(url), shown);
        }
    }

    #[test]
    fn the_summary_holds_no_secret() {
        let env = [
            ("WXSESSION_WECHAT_APPID", "wx_app"),
            ("WXSESSION_WECHAT_SECRET", "APP-SECRET-0123"),
            (
                "WXSESSION_ADMIN_TOKEN",
                "ADMIN-TOKEN-0123456789abcdef0123456789",
            ),
            (
                "WXSESSION_REDIS_URL",
                "redis://user:REDIS%2DPW@127.0.0.1:6379/0",
            ),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let config = Config::from_sources("", env).unwrap();
        let scrub = Scrubber::new(&config);
        let text = scrub.clean(&summary(&config, Path::new("/nonexistent.toml")).join("\n"));
        for secret in ["APP-SECRET", "ADMIN-TOKEN", "REDIS%2DPW", "REDIS-PW"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("redis://user:***@127.0.0.1:6379/0"), "{text}");
        assert!(text.contains("wx_app"), "{text}");
        assert_eq!(
            scrub.clean("AUTH failed for REDIS-PW and REDIS%2DPW"),
            "AUTH failed for *** and ***"
        );
    }
}

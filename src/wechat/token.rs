//! `AccessTokens`: the one access_token the whole fleet shares, per app —
//! WeChat's from `stable_token`, or a WeCom corp app's from `gettoken`.
//!
//! Every instance asks this, and at most one call per refresh reaches WeChat:
//!
//! 1. process memory, until the token's refresh time;
//! 2. Redis, `{p}wechat:access_token` (a hash: `access_token`, `expires_at`,
//!    `refresh_at`, `fetched_at`; it expires at `refresh_at`);
//! 3. otherwise one refresh per instance, shared by every caller that needs the
//!    token meanwhile: it takes the fleet's lock, `{p}wechat:access_token:lock`
//!    (`SET NX PX`, released by compare-and-delete), looks at Redis once more
//!    (another instance may have just refreshed: writing over a newer token is
//!    how clusters end up with 40001s), and only then calls `stable_token` in
//!    normal mode (WeCom: `gettoken`). While another instance holds the lock, it polls Redis,
//!    bounded by `wechat.timeout_ms`.
//!
//! Those are the key names of the app without a namespace (the app named
//! `default`, `[wechat]`'s, whose token survives an upgrade); an app with
//! namespace `<ns>` uses `{p}wechat:<ns>:access_token` and its `:lock`, which
//! no other namespace's keys can equal.
//!
//! The refresh runs on the WeChat calls' runtime, so no caller's end cancels it
//! halfway (its lock held, its token never stored). Each caller waits for it at
//! most `wechat.timeout_ms` + `redis.timeout_ms`, and after it fails, callers get
//! its error for `FAILURE_HOLD` without another call.
//!
//! The cache ends 60 s before WeChat's `expires_in` (WeChat hands out the next
//! token in the last 5 minutes, while the old one still works); a token answered
//! with a short life is cached for half of it, never for 0 s or less.
//! `force_refresh: true` is sent only when an operator asks for it.

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use redis::AsyncCommands;
use serde::Deserialize;
use tokio::sync::watch;

use super::{call::HttpClient, mock, wecom, WechatError};
use crate::{
    clock::unix_secs as now_secs,
    redis_conn::{self, RedisConn},
    secret::{os_random_bytes, Secret},
    telemetry::Metrics,
};

/// How long before WeChat's expiry the shared cache ends.
const MARGIN_SECS: u64 = 60;
const POLL: Duration = Duration::from_millis(25);
/// After a refresh fails, how long callers get its error without a new call.
/// A WeChat that is failing (busy, rate-limiting, unreachable) is not helped
/// by being asked again at once, and the callers of one burst (a page's
/// requests, their immediate retries) arrive within about a second: without
/// this, each would start or wait for a call of its own. After it, the next
/// caller asks again, so a recovered WeChat is used within a second.
const FAILURE_HOLD: Duration = Duration::from_secs(1);

/// A usable access_token and the seconds it stays usable.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub token: Secret,
    pub expires_in: u64,
}

/// What `wxsession wechat token-status` shows: times, never the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenStatus {
    pub fetched_at: u64,
    pub refresh_at: u64,
    pub expires_at: u64,
}

#[derive(Clone)]
struct Cached {
    token: Secret,
    status: TokenStatus,
}

impl Cached {
    fn usable(&self, now: u64) -> Option<AccessToken> {
        (now < self.status.refresh_at).then(|| AccessToken {
            token: self.token.clone(),
            expires_in: self.status.refresh_at - now,
        })
    }
}

/// The call to the platform itself, with the app's credentials.
pub(super) struct TokenSource {
    pub http: HttpClient,
    pub kind: TokenKind,
    /// The AppID; for WeCom, the corpid.
    pub appid: String,
    /// The AppSecret; for WeCom, the corpsecret.
    pub secret: Secret,
    pub api_base: String,
    pub mock: bool,
}

/// Whose token it is, which decides the call that fetches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TokenKind {
    /// `POST /cgi-bin/stable_token`.
    Wechat,
    /// `GET /cgi-bin/gettoken?corpid&corpsecret`. It has no `force_refresh`:
    /// a forced refresh is an ordinary fetch (WeCom answers the token it still
    /// holds).
    Wecom,
}

/// Both calls answer this, besides the `errcode` envelope.
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: u64,
}

impl TokenSource {
    async fn fetch(&self, force: bool) -> Result<(Secret, u64), WechatError> {
        if self.mock {
            return Ok(mock::access_token());
        }
        let answer: TokenAnswer = match self.kind {
            TokenKind::Wechat => {
                let request = self
                    .http
                    .post(format!("{}/cgi-bin/stable_token", self.api_base))
                    .json(&serde_json::json!({
                        "grant_type": "client_credential",
                        "appid": self.appid,
                        "secret": self.secret.expose(),
                        "force_refresh": force,
                    }));
                self.http.send_json(request).await?
            }
            TokenKind::Wecom => {
                let request = self
                    .http
                    .get(format!("{}/cgi-bin/gettoken", self.api_base))
                    .query(&[
                        ("corpid", self.appid.as_str()),
                        ("corpsecret", self.secret.expose()),
                    ]);
                self.http
                    .send_json_with(request, wecom::from_errcode)
                    .await?
            }
        };
        if answer.access_token.is_empty() || answer.expires_in == 0 {
            return Err(WechatError::Upstream(
                "the token API answered no usable token".into(),
            ));
        }
        Ok((Secret::new(answer.access_token), answer.expires_in))
    }
}

/// The names of the token's key and of its lock's, in the app's namespace.
fn key_names(key_prefix: &str, namespace: Option<&str>) -> (String, String) {
    let key = match namespace {
        None => format!("{key_prefix}wechat:access_token"),
        Some(ns) => format!("{key_prefix}wechat:{ns}:access_token"),
    };
    let lock_key = format!("{key}:lock");
    (key, lock_key)
}

/// A refresh's outcome as its waiters see it: `None` until it is known.
type Outcome = Option<Result<AccessToken, WechatError>>;

/// What this instance is doing about a token it does not hold.
enum Refresh {
    /// Nothing: the next caller without a token starts a refresh.
    Idle,
    /// A refresh is under way; every caller waits for its one outcome.
    Running(watch::Receiver<Outcome>),
    /// The last refresh failed: callers get its error until `until`.
    Failed { error: WechatError, until: Instant },
}

pub struct AccessTokens {
    source: TokenSource,
    redis: RedisConn,
    key: String,
    lock_key: String,
    wait: Duration,
    redis_timeout: Duration,
    memory: Mutex<Option<Cached>>,
    refresh: Mutex<Refresh>,
    metrics: Arc<Metrics>,
}

impl AccessTokens {
    /// `namespace` tells apart the tokens of several apps in one Redis; `None`
    /// keeps the single-app key names (see the module's documentation).
    pub(super) fn new(
        source: TokenSource,
        redis: RedisConn,
        key_prefix: &str,
        namespace: Option<&str>,
        wait: Duration,
        redis_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> AccessTokens {
        let (key, lock_key) = key_names(key_prefix, namespace);
        AccessTokens {
            source,
            redis,
            key,
            lock_key,
            wait,
            redis_timeout,
            memory: Mutex::new(None),
            refresh: Mutex::new(Refresh::Idle),
            metrics,
        }
    }

    /// The current token, from memory, Redis or (once for the fleet) WeChat:
    /// the instance's one refresh, waited for at most `wechat.timeout_ms` +
    /// `redis.timeout_ms`; within `FAILURE_HOLD` of a failed one, its error.
    pub async fn get(self: &Arc<Self>) -> Result<AccessToken, WechatError> {
        if let Some(token) = self.memory_token() {
            return Ok(token);
        }
        let mut outcome = self.refresh_to_wait_for()?;
        let waited = tokio::time::timeout(
            self.wait + self.redis_timeout,
            outcome.wait_for(Option::is_some),
        )
        .await;
        match waited {
            Ok(Ok(known)) => known.clone().expect("wait_for answers a known outcome"),
            Ok(Err(_)) => Err(WechatError::Upstream(
                "the access_token refresh stopped without an outcome".into(),
            )),
            Err(_) => Err(WechatError::Timeout),
        }
    }

    /// The refresh under way, or a new one; within `FAILURE_HOLD` of a
    /// failed one, its error.
    fn refresh_to_wait_for(self: &Arc<Self>) -> Result<watch::Receiver<Outcome>, WechatError> {
        let mut refresh = self.refresh.lock().expect("token refresh state");
        match &*refresh {
            // A refresh whose task is gone without an outcome (it panicked) is
            // replaced rather than waited for by every caller from now on.
            Refresh::Running(outcome) if outcome.has_changed().is_ok() => {
                return Ok(outcome.clone())
            }
            Refresh::Failed { error, until } if Instant::now() < *until => {
                return Err(error.clone())
            }
            Refresh::Running(_) | Refresh::Failed { .. } | Refresh::Idle => {}
        }
        let (tell, outcome) = watch::channel(None);
        *refresh = Refresh::Running(outcome.clone());
        let tokens = Arc::clone(self);
        self.source.http.spawn(async move {
            let result = tokens.look_up_or_fetch().await;
            *tokens.refresh.lock().expect("token refresh state") = match &result {
                Ok(_) => Refresh::Idle,
                Err(error) => Refresh::Failed {
                    error: error.clone(),
                    until: Instant::now() + FAILURE_HOLD,
                },
            };
            tell.send_replace(Some(result));
        });
        Ok(outcome)
    }

    /// The refresh itself: memory (a refresh may have ended just before this
    /// one began), Redis, then the fleet's lock and WeChat.
    async fn look_up_or_fetch(&self) -> Result<AccessToken, WechatError> {
        if let Some(token) = self.memory_token() {
            return Ok(token);
        }
        if let Some(cached) = self.redis_token().await? {
            self.metrics.token_cache_hits.inc("redis");
            return Ok(self.remember(cached));
        }
        self.refresh_shared(false).await
    }

    /// Fetches a new token now, under the fleet's lock (the CLI's
    /// `refresh-token`; `force` sends `force_refresh: true`, which invalidates the
    /// old token at WeChat at once).
    pub async fn refresh(&self, force: bool) -> Result<AccessToken, WechatError> {
        self.refresh_shared(force).await
    }

    /// Times of the shared token, if there is one.
    pub async fn status(&self) -> Result<Option<TokenStatus>, WechatError> {
        Ok(self.read_redis().await?.map(|c| c.status))
    }

    /// After WeChat refused `token`: forget it, here and in Redis, but only if it
    /// is still the current one (another instance may already have replaced it).
    pub async fn drop_if_current(&self, token: &Secret) -> Result<(), WechatError> {
        {
            let mut memory = self.memory.lock().expect("token cache lock");
            if memory.as_ref().is_some_and(|c| c.token == *token) {
                *memory = None;
            }
        }
        self.delete_if_holds(&self.key, Some("access_token"), token.expose())
            .await
    }

    /// Deletes `key` only if it (or its hash `field`) still holds `value`, in
    /// one step: a lock or a token that someone else has replaced meanwhile is
    /// left alone.
    async fn delete_if_holds(
        &self,
        key: &str,
        field: Option<&str>,
        value: &str,
    ) -> Result<(), WechatError> {
        const SCRIPT: &str = "local held \
            if ARGV[2] == '' then held = redis.call('GET', KEYS[1]) \
            else held = redis.call('HGET', KEYS[1], ARGV[2]) end \
            if held == ARGV[1] then return redis.call('DEL', KEYS[1]) end \
            return 0";
        self.redis_op(async {
            let _: i64 = redis::cmd("EVAL")
                .arg(SCRIPT)
                .arg(1)
                .arg(key)
                .arg(value)
                .arg(field.unwrap_or(""))
                .query_async(&mut self.redis.clone())
                .await?;
            Ok(())
        })
        .await
    }

    fn memory_token(&self) -> Option<AccessToken> {
        let token = self
            .memory
            .lock()
            .expect("token cache lock")
            .as_ref()
            .and_then(|c| c.usable(now_secs()));
        if token.is_some() {
            self.metrics.token_cache_hits.inc("memory");
        }
        token
    }

    fn remember(&self, cached: Cached) -> AccessToken {
        let token = cached.usable(now_secs()).unwrap_or(AccessToken {
            token: cached.token.clone(),
            expires_in: 1,
        });
        *self.memory.lock().expect("token cache lock") = Some(cached);
        token
    }

    async fn redis_token(&self) -> Result<Option<Cached>, WechatError> {
        let now = now_secs();
        Ok(self.read_redis().await?.filter(|c| c.usable(now).is_some()))
    }

    /// Takes the fleet's lock and fetches, or waits for whoever holds it.
    async fn refresh_shared(&self, force: bool) -> Result<AccessToken, WechatError> {
        let deadline = Instant::now() + self.wait;
        let lock_value = hex::encode(os_random_bytes::<16>());
        // The lock outlives one WeChat call and the Redis work around it (the
        // second look before, the write after), so it cannot expire under a
        // holder that is still working; a crashed holder frees it soon after.
        let lock_ms =
            (self.wait + 2 * self.redis_timeout + Duration::from_secs(1)).as_millis() as u64;
        loop {
            let taken: Option<String> = self
                .redis_op(async {
                    Ok(redis::cmd("SET")
                        .arg(&self.lock_key)
                        .arg(&lock_value)
                        .arg("NX")
                        .arg("PX")
                        .arg(lock_ms)
                        .query_async(&mut self.redis.clone())
                        .await?)
                })
                .await?;
            if taken.is_some() {
                let result = self.fetch_under_lock(force).await;
                self.release_lock(&lock_value).await;
                return result.map(|cached| self.remember(cached));
            }
            if Instant::now() >= deadline {
                return Err(WechatError::Timeout);
            }
            tokio::time::sleep(POLL).await;
            if !force {
                if let Some(cached) = self.redis_token().await? {
                    self.metrics.token_cache_hits.inc("redis");
                    return Ok(self.remember(cached));
                }
            }
        }
    }

    async fn fetch_under_lock(&self, force: bool) -> Result<Cached, WechatError> {
        // The second look: someone may have refreshed between our miss and our lock.
        if !force {
            if let Some(cached) = self.redis_token().await? {
                self.metrics.token_cache_hits.inc("redis");
                return Ok(cached);
            }
        }
        let fetched = self.source.fetch(force).await;
        self.metrics.token_fetches.inc(match &fetched {
            Ok(_) => "ok",
            Err(e) => e.tag(),
        });
        let (token, expires_in) = fetched?;
        let now = now_secs();
        let keep = if expires_in > 2 * MARGIN_SECS {
            expires_in - MARGIN_SECS
        } else {
            (expires_in / 2).max(1)
        };
        let cached = Cached {
            token,
            status: TokenStatus {
                fetched_at: now,
                refresh_at: now + keep,
                expires_at: now + expires_in,
            },
        };
        log::info!(
            "fetched a new access_token (expires in {expires_in}s, shared for {keep}s{})",
            if force { ", force_refresh" } else { "" }
        );
        self.redis_op(async {
            let () = redis::pipe()
                .hset_multiple(
                    &self.key,
                    &[
                        ("access_token", cached.token.expose().to_string()),
                        ("fetched_at", now.to_string()),
                        ("refresh_at", cached.status.refresh_at.to_string()),
                        ("expires_at", cached.status.expires_at.to_string()),
                    ],
                )
                .ignore()
                .expire_at(&self.key, cached.status.refresh_at as i64)
                .ignore()
                .query_async(&mut self.redis.clone())
                .await?;
            Ok(())
        })
        .await?;
        Ok(cached)
    }

    async fn release_lock(&self, value: &str) {
        if let Err(e) = self.delete_if_holds(&self.lock_key, None, value).await {
            log::warn!("could not release the access_token lock (it expires by itself): {e}");
        }
    }

    async fn read_redis(&self) -> Result<Option<Cached>, WechatError> {
        let fields: std::collections::HashMap<String, String> = self
            .redis_op(async { Ok(self.redis.clone().hgetall(&self.key).await?) })
            .await?;
        let number = |name: &str| fields.get(name).and_then(|v| v.parse::<u64>().ok());
        Ok(
            match (
                fields.get("access_token"),
                number("fetched_at"),
                number("refresh_at"),
                number("expires_at"),
            ) {
                (Some(token), Some(fetched_at), Some(refresh_at), Some(expires_at)) => {
                    Some(Cached {
                        token: Secret::new(token.clone()),
                        status: TokenStatus {
                            fetched_at,
                            refresh_at,
                            expires_at,
                        },
                    })
                }
                _ => None,
            },
        )
    }

    /// One Redis operation on the token's keys, bounded like every other.
    async fn redis_op<T>(
        &self,
        op: impl Future<Output = Result<T, WechatError>>,
    ) -> Result<T, WechatError> {
        redis_conn::bounded(self.redis_timeout, op).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wechat::one_shot::OneShot;

    #[test]
    fn without_a_namespace_the_keys_keep_their_single_app_names() {
        assert_eq!(
            key_names("wxsess:", None),
            (
                "wxsess:wechat:access_token".to_string(),
                "wxsess:wechat:access_token:lock".to_string()
            )
        );
    }

    #[test]
    fn a_namespace_gives_keys_of_its_own() {
        assert_eq!(
            key_names("wxsess:", Some("shop")),
            (
                "wxsess:wechat:shop:access_token".to_string(),
                "wxsess:wechat:shop:access_token:lock".to_string()
            )
        );
        // Even names that look like parts of the key stay apart.
        let mut all: Vec<String> = [None, Some("lock"), Some("access_token"), Some("")]
            .into_iter()
            .flat_map(|ns| {
                let (key, lock) = key_names("p:", ns);
                [key, lock]
            })
            .collect();
        let count = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), count, "{all:?}");
    }

    fn source(kind: TokenKind, base: &str) -> TokenSource {
        TokenSource {
            http: HttpClient::new(Duration::from_secs(5)).unwrap(),
            kind,
            appid: "ww_corp".into(),
            secret: Secret::new("corp-secret"),
            api_base: base.into(),
            mock: false,
        }
    }

    #[tokio::test]
    async fn wecom_tokens_come_from_gettoken() {
        let server = OneShot::answering(
            r#"{"errcode": 0, "errmsg": "ok", "access_token": "QY-TOKEN", "expires_in": 7200}"#,
        );
        let (token, expires_in) = source(TokenKind::Wecom, &server.base)
            .fetch(true)
            .await
            .unwrap();
        assert_eq!((token.expose(), expires_in), ("QY-TOKEN", 7200));
        let sent = server.received();
        assert_eq!(
            sent.line,
            "GET /cgi-bin/gettoken?corpid=ww_corp&corpsecret=corp-secret HTTP/1.1"
        );
        assert_eq!(sent.body, "");
    }

    #[tokio::test]
    async fn gettoken_errors_are_read_by_wecoms_table() {
        for (answer, error) in [
            (
                r#"{"errcode": 40001, "errmsg": "invalid secret"}"#,
                WechatError::TokenRejected(40001),
            ),
            (
                r#"{"errcode": 45009, "errmsg": "api freq out of limit"}"#,
                WechatError::RateLimited,
            ),
            (
                r#"{"errcode": 0, "access_token": "", "expires_in": 7200}"#,
                WechatError::Upstream("the token API answered no usable token".into()),
            ),
        ] {
            let server = OneShot::answering(answer);
            let fetched = source(TokenKind::Wecom, &server.base).fetch(false).await;
            assert_eq!(fetched.unwrap_err(), error, "{answer}");
        }
    }

    #[tokio::test]
    async fn wechat_tokens_still_come_from_stable_token() {
        let server = OneShot::answering(r#"{"access_token": "WX-TOKEN", "expires_in": 7200}"#);
        let (token, _) = source(TokenKind::Wechat, &server.base)
            .fetch(false)
            .await
            .unwrap();
        assert_eq!(token.expose(), "WX-TOKEN");
        let sent = server.received();
        assert_eq!(sent.line, "POST /cgi-bin/stable_token HTTP/1.1");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&sent.body).unwrap(),
            serde_json::json!({"grant_type": "client_credential", "appid": "ww_corp",
                "secret": "corp-secret", "force_refresh": false})
        );
    }
}

//! `Client`: one app's platform API calls — the login call of its platform
//! (`code2Session` and its kin), and on WeChat the phone number by code and
//! the session-key check — over the [`HttpClient`] every app shares, with the
//! app's fleet-shared access_token (WeChat, WeCom), or answered by the mock.

use std::{sync::Arc, time::Duration};

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::Sha256;

use super::{
    alipay::{self, AlipayKeys},
    call::HttpClient,
    douyin, mock,
    token::{AccessToken, AccessTokens, TokenKind, TokenSource},
    wecom, Identity, LoginCode, WechatError,
};
use crate::{
    config::{App, Platform, DEFAULT_APP},
    redis_conn::RedisConn,
    secret::Secret,
    telemetry::Metrics,
};

/// The answer of `jscode2session` (errors are handled by `HttpClient::send_json`).
#[derive(Deserialize)]
struct Code2SessionAnswer {
    openid: Option<String>,
    session_key: Option<String>,
    unionid: Option<String>,
}

/// One app's API client: the HTTP client all apps share, the app's own
/// fleet-shared access_token where its platform has one, or the in-process mock.
#[derive(Clone)]
pub struct Client {
    http: HttpClient,
    name: String,
    platform: Platform,
    appid: String,
    secret: Secret,
    api_base: String,
    mock: bool,
    /// `wecom`: the corporation whose members log in.
    corpid: Option<String>,
    /// `wechat` and `wecom` apps.
    tokens: Option<Arc<AccessTokens>>,
    /// `alipay` apps (but in mock mode): the keys its calls are signed and
    /// its answers checked with.
    alipay_keys: Option<Arc<AlipayKeys>>,
    metrics: Arc<Metrics>,
}

/// What every app's client shares: one HTTP client (and its runtime), the
/// Redis handle and key prefix of the shared access_tokens, the bounds.
pub(super) struct Shared<'a> {
    pub http: &'a HttpClient,
    pub redis: &'a RedisConn,
    pub key_prefix: &'a str,
    pub wechat_timeout: Duration,
    pub redis_timeout: Duration,
    pub metrics: &'a Arc<Metrics>,
}

/// An `alipay` app's keys, read and checked (`None` for other platforms and in
/// mock mode); the error names the app's section and the file.
pub(super) fn alipay_keys(app: &App) -> Result<Option<AlipayKeys>, String> {
    if app.platform != Platform::Alipay || app.mock {
        return Ok(None);
    }
    let (Some(private), Some(public)) = (&app.private_key_file, &app.alipay_public_key_file) else {
        unreachable!("the configuration's checks require both key files of an alipay app");
    };
    AlipayKeys::load(private.as_ref(), public.as_ref())
        .map(Some)
        .map_err(|e| format!("{}: {e}", app.section))
}

impl Client {
    pub(super) fn new(app: &App, shared: &Shared<'_>) -> Result<Client, String> {
        let token_kind = match app.platform {
            Platform::Wechat => Some(TokenKind::Wechat),
            Platform::Wecom => Some(TokenKind::Wecom),
            Platform::Qq | Platform::Douyin | Platform::Alipay => None,
        };
        debug_assert_eq!(token_kind.is_some(), app.platform.has_access_token());
        let tokens = token_kind.map(|kind| {
            Arc::new(AccessTokens::new(
                TokenSource {
                    http: shared.http.clone(),
                    kind,
                    appid: match kind {
                        TokenKind::Wecom => app.corpid.clone().unwrap_or_default(),
                        TokenKind::Wechat => app.appid.clone(),
                    },
                    secret: app.secret.clone(),
                    api_base: app.api_base.clone(),
                    mock: app.mock,
                },
                shared.redis.clone(),
                shared.key_prefix,
                // The default app keeps the token keys from before apps existed.
                (app.name != DEFAULT_APP).then_some(app.appid.as_str()),
                shared.wechat_timeout,
                shared.redis_timeout,
                shared.metrics.clone(),
            ))
        });
        Ok(Client {
            alipay_keys: alipay_keys(app)?.map(Arc::new),
            http: shared.http.clone(),
            name: app.name.clone(),
            platform: app.platform,
            appid: app.appid.clone(),
            secret: app.secret.clone(),
            api_base: app.api_base.clone(),
            mock: app.mock,
            corpid: app.corpid.clone(),
            tokens,
            metrics: shared.metrics.clone(),
        })
    }

    /// The app's name in the configuration.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn platform(&self) -> Platform {
        self.platform
    }

    /// Whether `api_base` answers over HTTP at all, through the client every
    /// call uses (its timeout, its TLS roots, no redirects followed): its
    /// status, whatever it is, else why none came. Sends no secret.
    pub async fn reach_api_base(&self) -> Result<u16, String> {
        self.http.reach(format!("{}/", self.api_base)).await
    }

    /// Where its platform's APIs are (no secret in it).
    pub fn api_base(&self) -> &str {
        &self.api_base
    }

    /// The app's AppID, which every decrypted watermark must carry.
    pub fn appid(&self) -> &str {
        &self.appid
    }

    pub fn is_mock(&self) -> bool {
        self.mock
    }

    /// The app's fleet-shared access_token source (for other handlers of an
    /// embedding app, the admin token route and the CLI); `None` on platforms
    /// without one here (QQ, Douyin, Alipay).
    pub fn access_tokens(&self) -> Option<&Arc<AccessTokens>> {
        self.tokens.as_ref()
    }

    /// The current access_token: one fetch per refresh for the whole fleet.
    pub async fn access_token(&self) -> Result<AccessToken, WechatError> {
        self.tokens().get().await
    }

    /// The token of an app whose platform has one; the routes that need it
    /// are refused on the others before they get here.
    fn tokens(&self) -> &Arc<AccessTokens> {
        self.tokens
            .as_ref()
            .expect("only wechat and wecom apps call APIs with an access_token")
    }

    /// Exchanges a login code for the user's identity on the app's platform:
    /// one call, never retried (each code is accepted once) — but a WeCom call
    /// refused for its access_token, which never reached the code.
    pub async fn code_to_session(&self, code: &LoginCode) -> Result<Identity, WechatError> {
        if self.mock {
            let mut identity = mock::identity(code.as_str());
            identity.corpid = self.corpid.clone();
            return Ok(identity);
        }
        match self.platform {
            Platform::Wechat | Platform::Qq => self.jscode2session(code).await,
            Platform::Douyin => {
                douyin::code_to_session(&self.http, &self.api_base, &self.appid, &self.secret, code)
                    .await
            }
            Platform::Wecom => {
                let corpid = self.corpid.as_deref().unwrap_or_default();
                self.with_token(|token| async move {
                    wecom::code_to_session(&self.http, &self.api_base, corpid, &token, code).await
                })
                .await
            }
            Platform::Alipay => {
                let keys = self
                    .alipay_keys
                    .as_ref()
                    .expect("a non-mock alipay app has its keys");
                alipay::code_to_session(
                    &self.http,
                    &self.api_base,
                    &self.appid,
                    keys,
                    code,
                    crate::clock::unix_secs(),
                )
                .await
            }
        }
    }

    /// WeChat's (and QQ's) `jscode2session`.
    async fn jscode2session(&self, code: &LoginCode) -> Result<Identity, WechatError> {
        let request = self
            .http
            .get(format!("{}/sns/jscode2session", self.api_base))
            .query(&[
                ("appid", self.appid.as_str()),
                ("secret", self.secret.expose()),
                ("js_code", code.as_str()),
                ("grant_type", "authorization_code"),
            ]);
        let answer: Code2SessionAnswer = self.http.send_json(request).await?;
        match (answer.openid, answer.session_key) {
            (Some(openid), Some(session_key)) if !openid.is_empty() && !session_key.is_empty() => {
                Ok(Identity {
                    openid,
                    unionid: answer.unionid.filter(|u| !u.is_empty()),
                    session_key: Secret::new(session_key),
                    corpid: None,
                })
            }
            _ => Err(WechatError::Upstream(
                "success without openid or session_key".into(),
            )),
        }
    }

    /// `getuserphonenumber`: the `phone_info` object for a `getPhoneNumber` code
    /// (watermark not yet checked). Never logged.
    pub async fn phone_info(&self, code: &str) -> Result<Map<String, Value>, WechatError> {
        let result = if self.mock {
            Ok(mock::phone_info(&self.appid))
        } else {
            self.with_token(|token| async move {
                let request = self
                    .http
                    .post(format!("{}/wxa/business/getuserphonenumber", self.api_base))
                    .query(&[("access_token", token.expose())])
                    .json(&serde_json::json!({ "code": code }));
                let mut answer: Map<String, Value> = self.http.send_json(request).await?;
                match answer.remove("phone_info") {
                    Some(Value::Object(info)) => Ok(info),
                    _ => Err(WechatError::Upstream("success without phone_info".into())),
                }
            })
            .await
        };
        self.metrics.phone_calls.inc(outcome(&result));
        result
    }

    /// `checksession`: is `session_key` still this user's current key at WeChat?
    pub async fn check_session(
        &self,
        openid: &str,
        session_key: &Secret,
    ) -> Result<bool, WechatError> {
        let result = if self.mock {
            Ok(true)
        } else {
            // HMAC-SHA256 over the empty string, keyed with the key's base64 text.
            let mut mac = Hmac::<Sha256>::new_from_slice(session_key.expose().as_bytes())
                .expect("HMAC takes keys of any length");
            mac.update(b"");
            let signature = hex::encode(mac.finalize().into_bytes());
            let answer = self
                .with_token(|token| {
                    let request = self
                        .http
                        .get(format!("{}/wxa/checksession", self.api_base))
                        .query(&[
                            ("access_token", token.expose()),
                            ("openid", openid),
                            ("signature", signature.as_str()),
                            ("sig_method", "hmac_sha256"),
                        ]);
                    async move { self.http.send_json::<Value>(request).await }
                })
                .await;
            match answer {
                Ok(_) => Ok(true),
                Err(WechatError::StaleSessionKey) => Ok(false),
                Err(e) => Err(e),
            }
        };
        self.metrics.check_calls.inc(outcome(&result));
        result
    }

    /// Runs an API call with the shared token; when WeChat refuses the token
    /// (40001/40014/42001), drops it if it is still the current one, fetches a
    /// fresh one in normal mode and retries once — never more.
    async fn with_token<T, F, Fut>(&self, call: F) -> Result<T, WechatError>
    where
        F: Fn(Secret) -> Fut,
        Fut: std::future::Future<Output = Result<T, WechatError>>,
    {
        let tokens = self.tokens();
        let token = tokens.get().await?.token;
        match call(token.clone()).await {
            Err(WechatError::TokenRejected(code)) => {
                log::warn!("app {}: the access_token was refused (errcode {code}); fetching a fresh one, retrying once", self.name);
                tokens.drop_if_current(&token).await?;
                let fresh = tokens.get().await?.token;
                let result = call(fresh).await;
                self.metrics
                    .token_recoveries
                    .inc(if result.is_ok() { "ok" } else { "failed" });
                result.map_err(|e| match e {
                    WechatError::TokenRejected(code) => WechatError::Upstream(format!(
                        "a fresh access_token was refused too (errcode {code})"
                    )),
                    e => e,
                })
            }
            other => other,
        }
    }
}

fn outcome<T>(result: &Result<T, WechatError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) => e.tag(),
    }
}

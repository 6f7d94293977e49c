//! `Client`: the WeChat server API calls — `code2Session`, the phone number by
//! code, the session-key check — over one shared [`HttpClient`], with the
//! fleet's shared access_token, or answered by the mock.

use std::{sync::Arc, time::Duration};

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::Sha256;

use super::{
    call::HttpClient,
    mock,
    token::{AccessToken, AccessTokens, TokenKind, TokenSource},
    Identity, LoginCode, WechatError,
};
use crate::{config::WechatConfig, redis_conn::RedisConn, secret::Secret, telemetry::Metrics};

/// The answer of `jscode2session` (errors are handled by `HttpClient::send_json`).
#[derive(Deserialize)]
struct Code2SessionAnswer {
    openid: Option<String>,
    session_key: Option<String>,
    unionid: Option<String>,
}

/// The WeChat API client: one shared HTTP client and the fleet's shared
/// access_token, or the in-process mock.
#[derive(Clone)]
pub struct Client {
    http: HttpClient,
    appid: String,
    secret: Secret,
    api_base: String,
    mock: bool,
    tokens: Arc<AccessTokens>,
    metrics: Arc<Metrics>,
}

impl Client {
    /// `redis` is the storage handle for the shared access_token (the server's
    /// own connection, passed in at start-up), `key_prefix` its key prefix.
    pub fn new(
        config: &WechatConfig,
        redis: RedisConn,
        key_prefix: &str,
        redis_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Client, String> {
        let http = HttpClient::new(Duration::from_millis(config.timeout_ms))?;
        let tokens = AccessTokens::new(
            TokenSource {
                http: http.clone(),
                kind: TokenKind::Wechat,
                appid: config.appid.clone(),
                secret: config.secret.clone(),
                api_base: config.api_base.clone(),
                mock: config.mock,
            },
            redis,
            key_prefix,
            None,
            Duration::from_millis(config.timeout_ms),
            redis_timeout,
            metrics.clone(),
        );
        Ok(Client {
            http,
            appid: config.appid.clone(),
            secret: config.secret.clone(),
            api_base: config.api_base.clone(),
            mock: config.mock,
            tokens: Arc::new(tokens),
            metrics,
        })
    }

    /// Whether `api_base` answers over HTTP at all, through the client every
    /// call uses (its timeout, its TLS roots, no redirects followed): its
    /// status, whatever it is, else why none came. Sends no secret.
    pub async fn reach_api_base(&self) -> Result<u16, String> {
        self.http.reach(format!("{}/", self.api_base)).await
    }

    /// Our AppID, which every decrypted watermark must carry.
    pub fn appid(&self) -> &str {
        &self.appid
    }

    pub fn is_mock(&self) -> bool {
        self.mock
    }

    /// The fleet's shared access_token source (for other handlers of an embedding
    /// app, the admin token route and the CLI).
    pub fn access_tokens(&self) -> &Arc<AccessTokens> {
        &self.tokens
    }

    /// The current access_token: one fetch per refresh for the whole fleet.
    pub async fn access_token(&self) -> Result<AccessToken, WechatError> {
        self.tokens.get().await
    }

    /// Exchanges a login code for the user's identity: one call, never retried
    /// (WeChat accepts each code once).
    pub async fn code_to_session(&self, code: &LoginCode) -> Result<Identity, WechatError> {
        if self.mock {
            return Ok(mock::identity(code.as_str()));
        }
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
        let token = self.tokens.get().await?.token;
        match call(token.clone()).await {
            Err(WechatError::TokenRejected(code)) => {
                log::warn!("WeChat refused the access_token (errcode {code}); fetching a fresh one, retrying once");
                self.tokens.drop_if_current(&token).await?;
                let fresh = self.tokens.get().await?.token;
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

//! Everything about WeChat: the API client ([`Client`]: `code2Session`, phone
//! number by code, session-key check), its errcodes as [`WechatError`], the
//! fleet's shared access_token ([`AccessTokens`], in `token`), the mock that
//! answers locally in development, and (in [`userdata`]) the signature check and
//! decryption of user data.
//!
//! This module knows neither HTTP routes nor Redis; the HTTP layer maps
//! [`WechatError`] to the contract's statuses.

mod token;
pub mod userdata;

use std::{fmt, sync::Arc, time::Duration};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{de::DeserializeOwned, Deserialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use token::TokenSource;
pub use token::{AccessToken, AccessTokens, TokenStatus};

use crate::{
    config::WechatConfig,
    redis_conn::RedisConn,
    secret::{os_random_bytes, Secret},
    telemetry::Metrics,
};

/// A login code as the mini-program sent it (from `wx.login`): 1 to 128 bytes of
/// printable ASCII without spaces. One-time, but still a credential until used,
/// so `Debug` does not show it.
#[derive(Clone)]
pub struct LoginCode(String);

impl LoginCode {
    pub const MAX_LEN: usize = 128;

    pub fn parse(code: String) -> Result<LoginCode, &'static str> {
        if code.is_empty() {
            Err("code is empty")
        } else if code.len() > Self::MAX_LEN {
            Err("code is longer than 128 bytes")
        } else if !code.bytes().all(|b| b.is_ascii_graphic()) {
            Err("code must be printable ASCII")
        } else {
            Ok(LoginCode(code))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for LoginCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoginCode(***)")
    }
}

/// What `code2Session` says about a login code.
#[derive(Debug, Clone)]
pub struct Identity {
    pub openid: String,
    pub unionid: Option<String>,
    pub session_key: Secret,
}

/// Every way a WeChat call can fail, by what the caller should do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WechatError {
    /// 40029 (invalid code) or 40163 (code already used).
    InvalidCode(i64),
    /// 40226: WeChat flags the user as high-risk.
    UserBlocked,
    /// 45011: WeChat's rate limit.
    RateLimited,
    /// -1: WeChat says it is busy.
    Busy,
    /// No answer within `wechat.timeout_ms`.
    Timeout,
    /// 40001, 40014 or 42001: the access_token was refused; the call is retried
    /// once with a fresh token before this reaches a caller.
    TokenRejected(i64),
    /// 87009 from `checksession`: the session_key is no longer the user's current one.
    StaleSessionKey,
    /// The shared access_token could not be read or written in Redis.
    Storage(String),
    /// Anything else: another errcode, a non-JSON or non-200 answer, a success
    /// without openid/session_key, or WeChat unreachable. The text is for logs.
    Upstream(String),
}

impl fmt::Display for WechatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WechatError::InvalidCode(code) => write!(f, "invalid code (errcode {code})"),
            WechatError::UserBlocked => f.write_str("user blocked (errcode 40226)"),
            WechatError::RateLimited => f.write_str("rate limited (errcode 45011)"),
            WechatError::Busy => f.write_str("system busy (errcode -1)"),
            WechatError::Timeout => f.write_str("no answer in time"),
            WechatError::TokenRejected(code) => write!(f, "access_token rejected (errcode {code})"),
            WechatError::StaleSessionKey => {
                f.write_str("session_key no longer current (errcode 87009)")
            }
            WechatError::Storage(detail) => write!(f, "token storage: {detail}"),
            WechatError::Upstream(detail) => write!(f, "unexpected answer: {detail}"),
        }
    }
}

impl std::error::Error for WechatError {}

impl WechatError {
    /// The contract's error code for this failure; stable, so it can be recorded
    /// and read back with [`WechatError::from_tag`].
    pub fn tag(&self) -> &'static str {
        match self {
            WechatError::InvalidCode(_) => "invalid_code",
            WechatError::UserBlocked => "user_blocked",
            WechatError::RateLimited => "rate_limited",
            WechatError::Busy => "wechat_busy",
            WechatError::Timeout => "wechat_timeout",
            WechatError::Storage(_) => "store_unavailable",
            WechatError::TokenRejected(_)
            | WechatError::StaleSessionKey
            | WechatError::Upstream(_) => "wechat_error",
        }
    }

    /// The failure a recorded tag stands for (details are not recorded).
    pub fn from_tag(tag: &str) -> WechatError {
        match tag {
            "invalid_code" => WechatError::InvalidCode(40163),
            "user_blocked" => WechatError::UserBlocked,
            "rate_limited" => WechatError::RateLimited,
            "wechat_busy" => WechatError::Busy,
            "wechat_timeout" => WechatError::Timeout,
            _ => WechatError::Upstream(format!("an earlier attempt with this code failed ({tag})")),
        }
    }

    fn from_errcode(errcode: i64, errmsg: &str) -> WechatError {
        match errcode {
            40029 | 40163 => WechatError::InvalidCode(errcode),
            40226 => WechatError::UserBlocked,
            45011 => WechatError::RateLimited,
            -1 => WechatError::Busy,
            40001 | 40014 | 42001 => WechatError::TokenRejected(errcode),
            87009 => WechatError::StaleSessionKey,
            _ => WechatError::Upstream(format!("errcode {errcode}: {errmsg}")),
        }
    }
}

/// The answer of `jscode2session` (errors are handled by [`send_json`]).
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
    http: reqwest::Client,
    appid: String,
    secret: Secret,
    api_base: String,
    mock: bool,
    tokens: Arc<AccessTokens>,
    metrics: Arc<Metrics>,
}

/// The fixed answers of mock mode's server APIs.
const MOCK_PHONE: &str = "13800138000";

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
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .build()
            .map_err(|e| e.to_string())?;
        let tokens = AccessTokens::new(
            TokenSource {
                http: http.clone(),
                appid: config.appid.clone(),
                secret: config.secret.clone(),
                api_base: config.api_base.clone(),
                mock: config.mock,
            },
            redis,
            key_prefix,
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

    /// Our AppID, which every decrypted watermark must carry.
    pub fn appid(&self) -> &str {
        &self.appid
    }

    pub fn is_mock(&self) -> bool {
        self.mock
    }

    /// The fleet's shared access_token source (for other handlers of an embedding
    /// app, the admin token route and the CLI).
    pub fn access_tokens(&self) -> &AccessTokens {
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
            return Ok(mock_identity(code.as_str()));
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
        let answer: Code2SessionAnswer = send_json(request).await?;
        match (answer.openid, answer.session_key) {
            (Some(openid), Some(session_key)) if !openid.is_empty() && !session_key.is_empty() => {
                Ok(Identity {
                    openid,
                    unionid: answer.unionid.filter(|u| !u.is_empty()),
                    session_key: Secret::new(session_key),
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
            Ok(serde_json::json!({
                "phoneNumber": MOCK_PHONE, "purePhoneNumber": MOCK_PHONE, "countryCode": "86",
                "watermark": {"appid": self.appid, "timestamp": 0}
            })
            .as_object()
            .cloned()
            .unwrap_or_default())
        } else {
            self.with_token(|token| async move {
                let request = self
                    .http
                    .post(format!("{}/wxa/business/getuserphonenumber", self.api_base))
                    .query(&[("access_token", token.expose())])
                    .json(&serde_json::json!({ "code": code }));
                let mut answer: Map<String, Value> = send_json(request).await?;
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
                    async move { send_json::<Value>(request).await }
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

/// Sends a WeChat API request and reads its JSON answer, whatever the
/// Content-Type (WeChat sometimes says text/plain); a non-zero `errcode` becomes
/// the matching [`WechatError`].
async fn send_json<T: DeserializeOwned>(
    request: reqwest::RequestBuilder,
) -> Result<T, WechatError> {
    let response = request.send().await.map_err(request_error)?;
    let status = response.status();
    let body = response.bytes().await.map_err(request_error)?;
    if !status.is_success() {
        return Err(WechatError::Upstream(format!("HTTP {}", status.as_u16())));
    }
    let answer: Value = serde_json::from_slice(&body)
        .map_err(|_| WechatError::Upstream(format!("not JSON ({} bytes)", body.len())))?;
    let errcode = answer.get("errcode").and_then(Value::as_i64).unwrap_or(0);
    if errcode != 0 {
        let errmsg = answer.get("errmsg").and_then(Value::as_str).unwrap_or("");
        return Err(WechatError::from_errcode(errcode, errmsg));
    }
    serde_json::from_value(answer)
        .map_err(|_| WechatError::Upstream("unexpected answer shape".into()))
}

/// reqwest's error text can carry the request URL, and with it the AppSecret;
/// keep only the kind of failure.
fn request_error(e: reqwest::Error) -> WechatError {
    if e.is_timeout() {
        WechatError::Timeout
    } else if e.is_connect() {
        WechatError::Upstream("cannot connect".into())
    } else {
        WechatError::Upstream("request failed".into())
    }
}

/// Development stand-in: the openid follows from the code (same code, same user),
/// the session_key is fresh and random as WeChat's is.
fn mock_identity(code: &str) -> Identity {
    let digest = Sha256::digest(code.as_bytes());
    let key: [u8; 16] = os_random_bytes();
    Identity {
        openid: format!("mock_{}", hex::encode(&digest[..12])),
        unionid: None,
        session_key: Secret::new(base64::engine::general_purpose::STANDARD.encode(key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_code_rules() {
        assert!(LoginCode::parse("081aBcDe2xYz".into()).is_ok());
        assert!(LoginCode::parse("x".repeat(128)).is_ok());
        for bad in ["", "a b", "caf\u{e9}", "tab\t", "nul\0"] {
            assert!(LoginCode::parse(bad.into()).is_err(), "{bad:?}");
        }
        assert!(LoginCode::parse("x".repeat(129)).is_err());
        assert_eq!(
            format!("{:?}", LoginCode::parse("secret".into()).unwrap()),
            "LoginCode(***)"
        );
    }

    #[test]
    fn mock_openid_follows_the_code_and_keys_are_fresh() {
        let (a, b) = (mock_identity("c1"), mock_identity("c1"));
        assert_eq!(a.openid, b.openid);
        assert_ne!(a.session_key, b.session_key);
        assert_ne!(a.openid, mock_identity("c2").openid);
    }
}

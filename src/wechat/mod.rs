//! Everything about WeChat: the `auth.code2Session` client, its errcodes as
//! [`WechatError`], the mock that answers locally in development, and (in
//! [`userdata`]) the signature check and decryption of user data.
//!
//! This module knows neither HTTP routes nor Redis; the HTTP layer maps
//! [`WechatError`] to the contract's statuses.

pub mod userdata;

use std::{fmt, time::Duration};

use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::{
    config::WechatConfig,
    secret::{os_random_bytes, Secret},
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
            WechatError::Upstream(_) => "wechat_error",
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
            _ => WechatError::Upstream(format!("errcode {errcode}: {errmsg}")),
        }
    }
}

/// The answer of `jscode2session`, success and failure alike.
#[derive(Deserialize)]
struct Code2SessionAnswer {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
    openid: Option<String>,
    session_key: Option<String>,
    unionid: Option<String>,
}

/// The WeChat API client: one shared HTTP client, or the in-process mock.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    appid: String,
    secret: Secret,
    api_base: String,
    mock: bool,
}

impl Client {
    pub fn new(config: &WechatConfig) -> Result<Client, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Client {
            http,
            appid: config.appid.clone(),
            secret: config.secret.clone(),
            api_base: config.api_base.clone(),
            mock: config.mock,
        })
    }

    /// Our AppID, which every decrypted watermark must carry.
    pub fn appid(&self) -> &str {
        &self.appid
    }

    pub fn is_mock(&self) -> bool {
        self.mock
    }

    /// Exchanges a login code for the user's identity: one call, never retried
    /// (WeChat accepts each code once).
    pub async fn code_to_session(&self, code: &LoginCode) -> Result<Identity, WechatError> {
        if self.mock {
            return Ok(mock_identity(code.as_str()));
        }
        let url = format!("{}/sns/jscode2session", self.api_base);
        let response = self
            .http
            .get(url)
            .query(&[
                ("appid", self.appid.as_str()),
                ("secret", self.secret.expose()),
                ("js_code", code.as_str()),
                ("grant_type", "authorization_code"),
            ])
            .send()
            .await
            .map_err(request_error)?;
        let status = response.status();
        // WeChat sometimes labels JSON as text/plain: read bytes, parse regardless.
        let body = response.bytes().await.map_err(request_error)?;
        if !status.is_success() {
            return Err(WechatError::Upstream(format!("HTTP {}", status.as_u16())));
        }
        let answer: Code2SessionAnswer = serde_json::from_slice(&body)
            .map_err(|_| WechatError::Upstream(format!("not JSON ({} bytes)", body.len())))?;
        if answer.errcode != 0 {
            return Err(WechatError::from_errcode(answer.errcode, &answer.errmsg));
        }
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

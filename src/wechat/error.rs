//! `WechatError`: every way a WeChat call can fail, by what the caller should do
//! about it, and WeChat's errcodes mapped onto it.

use std::fmt;

/// Every way a platform call can fail, by what the caller should do about it
/// (the names are WeChat's; each platform's numbers map onto them: see
/// `douyin`, `wecom`, `alipay`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WechatError {
    /// The code is invalid or already used (WeChat's 40029 or 40163; the
    /// platform's own number).
    InvalidCode(i64),
    /// WeChat's 40226: the user is flagged as high-risk.
    UserBlocked,
    /// The platform's rate limit (WeChat's 45011, WeCom's 45009/45033).
    RateLimited,
    /// The platform says it is busy (WeChat's -1).
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
            WechatError::UserBlocked => f.write_str("user blocked as high-risk"),
            WechatError::RateLimited => f.write_str("rate limited by the platform"),
            WechatError::Busy => f.write_str("the platform is busy"),
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
    /// and read back with [`WechatError::from_tag`]. Each must equal the `error`
    /// code the HTTP layer answers for it (checked by the tests of `http::error`).
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

    pub(super) fn from_errcode(errcode: i64, errmsg: &str) -> WechatError {
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

impl From<redis::RedisError> for WechatError {
    fn from(e: redis::RedisError) -> Self {
        WechatError::Storage(e.to_string())
    }
}

impl From<crate::redis_conn::TimedOut> for WechatError {
    fn from(e: crate::redis_conn::TimedOut) -> Self {
        WechatError::Storage(format!("redis: {e}"))
    }
}

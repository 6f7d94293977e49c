//! `ApiError`: every error the HTTP API answers, and its mapping to the contract's
//! status and `{"error", "message"}` body — in this one place.
//!
//! Errors of the lower layers ([`WechatError`], [`StoreError`]) convert into it;
//! their details go to the log, never into a response.

use actix_web::{http::StatusCode, HttpResponse, ResponseError};
use serde::Serialize;

use super::JsonAnswer as _;
use crate::{
    login::LoginError,
    session::StoreError,
    wechat::{userdata::DataError, WechatError},
};

#[derive(Debug)]
pub enum ApiError {
    /// The body or a field is not what the route takes; the text says what is wrong.
    InvalidRequest(&'static str),
    PayloadTooLarge,
    SessionRequired,
    InvalidSession,
    /// An admin route without the right bearer token.
    AdminUnauthorized,
    /// Over `login.rate_per_minute` for this client address.
    LoginRateLimited,
    NotFound,
    /// The methods the route does take, for the `Allow` header.
    MethodNotAllowed(&'static str),
    Wechat(WechatError),
    /// User data that fails its signature, decryption or watermark (422).
    UserData(DataError),
    /// WeChat said 40029 to a phone-number code (expired, used, or another app's).
    InvalidPhoneCode,
    StoreUnavailable,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

impl ApiError {
    /// The contract's `error` code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::SessionRequired => "session_required",
            ApiError::InvalidSession => "invalid_session",
            ApiError::AdminUnauthorized => "unauthorized",
            ApiError::LoginRateLimited => "rate_limited",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::StoreUnavailable => "store_unavailable",
            ApiError::InvalidPhoneCode => "invalid_phone_code",
            ApiError::UserData(e) => match e {
                DataError::Malformed(_) => "invalid_request",
                DataError::BadSignature => "bad_signature",
                DataError::DecryptFailed => "decrypt_failed",
                DataError::AppidMismatch => "appid_mismatch",
            },
            ApiError::Wechat(e) => e.tag(),
        }
    }

    fn message(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(why) => why,
            ApiError::PayloadTooLarge => "request body is larger than 16 KiB",
            ApiError::SessionRequired => "this route needs a session id in the session header",
            ApiError::InvalidSession => {
                "the session id is malformed, unknown, expired or logged out; log in again"
            }
            ApiError::AdminUnauthorized => "admin routes need Authorization: Bearer <admin.token>",
            ApiError::LoginRateLimited => "too many logins from this address; try again in a minute",
            ApiError::NotFound => "no such route",
            ApiError::MethodNotAllowed(_) => "this route does not take that method",
            ApiError::StoreUnavailable => "the session store is unavailable; try again shortly",
            ApiError::InvalidPhoneCode => {
                "WeChat rejected the phone-number code (expired after 5 minutes, used, or of another app)"
            }
            ApiError::UserData(e) => match e {
                DataError::Malformed(why) => why,
                DataError::BadSignature => "signature does not match rawData and the current session_key",
                DataError::DecryptFailed => {
                    "encryptedData could not be decrypted with the current session_key; call wx.login again, then retry"
                }
                DataError::AppidMismatch => "the data was issued to another mini-program",
            },
            ApiError::Wechat(e) => match e {
                WechatError::InvalidCode(_) => {
                    "WeChat rejected the login code (invalid or already used); call wx.login again"
                }
                WechatError::UserBlocked => "WeChat flags this user as high-risk",
                WechatError::RateLimited => "WeChat's rate limit was reached; try again later",
                WechatError::Busy => "WeChat is busy; try again shortly",
                WechatError::Timeout => "WeChat did not answer in time",
                WechatError::Storage(_) => "the session store is unavailable; try again shortly",
                WechatError::TokenRejected(_)
                | WechatError::StaleSessionKey
                | WechatError::Upstream(_) => "WeChat gave an unexpected answer",
            },
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::SessionRequired | ApiError::InvalidSession | ApiError::AdminUnauthorized => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::LoginRateLimited => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::UserData(DataError::Malformed(_)) => StatusCode::BAD_REQUEST,
            ApiError::UserData(_) | ApiError::InvalidPhoneCode => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Wechat(e) => match e {
                WechatError::InvalidCode(_) => StatusCode::UNAUTHORIZED,
                WechatError::UserBlocked => StatusCode::FORBIDDEN,
                WechatError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
                WechatError::Busy => StatusCode::SERVICE_UNAVAILABLE,
                WechatError::Timeout => StatusCode::GATEWAY_TIMEOUT,
                WechatError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
                WechatError::TokenRejected(_)
                | WechatError::StaleSessionKey
                | WechatError::Upstream(_) => StatusCode::BAD_GATEWAY,
            },
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut answer = HttpResponse::build(self.status_code());
        if let ApiError::MethodNotAllowed(allow) = self {
            answer.insert_header((actix_web::http::header::ALLOW, *allow));
        }
        answer.json_body(ErrorBody {
            error: self.code(),
            message: self.message(),
        })
    }
}

impl From<WechatError> for ApiError {
    fn from(e: WechatError) -> Self {
        if let WechatError::Storage(detail) = &e {
            log::error!("access_token storage: {detail}");
        }
        ApiError::Wechat(e)
    }
}

impl From<LoginError> for ApiError {
    fn from(e: LoginError) -> Self {
        match e {
            LoginError::Wechat(e) => e.into(),
            LoginError::Store(e) => e.into(),
        }
    }
}

impl From<DataError> for ApiError {
    fn from(e: DataError) -> Self {
        ApiError::UserData(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        log::error!("{e}");
        ApiError::StoreUnavailable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One of every shape of `ApiError`, with the status, code and message it
    /// answers with; pins today's contract while the mapping is rewritten.
    #[test]
    fn every_error_answers_as_before() {
        use WechatError as W;
        let cases: Vec<(ApiError, u16, &str, &str)> = vec![
            (ApiError::InvalidRequest("why"), 400, "invalid_request", "why"),
            (ApiError::PayloadTooLarge, 413, "payload_too_large", "request body is larger than 16 KiB"),
            (ApiError::SessionRequired, 401, "session_required", "this route needs a session id in the session header"),
            (ApiError::InvalidSession, 401, "invalid_session", "the session id is malformed, unknown, expired or logged out; log in again"),
            (ApiError::AdminUnauthorized, 401, "unauthorized", "admin routes need Authorization: Bearer <admin.token>"),
            (ApiError::LoginRateLimited, 429, "rate_limited", "too many logins from this address; try again in a minute"),
            (ApiError::NotFound, 404, "not_found", "no such route"),
            (ApiError::MethodNotAllowed("GET"), 405, "method_not_allowed", "this route does not take that method"),
            (ApiError::StoreUnavailable, 503, "store_unavailable", "the session store is unavailable; try again shortly"),
            (ApiError::InvalidPhoneCode, 422, "invalid_phone_code", "WeChat rejected the phone-number code (expired after 5 minutes, used, or of another app)"),
            (ApiError::UserData(DataError::Malformed("bad iv")), 400, "invalid_request", "bad iv"),
            (ApiError::UserData(DataError::BadSignature), 422, "bad_signature", "signature does not match rawData and the current session_key"),
            (ApiError::UserData(DataError::DecryptFailed), 422, "decrypt_failed", "encryptedData could not be decrypted with the current session_key; call wx.login again, then retry"),
            (ApiError::UserData(DataError::AppidMismatch), 422, "appid_mismatch", "the data was issued to another mini-program"),
            (ApiError::Wechat(W::InvalidCode(40029)), 401, "invalid_code", "WeChat rejected the login code (invalid or already used); call wx.login again"),
            (ApiError::Wechat(W::UserBlocked), 403, "user_blocked", "WeChat flags this user as high-risk"),
            (ApiError::Wechat(W::RateLimited), 429, "rate_limited", "WeChat's rate limit was reached; try again later"),
            (ApiError::Wechat(W::Busy), 503, "wechat_busy", "WeChat is busy; try again shortly"),
            (ApiError::Wechat(W::Timeout), 504, "wechat_timeout", "WeChat did not answer in time"),
            (ApiError::Wechat(W::Storage("x".into())), 503, "store_unavailable", "the session store is unavailable; try again shortly"),
            (ApiError::Wechat(W::TokenRejected(40001)), 502, "wechat_error", "WeChat gave an unexpected answer"),
            (ApiError::Wechat(W::StaleSessionKey), 502, "wechat_error", "WeChat gave an unexpected answer"),
            (ApiError::Wechat(W::Upstream("x".into())), 502, "wechat_error", "WeChat gave an unexpected answer"),
        ];
        for (error, status, code, message) in cases {
            assert_eq!(error.status_code().as_u16(), status, "{error:?}");
            assert_eq!(error.code(), code, "{error:?}");
            assert_eq!(error.message(), message, "{error:?}");
            assert_eq!(error.to_string(), code, "{error:?}");
        }
    }

    #[test]
    fn method_not_allowed_says_what_is_allowed() {
        let answer = ApiError::MethodNotAllowed("GET, POST").error_response();
        assert_eq!(answer.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(answer.headers().get("allow").unwrap(), "GET, POST");
        let answer = ApiError::NotFound.error_response();
        assert!(answer.headers().get("allow").is_none());
    }
}

//! The HTTP API's errors: [`ErrorCode`], the one table of every answer's status,
//! `error` code and default message; and [`ApiError`], every error a handler or
//! the guard returns, mapped onto that table and written as `{"error", "message"}`.
//!
//! Errors of the lower layers ([`WechatError`], [`StoreError`]) convert into it;
//! their details go to the log, never into a response. What else lists the codes
//! (the OpenAPI document, the outcome labels in `telemetry`) is checked against
//! the table by this module's tests.

use actix_web::{http::StatusCode, HttpResponse, ResponseError};
use serde::Serialize;

use super::JsonAnswer as _;
use crate::{
    config::UnknownApp,
    login::LoginError,
    session::{EndReason, StoreError},
    wechat::{userdata::DataError, WechatError},
};

/// Defines [`ErrorCode`] and its table from one list, so a row cannot be left out
/// of `ALL` or of the lookup.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $name:ident => ($status:ident, $code:literal, $message:literal),)*) => {
        /// Every answer the API gives when it fails: its status, its `error` code
        /// and the message it carries unless the error brings its own.
        ///
        /// A code names a row of the contract and always comes with the same
        /// status; two rows may share a code when only the message differs.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorCode {
            $($(#[$doc])* $name,)*
        }

        impl ErrorCode {
            /// Every row, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            const fn row(self) -> (StatusCode, &'static str, &'static str) {
                match self {
                    $(ErrorCode::$name => (StatusCode::$status, $code, $message),)*
                }
            }
        }
    };
}

error_codes! {
    /// The body or a field is not what the route takes. The errors answering
    /// with it bring their own message, saying what; this one is a fallback.
    InvalidRequest => (BAD_REQUEST, "invalid_request",
        "the request is not what this route takes"),
    /// `appid` names no configured app, or is left out with several.
    UnknownApp => (BAD_REQUEST, "unknown_app",
        "appid names no configured app (it may be left out only when one app could be meant)"),
    /// The session's (or the named) app is on a platform without this API.
    UnsupportedPlatform => (BAD_REQUEST, "unsupported_platform",
        "this app's platform has no such API"),
    PayloadTooLarge => (PAYLOAD_TOO_LARGE, "payload_too_large",
        "request body is larger than 16 KiB"),
    /// A body still incomplete 5 s after its headers (a slow-loris client).
    RequestTimeout => (REQUEST_TIMEOUT, "request_timeout",
        "the request body did not arrive within 5 s of its headers"),
    /// WeChat's 40029 or 40163 to a login code.
    InvalidCode => (UNAUTHORIZED, "invalid_code",
        "WeChat rejected the login code (invalid or already used); call wx.login again"),
    UserBlocked => (FORBIDDEN, "user_blocked",
        "WeChat flags this user as high-risk"),
    /// Over `login.rate_per_minute` for this client address.
    LoginRateLimited => (TOO_MANY_REQUESTS, "rate_limited",
        "too many logins from this address; try again in a minute"),
    /// WeChat's own rate limit (45011).
    WechatRateLimited => (TOO_MANY_REQUESTS, "rate_limited",
        "WeChat's rate limit was reached; try again later"),
    /// Any WeChat failure the client cannot act on.
    WechatError => (BAD_GATEWAY, "wechat_error",
        "WeChat gave an unexpected answer"),
    WechatBusy => (SERVICE_UNAVAILABLE, "wechat_busy",
        "WeChat is busy; try again shortly"),
    WechatTimeout => (GATEWAY_TIMEOUT, "wechat_timeout",
        "WeChat did not answer in time"),
    /// Redis, for sessions or for the shared access_token.
    StoreUnavailable => (SERVICE_UNAVAILABLE, "store_unavailable",
        "the session store is unavailable; try again shortly"),
    SessionRequired => (UNAUTHORIZED, "session_required",
        "this route needs a session id in the session header"),
    InvalidSession => (UNAUTHORIZED, "invalid_session",
        "the session id is malformed, unknown, expired or logged out; log in again"),
    /// A newer login took its place (`one_per_device`, `max_per_user`).
    SessionReplaced => (UNAUTHORIZED, "session_replaced",
        "this session was ended by a newer login of the same user; log in again only if the user asks"),
    /// An operator ended it.
    SessionRevoked => (UNAUTHORIZED, "session_revoked",
        "this session was ended by an operator"),
    /// The user is banned (a guarded request, or a login after code2Session).
    UserBanned => (FORBIDDEN, "user_banned",
        "this user is banned until the time in until (null: until lifted)"),
    /// A step-up code that WeChat says is another user's than the session's.
    IdentityMismatch => (FORBIDDEN, "identity_mismatch",
        "the code is another WeChat user's than this session's; nothing changed"),
    /// A route behind the `Elevated` extractor, without a step-up holding now.
    ElevationRequired => (FORBIDDEN, "elevation_required",
        "this action needs a fresh step-up: call wx.login, then POST /session/elevate with the code"),
    /// An admin route without the right bearer token.
    AdminUnauthorized => (UNAUTHORIZED, "unauthorized",
        "admin routes need Authorization: Bearer <admin.token>"),
    NotFound => (NOT_FOUND, "not_found",
        "no such route"),
    MethodNotAllowed => (METHOD_NOT_ALLOWED, "method_not_allowed",
        "this route does not take that method"),
    /// WeChat's 40029 to a phone-number code.
    InvalidPhoneCode => (UNPROCESSABLE_ENTITY, "invalid_phone_code",
        "WeChat rejected the phone-number code (expired after 5 minutes, used, or of another app)"),
    BadSignature => (UNPROCESSABLE_ENTITY, "bad_signature",
        "signature does not match rawData and the current session_key"),
    DecryptFailed => (UNPROCESSABLE_ENTITY, "decrypt_failed",
        "encryptedData could not be decrypted with the current session_key; call wx.login again, then retry"),
    AppidMismatch => (UNPROCESSABLE_ENTITY, "appid_mismatch",
        "the data was issued to another mini-program"),
}

impl ErrorCode {
    pub const fn status(self) -> StatusCode {
        self.row().0
    }

    /// The contract's `error` code.
    pub const fn code(self) -> &'static str {
        self.row().1
    }

    pub const fn message(self) -> &'static str {
        self.row().2
    }
}

/// Every error a handler or the guard returns; [`ApiError::error_code`] picks
/// its row of [`ErrorCode`].
#[derive(Debug)]
pub enum ApiError {
    /// The body or a field is not what the route takes; the text says what is wrong.
    InvalidRequest(&'static str),
    UnknownApp,
    UnsupportedPlatform,
    PayloadTooLarge,
    RequestTimeout,
    SessionRequired,
    InvalidSession,
    /// A session that ended a short while ago, with the reason it ended.
    SessionEnded(EndReason),
    /// A login of a banned user, and until when (unix seconds; `None`: no end).
    UserBanned(Option<u64>),
    IdentityMismatch,
    ElevationRequired,
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
    /// `user_banned` only: the ban's end, `null` for none.
    #[serde(skip_serializing_if = "Option::is_none")]
    until: Option<Option<u64>>,
}

impl ApiError {
    /// The row of the table this error answers with.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            ApiError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            ApiError::UnknownApp => ErrorCode::UnknownApp,
            ApiError::UnsupportedPlatform => ErrorCode::UnsupportedPlatform,
            ApiError::PayloadTooLarge => ErrorCode::PayloadTooLarge,
            ApiError::RequestTimeout => ErrorCode::RequestTimeout,
            ApiError::SessionRequired => ErrorCode::SessionRequired,
            ApiError::InvalidSession => ErrorCode::InvalidSession,
            ApiError::SessionEnded(EndReason::Replaced) => ErrorCode::SessionReplaced,
            ApiError::SessionEnded(EndReason::Revoked) => ErrorCode::SessionRevoked,
            ApiError::SessionEnded(EndReason::Banned { .. }) | ApiError::UserBanned(_) => {
                ErrorCode::UserBanned
            }
            ApiError::IdentityMismatch => ErrorCode::IdentityMismatch,
            ApiError::ElevationRequired => ErrorCode::ElevationRequired,
            ApiError::AdminUnauthorized => ErrorCode::AdminUnauthorized,
            ApiError::LoginRateLimited => ErrorCode::LoginRateLimited,
            ApiError::NotFound => ErrorCode::NotFound,
            ApiError::MethodNotAllowed(_) => ErrorCode::MethodNotAllowed,
            ApiError::StoreUnavailable => ErrorCode::StoreUnavailable,
            ApiError::InvalidPhoneCode => ErrorCode::InvalidPhoneCode,
            ApiError::UserData(e) => match e {
                DataError::Malformed(_) => ErrorCode::InvalidRequest,
                DataError::BadSignature => ErrorCode::BadSignature,
                DataError::DecryptFailed => ErrorCode::DecryptFailed,
                DataError::AppidMismatch => ErrorCode::AppidMismatch,
            },
            ApiError::Wechat(e) => match e {
                WechatError::InvalidCode(_) => ErrorCode::InvalidCode,
                WechatError::UserBlocked => ErrorCode::UserBlocked,
                WechatError::RateLimited => ErrorCode::WechatRateLimited,
                WechatError::Busy => ErrorCode::WechatBusy,
                WechatError::Timeout => ErrorCode::WechatTimeout,
                WechatError::Storage(_) => ErrorCode::StoreUnavailable,
                WechatError::TokenRejected(_)
                | WechatError::StaleSessionKey
                | WechatError::Upstream(_) => ErrorCode::WechatError,
            },
        }
    }

    /// The contract's `error` code.
    pub fn code(&self) -> &'static str {
        self.error_code().code()
    }

    fn message(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(why) | ApiError::UserData(DataError::Malformed(why)) => why,
            _ => self.error_code().message(),
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
        self.error_code().status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut answer = HttpResponse::build(self.status_code());
        if let ApiError::MethodNotAllowed(allow) = self {
            answer.insert_header((actix_web::http::header::ALLOW, *allow));
        }
        let until = match self {
            ApiError::SessionEnded(EndReason::Banned { until }) | ApiError::UserBanned(until) => {
                Some(*until)
            }
            _ => None,
        };
        answer.json_body(ErrorBody {
            error: self.code(),
            message: self.message(),
            until,
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
            LoginError::RateLimited => ApiError::LoginRateLimited,
            LoginError::Banned(until) => ApiError::UserBanned(until),
            LoginError::IdentityMismatch => ApiError::IdentityMismatch,
            LoginError::SessionEnded(reason) => ApiError::SessionEnded(reason),
            LoginError::SessionGone => ApiError::InvalidSession,
        }
    }
}

impl From<UnknownApp> for ApiError {
    fn from(UnknownApp: UnknownApp) -> Self {
        ApiError::UnknownApp
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
    use std::collections::BTreeSet;

    use super::*;
    use crate::telemetry::{ELEVATE_OUTCOMES, LOGIN_OUTCOMES, WECHAT_OUTCOMES};

    /// One of each [`WechatError`]; the match stops compiling when one is added.
    fn every_wechat_error() -> Vec<WechatError> {
        let all = vec![
            WechatError::InvalidCode(40029),
            WechatError::UserBlocked,
            WechatError::RateLimited,
            WechatError::Busy,
            WechatError::Timeout,
            WechatError::TokenRejected(40001),
            WechatError::StaleSessionKey,
            WechatError::Storage("down".into()),
            WechatError::Upstream("odd".into()),
        ];
        for e in &all {
            match e {
                WechatError::InvalidCode(_)
                | WechatError::UserBlocked
                | WechatError::RateLimited
                | WechatError::Busy
                | WechatError::Timeout
                | WechatError::TokenRejected(_)
                | WechatError::StaleSessionKey
                | WechatError::Storage(_)
                | WechatError::Upstream(_) => {}
            }
        }
        all
    }

    fn codes(rows: &[ErrorCode]) -> BTreeSet<&'static str> {
        rows.iter().map(|row| row.code()).collect()
    }

    #[test]
    fn the_table_keeps_the_contracts_statuses() {
        for (code, status) in [
            ("invalid_request", 400),
            ("unknown_app", 400),
            ("unsupported_platform", 400),
            ("invalid_session", 401),
            ("invalid_code", 401),
            ("unauthorized", 401),
            ("user_blocked", 403),
            ("identity_mismatch", 403),
            ("elevation_required", 403),
            ("payload_too_large", 413),
            ("invalid_phone_code", 422),
            ("decrypt_failed", 422),
            ("rate_limited", 429),
            ("wechat_error", 502),
            ("store_unavailable", 503),
            ("wechat_timeout", 504),
        ] {
            let rows: Vec<_> = ErrorCode::ALL.iter().filter(|r| r.code() == code).collect();
            assert!(!rows.is_empty(), "{code} is not in the table");
            for row in rows {
                assert_eq!(row.status().as_u16(), status, "{row:?}");
            }
        }
        for row in ErrorCode::ALL {
            assert!(
                row.status().is_client_error() || row.status().is_server_error(),
                "{row:?}"
            );
            assert!(
                !row.code().is_empty()
                    && row
                        .code()
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{row:?}"
            );
            assert!(!row.message().is_empty(), "{row:?}");
            let same_code = ErrorCode::ALL.iter().filter(|r| r.code() == row.code());
            for other in same_code {
                assert_eq!(other.status(), row.status(), "{row:?} and {other:?}");
                if other != row {
                    assert_ne!(other.message(), row.message(), "{row:?} and {other:?}");
                }
            }
        }
    }

    #[test]
    fn the_openapi_error_enum_is_the_tables_codes() {
        let doc: serde_json::Value = serde_json::from_str(include_str!("openapi.json")).unwrap();
        let documented: BTreeSet<&str> = doc["components"]["schemas"]["Error"]["properties"]
            ["error"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|code| code.as_str().unwrap())
            .collect();
        assert_eq!(
            documented,
            codes(ErrorCode::ALL),
            "openapi.json's Error enum lists exactly the table's codes"
        );
    }

    /// The WeChat layer names its failures itself (it knows no HTTP) and records
    /// those names; they must be the codes the API answers with.
    #[test]
    fn wechat_tags_are_the_codes_answered() {
        for e in every_wechat_error() {
            assert_eq!(e.tag(), ApiError::Wechat(e.clone()).code(), "{e:?}");
        }
    }

    /// `ok`, then one label per code the calls can end in, then the catch-all.
    fn assert_outcomes(labels: &[&str], errors: Vec<ApiError>) {
        assert_eq!(labels.first(), Some(&"ok"));
        assert_eq!(labels.last(), Some(&"other"));
        let middle: BTreeSet<&str> = labels[1..labels.len() - 1].iter().copied().collect();
        assert_eq!(middle.len(), labels.len() - 2, "a label is listed twice");
        let rows: Vec<ErrorCode> = errors.iter().map(ApiError::error_code).collect();
        assert_eq!(
            middle,
            codes(&rows),
            "telemetry's outcome labels: one per code these calls can end in"
        );
    }

    #[test]
    fn wechat_outcome_labels_are_the_codes_of_wechat_errors() {
        let errors = every_wechat_error()
            .into_iter()
            .map(ApiError::Wechat)
            .collect();
        assert_outcomes(WECHAT_OUTCOMES, errors);
    }

    /// What `POST /login` can fail with: its own checks, then anything
    /// `Login::login` returns.
    #[test]
    fn login_outcome_labels_are_the_codes_a_login_answers_with() {
        let mut errors = vec![
            ApiError::LoginRateLimited,
            ApiError::UnknownApp,
            ApiError::PayloadTooLarge,
            ApiError::RequestTimeout,
            ApiError::InvalidRequest("bad body"),
            LoginError::Store(StoreError::Unavailable("down".into())).into(),
            LoginError::Banned(None).into(),
        ];
        errors.extend(every_wechat_error().into_iter().map(ApiError::Wechat));
        assert_outcomes(LOGIN_OUTCOMES, errors);
    }

    /// What `POST /session/elevate` can fail with once the guard let it in:
    /// its body's checks, then anything `Login::elevate` returns.
    #[test]
    fn elevate_outcome_labels_are_the_codes_a_step_up_answers_with() {
        let mut errors = vec![
            ApiError::PayloadTooLarge,
            ApiError::RequestTimeout,
            ApiError::InvalidRequest("bad body"),
            LoginError::Store(StoreError::Unavailable("down".into())).into(),
            LoginError::IdentityMismatch.into(),
            LoginError::SessionGone.into(),
            LoginError::SessionEnded(EndReason::Replaced).into(),
            LoginError::SessionEnded(EndReason::Revoked).into(),
            LoginError::SessionEnded(EndReason::Banned { until: None }).into(),
        ];
        errors.extend(every_wechat_error().into_iter().map(ApiError::Wechat));
        assert_outcomes(ELEVATE_OUTCOMES, errors);
    }

    #[test]
    fn an_error_may_bring_its_own_message() {
        assert_eq!(
            ApiError::InvalidRequest("code is empty").message(),
            "code is empty"
        );
        assert_eq!(
            ApiError::UserData(DataError::Malformed("bad iv")).message(),
            "bad iv"
        );
        assert_eq!(
            ApiError::UserData(DataError::Malformed("bad iv")).error_code(),
            ErrorCode::InvalidRequest
        );
        assert_eq!(ApiError::NotFound.message(), ErrorCode::NotFound.message());
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

//! The handlers of the contract's routes. Each one only translates: HTTP in,
//! a call on [`SessionStore`](crate::session::SessionStore) or the WeChat
//! [`Client`](crate::wechat::Client), HTTP out.

use std::time::Instant;

use actix_web::{http::header, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::{
    body::{BodyShape, JsonBody},
    error::ApiError,
    AppState, JsonAnswer as _,
};
use crate::{
    config::Platform,
    secret::Secret,
    session::{Device, InvalidDevice, Session},
    wechat::{
        userdata::{
            check_watermark, profile_of, verify_signature, DataError, EncryptedData, PhoneNumber,
        },
        Client, LoginCode, WechatError,
    },
};

#[derive(Deserialize)]
pub struct LoginBody {
    code: String,
    /// Kept as JSON: absent is no device, anything but a device string
    /// (`null` included) is refused.
    #[serde(default, deserialize_with = "present")]
    device: Option<serde_json::Value>,
    /// The same: absent is the only app, anything but a string is refused.
    #[serde(default, deserialize_with = "present")]
    appid: Option<serde_json::Value>,
}

/// A field that is there, `null` included, as `Some`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

impl BodyShape for LoginBody {
    const SHAPE: &'static str =
        "body must be JSON: {\"code\": \"<wx.login code>\", \"appid\"?: \"<app>\", \"device\"?: \"<device type>\"}";
}

#[derive(Serialize)]
struct LoginAnswer<'a> {
    sessionid: &'a str,
    expires_in: u64,
}

#[derive(Deserialize)]
pub struct ElevateBody {
    code: String,
}

impl BodyShape for ElevateBody {
    const SHAPE: &'static str = "body must be JSON: {\"code\": \"<a fresh wx.login code>\"}";
}

#[derive(Serialize)]
struct ElevateAnswer {
    elevated_until: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserInfoBody {
    raw_data: String,
    signature: String,
    encrypted_data: String,
    iv: String,
}

impl BodyShape for UserInfoBody {
    const SHAPE: &'static str =
        "body must be JSON: {\"rawData\", \"signature\", \"encryptedData\", \"iv\"} (all strings)";
}

/// `{"code"}` from the `getPhoneNumber` button, or the legacy encrypted payload;
/// never both (a body with both is ambiguous, and the OpenAPI document's `oneOf`
/// forbids it).
#[derive(Deserialize)]
#[serde(try_from = "PhoneFields")]
pub enum PhoneBody {
    Code { code: String },
    Legacy { encrypted_data: String, iv: String },
}

#[derive(Deserialize)]
struct PhoneFields {
    code: Option<String>,
    #[serde(rename = "encryptedData")]
    encrypted_data: Option<String>,
    iv: Option<String>,
}

impl TryFrom<PhoneFields> for PhoneBody {
    type Error = &'static str;

    fn try_from(fields: PhoneFields) -> Result<PhoneBody, &'static str> {
        match fields {
            PhoneFields {
                code: Some(code),
                encrypted_data: None,
                iv: None,
            } => Ok(PhoneBody::Code { code }),
            PhoneFields {
                code: None,
                encrypted_data: Some(encrypted_data),
                iv: Some(iv),
            } => Ok(PhoneBody::Legacy { encrypted_data, iv }),
            _ => Err("either code, or encryptedData and iv"),
        }
    }
}

impl BodyShape for PhoneBody {
    const SHAPE: &'static str =
        "body must be JSON: {\"code\"} or {\"encryptedData\", \"iv\"} (strings)";
}

/// A body that is not a login body still counts as a failed login, so the
/// handler takes the extractor's outcome rather than letting it answer.
pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Result<JsonBody<LoginBody>, ApiError>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let result = login_flow(&state, &req, body).await;
    let elapsed = started.elapsed();
    state.metrics.record_login_latency(elapsed);
    let latency_ms = elapsed.as_millis();
    match &result {
        Ok(session) => {
            state.metrics.logins.inc("ok");
            log::info!(
                "login ok openid={} latency_ms={latency_ms}",
                session.openid()
            );
        }
        Err(e) => {
            state.metrics.logins.inc(e.code());
            match e {
                ApiError::Wechat(detail) => {
                    log::info!(
                        "login failed: {} ({detail}) latency_ms={latency_ms}",
                        e.code()
                    )
                }
                _ => log::info!("login failed: {} latency_ms={latency_ms}", e.code()),
            }
        }
    }
    let session = result?;
    Ok(HttpResponse::Ok().json_body(LoginAnswer {
        sessionid: session.id().as_str(),
        expires_in: session.expires_in(),
    }))
}

async fn login_flow(
    state: &AppState,
    req: &HttpRequest,
    body: Result<JsonBody<LoginBody>, ApiError>,
) -> Result<Session, ApiError> {
    let JsonBody(body) = body?;
    let code = LoginCode::parse(body.code).map_err(ApiError::InvalidRequest)?;
    let device = match body.device {
        None => None,
        Some(serde_json::Value::String(device)) => Some(Device::parse(device)),
        Some(_) => Some(Err(InvalidDevice)),
    }
    .transpose()
    .map_err(|InvalidDevice| ApiError::InvalidRequest(InvalidDevice::MESSAGE))?;
    let appid = match &body.appid {
        None => None,
        Some(serde_json::Value::String(appid)) => Some(appid.as_str()),
        Some(_) => return Err(ApiError::InvalidRequest("appid must be a string")),
    };
    let app = state.apps.select(appid, |_| true)?;
    let client = state.proxies.client_of(req);
    Ok(state
        .login
        .login(app, &code, client, device.as_ref())
        .await?)
}

pub async fn me(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let session = super::guard::check(&req).await?;
    Ok(HttpResponse::Ok().json_bytes(session.to_json()))
}

/// Step-up: a fresh login code of the session's own user elevates it for
/// `session.elevate_secs` (what [`Elevated`](super::Elevated) asks for).
pub async fn elevate(
    state: web::Data<AppState>,
    session: Session,
    body: Result<JsonBody<ElevateBody>, ApiError>,
) -> Result<HttpResponse, ApiError> {
    let result = async {
        let JsonBody(body) = body?;
        let code = LoginCode::parse(body.code).map_err(ApiError::InvalidRequest)?;
        Ok::<_, ApiError>(state.login.elevate(&session, &code).await?)
    }
    .await;
    state.metrics.elevations.inc(match &result {
        Ok(_) => "ok",
        Err(e) => e.code(),
    });
    let elevated_until = result?;
    Ok(HttpResponse::Ok().json_body(ElevateAnswer { elevated_until }))
}

/// Verifies and decrypts what `wx.getUserProfile` returned, stores the profile
/// and answers the user object (without its watermark). Nothing is stored on failure.
pub async fn user_info(
    state: web::Data<AppState>,
    session: Session,
    JsonBody(body): JsonBody<UserInfoBody>,
) -> Result<HttpResponse, ApiError> {
    let app = session_app(
        &state,
        &session,
        &[Platform::Wechat, Platform::Qq, Platform::Douyin],
    )?;
    let encrypted = EncryptedData::parse(&body.encrypted_data, &body.iv)?;
    let key = current_session_key(&state, &session).await?;
    verify_signature(&body.raw_data, &body.signature, &key)?;
    let user = encrypted.open(&key, app.appid())?;
    let unionid = user.get("unionId").and_then(serde_json::Value::as_str);
    state
        .store
        .save_profile(
            &state.store.user_of(&session),
            &serde_json::Value::Object(profile_of(&user)),
            unionid,
        )
        .await?;
    Ok(HttpResponse::Ok().json_body(user))
}

/// The user's phone number, from a `getPhoneNumber` code (through WeChat, with
/// the shared access_token) or a legacy encrypted payload. It is answered,
/// never stored and never logged.
pub async fn phone(
    state: web::Data<AppState>,
    session: Session,
    JsonBody(body): JsonBody<PhoneBody>,
) -> Result<HttpResponse, ApiError> {
    // The code form is WeChat's server API; the encrypted form is also
    // Douyin's (QQ has no phone number at all).
    let platforms: &[Platform] = match body {
        PhoneBody::Code { .. } => &[Platform::Wechat],
        PhoneBody::Legacy { .. } => &[Platform::Wechat, Platform::Douyin],
    };
    let app = session_app(&state, &session, platforms)?;
    let appid = app.appid();
    let object = match body {
        PhoneBody::Code { code } => {
            // Phone codes have the shape of login codes.
            let code = LoginCode::parse(code).map_err(ApiError::InvalidRequest)?;
            let info = app.phone_info(code.as_str()).await.map_err(|e| match e {
                WechatError::InvalidCode(_) => ApiError::InvalidPhoneCode,
                e => e.into(),
            })?;
            check_watermark(&info, appid)?;
            info
        }
        PhoneBody::Legacy { encrypted_data, iv } => {
            let encrypted = EncryptedData::parse(&encrypted_data, &iv)?;
            let key = current_session_key(&state, &session).await?;
            encrypted.open(&key, appid)?
        }
    };
    let phone = PhoneNumber::from_object(&object).ok_or(DataError::DecryptFailed)?;
    Ok(HttpResponse::Ok().json_body(phone))
}

/// Is this session's `session_key` still the user's current one at WeChat?
pub async fn check(state: web::Data<AppState>, session: Session) -> Result<HttpResponse, ApiError> {
    let app = session_app(&state, &session, &[Platform::Wechat])?;
    let key = current_session_key(&state, &session).await?;
    let valid = app.check_session(session.openid(), &key).await?;
    Ok(HttpResponse::Ok().json_body(serde_json::json!({ "valid": valid })))
}

/// The session's app, if its platform is one of `platforms` (else 400
/// `unsupported_platform`: the route's API does not exist there).
fn session_app<'a>(
    state: &'a AppState,
    session: &Session,
    platforms: &[Platform],
) -> Result<&'a Client, ApiError> {
    if !platforms.contains(&session.platform()) {
        return Err(ApiError::UnsupportedPlatform);
    }
    // The guard answered for the session, so its app is configured.
    state
        .apps
        .get(session.appid())
        .ok_or(ApiError::InvalidSession)
}

/// The key this session decrypts with: its user's newest `session_key`. Missing
/// only if removed by hand, which a new `wx.login` repairs.
async fn current_session_key(state: &AppState, session: &Session) -> Result<Secret, ApiError> {
    Ok(state
        .store
        .session_key(&state.store.user_of(session))
        .await?
        .ok_or(DataError::DecryptFailed)?)
}

pub async fn logout(
    state: web::Data<AppState>,
    session: Session,
) -> Result<HttpResponse, ApiError> {
    state.store.revoke(session.id()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// For a proxy's auth sub-request (nginx `auth_request`): 204 and who it is.
pub async fn auth(session: Session) -> HttpResponse {
    let mut answer = HttpResponse::NoContent();
    answer.insert_header((header::CACHE_CONTROL, "no-store"));
    answer.insert_header(("X-WX-OpenID", session.openid()));
    answer.insert_header(("X-WX-AppID", session.appid()));
    if let Some(unionid) = session.unionid() {
        answer.insert_header(("X-WX-UnionID", unionid));
    }
    answer.finish()
}

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json_body(serde_json::json!({"status": "ok"}))
}

pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.store.ping().await?;
    Ok(HttpResponse::Ok().json_body(serde_json::json!({"status": "ready"})))
}

/// The OpenAPI 3 document of this API (kept true by `tests/it/openapi.rs`).
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(include_str!("openapi.json"))
}

/// The Prometheus text. Each scrape asks Redis for a `PING` first (bounded by
/// `redis.timeout_ms`, like every Redis operation), so `wxsession_redis_up`
/// tells an outage even when no request comes to fail on it.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    state.metrics.set_redis_up(state.store.ping().await.is_ok());
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

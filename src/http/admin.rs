//! The admin routes (`/admin/…`): they exist only when `admin.token` is set, and
//! every request must carry `Authorization: Bearer <token>`, compared in constant time.

use std::{future::Future, pin::Pin};

use actix_web::{
    dev::Payload,
    http::{header, Method},
    web, FromRequest, HttpRequest, HttpResponse,
};
use subtle::ConstantTimeEq;

use serde::Deserialize;

use super::{
    body::{BodyShape, JsonBody},
    error::ApiError,
    AppState, JsonAnswer as _,
};
use crate::{config::Platform, session::UserKey};

/// Proof that the request carries the admin token; take it as a handler argument.
pub struct AdminAccess;

impl FromRequest for AdminAccess {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<AdminAccess, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let allowed = (|| {
            let state = req.app_data::<web::Data<AppState>>()?;
            let expected = state.admin_token.as_ref()?;
            let sent = req.headers().get(header::AUTHORIZATION)?.as_bytes();
            let token = sent.strip_prefix(b"Bearer ")?;
            Some(bool::from(token.ct_eq(expected.expose().as_bytes())))
        })()
        .unwrap_or(false);
        Box::pin(async move {
            if allowed {
                Ok(AdminAccess)
            } else {
                log::warn!("admin route refused: missing or wrong token");
                Err(ApiError::AdminUnauthorized)
            }
        })
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        super::resource("/admin/users/{openid}/sessions", "GET, DELETE")
            .route(web::get().to(user_sessions))
            .route(web::delete().to(user_sessions)),
    )
    .service(
        super::resource("/admin/users/{openid}/ban", "PUT, DELETE")
            .route(web::put().to(ban))
            .route(web::delete().to(unban)),
    )
    .service(
        super::resource("/admin/unionids/{unionid}/sessions", "GET, DELETE")
            .route(web::get().to(union_sessions))
            .route(web::delete().to(union_sessions)),
    )
    .service(
        super::resource("/admin/wechat/access-token", "GET").route(web::get().to(access_token)),
    );
}

/// `{"for_secs"?, "reason"?}`, an object (serde would also take a struct
/// from an array), each field absent or null for none.
#[derive(Deserialize)]
#[serde(transparent)]
pub struct BanBody(serde_json::Map<String, serde_json::Value>);

impl BodyShape for BanBody {
    const SHAPE: &'static str =
        "body must be JSON: {\"for_secs\"?: <seconds, at least 1>, \"reason\"?: \"<text>\"}";
}

/// A hundred years: a longer ban is a ban without end (`for_secs` left out).
const MAX_BAN_SECS: u64 = 3_153_600_000;

impl BanBody {
    fn fields(self) -> Result<(Option<u64>, Option<String>), ApiError> {
        const INVALID: ApiError = ApiError::InvalidRequest(
            "for_secs must be a whole number of seconds from 1 to 3153600000 (100 years), and reason a text of at most 256 characters",
        );
        let BanBody(mut fields) = self;
        let for_secs = match fields.remove("for_secs") {
            None | Some(serde_json::Value::Null) => None,
            Some(secs) => Some(
                secs.as_u64()
                    .filter(|s| (1..=MAX_BAN_SECS).contains(s))
                    .ok_or(INVALID)?,
            ),
        };
        let reason = match fields.remove("reason") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(text)) if text.chars().count() <= 256 => Some(text),
            Some(_) => return Err(INVALID),
        };
        if !fields.is_empty() {
            return Err(ApiError::InvalidRequest(BanBody::SHAPE));
        }
        Ok((for_secs, reason))
    }
}

/// Bans an openid: every session of theirs ends at once (403 `user_banned`),
/// and so does every login of theirs until the ban ends.
async fn ban(
    _: AdminAccess,
    state: web::Data<AppState>,
    openid: web::Path<String>,
    req: HttpRequest,
    JsonBody(body): JsonBody<BanBody>,
) -> Result<HttpResponse, ApiError> {
    let user = path_user(&state, &req, &openid)?;
    let (for_secs, reason) = body.fields()?;
    let (ban, ended) = state.store.ban(&user, for_secs, reason.as_deref()).await?;
    log::info!(
        "admin banned user {} until={:?}, ending {ended} sessions",
        user.as_str(),
        ban.until
    );
    Ok(HttpResponse::Ok().json_body(serde_json::json!({
        "until": ban.until,
        "reason": ban.reason,
        "ended": ended,
    })))
}

async fn unban(
    _: AdminAccess,
    state: web::Data<AppState>,
    openid: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let user = path_user(&state, &req, &openid)?;
    let unbanned = state.store.unban(&user).await?;
    log::info!(
        "admin unbanned user {} (was banned: {unbanned})",
        user.as_str()
    );
    Ok(HttpResponse::Ok().json_body(serde_json::json!({ "unbanned": unbanned })))
}

/// An app's fleet-shared access_token (`?appid=`, which may be left out with
/// one WeChat or WeCom app), for the deployment's other services.
async fn access_token(
    _: AdminAccess,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let app = state
        .apps
        .select(app_param(&req)?.as_deref(), Platform::has_access_token)?;
    if !app.platform().has_access_token() {
        return Err(ApiError::UnsupportedPlatform);
    }
    let token = app.access_token().await?;
    Ok(HttpResponse::Ok().json_body(serde_json::json!({
        "access_token": token.token.expose(),
        "expires_in": token.expires_in,
    })))
}

/// GET lists an openid's live sessions; DELETE revokes them all at once.
async fn user_sessions(
    _: AdminAccess,
    state: web::Data<AppState>,
    openid: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let user = path_user(&state, &req, &openid)?;
    let answer = if req.method() == Method::DELETE {
        let revoked = state.store.revoke_user(&user).await?;
        log::info!("admin revoked {revoked} sessions of user {}", user.as_str());
        serde_json::json!({ "revoked": revoked })
    } else {
        serde_json::json!({ "sessions": state.store.list_user(&user).await? })
    };
    Ok(HttpResponse::Ok().json_body(answer))
}

/// GET lists one person's live sessions in every app (found by unionid);
/// DELETE ends them all at once (their clients learn `session_revoked`).
async fn union_sessions(
    _: AdminAccess,
    state: web::Data<AppState>,
    unionid: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let unionid = path_id(&unionid)?;
    let answer = if req.method() == Method::DELETE {
        let revoked = state.store.revoke_union(unionid).await?;
        log::info!("admin revoked {revoked} sessions of unionid={unionid}");
        serde_json::json!({ "revoked": revoked })
    } else {
        serde_json::json!({ "sessions": state.store.list_union(unionid).await? })
    };
    Ok(HttpResponse::Ok().json_body(answer))
}

/// `?appid=`: the app a per-user or token route is about.
#[derive(Deserialize)]
struct AppParam {
    appid: Option<String>,
}

fn app_param(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    web::Query::<AppParam>::from_query(req.query_string())
        .map(|q| q.into_inner().appid)
        .map_err(|_| ApiError::InvalidRequest("the only query parameter is appid=<appid>"))
}

/// The user an `{openid}` path segment names in the app `?appid=` names (which
/// may be left out with one app).
fn path_user(state: &AppState, req: &HttpRequest, openid: &str) -> Result<UserKey, ApiError> {
    let openid = path_id(openid)?;
    let app = state.apps.select(app_param(req)?.as_deref(), |_| true)?;
    Ok(state.store.user_key(app.appid(), openid))
}

/// What an `{openid}` or `{unionid}` path segment may hold: WeChat's ids are
/// base64url-like.
/// Anything else (a `%0A` that would forge a log line, say) never reaches the
/// store or the log.
fn path_id(text: &str) -> Result<&str, ApiError> {
    let valid = (1..=128).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(text)
    } else {
        Err(ApiError::InvalidRequest(
            "an openid or unionid is 1 to 128 characters of A-Z, a-z, 0-9, _ and -",
        ))
    }
}

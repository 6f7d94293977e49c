//! The admin routes (`/admin/…`): they exist only when `admin.token` is set, and
//! every request must carry `Authorization: Bearer <token>`, compared in constant time.

use std::{future::Future, pin::Pin};

use actix_web::{
    dev::Payload,
    http::{header, Method},
    web, FromRequest, HttpRequest, HttpResponse,
};
use subtle::ConstantTimeEq;

use super::{error::ApiError, AppState, JsonAnswer as _};

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
        super::resource("/admin/wechat/access-token", "GET").route(web::get().to(access_token)),
    );
}

/// The fleet's one access_token, for the deployment's other services.
async fn access_token(
    _: AdminAccess,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let token = state.wechat.access_token().await?;
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
    if !is_path_id(&openid) {
        return Err(ApiError::InvalidRequest(
            "openid must be 1 to 128 characters of A-Z, a-z, 0-9, _ and -",
        ));
    }
    let answer = if req.method() == Method::DELETE {
        let revoked = state.store.revoke_user(&openid).await?;
        log::info!("admin revoked {revoked} sessions of openid={openid}");
        serde_json::json!({ "revoked": revoked })
    } else {
        serde_json::json!({ "sessions": state.store.list_user(&openid).await? })
    };
    Ok(HttpResponse::Ok().json_body(answer))
}

/// What an `{openid}` path segment may hold: WeChat's ids are base64url-like.
/// Anything else (a `%0A` that would forge a log line, say) never reaches the
/// store or the log.
fn is_path_id(text: &str) -> bool {
    (1..=128).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

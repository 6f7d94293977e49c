//! The guard: [`Session`] as an actix-web extractor.
//!
//! `sessionid` header → [`SessionId::parse`] (a malformed id never reaches Redis)
//! → [`SessionStore::touch`](crate::session::SessionStore::touch) (one command)
//! → the handler gets its [`Session`]. Only the configured header is read.
//!
//! [`Elevated`] is that guard plus one check, with no Redis of its own: the
//! session's step-up (`POST /session/elevate`) holds now.

use std::{future::Future, pin::Pin};

use actix_web::{dev::Payload, web, FromRequest, HttpRequest};

use super::{error::ApiError, AppState};
use crate::{
    session::{log_tag, EndReason, Lookup, Session, SessionId},
    telemetry::GuardOutcome,
};

impl FromRequest for Session {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Session, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // The future keeps the request (a per-thread `Rc`), not a clone of the
        // state's `Arc`, whose count every worker would bump on every request.
        let req = req.clone();
        Box::pin(async move { check(&req).await })
    }
}

/// The guard itself. The extractor boxes it (an extractor's future must have a
/// type that can be named); `GET /session`, which does nothing else, awaits it
/// in place and saves that allocation on every request.
pub(super) async fn check(req: &HttpRequest) -> Result<Session, ApiError> {
    let Some(state) = req.app_data::<web::Data<AppState>>() else {
        // A wiring mistake of the embedding app, not the client's fault.
        log::error!("Session extractor used without web::Data<AppState>");
        return Err(ApiError::StoreUnavailable);
    };
    let id = parse_header(req, state)?;
    match state.store.touch(&id).await {
        Ok(Lookup::Live(session)) => {
            state.metrics.record_guard(GuardOutcome::Ok);
            Ok(session)
        }
        Ok(Lookup::Ended(reason)) => Err(ended(state, &id, reason)),
        Ok(Lookup::Unknown) => Err(reject(
            req,
            state,
            GuardOutcome::Unknown,
            Some(id.as_str().as_bytes()),
        )),
        Err(e) => {
            state.metrics.record_guard(GuardOutcome::StoreUnavailable);
            Err(e.into())
        }
    }
}

/// A live session whose step-up holds now: take it instead of [`Session`] in a
/// handler for a sensitive action, and the request is answered 403
/// `elevation_required` before the handler runs unless the client elevated
/// its session (`POST /session/elevate` with a fresh `wx.login` code) within
/// `session.elevate_secs`. Costs nothing beyond the [`Session`] guard: the
/// step-up's end is part of the session value that guard reads.
///
/// ```no_run
/// use actix_web::{web, App, HttpResponse, HttpServer};
/// use wxsession::{http::AppState, Config, Elevated, Session};
///
/// async fn balance(session: Session) -> HttpResponse {
///     HttpResponse::Ok().body(format!("balance of {}", session.openid()))
/// }
///
/// async fn transfer(Elevated(session): Elevated) -> HttpResponse {
///     HttpResponse::Ok().body(format!("transfer by {}", session.openid()))
/// }
///
/// #[actix_web::main]
/// async fn main() -> std::io::Result<()> {
///     let config = Config::load("config.toml".as_ref(), false).map_err(std::io::Error::other)?;
///     let state = web::Data::new(AppState::new(&config).map_err(std::io::Error::other)?);
///     HttpServer::new(move || {
///         App::new()
///             .app_data(state.clone())
///             // /login, /session, /session/elevate, … as the server has them.
///             .configure(wxsession::http::configure)
///             .route("/balance", web::get().to(balance))
///             .route("/transfer", web::post().to(transfer))
///     })
///     .bind("127.0.0.1:8080")?
///     .run()
///     .await
/// }
/// ```
pub struct Elevated(pub Session);

impl FromRequest for Elevated {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Elevated, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let session = Session::from_request(req, payload);
        Box::pin(async move {
            let session = session.await?;
            if session.elevated_until().is_none() {
                log::info!("elevation required: openid={}", session.openid());
                return Err(ApiError::ElevationRequired);
            }
            Ok(Elevated(session))
        })
    }
}

/// The session id from the one configured header: exactly one value, 32 lower-case hex.
fn parse_header(req: &HttpRequest, state: &AppState) -> Result<SessionId, ApiError> {
    let mut values = req.headers().get_all(&state.session_header);
    let Some(value) = values.next() else {
        return Err(reject(req, state, GuardOutcome::Missing, None));
    };
    if values.next().is_some() {
        return Err(reject(
            req,
            state,
            GuardOutcome::Malformed,
            Some(value.as_bytes()),
        ));
    }
    SessionId::parse(value.as_bytes())
        .map_err(|_| reject(req, state, GuardOutcome::Malformed, Some(value.as_bytes())))
}

/// Counts and logs a check that found its session ended with a reason.
#[cold]
#[inline(never)]
fn ended(state: &AppState, id: &SessionId, reason: EndReason) -> ApiError {
    state
        .metrics
        .record_guard(GuardOutcome::Ended(reason.code()));
    log::info!(
        "guard rejected: {} id=#{}",
        reason.code(),
        log_tag(id.as_str().as_bytes())
    );
    ApiError::SessionEnded(reason)
}

/// Counts and logs a rejected check; the log names the id only by a short hash.
/// A client address sending many rejected ids in a minute gets one warning line
/// (a guessing attempt, or a client stuck on a dead id). Cold: out of the
/// guard's live path.
#[cold]
#[inline(never)]
fn reject(
    req: &HttpRequest,
    state: &AppState,
    outcome: GuardOutcome,
    raw_id: Option<&[u8]>,
) -> ApiError {
    state.metrics.record_guard(outcome);
    if let (Some(_), threshold @ 1..) = (raw_id, state.reject_warn_per_minute) {
        if let Some(client) = state.proxies.client_of(req) {
            if u64::from(state.rejects_by_address.hit(client)) == threshold {
                log::warn!("client {client} sent {threshold} rejected session ids within a minute");
            }
        }
    }
    match raw_id {
        Some(raw) => log::info!("guard rejected: {} id=#{}", outcome.label(), log_tag(raw)),
        None => log::info!("guard rejected: {}", outcome.label()),
    }
    if outcome == GuardOutcome::Missing {
        ApiError::SessionRequired
    } else {
        ApiError::InvalidSession
    }
}

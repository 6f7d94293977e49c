//! The HTTP layer: shared state ([`AppState`]), the app with its routes ([`app`],
//! [`configure`], handlers in `routes` and `admin`), the guard (`Session`
//! and [`Elevated`] extractors, in `guard`), request bodies ([`JsonBody`], in `body`), the one
//! table of errors and their JSON ([`ErrorCode`], [`ApiError`], in `error`),
//! who the client is behind trusted proxies (`client_addr`), per-address limits
//! (`limits`) and the server loop ([`serve`]).

mod admin;
mod body;
mod client_addr;
mod error;
mod guard;
mod limits;
mod routes;

use std::{rc::Rc, sync::Arc, time::Instant};

use actix_web::{
    body::MessageBody,
    dev::{Service as _, ServiceFactory, ServiceRequest, ServiceResponse},
    http::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE},
    web, App, HttpResponse, HttpResponseBuilder, HttpServer,
};
use serde::Serialize;

pub use body::{BodyShape, JsonBody, MAX_BODY_BYTES};
use client_addr::TrustedProxies;
pub use error::{ApiError, ErrorCode};
pub use guard::Elevated;
use limits::PerAddressWindow;

use crate::{
    config::Config, login::Login, secret::Secret, session::SessionStore, telemetry::Metrics, wechat,
};

/// What every handler and the guard share, in `web::Data<AppState>`.
pub struct AppState {
    pub store: SessionStore,
    /// Every configured app's platform client.
    pub apps: wechat::Apps,
    pub login: Login,
    pub metrics: Arc<Metrics>,
    session_header: HeaderName,
    admin_token: Option<Secret>,
    /// The admin routes listen apart from the public ones.
    admin_apart: bool,
    proxies: TrustedProxies,
    reject_warn_per_minute: u64,
    rejects_by_address: PerAddressWindow,
}

impl AppState {
    pub fn new(config: &Config) -> Result<AppState, String> {
        let metrics = Arc::new(Metrics::default());
        let store =
            SessionStore::new(config, metrics.clone()).map_err(|e| format!("redis.url: {e}"))?;
        let apps = wechat::Apps::new(config, store.connection(), metrics.clone())
            .map_err(|e| format!("configuration error: {e}"))?;
        let session_header = HeaderName::from_bytes(config.session.header.as_bytes())
            .map_err(|_| "session.header: not a valid HTTP header name".to_string())?;
        Ok(AppState {
            login: Login::new(apps.clone(), store.clone(), config),
            store,
            apps,
            metrics,
            session_header,
            admin_token: config.admin.token.clone(),
            admin_apart: config.admin.bind.is_some(),
            proxies: TrustedProxies::new(&config.server.trusted_proxies),
            reject_warn_per_minute: config.session.reject_warn_per_minute,
            rejects_by_address: PerAddressWindow::default(),
        })
    }
}

/// Every JSON answer is built here. `HttpResponseBuilder::json` parses its
/// content type from a `mime` on each call and grows the body from empty; both
/// showed in callgrind profiles of the guarded `GET /session`.
///
/// Every JSON answer is `Cache-Control: no-store`: most carry a session id, user
/// data or a token, which no proxy or browser cache may keep, and one rule for
/// all cannot miss a new route.
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

trait JsonAnswer {
    fn json_body(&mut self, body: impl Serialize) -> HttpResponse;
    /// An answer already written as JSON.
    fn json_bytes(&mut self, json: Vec<u8>) -> HttpResponse;
}

impl JsonAnswer for HttpResponseBuilder {
    fn json_body(&mut self, body: impl Serialize) -> HttpResponse {
        let mut bytes = Vec::with_capacity(256);
        match serde_json::to_writer(&mut bytes, &body) {
            Ok(()) => self.json_bytes(bytes),
            Err(e) => HttpResponse::from_error(actix_web::error::JsonPayloadError::Serialize(e)),
        }
    }

    fn json_bytes(&mut self, json: Vec<u8>) -> HttpResponse {
        // Into the answer's header map directly: the builder's `insert_header`
        // converts each pair and keeps a place for a conversion error.
        let mut answer = self.body(json);
        let headers = answer.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(CACHE_CONTROL, NO_STORE);
        answer
    }
}

/// A resource whose other methods answer 405 in the contract's error shape,
/// with the `Allow` header listing `allow` (RFC 9110).
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        Err::<actix_web::HttpResponse, _>(ApiError::MethodNotAllowed(allow))
    }))
}

/// Registers the contract's public routes; the app must also hold
/// `web::Data<AppState>`. An embedding app can call this, or just take
/// [`Session`](crate::Session) in its own handlers.
pub fn configure(cfg: &mut web::ServiceConfig) {
    // The router tries each resource in this order: the guarded read first.
    cfg.service(
        resource("/session", "GET, DELETE")
            .route(web::get().to(routes::me))
            .route(web::delete().to(routes::logout)),
    )
    .service(resource("/login", "POST").route(web::post().to(routes::login)))
    .service(resource("/session/elevate", "POST").route(web::post().to(routes::elevate)))
    .service(resource("/session/userinfo", "POST").route(web::post().to(routes::user_info)))
    .service(resource("/session/phone", "POST").route(web::post().to(routes::phone)))
    .service(resource("/session/check", "GET").route(web::get().to(routes::check)))
    .service(resource("/auth", "GET").route(web::get().to(routes::auth)))
    .service(resource("/healthz", "GET").route(web::get().to(routes::healthz)))
    .service(resource("/readyz", "GET").route(web::get().to(routes::readyz)))
    .service(resource("/metrics", "GET").route(web::get().to(routes::metrics)))
    .service(resource("/openapi.json", "GET").route(web::get().to(routes::openapi)));
}

/// Which routes one listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// The public routes, and the admin routes unless they listen apart.
    Main,
    /// Only the admin routes (on `admin.bind`).
    Admin,
}

/// The whole application: state, routes and the latency histogram.
pub fn app(
    state: web::Data<AppState>,
    surface: Surface,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    // One handle per worker (this runs once per worker), cloned per request
    // without touching the shared `Arc`'s count, which every worker would
    // otherwise bump on every request.
    let metrics = Rc::new(state.metrics.clone());
    let public = surface == Surface::Main;
    let admin = state.admin_token.is_some() && (surface == Surface::Admin || !state.admin_apart);
    App::new()
        .app_data(state)
        .configure(|cfg| {
            if public {
                configure(cfg);
            }
            if admin {
                admin::configure(cfg);
            }
        })
        .default_service(web::to(routes::not_found))
        .wrap_fn(move |req, srv| {
            let started = Instant::now();
            let metrics = Rc::clone(&metrics);
            let answer = srv.call(req);
            async move {
                let answer = answer.await;
                metrics.record_latency(started.elapsed());
                answer
            }
        })
}

/// Runs the server until SIGINT/SIGTERM: actix stops accepting at once, lets
/// in-flight requests finish for up to `server.shutdown_timeout_secs`, then returns.
pub async fn serve(config: Config) -> std::io::Result<()> {
    let state = web::Data::new(AppState::new(&config).map_err(std::io::Error::other)?);
    let main_state = state.clone();
    let grace = config.server.shutdown_timeout_secs;
    let mut server =
        HttpServer::new(move || app(main_state.clone(), Surface::Main)).shutdown_timeout(grace);
    if config.server.workers > 0 {
        server = server.workers(config.server.workers);
    }
    let main = server
        .bind(&config.server.bind)
        .map_err(|e| bind_error("server.bind", &config.server.bind, e))?
        .run();
    log::info!(
        "wxsession {} listening on {} (redis {}, prefix {:?}, apps {}, session ttl {}s sliding={} max {}s, local cache {})",
        env!("CARGO_PKG_VERSION"),
        config.server.bind,
        redacted_url(config.redis.url.expose()),
        config.redis.key_prefix,
        config
            .apps()
            .iter()
            .map(|app| format!(
                "{}={} {}",
                app.name,
                app.platform.as_str(),
                if app.mock { "MOCK" } else { app.api_base.as_str() }
            ))
            .collect::<Vec<_>>()
            .join(", "),
        config.session.ttl_secs,
        config.session.sliding,
        config.session.max_lifetime_secs,
        if config.session.local_cache { "on, tracking pending" } else { "off" },
    );
    match (&config.admin.bind, &config.admin.token) {
        (Some(admin_bind), Some(_)) => {
            let admin = HttpServer::new(move || app(state.clone(), Surface::Admin))
                .shutdown_timeout(grace)
                .workers(1)
                .bind(admin_bind)
                .map_err(|e| bind_error("admin.bind", admin_bind, e))?
                .run();
            log::info!("admin routes listening on {admin_bind}");
            futures_util::future::try_join(main, admin)
                .await
                .map(|_| ())
        }
        _ => main.await,
    }
}

/// A listen address that cannot be bound is a configuration error: name the key.
fn bind_error(key: &str, addr: &str, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(
        e.kind(),
        format!("configuration error: {key}: cannot listen on {addr:?}: {e}"),
    )
}

/// The Redis URL without a password, for the start-up line.
fn redacted_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

//! The HTTP layer: shared state ([`AppState`]), the app with its routes ([`app`],
//! [`configure`]), the guard (`Session` extractor, in `guard`), the one mapping
//! of errors to JSON ([`ApiError`]), and the server loop ([`serve`]).

mod error;
mod guard;
mod routes;

use std::{sync::Arc, time::Instant};

use actix_web::{
    body::MessageBody,
    dev::{Service as _, ServiceFactory, ServiceRequest, ServiceResponse},
    http::header::HeaderName,
    web, App, HttpServer,
};

pub use error::ApiError;
pub use routes::MAX_BODY_BYTES;

use crate::{
    config::Config,
    login::Login,
    session::{SessionPolicy, SessionStore},
    telemetry::Metrics,
    wechat,
};

/// What every handler and the guard share, in `web::Data<AppState>`.
pub struct AppState {
    pub store: SessionStore,
    pub wechat: wechat::Client,
    pub login: Login,
    pub metrics: Arc<Metrics>,
    session_header: HeaderName,
}

impl AppState {
    pub fn new(config: &Config) -> Result<AppState, String> {
        let policy = SessionPolicy {
            ttl_secs: config.session.ttl_secs,
            sliding: config.session.sliding,
            max_lifetime_secs: config.session.max_lifetime_secs,
        };
        let store = SessionStore::new(
            config.redis.url.expose(),
            &config.redis.key_prefix,
            config.redis_timeout(),
            policy,
        )
        .map_err(|e| format!("redis.url: {e}"))?;
        let wechat = wechat::Client::new(&config.wechat).map_err(|e| format!("wechat: {e}"))?;
        let session_header = HeaderName::from_bytes(config.session.header.as_bytes())
            .map_err(|_| "session.header: not a valid HTTP header name".to_string())?;
        Ok(AppState {
            login: Login::new(wechat.clone(), store.clone(), config.wechat_timeout()),
            store,
            wechat,
            metrics: Arc::new(Metrics::default()),
            session_header,
        })
    }
}

/// Registers the contract's routes; the app must also hold `web::Data<AppState>`.
/// An embedding app can call this, or just take [`Session`](crate::Session) in its
/// own handlers.
pub fn configure(cfg: &mut web::ServiceConfig) {
    fn resource(path: &str) -> actix_web::Resource {
        web::resource(path).default_service(web::to(routes::method_not_allowed))
    }
    cfg.service(resource("/login").route(web::post().to(routes::login)))
        .service(
            resource("/session")
                .route(web::get().to(routes::me))
                .route(web::delete().to(routes::logout)),
        )
        .service(resource("/session/userinfo").route(web::post().to(routes::user_info)))
        .service(resource("/session/phone").route(web::post().to(routes::phone)))
        .service(resource("/auth").route(web::get().to(routes::auth)))
        .service(resource("/healthz").route(web::get().to(routes::healthz)))
        .service(resource("/readyz").route(web::get().to(routes::readyz)))
        .service(resource("/metrics").route(web::get().to(routes::metrics)))
        .default_service(web::to(routes::not_found));
}

/// The whole application: state, routes and the latency histogram.
pub fn app(
    state: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let metrics = state.metrics.clone();
    App::new()
        .app_data(state)
        .configure(configure)
        .wrap_fn(move |req, srv| {
            let started = Instant::now();
            let metrics = metrics.clone();
            let answer = srv.call(req);
            async move {
                let answer = answer.await;
                metrics.record_latency(started.elapsed());
                answer
            }
        })
}

/// Runs the server until SIGINT/SIGTERM (actix stops accepting, then lets
/// in-flight requests finish).
pub async fn serve(config: Config) -> std::io::Result<()> {
    let state = web::Data::new(AppState::new(&config).map_err(std::io::Error::other)?);
    log::info!(
        "wxsession {} listening on {} (redis {}, prefix {:?}, wechat {}, session ttl {}s sliding={} max {}s)",
        env!("CARGO_PKG_VERSION"),
        config.server.bind,
        redacted_url(config.redis.url.expose()),
        config.redis.key_prefix,
        if config.wechat.mock { "MOCK" } else { config.wechat.api_base.as_str() },
        config.session.ttl_secs,
        config.session.sliding,
        config.session.max_lifetime_secs,
    );
    let mut server = HttpServer::new(move || app(state.clone()));
    if config.server.workers > 0 {
        server = server.workers(config.server.workers);
    }
    server.bind(&config.server.bind)?.run().await
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

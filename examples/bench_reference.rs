//! Bench-only helpers for `scripts/bench.sh`; not part of the product.
//!
//! - `bench_reference session --bind ADDR --redis URL`: the ceiling for one Redis
//!   round trip per request. One route, `GET /session`, does nothing but
//!   `GETEX wxsess:s:<sessionid header> EX 7200` over one multiplexed
//!   connection per actix worker (opened in `App::data_factory`, so no hop to
//!   another thread), answering the raw value or 401.
//! - `bench_reference wechat --bind ADDR`: a WeChat stand-in whose
//!   `jscode2session` answers at once with an openid derived from the code;
//!   `GET /hits` answers how many times it was called (so the bench can check
//!   that every login it timed reached "WeChat").

use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use redis::aio::MultiplexedConnection;

static HITS: AtomicU64 = AtomicU64::new(0);

async fn session(req: HttpRequest, conn: web::Data<MultiplexedConnection>) -> HttpResponse {
    let Some(id) = req.headers().get("sessionid").and_then(|v| v.to_str().ok()) else {
        return HttpResponse::Unauthorized().finish();
    };
    let mut conn = conn.get_ref().clone();
    let value: redis::RedisResult<Option<String>> = redis::cmd("GETEX")
        .arg(format!("wxsess:s:{id}"))
        .arg("EX")
        .arg(7200)
        .query_async(&mut conn)
        .await;
    match value {
        Ok(Some(v)) => HttpResponse::Ok().content_type("application/json").body(v),
        Ok(None) => HttpResponse::Unauthorized().finish(),
        Err(_) => HttpResponse::ServiceUnavailable().finish(),
    }
}

async fn jscode2session(
    query: web::Query<std::collections::HashMap<String, String>>,
) -> HttpResponse {
    HITS.fetch_add(1, Ordering::Relaxed);
    let code = query.get("js_code").map(String::as_str).unwrap_or("");
    HttpResponse::Ok()
        .content_type("application/json")
        .body(format!(
            r#"{{"openid":"o{code}","session_key":"c2Vzc2lvbmtleTEyMzQ1Ng=="}}"#
        ))
}

async fn hits() -> String {
    HITS.load(Ordering::Relaxed).to_string()
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| panic!("{name} is required"))
    };
    let mode = args.get(1).cloned().unwrap_or_default();
    let bind = arg("--bind");
    actix_web::rt::System::new().block_on(async move {
        match mode.as_str() {
            "session" => {
                let url = arg("--redis");
                HttpServer::new(move || {
                    let client = redis::Client::open(url.as_str()).expect("redis url");
                    App::new()
                        .data_factory(move || {
                            let client = client.clone();
                            async move { client.get_multiplexed_async_connection().await }
                        })
                        .route("/session", web::get().to(session))
                })
                .bind(bind)?
                .run()
                .await
            }
            "wechat" => {
                HttpServer::new(|| {
                    App::new()
                        .route("/sns/jscode2session", web::get().to(jscode2session))
                        .route("/hits", web::get().to(hits))
                })
                .workers(1)
                .bind(bind)?
                .run()
                .await
            }
            other => panic!("unknown mode {other:?}: session or wechat"),
        }
    })
}

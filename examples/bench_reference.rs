//! Bench-only helpers for `scripts/bench.sh`; not part of the product.
//!
//! - `bench_reference session --bind ADDR --redis URL`: the ceiling for one Redis
//!   round trip per request. One route, `GET /session`, does nothing but
//!   `GETEX wxsess:s:<sessionid header> EX 7200` over one multiplexed
//!   connection per actix worker (opened in `App::data_factory`, so no hop to
//!   another thread), answering the raw value or 401.
//! - `bench_reference wire --bind ADDR --redis redis://HOST:PORT/0`: the same
//!   route, its `GETEX` written by hand on one pipelined TCP connection per
//!   worker (a writer and a reader task, replies matched in order): what one
//!   round trip costs without redis-rs's per-command machinery (its channel,
//!   its reply parser, its future). Plain TCP, no password, db 0; a connection
//!   that fails answers 503 from then on. `scripts/ab.sh` runs it with `WIRE=1`.
//! - `bench_reference wechat --bind ADDR`: a WeChat stand-in whose
//!   `jscode2session` answers at once with an openid derived from the code;
//!   `GET /hits` answers how many times it was called (so the bench can check
//!   that every login it timed reached "WeChat").

use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use redis::aio::MultiplexedConnection;

/// The `wire` mode's connection (see the module's doc).
mod wire {
    use std::{
        cell::RefCell,
        collections::VecDeque,
        future::poll_fn,
        rc::Rc,
        task::{Poll, Waker},
    };

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A command's answer: the value or nothing; `Err` if the connection
    /// failed or Redis answered an error.
    type Answer = Result<Option<Vec<u8>>, ()>;

    #[derive(Default)]
    struct Slot {
        /// `None` until it comes.
        reply: Option<Answer>,
        waker: Option<Waker>,
    }

    #[derive(Default)]
    struct Shared {
        /// Commands not written yet.
        out: Vec<u8>,
        /// Commands written or to be written, in order, awaiting their replies.
        waiting: VecDeque<Rc<RefCell<Slot>>>,
        writer: Option<Waker>,
        failed: bool,
    }

    #[derive(Clone, Default)]
    pub struct Wire(Rc<RefCell<Shared>>);

    impl Wire {
        pub async fn connect(addr: &str) -> std::io::Result<Wire> {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut read, mut write) = stream.into_split();
            let wire = Wire::default();
            let writer = wire.clone();
            actix_web::rt::spawn(async move {
                let mut batch = Vec::new();
                loop {
                    poll_fn(|cx| {
                        let mut shared = writer.0.borrow_mut();
                        if shared.out.is_empty() {
                            shared.writer = Some(cx.waker().clone());
                            return Poll::Pending;
                        }
                        std::mem::swap(&mut shared.out, &mut batch);
                        Poll::Ready(())
                    })
                    .await;
                    if write.write_all(&batch).await.is_err() {
                        return writer.fail();
                    }
                    batch.clear();
                }
            });
            let reader = wire.clone();
            actix_web::rt::spawn(async move {
                let mut buf = Vec::with_capacity(64 * 1024);
                loop {
                    let mut used = 0;
                    while let Some((reply, len)) = parse(&buf[used..]) {
                        used += len;
                        let Some(slot) = reader.0.borrow_mut().waiting.pop_front() else {
                            return reader.fail();
                        };
                        let mut slot = slot.borrow_mut();
                        slot.reply = Some(reply);
                        if let Some(waker) = slot.waker.take() {
                            waker.wake();
                        }
                    }
                    buf.drain(..used);
                    buf.reserve(16 * 1024);
                    if !matches!(read.read_buf(&mut buf).await, Ok(1..)) {
                        return reader.fail();
                    }
                }
            });
            Ok(wire)
        }

        /// Every waiting command and every later one fails.
        fn fail(&self) {
            let mut shared = self.0.borrow_mut();
            shared.failed = true;
            for slot in shared.waiting.drain(..) {
                let mut slot = slot.borrow_mut();
                slot.reply = Some(Err(()));
                if let Some(waker) = slot.waker.take() {
                    waker.wake();
                }
            }
        }

        /// `GETEX key EX ttl`.
        pub async fn getex(&self, key: &[u8], ttl: u64) -> Answer {
            let slot = Rc::new(RefCell::new(Slot::default()));
            {
                let mut shared = self.0.borrow_mut();
                if shared.failed {
                    return Err(());
                }
                let ttl = ttl.to_string();
                let out = &mut shared.out;
                out.extend_from_slice(b"*4\r\n");
                for arg in [b"GETEX".as_slice(), key, b"EX", ttl.as_bytes()] {
                    out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
                    out.extend_from_slice(arg);
                    out.extend_from_slice(b"\r\n");
                }
                shared.waiting.push_back(slot.clone());
                if let Some(writer) = shared.writer.take() {
                    writer.wake();
                }
            }
            poll_fn(|cx| {
                let mut slot = slot.borrow_mut();
                match slot.reply.take() {
                    Some(reply) => Poll::Ready(reply),
                    None => {
                        slot.waker = Some(cx.waker().clone());
                        Poll::Pending
                    }
                }
            })
            .await
        }
    }

    /// One reply at the start of `buf` and its length, if it is all there:
    /// a bulk string, a null, or an error (as `Err`).
    fn parse(buf: &[u8]) -> Option<(Answer, usize)> {
        let line = buf.windows(2).position(|w| w == b"\r\n")?;
        let head = std::str::from_utf8(&buf[1..line]).ok();
        match buf[0] {
            b'$' => match head.and_then(|h| h.parse::<i64>().ok()) {
                Some(len @ 0..) => {
                    let end = line + 2 + len as usize;
                    (buf.len() >= end + 2).then(|| (Ok(Some(buf[line + 2..end].to_vec())), end + 2))
                }
                _ => Some((Ok(None), line + 2)),
            },
            _ => Some((Err(()), line + 2)),
        }
    }
}

/// `GET /session` of the `wire` mode.
async fn session_wire(req: HttpRequest, conn: web::Data<wire::Wire>) -> HttpResponse {
    let Some(id) = req.headers().get("sessionid").and_then(|v| v.to_str().ok()) else {
        return HttpResponse::Unauthorized().finish();
    };
    match conn.getex(format!("wxsess:s:{id}").as_bytes(), 7200).await {
        Ok(Some(v)) => HttpResponse::Ok().content_type("application/json").body(v),
        Ok(None) => HttpResponse::Unauthorized().finish(),
        Err(()) => HttpResponse::ServiceUnavailable().finish(),
    }
}

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
            "wire" => {
                let url = arg("--redis");
                let addr = url
                    .strip_prefix("redis://")
                    .and_then(|rest| rest.split('/').next())
                    .expect("--redis redis://HOST:PORT/0")
                    .to_string();
                HttpServer::new(move || {
                    let addr = addr.clone();
                    App::new()
                        .data_factory(move || {
                            let addr = addr.clone();
                            async move { wire::Wire::connect(&addr).await }
                        })
                        .route("/session", web::get().to(session_wire))
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
            other => panic!("unknown mode {other:?}: session, wire or wechat"),
        }
    })
}

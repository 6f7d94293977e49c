//! A WeChat stand-in: an actix-web server on loopback, on a thread and an actix
//! System of its own, so it keeps answering while a test blocks its own thread
//! (`std::thread::sleep`, a synchronous Redis command, a child process it waits for).
//! It also answers the login calls of the other platforms of §11: QQ's is
//! WeChat's path, Douyin's and WeCom's have paths of their own.

use std::{
    net::TcpListener,
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use actix_web::{
    dev::ServerHandle,
    http::{KeepAlive, StatusCode},
    web, App, HttpRequest, HttpResponse,
};

use super::serve_stand_in;

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// The request body (JSON for the POST APIs).
    pub body: String,
}

impl Received {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// What the stand-in remembers and the knobs a test turns.
#[derive(Default)]
pub struct StandInState {
    received: Mutex<Vec<Received>>,
    issued_keys: Mutex<Vec<String>>,
    /// access_tokens handed out so far; token n is `TOKEN-n`.
    pub tokens_issued: AtomicU64,
    /// Tokens numbered below this are refused with 40001 (WeCom: 40014).
    pub tokens_valid_from: AtomicU64,
    /// Refuse every token with 40001 (WeCom: 40014).
    pub reject_all_tokens: AtomicBool,
    /// `expires_in` of the tokens handed out (0 = 7200).
    pub token_expires_in: AtomicU64,
    /// Delay before answering `stable_token` or `gettoken`, in ms.
    pub token_delay_ms: AtomicU64,
    /// `stable_token` and `gettoken` answer this errcode instead of a token (0: a token).
    pub token_errcode: AtomicI64,
    /// The WeCom corp's corpid and corpsecret (see [`WechatStandIn::set_wecom_corp`]).
    wecom_corp: Mutex<Option<(String, String)>>,
}

/// The corpid WeCom's `jscode2session` answers for an `othercorp:` code.
pub const OTHER_CORPID: &str = "ww_other_corp";

/// A WeChat stand-in: a real HTTP/1.1 server on loopback.
///
/// `jscode2session` answers by the `js_code`:
///
/// | js_code | answer |
/// |---|---|
/// | `ok:<openid>` | 200 `{"openid", "session_key"}` |
/// | `key:<openid>:<session_key>` | as `ok`, with that session_key |
/// | `union:<openid>` | as `ok`, plus `"unionid": "u-<openid>"` |
/// | `text:<openid>` | as `ok`, with `Content-Type: text/plain` |
/// | `err:<n>` | 200 `{"errcode": n, "errmsg": "..."}` |
/// | `redirect` | 302 to an `ok` answer |
/// | `garbage` | 200 with an HTML body |
/// | `http500` | 500 with a JSON body |
/// | `noopenid` | 200 `{"session_key"}` |
/// | `slow` | the `ok` answer after 3 s |
/// | `silent` | never answers |
///
/// A `~suffix` gives another code with the same meaning (`ok:alice~2`): WeChat
/// codes are single-use, so repeated logins of one user need distinct codes.
///
/// `stable_token` hands out `TOKEN-1`, `TOKEN-2`, … (or the errcode
/// `token_errcode` says); `getuserphonenumber` answers
/// by the phone `code` (`num`/`str`: countryCode as a number/string, `other-app`,
/// `err:<n>`, `slow`, `garbage`) and `checksession` answers 87009 for openid
/// `stale`; both refuse tokens as the [`StandInState`] knobs say.
///
/// QQ's `jscode2session` is WeChat's, above (only its host differs).
///
/// Douyin's `POST /api/apps/v2/jscode2session` answers by the JSON body's
/// `code`, in Douyin's envelope (`err_no`, `err_tips`, `log_id`, `data`):
///
/// | code | answer |
/// |---|---|
/// | `ok:<openid>` | `err_no` 0, `data.openid`, a fresh `data.session_key`, `data.unionid` "" |
/// | `union:<openid>` | as `ok`, with `data.unionid` `u-<openid>` |
/// | `err:<n>` | `{"err_no": n, "err_tips": "stand-in error n", "data": {…""}}` |
/// | `noopenid` | `err_no` 0 with `data.openid` "" |
/// | `garbage` | 200 with an HTML body |
/// | anything else | `err_no` 40018, "bad code" |
///
/// WeCom's `GET /cgi-bin/gettoken` answers 40013 unless `corpid` is the one
/// [`WechatStandIn::set_wecom_corp`] set, 40001 unless `corpsecret` is its
/// secret, else hands out `WECOM-TOKEN-<n>`, numbered, delayed, failed and
/// expiring as `stable_token`'s tokens (one count for both). Its
/// `GET /cgi-bin/miniprogram/jscode2session` answers 40014 to a token that is
/// not a `WECOM-TOKEN-` still valid by the knobs, else by `js_code`:
/// `ok:<userid>` (errcode 0, the set corpid, `userid`, a fresh `session_key`),
/// `othercorp:<userid>` (as `ok`, for [`OTHER_CORPID`]), `nouserid` (as `ok`
/// without `userid`), `err:<n>`, anything else 40029. Each platform's tokens
/// are refused by the other's APIs. Every code takes a `~suffix` as above.
pub struct WechatStandIn {
    pub base: String,
    pub state: Arc<StandInState>,
    handle: ServerHandle,
}

impl WechatStandIn {
    /// A stand-in that closes each connection after one call: otherwise
    /// wxsession could reuse a pooled connection just as the stand-in closes it
    /// for idling, and a test would see a 502 that WeChat never caused.
    pub fn start() -> WechatStandIn {
        WechatStandIn::start_with(KeepAlive::Disabled)
    }

    /// A stand-in that keeps connections open for reuse, as WeChat does, for
    /// tests of what happens to a pooled connection. It never closes one for
    /// idling within a test's life, so the race above cannot happen.
    pub fn start_keeping_connections() -> WechatStandIn {
        WechatStandIn::start_with(KeepAlive::Timeout(Duration::from_secs(300)))
    }

    fn start_with(keep_alive: KeepAlive) -> WechatStandIn {
        // Bound here, before the thread starts: a request sent right after
        // `start` returns waits in the backlog instead of being refused.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(StandInState::default());
        let data = web::Data::from(state.clone());
        let handle = serve_stand_in(listener, keep_alive, move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(answer))
        });
        WechatStandIn {
            base,
            state,
            handle,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Calls of WeChat's (and QQ's) `jscode2session`.
    pub fn calls(&self) -> usize {
        self.calls_to("/sns/jscode2session")
    }

    /// Calls to one API path.
    pub fn calls_to(&self, path: &str) -> usize {
        self.received().iter().filter(|r| r.path == path).count()
    }

    /// Every session_key the stand-in has handed out.
    pub fn issued_keys(&self) -> Vec<String> {
        self.state.issued_keys.lock().unwrap().clone()
    }

    /// The WeCom corp `gettoken` accepts and `jscode2session` answers for.
    pub fn set_wecom_corp(&self, corpid: &str, corpsecret: &str) {
        *self.state.wecom_corp.lock().unwrap() = Some((corpid.into(), corpsecret.into()));
    }
}

impl Drop for WechatStandIn {
    fn drop(&mut self) {
        // Not graceful: a `silent` call would otherwise hold the thread.
        drop(self.handle.stop(false));
    }
}

/// Every path lands here; the answer depends on the path, like WeChat's.
async fn answer(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<StandInState>,
) -> HttpResponse {
    let query = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default();
    let entry = Received {
        path: req.uri().path().to_string(),
        query,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    state.received.lock().unwrap().push(entry.clone());
    match entry.path.as_str() {
        "/cgi-bin/stable_token" => token_answer(&state).await,
        "/wxa/business/getuserphonenumber" => phone_answer(&state, &entry).await,
        "/wxa/checksession" => check_answer(&state, &entry),
        "/api/apps/v2/jscode2session" => douyin_answer(&state, &entry),
        "/cgi-bin/gettoken" => gettoken_answer(&state, &entry).await,
        "/cgi-bin/miniprogram/jscode2session" => wecom_code_answer(&state, &entry),
        _ => code2session_answer(&state, &entry).await,
    }
}

async fn sleep(duration: Duration) {
    actix_web::rt::time::sleep(duration).await;
}

fn reply(status: StatusCode, content_type: &str, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type(content_type)
        .body(body)
}

fn json_ok(body: String) -> HttpResponse {
    reply(StatusCode::OK, "application/json", body)
}

fn errcode(n: i64) -> HttpResponse {
    json_ok(format!(
        r#"{{"errcode": {n}, "errmsg": "stand-in error {n}"}}"#
    ))
}

async fn token_answer(state: &StandInState) -> HttpResponse {
    match next_token(state).await {
        Ok((n, expires_in)) => json_ok(format!(
            r#"{{"access_token": "TOKEN-{n}", "expires_in": {expires_in}}}"#
        )),
        Err(answer) => answer,
    }
}

/// The next token's number and `expires_in`, after the knobs' delay; or the
/// errcode answer they ask for instead.
async fn next_token(state: &StandInState) -> Result<(u64, u64), HttpResponse> {
    sleep(Duration::from_millis(
        state.token_delay_ms.load(Ordering::SeqCst),
    ))
    .await;
    match state.token_errcode.load(Ordering::SeqCst) {
        0 => {}
        n => return Err(errcode(n)),
    }
    let n = state.tokens_issued.fetch_add(1, Ordering::SeqCst) + 1;
    let expires_in = match state.token_expires_in.load(Ordering::SeqCst) {
        0 => 7200,
        e => e,
    };
    Ok((n, expires_in))
}

/// 40001 for a token the knobs say is refused.
fn refused(state: &StandInState, entry: &Received) -> bool {
    refused_with_prefix(state, entry, "TOKEN-")
}

/// Whether the request's token is not one of `prefix`'s, or one the knobs refuse.
fn refused_with_prefix(state: &StandInState, entry: &Received, prefix: &str) -> bool {
    let n: u64 = entry
        .param("access_token")
        .and_then(|t| t.strip_prefix(prefix))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    state.reject_all_tokens.load(Ordering::SeqCst)
        || n == 0
        || n < state.tokens_valid_from.load(Ordering::SeqCst)
}

async fn phone_answer(state: &StandInState, entry: &Received) -> HttpResponse {
    if refused(state, entry) {
        return errcode(40001);
    }
    let code = entry.json()["code"].as_str().unwrap_or("").to_string();
    let info = |country: serde_json::Value, appid: &str| {
        json_ok(
            serde_json::json!({"errcode": 0, "errmsg": "ok", "phone_info": {
                "phoneNumber": "+86 13912345678", "purePhoneNumber": "13912345678",
                "countryCode": country, "watermark": {"appid": appid, "timestamp": 1}}})
            .to_string(),
        )
    };
    match code.as_str() {
        "num" => info(serde_json::json!(86), "wx_test_app"),
        "str" => info(serde_json::json!("86"), "wx_test_app"),
        "other-app" => info(serde_json::json!("86"), "wx_other"),
        "slow" => {
            sleep(Duration::from_secs(3)).await;
            info(serde_json::json!("86"), "wx_test_app")
        }
        "garbage" => reply(StatusCode::OK, "text/html", "<html></html>".into()),
        c => errcode(
            c.strip_prefix("err:")
                .and_then(|n| n.parse().ok())
                .unwrap_or(40029),
        ),
    }
}

fn check_answer(state: &StandInState, entry: &Received) -> HttpResponse {
    if refused(state, entry) {
        return errcode(40001);
    }
    match entry.param("openid") {
        Some("stale") => errcode(87009),
        _ => json_ok(r#"{"errcode": 0, "errmsg": "ok"}"#.into()),
    }
}

async fn code2session_answer(state: &StandInState, entry: &Received) -> HttpResponse {
    let keys = &state.issued_keys;
    let code = meaning(entry.param("js_code").unwrap_or(""));
    let ok = |openid: &str, unionid: bool| {
        let key = issue_key(state, openid);
        let mut v = serde_json::json!({"openid": openid, "session_key": key});
        if unionid {
            v["unionid"] = format!("u-{openid}").into();
        }
        v.to_string()
    };
    if let Some((openid, key)) = code.strip_prefix("key:").and_then(|r| r.split_once(':')) {
        keys.lock().unwrap().push(key.to_string());
        json_ok(serde_json::json!({"openid": openid, "session_key": key}).to_string())
    } else if let Some(openid) = code.strip_prefix("ok:") {
        json_ok(ok(openid, false))
    } else if let Some(openid) = code.strip_prefix("union:") {
        json_ok(ok(openid, true))
    } else if let Some(openid) = code.strip_prefix("text:") {
        reply(StatusCode::OK, "text/plain", ok(openid, false))
    } else if let Some(n) = code.strip_prefix("err:") {
        errcode(n.parse().unwrap_or(0))
    } else if code == "redirect" {
        // Followed, it would carry the AppSecret to wherever it points.
        HttpResponse::Found()
            .insert_header(("Location", "/sns/jscode2session?js_code=ok:redirected"))
            .finish()
    } else if code == "garbage" {
        reply(
            StatusCode::OK,
            "text/html",
            "<html>502 Bad Gateway</html>".into(),
        )
    } else if code == "http500" {
        reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/json",
            r#"{"errcode": 0}"#.into(),
        )
    } else if code == "noopenid" {
        json_ok(r#"{"session_key": "c2Vzc2lvbmtleQ=="}"#.into())
    } else if code == "slow" {
        sleep(Duration::from_secs(3)).await;
        json_ok(ok("slow-user", false))
    } else if code == "silent" {
        std::future::pending().await
    } else {
        errcode(40029)
    }
}

/// Douyin's `jscode2session`, in its `err_no` envelope.
fn douyin_answer(state: &StandInState, entry: &Received) -> HttpResponse {
    let code = meaning(entry.json()["code"].as_str().unwrap_or(""));
    let envelope = |err_no: i64, err_tips: &str, openid: &str, key: &str, unionid: &str| {
        json_ok(
            serde_json::json!({"err_no": err_no, "err_tips": err_tips, "log_id": "stand-in",
                "data": {"session_key": key, "openid": openid, "anonymous_openid": "",
                         "unionid": unionid}})
            .to_string(),
        )
    };
    if let Some(openid) = code.strip_prefix("ok:") {
        envelope(0, "success", openid, &issue_key(state, openid), "")
    } else if let Some(openid) = code.strip_prefix("union:") {
        let unionid = format!("u-{openid}");
        envelope(0, "success", openid, &issue_key(state, openid), &unionid)
    } else if let Some(n) = code.strip_prefix("err:") {
        let n = n.parse().unwrap_or(0);
        envelope(n, &format!("stand-in error {n}"), "", "", "")
    } else if code == "noopenid" {
        envelope(0, "success", "", "c2Vzc2lvbmtleQ==", "")
    } else if code == "garbage" {
        reply(StatusCode::OK, "text/html", "<html></html>".into())
    } else {
        envelope(40018, "bad code", "", "", "")
    }
}

/// WeCom's `gettoken`: the corp's credentials, then a token as `stable_token`'s.
async fn gettoken_answer(state: &StandInState, entry: &Received) -> HttpResponse {
    let corp = state.wecom_corp.lock().unwrap().clone();
    match corp {
        Some((corpid, _)) if entry.param("corpid") != Some(corpid.as_str()) => {
            return errcode(40013)
        }
        Some((_, secret)) if entry.param("corpsecret") != Some(secret.as_str()) => {
            return errcode(40001)
        }
        Some(_) => {}
        None => return errcode(40013),
    }
    match next_token(state).await {
        Ok((n, expires_in)) => json_ok(format!(
            r#"{{"errcode": 0, "errmsg": "ok", "access_token": "WECOM-TOKEN-{n}", "expires_in": {expires_in}}}"#
        )),
        Err(answer) => answer,
    }
}

/// WeCom's `miniprogram/jscode2session`, with a token from its `gettoken`.
fn wecom_code_answer(state: &StandInState, entry: &Received) -> HttpResponse {
    if refused_with_prefix(state, entry, "WECOM-TOKEN-") {
        return errcode(40014);
    }
    let corpid = state
        .wecom_corp
        .lock()
        .unwrap()
        .as_ref()
        .map(|(corpid, _)| corpid.clone())
        .unwrap_or_default();
    let code = meaning(entry.param("js_code").unwrap_or(""));
    let ok = |corpid: &str, userid: &str| {
        json_ok(
            serde_json::json!({"errcode": 0, "errmsg": "ok", "corpid": corpid,
                "userid": userid, "session_key": issue_key(state, userid)})
            .to_string(),
        )
    };
    if let Some(userid) = code.strip_prefix("ok:") {
        ok(&corpid, userid)
    } else if let Some(userid) = code.strip_prefix("othercorp:") {
        ok(OTHER_CORPID, userid)
    } else if code == "nouserid" {
        json_ok(
            serde_json::json!({"errcode": 0, "errmsg": "ok", "corpid": corpid,
                "session_key": "c2Vzc2lvbmtleQ=="})
            .to_string(),
        )
    } else if let Some(n) = code.strip_prefix("err:") {
        errcode(n.parse().unwrap_or(0))
    } else {
        errcode(40029)
    }
}

/// A code as sent, without its `~suffix`: `ok:alice~2` means `ok:alice`.
fn meaning(sent: &str) -> String {
    sent.split('~').next().unwrap_or_default().to_string()
}

/// A fresh session_key for `user`, remembered among the issued ones.
fn issue_key(state: &StandInState, user: &str) -> String {
    let mut keys = state.issued_keys.lock().unwrap();
    let key = base64_key(user, keys.len());
    keys.push(key.clone());
    key
}

/// A session_key unique per call, recognisable in logs.
fn base64_key(openid: &str, n: usize) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("SK{n:04}{openid}").as_bytes())
}

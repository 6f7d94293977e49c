//! Real components for the integration tests: a `redis-server` of each test's own
//! on a free loopback port, a WeChat stand-in speaking real HTTP on loopback, and
//! wxsession itself served in-process on a free port.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use wxsession::{
    config::Config,
    http::{app, AppState, Surface},
};

pub use redis;

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn unique_dir(tag: &str) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "wxsession-test-{tag}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A real `redis-server` on 127.0.0.1, stopped when dropped.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    extra_args: Vec<String>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// `extra` are additional `redis-server` arguments, e.g. `["--appendonly", "yes"]`.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        RedisServer::start_on(free_port(), extra)
    }

    pub fn start_on(port: u16, extra: &[&str]) -> RedisServer {
        let mut server = RedisServer {
            child: None,
            port,
            dir: unique_dir("redis"),
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.launch();
        server
    }

    fn launch(&mut self) {
        let mut args = vec![
            "--port".to_string(),
            self.port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            "".into(),
            "--dir".into(),
            self.dir.display().to_string(),
        ];
        if !self.extra_args.iter().any(|a| a == "--appendonly") {
            args.extend(["--appendonly".into(), "no".into()]);
        }
        args.extend(self.extra_args.iter().cloned());
        let child = Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut c) = self.try_connection() {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return;
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not start", self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn try_connection(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection_with_timeout(Duration::from_secs(1))
    }

    /// A plain synchronous client, for looking at what the server wrote.
    pub fn conn(&self) -> redis::Connection {
        self.try_connection().expect("connect to the test redis")
    }

    /// Runs one command and returns its answer.
    pub fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut self.conn()).expect("redis command")
    }

    /// Every key matching `pattern`.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys = self.cmd::<Vec<String>>(&["KEYS", pattern]);
        keys.sort();
        keys
    }

    /// Calls of every command since the last `CONFIG RESETSTAT`, without INFO and CONFIG.
    pub fn commands_served(&self) -> u64 {
        let info: String = self.cmd(&["INFO", "commandstats"]);
        info.lines()
            .filter(|l| {
                l.starts_with("cmdstat_")
                    && !l.starts_with("cmdstat_info")
                    && !l.starts_with("cmdstat_config")
            })
            .filter_map(|l| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }

    /// Kills the server (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// SIGSTOP or SIGCONT: a frozen Redis accepts connections but never answers.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
    }
}

/// A port that is free, and so is the port 10000 above it (a cluster node's bus).
pub fn free_cluster_port() -> u16 {
    use std::sync::atomic::AtomicU16;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = 20000 + (std::process::id() % 9000) as u16;
    loop {
        let port = start + NEXT.fetch_add(1, Ordering::SeqCst) % 9000;
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10000) {
            return port;
        }
    }
}

/// A real Redis Cluster on loopback: 3 masters, 3 replicas, node timeout 1.5 s.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| {
                RedisServer::start_on(
                    free_cluster_port(),
                    &["--cluster-enabled", "yes", "--cluster-node-timeout", "1500"],
                )
            })
            .collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        let out = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_ok(Duration::from_secs(20));
        cluster
    }

    /// `redis.url` for the server: every node, comma-separated.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until every live node says `cluster_state:ok`.
    pub fn wait_ok(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let ok = self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
                n.try_connection()
                    .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c))
                    .is_ok_and(|info| info.contains("cluster_state:ok"))
            });
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cluster not ok within {within:?}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The node serving `key` as master.
    pub fn master_of(&self, key: &str) -> usize {
        let slot: i64 = self.nodes[0].cmd(&["CLUSTER", "KEYSLOT", key]);
        for (i, n) in self.nodes.iter().enumerate() {
            if n.child.is_none() {
                continue;
            }
            let role: Vec<redis::Value> = n.cmd(&["ROLE"]);
            let is_master = matches!(&role[0], redis::Value::BulkString(b) if b == b"master");
            if !is_master {
                continue;
            }
            let slots: Vec<Vec<redis::Value>> = n.cmd(&["CLUSTER", "SLOTS"]);
            for range in slots {
                let (from, to) = match (&range[0], &range[1]) {
                    (redis::Value::Int(a), redis::Value::Int(b)) => (*a, *b),
                    _ => continue,
                };
                let port = match &range[2] {
                    redis::Value::Array(m) => match &m[1] {
                        redis::Value::Int(p) => *p as u16,
                        _ => continue,
                    },
                    _ => continue,
                };
                if (from..=to).contains(&slot) && port == n.port {
                    return i;
                }
            }
        }
        panic!("no master for {key}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal("-CONT");
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

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
    /// Tokens numbered below this are refused with 40001.
    pub tokens_valid_from: AtomicU64,
    /// Refuse every token with 40001.
    pub reject_all_tokens: std::sync::atomic::AtomicBool,
    /// `expires_in` of the tokens handed out (0 = 7200).
    pub token_expires_in: AtomicU64,
    /// Delay before answering `stable_token`, in ms.
    pub token_delay_ms: AtomicU64,
}

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
/// | `garbage` | 200 with an HTML body |
/// | `http500` | 500 with a JSON body |
/// | `noopenid` | 200 `{"session_key"}` |
/// | `slow` | the `ok` answer after 3 s |
/// | `silent` | never answers |
///
/// A `~suffix` gives another code with the same meaning (`ok:alice~2`): WeChat
/// codes are single-use, so repeated logins of one user need distinct codes.
///
/// `stable_token` hands out `TOKEN-1`, `TOKEN-2`, …; `getuserphonenumber` answers
/// by the phone `code` (`num`/`str`: countryCode as a number/string, `other-app`,
/// `err:<n>`, `slow`, `garbage`) and `checksession` answers 87009 for openid
/// `stale`; both refuse tokens as the [`StandInState`] knobs say.
pub struct WechatStandIn {
    pub base: String,
    pub state: Arc<StandInState>,
}

impl WechatStandIn {
    pub fn start() -> WechatStandIn {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(StandInState::default());
        let shared = state.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                thread::spawn(move || serve_one(stream, &state));
            }
        });
        WechatStandIn { base, state }
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Calls of `jscode2session`.
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
}

fn serve_one(mut stream: TcpStream, state: &StandInState) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut content_length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; content_length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let target = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let entry = Received {
        path: path.to_string(),
        query: url_decode_pairs(query),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    state.received.lock().unwrap().push(entry.clone());

    let answer = match entry.path.as_str() {
        "/cgi-bin/stable_token" => token_answer(state),
        "/wxa/business/getuserphonenumber" => phone_answer(state, &entry),
        "/wxa/checksession" => check_answer(state, &entry),
        _ => code2session_answer(state, &entry),
    };
    let Some((status, content_type, body)) = answer else {
        return;
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.flush();
    let _ = stream.read(&mut [0u8; 1]);
}

type Answer = Option<(&'static str, &'static str, String)>;

fn json_ok(body: String) -> Answer {
    Some(("200 OK", "application/json", body))
}

fn errcode(n: i64) -> Answer {
    json_ok(format!(
        r#"{{"errcode": {n}, "errmsg": "stand-in error {n}"}}"#
    ))
}

fn token_answer(state: &StandInState) -> Answer {
    thread::sleep(Duration::from_millis(
        state.token_delay_ms.load(Ordering::SeqCst),
    ));
    let n = state.tokens_issued.fetch_add(1, Ordering::SeqCst) + 1;
    let expires_in = match state.token_expires_in.load(Ordering::SeqCst) {
        0 => 7200,
        e => e,
    };
    json_ok(format!(
        r#"{{"access_token": "TOKEN-{n}", "expires_in": {expires_in}}}"#
    ))
}

/// 40001 for a token the knobs say is refused.
fn refused(state: &StandInState, entry: &Received) -> bool {
    let n: u64 = entry
        .param("access_token")
        .and_then(|t| t.strip_prefix("TOKEN-"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    state.reject_all_tokens.load(Ordering::SeqCst)
        || n == 0
        || n < state.tokens_valid_from.load(Ordering::SeqCst)
}

fn phone_answer(state: &StandInState, entry: &Received) -> Answer {
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
            thread::sleep(Duration::from_secs(3));
            info(serde_json::json!("86"), "wx_test_app")
        }
        "garbage" => Some(("200 OK", "text/html", "<html></html>".into())),
        c => errcode(
            c.strip_prefix("err:")
                .and_then(|n| n.parse().ok())
                .unwrap_or(40029),
        ),
    }
}

fn check_answer(state: &StandInState, entry: &Received) -> Answer {
    if refused(state, entry) {
        return errcode(40001);
    }
    match entry.param("openid") {
        Some("stale") => errcode(87009),
        _ => json_ok(r#"{"errcode": 0, "errmsg": "ok"}"#.into()),
    }
}

fn code2session_answer(state: &StandInState, entry: &Received) -> Answer {
    let keys = &state.issued_keys;
    let sent = entry.param("js_code").unwrap_or("").to_string();
    // A `~suffix` makes another code with the same meaning: `ok:alice~2`.
    let code = sent.split('~').next().unwrap_or_default().to_string();
    let ok = |openid: &str, unionid: bool| {
        let key = base64_key(openid, keys.lock().unwrap().len());
        keys.lock().unwrap().push(key.clone());
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
        Some(("200 OK", "text/plain", ok(openid, false)))
    } else if let Some(n) = code.strip_prefix("err:") {
        errcode(n.parse().unwrap_or(0))
    } else if code == "garbage" {
        Some(("200 OK", "text/html", "<html>502 Bad Gateway</html>".into()))
    } else if code == "http500" {
        Some((
            "500 Internal Server Error",
            "application/json",
            r#"{"errcode": 0}"#.into(),
        ))
    } else if code == "noopenid" {
        json_ok(r#"{"session_key": "c2Vzc2lvbmtleQ=="}"#.into())
    } else if code == "slow" {
        thread::sleep(Duration::from_secs(3));
        json_ok(ok("slow-user", false))
    } else if code == "silent" {
        thread::sleep(Duration::from_secs(30));
        None
    } else {
        errcode(40029)
    }
}

/// A session_key unique per call, recognisable in logs.
fn base64_key(openid: &str, n: usize) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("SK{n:04}{openid}").as_bytes())
}

fn url_decode_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// The test configuration: the given Redis and stand-in, short timeouts, plus
/// `extra` TOML-style overrides as `("section.key", "value")`.
pub fn config(redis: &RedisServer, wechat_base: &str, extra: &[(&str, &str)]) -> Config {
    let mut env = vec![
        (
            "WXSESSION_WECHAT_APPID".to_string(),
            "wx_test_app".to_string(),
        ),
        (
            "WXSESSION_WECHAT_SECRET".to_string(),
            TEST_SECRET.to_string(),
        ),
        (
            "WXSESSION_WECHAT_API_BASE".to_string(),
            wechat_base.to_string(),
        ),
        ("WXSESSION_WECHAT_TIMEOUT_MS".to_string(), "500".to_string()),
        ("WXSESSION_REDIS_URL".to_string(), redis.url()),
        ("WXSESSION_REDIS_TIMEOUT_MS".to_string(), "300".to_string()),
    ];
    for (key, value) in extra {
        let (section, k) = key.split_once('.').unwrap();
        let name = format!("WXSESSION_{}_{}", section.to_uppercase(), k.to_uppercase());
        env.retain(|(n, _)| *n != name);
        env.push((name, value.to_string()));
    }
    Config::from_sources("", env).expect("test configuration is valid")
}

/// The AppSecret every test configuration uses; it must never show up anywhere.
pub const TEST_SECRET: &str = "TEST-APP-SECRET-d41d8cd98f00b204";

/// wxsession served in-process on a free loopback port, over real HTTP.
pub struct TestServer {
    pub base: String,
    handle: actix_web::dev::ServerHandle,
}

impl TestServer {
    /// Must be called inside an actix runtime (`#[actix_web::test]`).
    pub fn start(config: &Config) -> TestServer {
        TestServer::start_surface(config, Surface::Main)
    }

    /// Only the admin routes, as on `admin.bind`.
    pub fn start_admin(config: &Config) -> TestServer {
        TestServer::start_surface(config, Surface::Admin)
    }

    fn start_surface(config: &Config, surface: Surface) -> TestServer {
        let state = actix_web::web::Data::new(AppState::new(config).expect("app state"));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = actix_web::HttpServer::new(move || app(state.clone(), surface))
            .workers(1)
            .disable_signals()
            .shutdown_timeout(1)
            .listen(listener)
            .unwrap()
            .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        TestServer { base, handle }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

/// An HTTP client for the tests.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Status and parsed JSON body (Null when empty or not JSON).
pub async fn send(req: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let resp = req.send().await.expect("request reaches the server");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// The Prometheus text a `/metrics` URL answers.
pub async fn metrics(url: &str) -> String {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Logs in through the stand-in with `code` and returns the session id.
pub async fn login(server: &TestServer, code: &str) -> String {
    let (status, body) = send(
        client()
            .post(server.url("/login"))
            .json(&serde_json::json!({ "code": code })),
    )
    .await;
    assert_eq!(status, 200, "login with {code}: {body}");
    body["sessionid"].as_str().unwrap().to_string()
}

/// Asserts the contract's error shape: exactly `error` and `message`, `error` as given.
pub fn assert_error(body: &serde_json::Value, code: &str) {
    let obj = body
        .as_object()
        .unwrap_or_else(|| panic!("error body is JSON: {body}"));
    assert_eq!(obj.len(), 2, "only error and message: {body}");
    assert_eq!(obj["error"], code, "{body}");
    assert!(
        obj["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// The real `wxsession` binary as a child process, configured only through
/// `WXSESSION_*` variables, its stderr (the log) captured to a file.
pub struct ServerProcess {
    child: Option<Child>,
    pub base: String,
    log: PathBuf,
}

impl ServerProcess {
    /// Starts the binary with the test configuration plus `env`, and waits until
    /// `/healthz` answers.
    pub fn start(redis: &RedisServer, wechat_base: &str, env: &[(&str, &str)]) -> ServerProcess {
        let port = free_port();
        let dir = unique_dir("server");
        let log = dir.join("stderr.log");
        std::fs::write(dir.join("empty.toml"), "").unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wxsession"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("WXSESSION_WECHAT_APPID", "wx_test_app")
            .env("WXSESSION_WECHAT_SECRET", TEST_SECRET)
            .env("WXSESSION_WECHAT_API_BASE", wechat_base)
            .env("WXSESSION_REDIS_URL", redis.url())
            .env("WXSESSION_SERVER_BIND", format!("127.0.0.1:{port}"))
            .env("WXSESSION_SERVER_WORKERS", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .args(["--config", dir.join("empty.toml").to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let server = ServerProcess {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "server did not start: {}",
                server.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!("did not exit within {within:?} of SIGTERM");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = self.log.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

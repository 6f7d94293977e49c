//! wxsession under test: in-process on a free port, or the real binary as a
//! child process, with the test configuration.

use std::{
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use actix_web::{
    body::MessageBody,
    dev::{ServiceFactory, ServiceRequest, ServiceResponse},
    web::ServiceConfig,
};
use wxsession::{
    config::Config,
    http::{app, configure, AppState, Surface},
};

use super::{client, free_port, send, unique_dir, RedisServer};

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
        (
            "WXSESSION_WECHAT_ALLOW_INSECURE_API_BASE".to_string(),
            "true".to_string(),
        ),
        ("WXSESSION_REDIS_URL".to_string(), redis.url()),
        ("WXSESSION_REDIS_TIMEOUT_MS".to_string(), "300".to_string()),
    ];
    for (key, value) in extra {
        let name = env_name(key);
        env.retain(|(n, _)| *n != name);
        env.push((name, value.to_string()));
    }
    Config::from_sources("", env).expect("test configuration is valid")
}

/// The variable for a `section.key` (`redis.tls_ca_file` →
/// `WXSESSION_REDIS_TLS_CA_FILE`); a `WXSESSION_*` name stays as it is.
fn env_name(key: &str) -> String {
    match key.split_once('.') {
        Some((section, k)) => format!("WXSESSION_{}_{}", section, k).to_uppercase(),
        None => key.to_string(),
    }
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
        TestServer::serve(move || app(state.clone(), surface))
    }

    /// An app that embeds the library: the contract's public routes
    /// (`configure`) next to the app's own `routes`.
    pub fn start_embedding(config: &Config, routes: fn(&mut ServiceConfig)) -> TestServer {
        let state = actix_web::web::Data::new(AppState::new(config).expect("app state"));
        TestServer::serve(move || {
            actix_web::App::new()
                .app_data(state.clone())
                .configure(configure)
                .configure(routes)
        })
    }

    /// Serves `app` on a free loopback port, one worker, on this actix runtime.
    fn serve<F, A, B>(app: F) -> TestServer
    where
        F: Fn() -> actix_web::App<A> + Send + Clone + 'static,
        A: ServiceFactory<
                ServiceRequest,
                Config = (),
                Response = ServiceResponse<B>,
                Error = actix_web::Error,
                InitError = (),
            > + 'static,
        B: MessageBody + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = actix_web::HttpServer::new(app)
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
}

impl Drop for TestServer {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

/// A running wxsession, in-process or the binary, and the steps tests take
/// against it over HTTP.
pub trait Instance {
    /// `http://127.0.0.1:<port>`.
    fn base(&self) -> &str;

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// `POST /login` with `code`: the status and the JSON answer, whatever they are.
    async fn try_login(&self, code: &str) -> (u16, serde_json::Value) {
        send(
            client()
                .post(self.url("/login"))
                .json(&serde_json::json!({ "code": code })),
        )
        .await
    }

    /// Logs in through the stand-in with `code` and returns the session id.
    async fn login(&self, code: &str) -> String {
        let (status, body) = self.try_login(code).await;
        assert_eq!(status, 200, "login with {code}: {body}");
        body["sessionid"].as_str().unwrap().to_string()
    }

    /// `GET /session` with `id` in the `sessionid` header.
    async fn get_session(&self, id: &str) -> (u16, serde_json::Value) {
        send(client().get(self.url("/session")).header("sessionid", id)).await
    }

    /// `DELETE /session` with `id` in the `sessionid` header.
    async fn logout(&self, id: &str) -> (u16, serde_json::Value) {
        send(
            client()
                .delete(self.url("/session"))
                .header("sessionid", id),
        )
        .await
    }

    /// A guarded POST of `body` as JSON, with `id` in the `sessionid` header.
    async fn post_as(
        &self,
        id: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        send(
            client()
                .post(self.url(path))
                .header("sessionid", id)
                .json(body),
        )
        .await
    }

    /// The Prometheus text `/metrics` answers.
    async fn metrics(&self) -> String {
        client()
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Instance for TestServer {
    fn base(&self) -> &str {
        &self.base
    }
}

impl Instance for ServerProcess {
    fn base(&self) -> &str {
        &self.base
    }
}

/// The real `wxsession` binary as a child process, configured only through
/// `WXSESSION_*` variables, its stderr (the log) captured to a file.
pub struct ServerProcess {
    child: Option<Child>,
    pub base: String,
    log: PathBuf,
}

impl ServerProcess {
    /// Starts the binary with the test configuration plus `env` (variables, or
    /// keys as `section.key`), and waits until it listens.
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
            .env("WXSESSION_WECHAT_ALLOW_INSECURE_API_BASE", "true")
            .env("WXSESSION_REDIS_URL", redis.url())
            .env("WXSESSION_SERVER_BIND", format!("127.0.0.1:{port}"))
            .env("WXSESSION_SERVER_WORKERS", "1");
        for (k, v) in env {
            cmd.env(env_name(k), v);
        }
        let child = cmd
            .args(["--config", dir.join("empty.toml").to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut server = ServerProcess {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = server.child.as_mut().unwrap().try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "server did not start ({exited:?}): {}",
                server.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
        server
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

/// Runs `wxsession <args>` (an operator's command) against `redis` with the
/// test configuration and `extra_env`: (exit code, stdout, stderr).
pub fn run_cli(
    redis: &RedisServer,
    extra_env: &[(&str, &str)],
    args: &[&str],
) -> (i32, String, String) {
    let url = redis.url();
    let mut env = vec![
        ("WXSESSION_WECHAT_APPID", "wx_test_app"),
        ("WXSESSION_WECHAT_SECRET", TEST_SECRET),
        ("WXSESSION_REDIS_URL", url.as_str()),
        ("RUST_LOG", "warn"),
    ];
    env.extend_from_slice(extra_env);
    run_binary(&env, args)
}

/// Runs the binary to its exit with only `env` (variables, or keys as
/// `section.key`) and PATH; answers (code, stdout, stderr).
/// One still running after 20 s (a server that started when it should not have)
/// is killed, and its code is -1.
pub fn run_binary(env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wxsession"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(std::env::temp_dir())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(env_name(k), v);
    }
    let child = cmd.spawn().unwrap();
    let (pid, exited) = (child.id(), Arc::new(AtomicBool::new(false)));
    let watchdog = {
        let exited = exited.clone();
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !exited.load(Ordering::SeqCst) {
                if Instant::now() >= deadline {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let out = child.wait_with_output().unwrap();
    exited.store(true, Ordering::SeqCst);
    watchdog.join().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

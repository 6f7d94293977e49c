//! # wxsession
//!
//! A session server for WeChat Mini Programs, and a library for actix-web apps:
//! a login code becomes a "3rd_session" id in Redis, and the [`Session`] extractor
//! guards every later request.
//!
//! # Layout
//!
//! - [`cli`]: the command line: flags (`--appid` among them) and the
//!   operator's `sessions …`, `users …`, `apps list` and `wechat …` subcommands
//!   (`cli.rs`), and `check-config [--connect]` (`cli/check_config.rs`).
//! - [`clock`]: the fleet's clock (Unix seconds and milliseconds), read in one
//!   place: the host clock plus its offset from Redis's `TIME`, measured at
//!   start and every 30 s by a task every store keeps running, over the Redis
//!   connection of the thread that made the store (the main thread, in the
//!   server: one connection more than the workers').
//! - [`config`]: every configuration key, its type, default and validation; the
//!   file and the `WXSESSION_*` variables read through one deserializer that names
//!   the key in every error (`config/read.rs`); the apps (`[apps.<name>]`, and
//!   `[wechat]` as the app `default`) and their platforms (`config/apps.rs`);
//!   what the `[redis]` keys mean
//!   together, TLS files included (`config/redis_section.rs`); `IpRange`, an
//!   address or CIDR block of `server.trusted_proxies` (`config/ip_range.rs`).
//! - [`secret`]: [`Secret`], a string that never prints, and OS randomness.
//! - [`wechat`]: the platforms' server APIs, one file per idea: the login code,
//!   the identity, `WechatError`, `Apps` (every app's `Client` by appid), one
//!   app's `Client` (its platform's login call — WeChat's and QQ's
//!   `code2Session`, Douyin's, WeCom's and Alipay's in `douyin.rs`, `wecom.rs`,
//!   `alipay.rs` —, the phone number, the session-key check), the HTTP client
//!   all apps share (`call.rs`: every call on a runtime of its own, which
//!   outlives the server's workers), the development mock, an app's
//!   fleet-shared access_token (`AccessTokens`, kept in Redis through the
//!   `RedisConn` it is handed; one refresh per instance at a time) and the
//!   user-data crypto (`userdata`). Knows no HTTP routes and no sessions.
//! - [`session`]: `SessionId`, the [`Session`] a handler gets, the lifetime policy,
//!   `SessionStore` (create — where every TTL is set —, touch, revoke, end with a
//!   reason, elevate), `Device`, the key layout (tombstones of ended sessions
//!   included; a user is one openid of one app), the per-user and per-unionid
//!   indexes, the guard's two readers (Redis, or the local
//!   cache and its tracking connection), `LoginCodes` (codes already sent to
//!   WeChat) and `LoginRate` (logins per client address, counted across the
//!   fleet). Knows no HTTP, no WeChat.
//! - [`login`]: `Login`, a code in and a session out: `code2Session` at most once
//!   per code (repeats get the first outcome), then `SessionStore::create`; and
//!   the step-up (`Login::elevate`): a fresh code of the same user elevates a
//!   live session (`SessionStore::elevate`).
//! - [`redis_conn`]: `RedisConn`, the one lazily connected handle on Redis (a node
//!   at a fixed address or named by Sentinels, reached over one link per thread;
//!   or a Cluster) that the store, the login-code record and the token share;
//!   where connections are made (TLS, TCP keepalive: `endpoint`), replaced when
//!   they close or stall and a command is retried (`link`); the guard's `GETEX`
//!   on a hand-written pipelined connection, a fast path to a single node
//!   reached without TLS (`wire`); and `bounded`, the time bound every Redis
//!   operation runs under (`deadline`).
//! - [`http`]: routes (public in `routes`, admin in `admin`), the guard (`impl
//!   FromRequest for Session`, and `Elevated` for routes that need a step-up), request bodies (`JsonBody`), `ErrorCode` and
//!   `ApiError` (the one table of errors, and the only place they become
//!   statuses and JSON), who the client is behind `server.trusted_proxies`
//!   (`client_addr`), per-address counts in memory (`limits`), the OpenAPI
//!   document and the server loop.
//! - [`telemetry`]: Prometheus counters, gauges and histograms (added to per
//!   thread, summed when read); logger set-up.
//!
//! Dependencies point one way: `http` uses `login`, `session` and `wechat`; `login`
//! uses `session` and `wechat`, which know nothing of each other and share only
//! `redis_conn`. Below them, `redis_conn` uses `config`, `clock` uses `redis_conn`,
//! `config` uses `secret` and `telemetry` reads `clock`'s offset: none of these
//! imports `http`, `login`, `session` or `wechat`.

pub mod cli;
pub mod clock;
pub mod config;
pub mod http;
pub mod login;
pub mod redis_conn;
pub mod secret;
pub mod session;
pub mod telemetry;
pub mod wechat;

pub use config::Config;
pub use http::Elevated;
pub use secret::Secret;
pub use session::Session;

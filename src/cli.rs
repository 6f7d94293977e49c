//! The `wxsession` command line: flags, and the operator's subcommands
//! (`sessions list|show|revoke|revoke-user|revoke-union|stats`, `wechat token-status|refresh-token`,
//! `apps list`, `check-config [--connect]`), which use the server's own configuration, store
//! and WeChat code.

mod check_config;

use std::{path::PathBuf, process::ExitCode, sync::Arc};

pub use check_config::run_check_config;

use crate::{
    clock,
    config::{pick_app, App, Config, Platform, UnknownApp},
    session::SessionStore,
    telemetry::Metrics,
    wechat,
};

pub const HELP: &str = "\
wxsession — session server for WeChat Mini Programs

USAGE:
    wxsession [--config PATH] [COMMAND]

FLAGS:
    -c, --config PATH   configuration file (default: config.toml in the working
                        directory; if that default is missing, built-in defaults
                        and WXSESSION_* variables are used)
    --appid APPID       the app a per-user or wechat command is about (may be
                        left out when only one app could be meant)
    -h, --help          print this help
    -V, --version       print the version

COMMANDS:
    serve                          run the HTTP server (the default)
    sessions list <openid>         one line per live session: id, created_at, idle seconds
                                   left, device (- when none)
    sessions show <sessionid>      openid, unionid, created_at and TTL of one session
    sessions revoke <sessionid>    end one session on every instance at once
    sessions revoke-user <openid>  end every session of one openid
    sessions revoke-union <unionid>
                                   end every session of one person, in every app
    sessions stats                 count live sessions and users (SCAN, never KEYS)
    users ban <openid> [--for SECS] [--reason TEXT]
                                   end every session of one openid (403 user_banned)
                                   and refuse its logins, for SECS or until unbanned
    users unban <openid>           lift a ban
    wechat token-status            age and expiry of the shared access_token (never the token)
    wechat refresh-token [--force] fetch a new shared access_token now; --force sends
                                   force_refresh: true, which kills the old token at
                                   WeChat at once (for a leaked token)
    apps list                      one line per configured app: name, platform, appid,
                                   API base (or mock); never a secret
    check-config [--connect]       load and validate the configuration as the server
                                   would, then print a summary without any secret;
                                   --connect also PINGs Redis (TLS, Sentinel, Cluster
                                   as configured) and reaches each app's api_base
                                   (any HTTP answer counts; skipped for a mock app)

With session.hash_ids = true, sessions are named by the SHA-256 of their id;
show and revoke accept either the id or that hash.

Every configuration key can be overridden by WXSESSION_<SECTION>_<KEY>,
e.g. WXSESSION_REDIS_URL, WXSESSION_WECHAT_SECRET. Logging: RUST_LOG (default info).
Exit codes: 0 done, 1 not found, 2 bad usage or configuration, 3 Redis unavailable,
4 an app's API base unreachable (check-config --connect; when Redis is unreachable
too, 3 wins).
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Help,
    Version,
    Serve,
    Sessions(SessionsCommand),
    Users(UsersCommand),
    Wechat(WechatCommand),
    /// `apps list`: the configured apps.
    AppsList,
    /// Validate the configuration and print its summary; `connect`: also reach
    /// Redis and the WeChat API base.
    CheckConfig {
        connect: bool,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub enum UsersCommand {
    Ban {
        openid: String,
        for_secs: Option<u64>,
        reason: Option<String>,
    },
    Unban(String),
}

#[derive(Debug, PartialEq, Eq)]
pub enum WechatCommand {
    TokenStatus,
    RefreshToken { force: bool },
}

#[derive(Debug, PartialEq, Eq)]
pub enum SessionsCommand {
    List(String),
    Show(String),
    Revoke(String),
    RevokeUser(String),
    RevokeUnion(String),
    Stats,
}

/// The parsed command line: the configuration path (if given), the app (if
/// given) and the command.
#[derive(Debug, PartialEq, Eq)]
pub struct Args {
    pub config: Option<PathBuf>,
    pub appid: Option<String>,
    pub command: Command,
}

impl Args {
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
        let mut config = None;
        let mut appid = None;
        let mut force = false;
        let mut connect = false;
        let mut for_secs = None;
        let mut reason = None;
        let mut words = Vec::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "-h" | "--help" => {
                    return Ok(Args {
                        config,
                        appid,
                        command: Command::Help,
                    })
                }
                "-V" | "--version" => {
                    return Ok(Args {
                        config,
                        appid,
                        command: Command::Version,
                    })
                }
                "-c" | "--config" => {
                    config = Some(args.next().ok_or("--config needs a PATH")?.into());
                }
                "--appid" => appid = Some(args.next().ok_or("--appid needs an APPID")?),
                "--force" => force = true,
                "--connect" => connect = true,
                "--for" => {
                    let secs = args.next().ok_or("--for needs SECS")?;
                    for_secs = Some(
                        secs.parse::<u64>()
                            .ok()
                            .filter(|s| (1..=3_153_600_000).contains(s))
                            .ok_or("--for needs a whole number of seconds, 1 to 3153600000")?,
                    );
                }
                "--reason" => reason = Some(args.next().ok_or("--reason needs TEXT")?),
                flag if flag.starts_with('-') => return Err(format!("unknown flag {flag:?}")),
                _ => words.push(arg),
            }
        }
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let command = match words.as_slice() {
            [] | ["serve"] => Command::Serve,
            ["sessions", "list", openid] => {
                Command::Sessions(SessionsCommand::List(openid.to_string()))
            }
            ["sessions", "show", id] => Command::Sessions(SessionsCommand::Show(id.to_string())),
            ["sessions", "revoke", id] => {
                Command::Sessions(SessionsCommand::Revoke(id.to_string()))
            }
            ["sessions", "revoke-user", openid] => {
                Command::Sessions(SessionsCommand::RevokeUser(openid.to_string()))
            }
            ["sessions", "revoke-union", unionid] => {
                Command::Sessions(SessionsCommand::RevokeUnion(unionid.to_string()))
            }
            ["sessions", "stats"] => Command::Sessions(SessionsCommand::Stats),
            ["users", "ban", openid] => Command::Users(UsersCommand::Ban {
                openid: openid.to_string(),
                for_secs: for_secs.take(),
                reason: reason.take(),
            }),
            ["users", "unban", openid] => Command::Users(UsersCommand::Unban(openid.to_string())),
            ["wechat", "token-status"] => Command::Wechat(WechatCommand::TokenStatus),
            ["wechat", "refresh-token"] => Command::Wechat(WechatCommand::RefreshToken { force }),
            ["check-config"] => Command::CheckConfig { connect },
            ["apps", "list"] => Command::AppsList,
            other => return Err(format!("unknown command {:?}", other.join(" "))),
        };
        if force && !matches!(command, Command::Wechat(WechatCommand::RefreshToken { .. })) {
            return Err("--force goes only with 'wechat refresh-token'".into());
        }
        if connect && !matches!(command, Command::CheckConfig { .. }) {
            return Err("--connect goes only with 'check-config'".into());
        }
        if for_secs.is_some() || reason.is_some() {
            return Err("--for and --reason go only with 'users ban'".into());
        }
        let per_app = matches!(
            command,
            Command::Users(_)
                | Command::Wechat(_)
                | Command::Sessions(SessionsCommand::List(_) | SessionsCommand::RevokeUser(_))
        );
        if appid.is_some() && !per_app {
            return Err(
                "--appid goes only with 'sessions list|revoke-user', 'users' and 'wechat'".into(),
            );
        }
        Ok(Args {
            config,
            appid,
            command,
        })
    }
}

/// `apps list`: one tab-separated line per app, as the server resolves them.
pub fn run_apps_list(config: &Config) -> ExitCode {
    for app in config.apps() {
        let api = if app.mock {
            "mock"
        } else {
            app.api_base.as_str()
        };
        println!(
            "{}\t{}\t{}\t{api}",
            app.name,
            app.platform.as_str(),
            app.appid
        );
    }
    ExitCode::SUCCESS
}

/// The app `--appid` names, or the only one on a platform `serves` accepts.
fn app_named<'a>(
    config: &'a Config,
    appid: Option<&str>,
    serves: impl Fn(Platform) -> bool,
) -> Result<&'a App, ExitCode> {
    pick_app(config.apps(), appid, serves, |app| {
        (app.appid.as_str(), app.platform)
    })
    .map_err(|UnknownApp| {
        fail(
            2,
            "--appid: no such app here, or it is left out while several apps could be meant",
        )
    })
}

/// Runs a `users` subcommand against the configured Redis, printing to stdout.
pub fn run_users(config: &Config, appid: Option<&str>, command: UsersCommand) -> ExitCode {
    let app = match app_named(config, appid, |_| true) {
        Ok(app) => app,
        Err(code) => return code,
    };
    with_store(config, |store| async move {
        let user = |openid: &str| store.user_key(&app.appid, openid);
        let result = match command {
            UsersCommand::Ban {
                openid,
                for_secs,
                reason,
            } => store
                .ban(&user(&openid), for_secs, reason.as_deref())
                .await
                .map(|(ban, ended)| {
                    match ban.until {
                        Some(until) => println!("banned until {until}"),
                        None => println!("banned until unbanned"),
                    }
                    println!("ended {ended} sessions");
                    ExitCode::SUCCESS
                }),
            UsersCommand::Unban(openid) => store.unban(&user(&openid)).await.map(|was| {
                if was {
                    println!("unbanned");
                    ExitCode::SUCCESS
                } else {
                    fail(1, "not banned")
                }
            }),
        };
        result.unwrap_or_else(|e| fail(3, &e.to_string()))
    })
}

/// Runs a `sessions` subcommand against the configured Redis, printing to stdout.
pub fn run_sessions(config: &Config, appid: Option<&str>, command: SessionsCommand) -> ExitCode {
    let app = match &command {
        SessionsCommand::List(_) | SessionsCommand::RevokeUser(_) => {
            match app_named(config, appid, |_| true) {
                Ok(app) => Some(app),
                Err(code) => return code,
            }
        }
        _ => None,
    };
    with_store(config, |store| async move {
        let handle = |text: &str| store.parse_stored_id(text);
        let user = |openid: &str| {
            store.user_key(&app.expect("a per-user command has its app").appid, openid)
        };
        let result = match command {
            SessionsCommand::List(openid) => store.list_user(&user(&openid)).await.map(|records| {
                for r in records {
                    let device = r.device.as_deref().unwrap_or("-");
                    println!(
                        "{}\t{}\t{}\t{device}",
                        r.stored_id, r.created_at, r.expires_in
                    );
                }
                ExitCode::SUCCESS
            }),
            SessionsCommand::Show(text) => match handle(&text) {
                None => Ok(fail(2, "not a session id (32 lower-case hex digits)")),
                Some(h) => store.peek(&h).await.map(|record| match record {
                    None => fail(1, "no such session"),
                    Some(r) => {
                        println!("sessionid:  {}", r.stored_id);
                        println!("openid:     {}", r.openid);
                        println!("unionid:    {}", r.unionid.as_deref().unwrap_or("-"));
                        println!("created_at: {}", r.created_at);
                        println!("device:     {}", r.device.as_deref().unwrap_or("-"));
                        println!("ttl:        {}", r.expires_in);
                        ExitCode::SUCCESS
                    }
                }),
            },
            SessionsCommand::Revoke(text) => match handle(&text) {
                None => Ok(fail(2, "not a session id (32 lower-case hex digits)")),
                Some(h) => store.end_stored_id(&h).await.map(|existed| {
                    if existed {
                        println!("revoked");
                        ExitCode::SUCCESS
                    } else {
                        fail(1, "no such session")
                    }
                }),
            },
            SessionsCommand::RevokeUser(openid) => {
                store.revoke_user(&user(&openid)).await.map(|n| {
                    println!("revoked {n}");
                    ExitCode::SUCCESS
                })
            }
            SessionsCommand::RevokeUnion(unionid) => store.revoke_union(&unionid).await.map(|n| {
                println!("revoked {n}");
                ExitCode::SUCCESS
            }),
            SessionsCommand::Stats => store.stats().await.map(|s| {
                println!("sessions: {}", s.sessions);
                println!("users:    {}", s.users);
                ExitCode::SUCCESS
            }),
        };
        result.unwrap_or_else(|e| fail(3, &e.to_string()))
    })
}

/// Runs a `wechat` subcommand (an app's shared access_token: a WeChat or
/// WeCom app) with the server's configuration and shared Redis.
pub fn run_wechat(config: &Config, appid: Option<&str>, command: WechatCommand) -> ExitCode {
    let app = match app_named(config, appid, Platform::has_access_token) {
        Ok(app) if app.platform.has_access_token() => app,
        Ok(_) => {
            return fail(
                2,
                "--appid: a qq, douyin or alipay app has no access_token here",
            )
        }
        Err(code) => return code,
    };
    with_store(config, |store| async move {
        let apps = match wechat::Apps::new(config, store.connection(), Arc::new(Metrics::default()))
        {
            Ok(apps) => apps,
            Err(e) => return fail(2, &format!("configuration error: {e}")),
        };
        let tokens = apps
            .get(&app.appid)
            .and_then(|client| client.access_tokens())
            .expect("a wechat or wecom app has its access_token");
        let now = clock::unix_secs();
        match command {
            WechatCommand::TokenStatus => match tokens.status().await {
                Ok(Some(s)) => {
                    println!(
                        "fetched_at: {} (age {}s)",
                        s.fetched_at,
                        now.saturating_sub(s.fetched_at)
                    );
                    println!(
                        "refresh_at: {} (in {}s)",
                        s.refresh_at,
                        s.refresh_at.saturating_sub(now)
                    );
                    println!(
                        "expires_at: {} (in {}s)",
                        s.expires_at,
                        s.expires_at.saturating_sub(now)
                    );
                    ExitCode::SUCCESS
                }
                Ok(None) => fail(1, "no shared access_token yet"),
                Err(e) => fail(3, &e.to_string()),
            },
            WechatCommand::RefreshToken { force } => match tokens.refresh(force).await {
                Ok(token) => {
                    println!("refreshed; shared for {}s", token.expires_in);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(3, &e.to_string()),
            },
        }
    })
}

/// The configuration and runtime of a one-shot command: the local cache off (a
/// single command has nothing to cache, and its tracking connection would only
/// be one more connection to the same node).
fn one_shot(config: &Config) -> (Config, tokio::runtime::Runtime) {
    let mut config = config.clone();
    config.session.local_cache = false;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    (config, runtime)
}

/// Runs `body` on a one-thread runtime with the configured store (never its
/// local cache: a one-shot command has nothing to cache).
fn with_store<F, Fut>(config: &Config, body: F) -> ExitCode
where
    F: FnOnce(SessionStore) -> Fut,
    Fut: std::future::Future<Output = ExitCode>,
{
    let (config, runtime) = one_shot(config);
    runtime.block_on(async {
        match SessionStore::new(&config, Arc::new(Metrics::default())) {
            Ok(store) => body(store).await,
            Err(e) => fail(2, &format!("redis.url: {e}")),
        }
    })
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("wxsession: {message}");
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Args, String> {
        Args::parse(line.split_whitespace().map(str::to_string))
    }

    #[test]
    fn parses_commands_and_flags() {
        assert_eq!(parse("").unwrap().command, Command::Serve);
        assert_eq!(parse("serve").unwrap().command, Command::Serve);
        let a = parse("--config x.toml sessions list o1").unwrap();
        assert_eq!(a.config, Some(PathBuf::from("x.toml")));
        assert_eq!(
            a.command,
            Command::Sessions(SessionsCommand::List("o1".into()))
        );
        assert_eq!(
            parse("sessions revoke-user o1 -c y").unwrap().command,
            Command::Sessions(SessionsCommand::RevokeUser("o1".into()))
        );
        assert_eq!(
            parse("sessions stats").unwrap().command,
            Command::Sessions(SessionsCommand::Stats)
        );
        assert_eq!(parse("-h").unwrap().command, Command::Help);
        assert!(parse("sessions list").is_err());
        assert!(parse("--bogus").is_err());
        assert!(parse("--config").is_err());
        assert_eq!(
            parse("wechat refresh-token --force").unwrap().command,
            Command::Wechat(WechatCommand::RefreshToken { force: true })
        );
        assert!(parse("sessions stats --force").is_err());
        assert_eq!(
            parse("check-config").unwrap().command,
            Command::CheckConfig { connect: false }
        );
        let a = parse("--connect check-config -c /etc/wxsession/config.toml").unwrap();
        assert_eq!(a.command, Command::CheckConfig { connect: true });
        assert_eq!(a.config, Some(PathBuf::from("/etc/wxsession/config.toml")));
        assert!(parse("serve --connect").is_err());
        assert!(parse("check-config --force").is_err());
        assert_eq!(parse("apps list").unwrap().command, Command::AppsList);
        assert!(parse("apps").is_err());
    }
}

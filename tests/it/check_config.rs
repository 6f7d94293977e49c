//! `wxsession check-config [--connect]`, the real binary: the summary of a
//! valid configuration (never a secret), a bad one (exit 2 naming the key),
//! and each reachability outcome with its exit code (0, 3 Redis, 4 WeChat).

use crate::support::*;

/// A recognisable AppSecret, admin token and Redis password: none may be printed.
const SECRET: &str = "CHECK-CONFIG-APPSECRET-7f3a9c";
const TOKEN: &str = "CHECK-CONFIG-ADMIN-TOKEN-0123456789abcdef";
const REDIS_PASSWORD: &str = "CHECK-CONFIG-REDIS-PW-5e2b";

/// The binary with `env` and `args`, and a check that neither stdout nor stderr
/// holds a secret.
fn check(env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let (code, stdout, stderr) = run_binary(env, args);
    for secret in [SECRET, TOKEN, REDIS_PASSWORD, TEST_SECRET] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} printed:\n{stdout}\n{stderr}"
        );
    }
    (code, stdout, stderr)
}

fn config_file(text: &str) -> std::path::PathBuf {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "wxsession-check-{}-{}.toml",
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_valid_configuration_exits_0_with_a_summary_and_no_secret() {
    let file = config_file(
        "[server]\nbind = \"127.0.0.1:18080\"\n[wechat]\nappid = \"wx_check_app\"\n\
         [session]\nlocal_cache = true\n",
    );
    let redis_url = format!("redis://app:{REDIS_PASSWORD}@127.0.0.1:6390/2");
    let env = [
        ("WXSESSION_WECHAT_SECRET", SECRET),
        ("WXSESSION_ADMIN_TOKEN", TOKEN),
        ("WXSESSION_REDIS_URL", redis_url.as_str()),
    ];
    let (code, stdout, stderr) = check(&env, &["check-config", "-c", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    for shown in [
        "configuration: ok",
        file.to_str().unwrap(),
        "127.0.0.1:18080",
        "redis://app:***@127.0.0.1:6390/2",
        "wx_check_app",
        "https://api.weixin.qq.com",
        "WXSESSION_WECHAT_SECRET",
        "admin.token set",
    ] {
        assert!(stdout.contains(shown), "shows {shown}:\n{stdout}");
    }
    let line = |key: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap_or_else(|| panic!("a {key} line:\n{stdout}"))
            .to_string()
    };
    let app = line("app default:");
    assert!(
        app.contains("wechat wx_check_app at https://api.weixin.qq.com, secret set")
            && !app.contains("MOCK"),
        "{stdout}"
    );
    assert!(line("session.local_cache:").contains("on"), "{stdout}");
    // Nothing was reached without --connect.
    assert!(
        !stdout.lines().any(|l| l.starts_with("redis: ")),
        "{stdout}"
    );
    let _ = std::fs::remove_file(file);
}

#[test]
fn a_bad_configuration_exits_2_naming_the_key() {
    let file = config_file("[session]\nttl = 5\n");
    let appid = ("WXSESSION_WECHAT_APPID", "wx_check_app");
    let secret = ("WXSESSION_WECHAT_SECRET", SECRET);
    let path = file.to_str().unwrap();
    // (environment, arguments, the key the one line must name)
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<&'a str>, &'a str);
    let cases: [Case; 4] = [
        (vec![secret], vec!["check-config"], "wechat.appid"),
        (
            vec![appid, secret, ("WXSESSION_SESSION_TTL_SECS", "soon")],
            vec!["check-config", "--connect"],
            "session.ttl_secs",
        ),
        (
            vec![appid, secret],
            vec!["check-config", "--config", path],
            "session.ttl",
        ),
        (
            vec![appid, secret],
            vec!["check-config", "--config", "/no/such/wxsession.toml"],
            "/no/such/wxsession.toml",
        ),
    ];
    for (env, args, key) in cases {
        let (code, stdout, stderr) = check(&env, &args);
        assert_eq!(code, 2, "{key}: {stdout}{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(key), "names {key}: {stderr}");
        assert!(stdout.is_empty(), "no summary: {stdout}");
    }
    let _ = std::fs::remove_file(file);
}

/// The environment for Redis at `redis_url` and WeChat at `api_base`.
fn reachable_env<'a>(redis_url: &'a str, api_base: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("WXSESSION_WECHAT_APPID", "wx_check_app"),
        ("WXSESSION_WECHAT_SECRET", SECRET),
        ("WXSESSION_WECHAT_API_BASE", api_base),
        ("WXSESSION_WECHAT_ALLOW_INSECURE_API_BASE", "true"),
        ("WXSESSION_WECHAT_TIMEOUT_MS", "2000"),
        ("WXSESSION_REDIS_URL", redis_url),
        ("WXSESSION_REDIS_TIMEOUT_MS", "500"),
    ]
}

#[test]
fn connect_with_redis_and_wechat_answering_exits_0_and_sends_no_secret() {
    let redis = RedisServer::start_with(&[]);
    let wechat = WechatStandIn::start();
    // A password, so that its masking is seen on a live connection.
    let _: String = redis.cmd(&["CONFIG", "SET", "requirepass", REDIS_PASSWORD]);
    let url = format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{}/0", redis.port);
    let env = reachable_env(&url, &wechat.base);
    let (code, stdout, stderr) = check(&env, &["check-config", "--connect"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("redis: ok"), "{stdout}");
    assert!(
        stdout.contains("app default: api_base ok (HTTP "),
        "{stdout}"
    );
    assert!(stdout.contains("redis://:***@127.0.0.1:"), "{stdout}");
    // One plain GET of the base, without the AppSecret or anything else.
    let received = wechat.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].path, "/");
    assert!(received[0].query.is_empty(), "{received:?}");

    // A wrong password is Redis refusing: 3, and the reason says so.
    let wrong = format!("redis://:not-the-password@127.0.0.1:{}/0", redis.port);
    let env = reachable_env(&wrong, &wechat.base);
    let (code, stdout, stderr) = check(&env, &["check-config", "--connect"]);
    assert_eq!(code, 3, "{stdout}{stderr}");
    assert!(!stdout.contains("not-the-password"), "{stdout}");

    // In mock mode WeChat is not asked at all.
    let mut env = reachable_env(&url, "http://127.0.0.1:1");
    env.push(("WXSESSION_WECHAT_MOCK", "true"));
    let (code, stdout, stderr) = check(&env, &["check-config", "--connect"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("app default: api_base skipped"), "{stdout}");
    assert!(stdout.contains("MOCK: any code logs in"), "{stdout}");
}

#[test]
fn connect_with_redis_on_a_closed_port_exits_3() {
    let wechat = WechatStandIn::start();
    let url = format!("redis://127.0.0.1:{}/0", free_port());
    let env = reachable_env(&url, &wechat.base);
    let (code, stdout, stderr) = check(&env, &["check-config", "--connect"]);
    assert_eq!(code, 3, "{stdout}{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("redis: "))
        .unwrap_or_else(|| panic!("a redis line:\n{stdout}"));
    assert!(line.starts_with("redis: failed: "), "{line}");
    // WeChat is still checked and reported.
    assert!(stdout.contains("app default: api_base ok"), "{stdout}");
}

#[test]
fn connect_with_wechat_on_a_closed_port_exits_4() {
    let redis = RedisServer::start_with(&[]);
    let api_base = format!("http://127.0.0.1:{}", free_port());
    let url = redis.url();
    let env = reachable_env(&url, &api_base);
    let (code, stdout, stderr) = check(&env, &["check-config", "--connect"]);
    assert_eq!(code, 4, "{stdout}{stderr}");
    assert!(stdout.contains("redis: ok"), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("app default: api_base "))
        .unwrap_or_else(|| panic!("a wechat line:\n{stdout}"));
    assert!(
        line.starts_with("app default: api_base failed: cannot connect")
            && line.contains(&api_base),
        "{line}"
    );
}

#[test]
fn apps_list_prints_every_app_and_no_secret() {
    let env = [
        ("WXSESSION_WECHAT_APPID", "wx_check_app"),
        ("WXSESSION_WECHAT_SECRET", SECRET),
        ("WXSESSION_APPS_QQ_SHOP_PLATFORM", "qq"),
        ("WXSESSION_APPS_QQ_SHOP_APPID", "1109"),
        ("WXSESSION_APPS_QQ_SHOP_SECRET", TOKEN),
        ("WXSESSION_APPS_TT_PLATFORM", "douyin"),
        ("WXSESSION_APPS_TT_APPID", "tt77"),
        ("WXSESSION_APPS_TT_MOCK", "true"),
    ];
    let (code, stdout, stderr) = check(&env, &["apps", "list"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "default\twechat\twx_check_app\thttps://api.weixin.qq.com\n\
         qq_shop\tqq\t1109\thttps://api.q.qq.com\n\
         tt\tdouyin\ttt77\tmock\n"
    );
    // check-config names them too; two apps with one appid stop it (exit 2).
    let (code, stdout, _) = check(&env, &["check-config"]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("app qq_shop: qq 1109 at https://api.q.qq.com, secret set"),
        "{stdout}"
    );
    let mut clash = env.to_vec();
    clash.push(("WXSESSION_APPS_TT_APPID", "1109"));
    let (code, _, stderr) = check(&clash, &["apps", "list"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("apps.tt.appid"), "{stderr}");
    // An Alipay app's key files are read and checked before anything runs.
    let mut alipay = env.to_vec();
    alipay.extend([
        ("WXSESSION_APPS_PAY_PLATFORM", "alipay"),
        ("WXSESSION_APPS_PAY_APPID", "2021000000000009"),
        (
            "WXSESSION_APPS_PAY_PRIVATE_KEY_FILE",
            "/nonexistent/app-key.txt",
        ),
        (
            "WXSESSION_APPS_PAY_ALIPAY_PUBLIC_KEY_FILE",
            "/nonexistent/alipay-key.txt",
        ),
    ]);
    for args in [&["apps", "list"][..], &["check-config"][..]] {
        let (code, _, stderr) = check(&alipay, args);
        assert_eq!(code, 2, "{stderr}");
        assert!(
            stderr.contains("apps.pay") && stderr.contains("/nonexistent/app-key.txt"),
            "{stderr}"
        );
    }
}

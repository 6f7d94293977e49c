//! Unit tests of the configuration: defaults, both sources, every error.

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const MINIMAL: &str = "[wechat]\nappid = \"wx1\"\nsecret = \"s\"\n";

#[test]
fn defaults_match_the_contract() {
    let c = Config::from_sources(MINIMAL, env(&[])).unwrap();
    assert_eq!(c.server.bind, "127.0.0.1:8080");
    assert_eq!(c.redis.url.expose(), "redis://127.0.0.1:6379/0");
    assert_eq!(c.redis.key_prefix, "wxsess:");
    assert_eq!(c.wechat.api_base, "https://api.weixin.qq.com");
    assert_eq!(c.wechat.timeout_ms, 5000);
    assert!(!c.wechat.mock);
    assert_eq!(c.session.ttl_secs, 7200);
    assert!(c.session.sliding);
    assert_eq!(c.session.max_lifetime_secs, 2_592_000);
    assert_eq!(c.session.header, "sessionid");
}

#[test]
fn environment_overrides_the_file() {
    let c = Config::from_sources(
        MINIMAL,
        env(&[
            ("WXSESSION_REDIS_URL", "redis://127.0.0.1:7000/1"),
            ("WXSESSION_SESSION_TTL_SECS", "60"),
            ("WXSESSION_REDIS_KEY_PREFIX", "x:"),
            ("WXSESSION_SESSION_SLIDING", "false"),
            ("PATH", "/bin"),
        ]),
    )
    .unwrap();
    assert_eq!(c.redis.url.expose(), "redis://127.0.0.1:7000/1");
    assert_eq!(c.session.ttl_secs, 60);
    assert_eq!(c.redis.key_prefix, "x:");
    assert!(!c.session.sliding);
}

#[test]
fn errors_name_the_key() {
    let err = |toml: &str, e: &[(&str, &str)]| Config::from_sources(toml, env(e)).unwrap_err();
    assert_eq!(err("", &[]).key, "wechat.appid");
    assert_eq!(err("[wechat]\nappid = \"wx\"\n", &[]).key, "wechat.secret");
    assert_eq!(
        err(MINIMAL, &[("WXSESSION_SESSION_TTL_SECS", "0")]).key,
        "session.ttl_secs"
    );
    assert!(err(MINIMAL, &[("WXSESSION_SESSION_TTL_SECS", "soon")])
        .key
        .starts_with("session.ttl_secs"));
    assert_eq!(
        err(&format!("{MINIMAL}[session]\nttl = 5\n"), &[]).key,
        "session.ttl"
    );
    assert!(err("[wechat\n", &[])
        .to_string()
        .starts_with("configuration error: config.toml"));
    // mock mode needs no secret
    Config::from_sources("[wechat]\nappid = \"wx\"\nmock = true\n", env(&[])).unwrap();
}

#[test]
fn debug_output_hides_secrets() {
    let c = Config::from_sources(
        "[wechat]\nappid = \"wx1\"\nsecret = \"TOPSECRET\"\n[redis]\nurl = \"redis://:pw@127.0.0.1/0\"\n",
        env(&[]),
    )
    .unwrap();
    let printed = format!("{c:?}");
    assert!(
        !printed.contains("TOPSECRET") && !printed.contains(":pw@"),
        "{printed}"
    );
}

#[test]
fn the_shipped_config_toml_holds_only_keys_and_their_defaults() {
    let shipped = Config::from_sources(
        include_str!("../../config.toml"),
        env(&[
            ("WXSESSION_WECHAT_APPID", "wx1"),
            ("WXSESSION_WECHAT_SECRET", "s"),
        ]),
    )
    .unwrap();
    let defaults = Config::from_sources(MINIMAL, env(&[])).unwrap();
    assert_eq!(format!("{shipped:?}"), format!("{defaults:?}"));
}

#[test]
fn touch_interval_defaults_to_a_tenth_of_the_ttl_and_at_least_a_second() {
    let mut session = Config::default().session;
    assert_eq!(session.touch_interval(), Duration::from_secs(720));
    session.ttl_secs = 5;
    assert_eq!(session.touch_interval(), Duration::from_secs(1));
    session.touch_interval_secs = Some(30);
    assert_eq!(session.touch_interval(), Duration::from_secs(30));
    session.touch_interval_secs = Some(0);
    assert_eq!(session.touch_interval(), Duration::from_secs(1));
}

#[test]
fn environment_overrides_a_file_value_of_every_type() {
    let file = format!(
        "{MINIMAL}[server]\nbind = \"0.0.0.0:80\"\nworkers = 2\n\
         [session]\nhash_ids = true\ntouch_interval_secs = 5\n\
         [admin]\ntoken = \"file-token-0123456789abcdef0123456789\"\nbind = \"127.0.0.1:9000\"\n"
    );
    let c = Config::from_sources(
        &file,
        env(&[
            ("WXSESSION_SERVER_BIND", "127.0.0.1:81"),
            ("WXSESSION_SERVER_WORKERS", "3"),
            ("WXSESSION_SESSION_HASH_IDS", "false"),
            ("WXSESSION_SESSION_TOUCH_INTERVAL_SECS", "7"),
            (
                "WXSESSION_ADMIN_TOKEN",
                "env-token-0123456789abcdef0123456789",
            ),
            ("WXSESSION_ADMIN_BIND", "127.0.0.1:9001"),
        ]),
    )
    .unwrap();
    assert_eq!(c.server.bind, "127.0.0.1:81");
    assert_eq!(c.server.workers, 3);
    assert!(!c.session.hash_ids);
    assert_eq!(c.session.touch_interval_secs, Some(7));
    assert_eq!(
        c.admin.token.as_ref().map(Secret::expose),
        Some("env-token-0123456789abcdef0123456789")
    );
    assert_eq!(c.admin.bind.as_deref(), Some("127.0.0.1:9001"));

    // An optional key the file leaves unset is set by the environment alone,
    // and booleans keep their 1/0 spelling.
    let c = Config::from_sources(
        MINIMAL,
        env(&[
            ("WXSESSION_SESSION_TOUCH_INTERVAL_SECS", " 9 "),
            ("WXSESSION_SESSION_SLIDING", "0"),
            ("WXSESSION_WECHAT_MOCK", "1"),
        ]),
    )
    .unwrap();
    assert_eq!(c.session.touch_interval_secs, Some(9));
    assert!(!c.session.sliding && c.wechat.mock);
}

#[test]
fn a_numeric_looking_value_stays_a_string_where_a_string_is_wanted() {
    let c = Config::from_sources(
        "[wechat]\nsecret = \"s\"\n",
        env(&[
            ("WXSESSION_WECHAT_APPID", "12345"),
            ("WXSESSION_ADMIN_TOKEN", "00700700700700700700700700700700"),
            ("WXSESSION_REDIS_KEY_PREFIX", "true"),
        ]),
    )
    .unwrap();
    assert_eq!(c.wechat.appid, "12345");
    assert_eq!(
        c.admin.token.as_ref().map(Secret::expose),
        Some("00700700700700700700700700700700")
    );
    assert_eq!(c.redis.key_prefix, "true");
    // The file is read the same way, in both directions.
    let c = Config::from_sources(
        "[wechat]\nappid = 12345\nsecret = \"s\"\n[session]\nttl_secs = \"60\"\n",
        env(&[]),
    )
    .unwrap();
    assert_eq!((c.wechat.appid.as_str(), c.session.ttl_secs), ("12345", 60));
}

#[test]
fn values_keep_their_canonical_form() {
    let c = Config::from_sources(
        "[wechat]\nappid = \" wx1 \"\nsecret = \"s\"\napi_base = \"https://127.0.0.1:9/\"\n\
         [session]\nheader = \" X-Session \"\n[redis]\nkey_prefix = \" p: \"\n\
         [admin]\ntoken = \"\"\n",
        env(&[("WXSESSION_ADMIN_BIND", "")]),
    )
    .unwrap();
    assert_eq!(c.wechat.appid, "wx1");
    assert_eq!(c.wechat.api_base, "https://127.0.0.1:9");
    assert_eq!(c.session.header, "x-session");
    assert_eq!(c.redis.key_prefix, " p: ");
    assert!(c.admin.token.is_none() && c.admin.bind.is_none());
}

#[test]
fn an_unknown_key_is_an_error_naming_it_in_the_file_and_the_environment() {
    let err = |toml: &str, e: &[(&str, &str)]| Config::from_sources(toml, env(e)).unwrap_err();
    let e = err(&format!("{MINIMAL}[session]\nttl = 5\n"), &[]);
    assert_eq!(
        (e.key.as_str(), e.message.as_str()),
        ("session.ttl", "unknown key")
    );
    let e = err(MINIMAL, &[("WXSESSION_SESSION_TTL", "5")]);
    assert_eq!(e.key, "session.ttl (WXSESSION_SESSION_TTL)");
    assert_eq!(e.message, "unknown key");
    assert_eq!(
        err(&format!("{MINIMAL}[sesion]\nttl_secs = 5\n"), &[]).key,
        "sesion.ttl_secs"
    );
    assert_eq!(
        err(MINIMAL, &[("WXSESSION_FOO_BAR", "1")]).key,
        "foo.bar (WXSESSION_FOO_BAR)"
    );
    assert_eq!(err(MINIMAL, &[("WXSESSION_FOO", "1")]).key, "WXSESSION_FOO");
    assert_eq!(
        err(&format!("appid = \"wx1\"\n{MINIMAL}"), &[]).to_string(),
        "configuration error: appid: expected a [section]"
    );
}

#[test]
fn a_value_of_the_wrong_type_is_an_error_naming_the_key() {
    let err = |toml: &str, e: &[(&str, &str)]| {
        let e = Config::from_sources(&format!("{MINIMAL}{toml}"), env(e)).unwrap_err();
        assert!(!e.to_string().contains('\n'), "one line: {e}");
        (e.key, e.message)
    };
    let pair = |key: &str, message: &str| (key.to_string(), message.to_string());
    assert_eq!(
        err("[session]\nttl_secs = \"soon\"\n", &[]),
        pair(
            "session.ttl_secs",
            "expected a non-negative integer, got \"soon\""
        )
    );
    assert_eq!(
        err("[session]\nttl_secs = -1\n", &[]),
        pair(
            "session.ttl_secs",
            "expected a non-negative integer, got \"-1\""
        )
    );
    assert_eq!(
        err("[session]\nsliding = \"yes\"\n", &[]),
        pair("session.sliding", "expected true or false, got \"yes\"")
    );
    assert_eq!(
        err("[server]\nbind = [\"127.0.0.1:1\"]\n", &[]),
        pair("server.bind", "expected a string, an integer or a boolean")
    );
    assert_eq!(
        err("[server]\nworkers = 1.5\n", &[]),
        pair(
            "server.workers",
            "expected a string, an integer or a boolean"
        )
    );
    assert_eq!(
        err("", &[("WXSESSION_SESSION_TTL_SECS", "soon")]),
        pair(
            "session.ttl_secs (WXSESSION_SESSION_TTL_SECS)",
            "expected a non-negative integer, got \"soon\""
        )
    );
}

#[test]
fn debug_output_hides_secrets_from_every_source() {
    let c = Config::from_sources(
        "[wechat]\nappid = \"wx1\"\nsecret = \"FILE-SECRET\"\n[admin]\ntoken = \"FILE-TOKEN-0123456789abcdef0123456789\"\n",
        env(&[
            ("WXSESSION_REDIS_URL", "redis://:ENV-PASSWORD@127.0.0.1/0"),
            ("WXSESSION_ADMIN_TOKEN", "ENV-TOKEN-0123456789abcdef0123456789"),
        ]),
    )
    .unwrap();
    let printed = format!("{c:?} {:?}", c.session);
    for secret in ["FILE-SECRET", "FILE-TOKEN", "ENV-PASSWORD", "ENV-TOKEN"] {
        assert!(!printed.contains(secret), "{secret} in {printed}");
    }
    // Nor does an error about a secret key repeat its value.
    let e = Config::from_sources(
        MINIMAL,
        env(&[("WXSESSION_REDIS_URL", "http://:ENV-PASSWORD@x")]),
    )
    .unwrap_err();
    assert!(!format!("{e} {e:?}").contains("ENV-PASSWORD"), "{e}");
}

#[test]
fn an_insecure_api_base_or_a_short_admin_token_is_refused() {
    let key = |e: &[(&str, &str)]| Config::from_sources(MINIMAL, env(e)).map_err(|e| e.key);
    let http = ("WXSESSION_WECHAT_API_BASE", "http://127.0.0.1:9");
    assert_eq!(key(&[http]).unwrap_err(), "wechat.api_base");
    assert!(key(&[http, ("WXSESSION_WECHAT_ALLOW_INSECURE_API_BASE", "true")]).is_ok());
    assert!(key(&[http, ("WXSESSION_WECHAT_MOCK", "true")]).is_ok());
    let token = |t: &'static str| [("WXSESSION_ADMIN_TOKEN", t)];
    assert_eq!(
        key(&token("0123456789abcdef0123456789abcde")).unwrap_err(),
        "admin.token"
    );
    assert!(key(&token("0123456789abcdef0123456789abcdef")).is_ok());
}

#[test]
fn redis_urls_and_tls_files_that_cannot_work_are_refused_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("wxsession-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let not_pem = write("not.pem", "hello\n");
    let missing = dir.join("missing.pem").display().to_string();
    let err = |pairs: &[(&str, &str)]| Config::from_sources(MINIMAL, env(pairs)).unwrap_err();
    let tls = ("WXSESSION_REDIS_URL", "rediss://127.0.0.1:6380/0");

    let e = err(&[tls, ("WXSESSION_REDIS_TLS_CA_FILE", &missing)]);
    assert_eq!(e.key, "redis.tls_ca_file");
    assert!(e.message.contains("cannot read"), "{e}");
    let e = err(&[tls, ("WXSESSION_REDIS_TLS_CA_FILE", &not_pem)]);
    assert_eq!(e.key, "redis.tls_ca_file");
    assert!(e.message.contains("no PEM certificate"), "{e}");
    let e = err(&[tls, ("WXSESSION_REDIS_TLS_CERT_FILE", &not_pem)]);
    assert_eq!(e.key, "redis.tls_key_file", "a certificate without its key");
    let e = err(&[tls, ("WXSESSION_REDIS_TLS_KEY_FILE", &not_pem)]);
    assert_eq!(
        e.key, "redis.tls_cert_file",
        "a key without its certificate"
    );
    assert_eq!(
        err(&[("WXSESSION_REDIS_URL", "redis://a:1,redis://b:2")]).key,
        "redis.url",
        "several addresses without cluster or sentinel_master"
    );
    assert_eq!(
        err(&[
            ("WXSESSION_REDIS_URL", "redis://a:1,rediss://b:2"),
            ("WXSESSION_REDIS_CLUSTER", "true")
        ])
        .key,
        "redis.url",
        "mixed schemes"
    );
    assert_eq!(
        err(&[
            ("WXSESSION_REDIS_SENTINEL_MASTER", "mymaster"),
            ("WXSESSION_REDIS_CLUSTER", "true")
        ])
        .key,
        "redis.sentinel_master"
    );
    let e = err(&[("WXSESSION_REDIS_URL", "redis://:hunter2@[bad/0")]);
    assert_eq!(e.key, "redis.url");
    assert!(!e.to_string().contains("hunter2"), "{e}");

    let sentinels = Config::from_sources(
        MINIMAL,
        env(&[
            (
                "WXSESSION_REDIS_URL",
                "redis://127.0.0.1:26379, redis://127.0.0.1:26380",
            ),
            ("WXSESSION_REDIS_SENTINEL_MASTER", " mymaster "),
        ]),
    )
    .unwrap();
    assert_eq!(sentinels.redis.sentinel_master.as_deref(), Some("mymaster"));
    assert_eq!(sentinels.redis.addresses().len(), 2);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn trusted_proxies_are_a_list_in_the_file_and_comma_separated_in_the_environment() {
    let from_file = Config::from_sources(
        &format!("{MINIMAL}[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n"),
        env(&[]),
    )
    .unwrap();
    let from_env = Config::from_sources(
        MINIMAL,
        env(&[("WXSESSION_SERVER_TRUSTED_PROXIES", " 10.0.0.0/8, ::1 ,")]),
    )
    .unwrap();
    let expected: Vec<IpRange> = vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()];
    assert_eq!(from_file.server.trusted_proxies, expected);
    assert_eq!(from_env.server.trusted_proxies, expected);
    let empty = Config::from_sources(MINIMAL, env(&[("WXSESSION_SERVER_TRUSTED_PROXIES", "")]));
    assert!(empty.unwrap().server.trusted_proxies.is_empty());
    let e = Config::from_sources(
        MINIMAL,
        env(&[("WXSESSION_SERVER_TRUSTED_PROXIES", "10.0.0.0/8,nginx")]),
    )
    .unwrap_err();
    assert!(
        e.key.starts_with("server.trusted_proxies")
            && e.message.contains("\"nginx\" is not an IP address"),
        "{e}"
    );
}

const TWO_APPS: &str = "[wechat]\nappid = \"wx1\"\nsecret = \"s\"\n\
[apps.shop_2]\nplatform = \"qq\"\nappid = \"1112\"\nsecret = \"qs\"\n\
[apps.tt]\nplatform = \"douyin\"\nappid = \"tt3\"\nsecret = \"ds\"\napi_base = \"https://sandbox.example/\"\n";

#[test]
fn apps_are_wechat_as_default_then_each_table_by_name() {
    let c = Config::from_sources(TWO_APPS, env(&[])).unwrap();
    let summary: Vec<_> = c
        .apps()
        .iter()
        .map(|a| {
            (
                a.name.as_str(),
                a.platform,
                a.appid.as_str(),
                a.api_base.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "default",
                Platform::Wechat,
                "wx1",
                "https://api.weixin.qq.com"
            ),
            ("shop_2", Platform::Qq, "1112", "https://api.q.qq.com"),
            ("tt", Platform::Douyin, "tt3", "https://sandbox.example"),
        ]
    );
    // Without [wechat]'s appid there is no default app; an app declared by the
    // environment alone counts, with a name holding `_`.
    let c = Config::from_sources(
        "",
        env(&[
            ("WXSESSION_APPS_MY_SHOP_PLATFORM", "wecom"),
            ("WXSESSION_APPS_MY_SHOP_APPID", "wxcorpapp"),
            ("WXSESSION_APPS_MY_SHOP_SECRET", "corpsecret"),
            ("WXSESSION_APPS_MY_SHOP_CORPID", "ww123"),
            ("WXSESSION_APPS_MY_SHOP_API_BASE", "https://qy.example"),
        ]),
    )
    .unwrap();
    let app = &c.apps()[0];
    assert_eq!(c.apps().len(), 1);
    assert_eq!(
        (
            app.name.as_str(),
            app.platform,
            app.corpid.as_deref(),
            app.secret.expose()
        ),
        ("my_shop", Platform::Wecom, Some("ww123"), "corpsecret")
    );
    // The environment overrides a table's key.
    let c = Config::from_sources(TWO_APPS, env(&[("WXSESSION_APPS_TT_APPID", "tt9")])).unwrap();
    assert_eq!(c.apps()[2].appid, "tt9");
    assert!(!format!("{c:?}").contains("\"qs\""), "no secret in Debug");
}

#[test]
fn apps_that_cannot_work_stop_the_start_naming_the_key() {
    let err = |toml: &str, e: &[(&str, &str)]| {
        let e = Config::from_sources(toml, env(e)).unwrap_err();
        assert!(!e.to_string().contains('\n'), "one line: {e}");
        e.key
    };
    let app = |body: &str| format!("[apps.a]\n{body}");
    assert_eq!(err("", &[]), "wechat.appid");
    assert_eq!(
        err(&app("appid = \"x\"\nsecret = \"s\"\n"), &[]),
        "apps.a.platform"
    );
    assert_eq!(
        err(&app("platform = \"line\"\nappid = \"x\"\n"), &[]),
        "apps.a.platform"
    );
    assert_eq!(
        err(&app("platform = \"qq\"\nsecret = \"s\"\n"), &[]),
        "apps.a.appid"
    );
    assert_eq!(
        err(&app("platform = \"qq\"\nappid = \"x\"\n"), &[]),
        "apps.a.secret"
    );
    assert!(Config::from_sources(
        &app("platform = \"qq\"\nappid = \"x\"\nmock = true\n"),
        env(&[])
    )
    .is_ok());
    assert_eq!(
        err(
            &app("platform = \"wecom\"\nappid = \"x\"\nsecret = \"s\"\n"),
            &[]
        ),
        "apps.a.corpid"
    );
    assert_eq!(
        err(&app("platform = \"alipay\"\nappid = \"x\"\n"), &[]),
        "apps.a.private_key_file"
    );
    assert_eq!(
        err(
            &app("platform = \"alipay\"\nappid = \"x\"\nprivate_key_file = \"/k\"\n"),
            &[]
        ),
        "apps.a.alipay_public_key_file"
    );
    // An appid names keys: nothing that could join two names into one.
    for bad in ["a/b", "a:b", "a}b", "a b", &"x".repeat(65)] {
        assert_eq!(
            err(
                &app(&format!(
                    "platform = \"qq\"\nappid = \"{bad}\"\nmock = true\n"
                )),
                &[]
            ),
            "apps.a.appid",
            "{bad}"
        );
    }
    // `default` is [wechat]'s app's name, set or not.
    assert_eq!(
        err(
            "[apps.default]\nplatform = \"qq\"\nappid = \"x\"\nmock = true\n",
            &[]
        ),
        "apps.default"
    );
    assert_eq!(
        err(&app("platform = \"qq\"\nappid = \"x\"\nsecret = \"s\"\napi_base = \"http://127.0.0.1:9\"\n"), &[]),
        "apps.a.api_base"
    );
    assert_eq!(
        err(
            &app("platform = \"qq\"\nappid = \"x\"\nsecret = \"s\"\nappsecret = \"s\"\n"),
            &[]
        ),
        "apps.a.appsecret"
    );
    assert_eq!(
        err(
            "[apps.Shop]\nplatform = \"qq\"\nappid = \"x\"\nsecret = \"s\"\n",
            &[]
        ),
        "apps.Shop"
    );
    assert_eq!(
        err(
            &format!("{MINIMAL}[apps.default]\nplatform = \"qq\"\nappid = \"x\"\nsecret = \"s\"\n"),
            &[]
        ),
        "apps.default"
    );
    // Two apps with one appid.
    let e = Config::from_sources(
        &format!("{MINIMAL}[apps.b]\nplatform = \"qq\"\nappid = \"wx1\"\nsecret = \"s\"\n"),
        env(&[]),
    )
    .unwrap_err();
    assert_eq!(e.key, "apps.b.appid");
    assert!(e.message.contains("wechat.appid"), "{e}");
    // A variable that names no app key.
    assert_eq!(
        err(MINIMAL, &[("WXSESSION_APPS_SHOP", "1")]),
        "WXSESSION_APPS_SHOP"
    );
    assert_eq!(
        err(MINIMAL, &[("WXSESSION_APPS_SHOP_COLOUR", "red")]),
        "WXSESSION_APPS_SHOP_COLOUR"
    );
    assert_eq!(
        err(MINIMAL, &[("WXSESSION_APPS_SHOP_PLATFORM", "line")]),
        "apps.shop.platform (WXSESSION_APPS_SHOP_PLATFORM)"
    );
}

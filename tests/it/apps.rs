//! Many apps, five platforms: one deployment with an app of each platform
//! (`[wechat]` as `default`, then QQ, Douyin, WeCom and Alipay apps), each
//! logging in through its own platform's stand-in; `appid` choosing the app;
//! keys of different apps never meeting; routes a platform has no API for.

use crate::support::*;

const TOKEN: &str = "admin-token-0123456789abcdef01234567";
const QQ: &str = "1109876543";
const DOUYIN: &str = "tt0a1b2c3d";
const WECOM: &str = "wx_wecom_app";
const CORP: &str = "ww_test_corp";
const ALIPAY: &str = "2021000000000001";

/// The variables of an app `name` on `platform` with `appid` at `base`.
fn app_env(name: &str, platform: &str, appid: &str, base: &str) -> Vec<(String, String)> {
    let var = |key: &str| format!("WXSESSION_APPS_{}_{key}", name.to_uppercase());
    vec![
        (var("PLATFORM"), platform.into()),
        (var("APPID"), appid.into()),
        (var("SECRET"), format!("{name}-SECRET-0f3c")),
        (var("API_BASE"), base.into()),
    ]
}

/// A deployment with one app of each platform, and what it talks to.
struct FivePlatforms {
    h: Harness,
    alipay: AlipayStandIn,
    _keys: AlipayKeyFiles,
}

fn five_platforms(extra: &[(&str, &str)]) -> FivePlatforms {
    let keys = AlipayKeyFiles::generate();
    let alipay = AlipayStandIn::start(&keys);
    let h = Harness::bare();
    h.wechat.set_wecom_corp(CORP, "corp-SECRET-0f3c");
    let base = h.wechat.base.clone();
    let mut env = Vec::new();
    env.extend(app_env("qq_shop", "qq", QQ, &base));
    env.extend(app_env("tt", "douyin", DOUYIN, &base));
    env.extend(app_env("corp", "wecom", WECOM, &base));
    env.push(("WXSESSION_APPS_CORP_CORPID".into(), CORP.into()));
    env.push((
        "WXSESSION_APPS_CORP_SECRET".into(),
        "corp-SECRET-0f3c".into(),
    ));
    env.extend(app_env("pay", "alipay", ALIPAY, &alipay.base));
    env.push((
        "WXSESSION_APPS_PAY_PRIVATE_KEY_FILE".into(),
        keys.app_private_key.clone(),
    ));
    env.push((
        "WXSESSION_APPS_PAY_ALIPAY_PUBLIC_KEY_FILE".into(),
        keys.alipay_public_key.clone(),
    ));
    env.push(("admin.token".into(), TOKEN.into()));
    let mut pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    pairs.extend_from_slice(extra);
    let server = TestServer::start(&h.config(&pairs));
    let mut h = h;
    h.servers.push(server);
    FivePlatforms {
        h,
        alipay,
        _keys: keys,
    }
}

async fn login_to(server: &impl Instance, appid: &str, code: &str) -> (u16, serde_json::Value) {
    send(
        client()
            .post(server.url("/login"))
            .json(&serde_json::json!({ "code": code, "appid": appid })),
    )
    .await
}

async fn session_of(server: &impl Instance, appid: &str, code: &str) -> String {
    let (status, body) = login_to(server, appid, code).await;
    assert_eq!(status, 200, "{appid} {code}: {body}");
    body["sessionid"].as_str().unwrap().to_string()
}

#[actix_web::test]
async fn one_app_of_each_platform_logs_in_through_its_own_platform() {
    let f = five_platforms(&[]);
    let h = &f.h;
    let cases = [
        ("wx_test_app", "union:ann", "wechat", "ann"),
        (QQ, "ok:qin", "qq", "qin"),
        (DOUYIN, "union:dou", "douyin", "dou"),
        (WECOM, "ok:wei", "wecom", "wei"),
        (ALIPAY, "union:2088001", "alipay", "open-2088001"),
    ];
    for (appid, code, platform, openid) in cases {
        let id = session_of(h, appid, code).await;
        let (status, me) = h.get_session(&id).await;
        assert_eq!(status, 200, "{me}");
        assert_eq!(
            (
                me["appid"].as_str(),
                me["platform"].as_str(),
                me["openid"].as_str()
            ),
            (Some(appid), Some(platform), Some(openid)),
            "{me}"
        );
        // /auth names the app to the proxy.
        let auth = client()
            .get(h.url("/auth"))
            .header("sessionid", &id)
            .send()
            .await
            .unwrap();
        assert_eq!(auth.status(), 204);
        assert_eq!(auth.headers()["x-wx-appid"], appid);
        assert_eq!(auth.headers()["x-wx-openid"], openid);
    }
    // Each platform's own API was asked, with its own credentials.
    let douyin = h
        .wechat
        .received()
        .into_iter()
        .find(|r| r.path == "/api/apps/v2/jscode2session")
        .expect("Douyin was asked");
    assert_eq!(douyin.json()["appid"], DOUYIN);
    assert_eq!(douyin.json()["secret"], "tt-SECRET-0f3c");
    let qq = h
        .wechat
        .received()
        .into_iter()
        .find(|r| r.param("appid") == Some(QQ))
        .expect("QQ's jscode2session was asked");
    assert_eq!(qq.param("secret"), Some("qq_shop-SECRET-0f3c"));
    assert_eq!(h.wechat.calls_to("/cgi-bin/gettoken"), 1);
    let wecom = h
        .wechat
        .received()
        .into_iter()
        .find(|r| r.path == "/cgi-bin/miniprogram/jscode2session")
        .unwrap();
    assert!(wecom
        .param("access_token")
        .unwrap()
        .starts_with("WECOM-TOKEN-"));
    assert!(!format!("{wecom:?}").contains("corp-SECRET"), "{wecom:?}");
    assert_eq!(f.alipay.calls(), 1);
    // WeCom: the userid is the openid, and the session knows its corp.
    let id = session_of(h, WECOM, "ok:wei~2").await;
    assert_eq!(h.get_session(&id).await.1["corpid"], CORP);
    // Alipay's union_id is the session's unionid; it has no session_key.
    let id = session_of(h, ALIPAY, "union:2088002").await;
    assert_eq!(h.get_session(&id).await.1["unionid"], "u-2088002");
    let user: std::collections::HashMap<String, String> = h
        .redis
        .cmd(&["HGETALL", &format!("wxsess:user:{{{ALIPAY}/open-2088002}}")]);
    assert!(!user.contains_key("session_key"), "{user:?}");
}

#[actix_web::test]
async fn appid_chooses_the_app_and_an_unknown_one_is_400() {
    let f = five_platforms(&[]);
    let h = &f.h;
    let calls = h.wechat.received().len();
    for body in [
        serde_json::json!({"code": "ok:x"}),
        serde_json::json!({"code": "ok:x", "appid": "wx_nobody"}),
        serde_json::json!({"code": "ok:x", "appid": ""}),
    ] {
        let (status, answer) = send(client().post(h.url("/login")).json(&body)).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_error(&answer, "unknown_app");
    }
    for body in [
        serde_json::json!({"code": "ok:x", "appid": null}),
        serde_json::json!({"code": "ok:x", "appid": 5}),
    ] {
        let (status, answer) = send(client().post(h.url("/login")).json(&body)).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_error(&answer, "invalid_request");
    }
    assert_eq!(
        h.wechat.received().len(),
        calls,
        "nothing reached a platform"
    );
    assert_eq!(f.alipay.calls(), 0);
    assert!(h.redis.live_session_keys().is_empty());
    assert!(h
        .metrics()
        .await
        .contains("wxsession_logins_total{outcome=\"unknown_app\"} 3"));
}

#[actix_web::test]
async fn one_openid_in_two_apps_is_two_users() {
    let f = five_platforms(&[]);
    let h = &f.h;
    let wechat = session_of(h, "wx_test_app", "ok:sam").await;
    let qq = session_of(h, QQ, "ok:sam").await;
    // The default app keeps the key names from before apps; the other is apart.
    let members = |key: &str| h.redis.cmd::<Vec<String>>(&["ZRANGE", key, "0", "-1"]);
    assert_eq!(members("wxsess:user:{sam}:sessions"), vec![wechat.clone()]);
    assert_eq!(
        members(&format!("wxsess:user:{{{QQ}/sam}}:sessions")),
        vec![qq.clone()]
    );
    // Per-user admin routes take ?appid= (several apps: it must be given).
    let admin = |req: reqwest::RequestBuilder| req.bearer_auth(TOKEN);
    let (status, body) = send(admin(client().get(h.url("/admin/users/sam/sessions")))).await;
    assert_eq!(status, 400);
    assert_error(&body, "unknown_app");
    let (status, body) = send(admin(
        client().get(h.url(&format!("/admin/users/sam/sessions?appid={QQ}"))),
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sessions"][0]["sessionid"], qq);
    assert_eq!(body["sessions"][0]["appid"], QQ);
    // Banning sam in QQ leaves sam in WeChat alone.
    let (status, _) = send(
        admin(client().put(h.url(&format!("/admin/users/sam/ban?appid={QQ}"))))
            .json(&serde_json::json!({})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(h.get_session(&qq).await.0, 403);
    assert_eq!(h.get_session(&wechat).await.0, 200);
    let (status, body) = login_to(h, QQ, "ok:sam~2").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(login_to(h, "wx_test_app", "ok:sam~3").await.0, 200);
    // The CLI does the same with --appid.
    let (code, stdout, stderr) = run_cli(
        &h.redis,
        &[
            ("WXSESSION_APPS_QQ_SHOP_PLATFORM", "qq"),
            ("WXSESSION_APPS_QQ_SHOP_APPID", QQ),
            ("WXSESSION_APPS_QQ_SHOP_MOCK", "true"),
        ],
        &["sessions", "list", "sam", "--appid", "wx_test_app"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    let (code, _, stderr) = run_cli(
        &h.redis,
        &[
            ("WXSESSION_APPS_QQ_SHOP_PLATFORM", "qq"),
            ("WXSESSION_APPS_QQ_SHOP_APPID", QQ),
            ("WXSESSION_APPS_QQ_SHOP_MOCK", "true"),
        ],
        &["sessions", "list", "sam"],
    );
    assert_eq!(code, 2, "several apps: --appid is needed");
    assert!(stderr.contains("--appid"), "{stderr}");
}

#[actix_web::test]
async fn each_platforms_errors_keep_the_contracts_codes() {
    let f = five_platforms(&[]);
    let h = &f.h;
    for (appid, code, status, error) in [
        (QQ, "err:40029", 401, "invalid_code"),
        (QQ, "err:45011", 429, "rate_limited"),
        (DOUYIN, "err:40018", 401, "invalid_code"),
        (DOUYIN, "err:-1", 503, "wechat_busy"),
        (DOUYIN, "err:40015", 502, "wechat_error"),
        (WECOM, "err:40029", 401, "invalid_code"),
        (WECOM, "err:45009", 429, "rate_limited"),
        (WECOM, "othercorp:eve", 502, "wechat_error"),
        (ALIPAY, "invalid", 401, "invalid_code"),
        (ALIPAY, "busy", 503, "wechat_busy"),
        (ALIPAY, "unsigned", 502, "wechat_error"),
        (ALIPAY, "badsign", 502, "wechat_error"),
    ] {
        let (got, body) = login_to(h, appid, code).await;
        assert_eq!(got, status, "{appid} {code}: {body}");
        assert_error(&body, error);
    }
    assert!(h.redis.live_session_keys().is_empty());
}

#[actix_web::test]
async fn routes_a_platform_has_no_api_for_are_unsupported_platform() {
    let f = five_platforms(&[]);
    let h = &f.h;
    let userinfo = serde_json::json!({"rawData": "{}", "signature": "0".repeat(40),
        "encryptedData": "AAAAAAAAAAAAAAAAAAAAAA==", "iv": "AAAAAAAAAAAAAAAAAAAAAA=="});
    let legacy = serde_json::json!({"encryptedData": "AAAAAAAAAAAAAAAAAAAAAA==", "iv": "AAAAAAAAAAAAAAAAAAAAAA=="});
    let by_code = serde_json::json!({"code": "num"});
    let calls = h.wechat.received().len();
    // (app, route, body or None for GET /session/check)
    let unsupported: [(&str, &str, Option<&serde_json::Value>); 9] = [
        (QQ, "/session/phone", Some(&by_code)),
        (QQ, "/session/phone", Some(&legacy)),
        (QQ, "/session/check", None),
        (DOUYIN, "/session/phone", Some(&by_code)),
        (DOUYIN, "/session/check", None),
        (WECOM, "/session/userinfo", Some(&userinfo)),
        (WECOM, "/session/check", None),
        (ALIPAY, "/session/userinfo", Some(&userinfo)),
        (ALIPAY, "/session/phone", Some(&legacy)),
    ];
    let mut ids = std::collections::HashMap::new();
    for (appid, code) in [
        (QQ, "ok:q1"),
        (DOUYIN, "ok:d1"),
        (WECOM, "ok:w1"),
        (ALIPAY, "ok:2088003"),
    ] {
        ids.insert(appid, session_of(h, appid, code).await);
    }
    let calls_after_logins = h.wechat.received().len();
    assert!(calls_after_logins > calls);
    for (appid, route, body) in unsupported {
        let id = &ids[appid];
        let (status, answer) = match body {
            Some(body) => h.post_as(id, route, body).await,
            None => send(client().get(h.url(route)).header("sessionid", id)).await,
        };
        assert_eq!(status, 400, "{appid} {route}: {answer}");
        assert_error(&answer, "unsupported_platform");
    }
    assert_eq!(
        h.wechat.received().len(),
        calls_after_logins,
        "no platform was asked"
    );
    // The access_token route serves a WeChat or WeCom app's, by ?appid=.
    let admin = |path: &str| client().get(h.url(path)).bearer_auth(TOKEN);
    let (status, body) = send(admin("/admin/wechat/access-token")).await;
    assert_eq!(status, 400, "two apps with a token: {body}");
    assert_error(&body, "unknown_app");
    let (status, body) = send(admin(&format!("/admin/wechat/access-token?appid={WECOM}"))).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["access_token"]
        .as_str()
        .unwrap()
        .starts_with("WECOM-TOKEN-"));
    let (status, body) = send(admin("/admin/wechat/access-token?appid=wx_test_app")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["access_token"].as_str().unwrap().starts_with("TOKEN-"));
    let (status, body) = send(admin(&format!("/admin/wechat/access-token?appid={QQ}"))).await;
    assert_eq!(status, 400);
    assert_error(&body, "unsupported_platform");
    // Their token keys are apart; the default app's kept its name.
    assert_eq!(h.redis.keys("wxsess:wechat:access_token").len(), 1);
    assert_eq!(
        h.redis
            .keys(&format!("wxsess:wechat:{WECOM}:access_token"))
            .len(),
        1
    );
}

#[actix_web::test]
async fn a_session_of_an_app_no_longer_configured_is_invalid() {
    let h = Harness::bare();
    let base = h.wechat.base.clone();
    let env = app_env("qq_shop", "qq", QQ, &base);
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let before = TestServer::start(&h.config(&pairs));
    let qq = session_of(&before, QQ, "ok:gone").await;
    let wechat = session_of(&before, "wx_test_app", "ok:stays").await;
    let after = TestServer::start(&h.config(&[]));
    let (status, body) = after.get_session(&qq).await;
    assert_eq!(status, 401, "{body}");
    assert_error(&body, "invalid_session");
    assert_eq!(after.get_session(&wechat).await.0, 200);
    // With one app left, appid may be left out.
    assert_eq!(after.try_login("ok:stays~2").await.0, 200);
}

#[actix_web::test]
async fn a_mock_app_logs_in_without_its_platform() {
    let h = Harness::bare();
    let server = TestServer::start(&h.config(&[
        ("WXSESSION_APPS_TT_PLATFORM", "douyin"),
        ("WXSESSION_APPS_TT_APPID", DOUYIN),
        ("WXSESSION_APPS_TT_MOCK", "true"),
    ]));
    let id = session_of(&server, DOUYIN, "anything").await;
    let (_, me) = server.get_session(&id).await;
    assert_eq!(
        (me["platform"].as_str(), me["appid"].as_str()),
        (Some("douyin"), Some(DOUYIN))
    );
    assert!(me["openid"].as_str().unwrap().starts_with("mock_"));
    assert!(h.wechat.received().is_empty());
}

#[actix_web::test]
async fn one_person_is_found_and_ended_across_apps_by_unionid() {
    let f = five_platforms(&[]);
    let h = &f.h;
    // One person (unionid u-una) in WeChat and in QQ, and someone else.
    let in_wechat = session_of(h, "wx_test_app", "union:una").await;
    let in_qq = session_of(h, QQ, "union:una").await;
    let other = session_of(h, DOUYIN, "union:ole").await;
    let logged_out = session_of(h, "wx_test_app", "union:una~2").await;
    assert_eq!(h.logout(&logged_out).await.0, 204);
    let admin = |req: reqwest::RequestBuilder| req.bearer_auth(TOKEN);
    let (status, body) = send(admin(client().get(h.url("/admin/unionids/u-una/sessions")))).await;
    assert_eq!(status, 200, "{body}");
    let listed: Vec<(String, String)> = body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(s.as_object().unwrap().len(), 5, "{s}");
            assert_eq!(s["device"], serde_json::Value::Null);
            (
                s["sessionid"].as_str().unwrap().to_string(),
                s["appid"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (in_wechat.clone(), "wx_test_app".to_string()),
            (in_qq.clone(), QQ.to_string())
        ]
    );
    // The logged-out one left the index.
    let index: Vec<String> = h
        .redis
        .cmd(&["ZRANGE", "wxsess:union:{u-una}:sessions", "0", "-1"]);
    assert_eq!(index, [in_wechat.clone(), in_qq.clone()]);
    let ttl: i64 = h.redis.cmd(&["TTL", "wxsess:union:{u-una}:sessions"]);
    assert!(ttl > 0, "the index expires");

    let (status, body) = send(admin(
        client().delete(h.url("/admin/unionids/u-una/sessions")),
    ))
    .await;
    assert_eq!((status, body["revoked"].as_u64()), (200, Some(2)), "{body}");
    for id in [&in_wechat, &in_qq] {
        let (status, body) = h.get_session(id).await;
        assert_eq!(status, 401);
        assert_error(&body, "session_revoked");
    }
    assert_eq!(h.get_session(&other).await.0, 200);
    assert!(h.redis.keys("wxsess:union:{u-una}:sessions").is_empty());
    // Nor do they stay in their users' indexes.
    let users: Vec<String> = h
        .redis
        .cmd(&["ZRANGE", "wxsess:user:{una}:sessions", "0", "-1"]);
    assert!(users.is_empty(), "{users:?}");
    // A bad unionid reaches nothing.
    let (status, body) = send(admin(client().get(h.url("/admin/unionids/u%0Ax/sessions")))).await;
    assert_eq!(status, 400);
    assert_error(&body, "invalid_request");
}

#[actix_web::test]
async fn the_cli_ends_one_person_across_apps() {
    let h = Harness::start();
    let a = h.login("union:cli").await;
    let b = h.login("union:cli~2").await;
    let (code, stdout, stderr) = run_cli(&h.redis, &[], &["sessions", "revoke-union", "u-cli"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "revoked 2");
    for id in [&a, &b] {
        assert_eq!(h.get_session(id).await.0, 401);
    }
}

#[actix_web::test]
async fn the_local_cache_serves_every_apps_sessions() {
    let f = five_platforms(&[("session.local_cache", "true")]);
    let h = &f.h;
    let mut ids = Vec::new();
    for (appid, code) in [
        ("wx_test_app", "ok:c1"),
        (QQ, "ok:c2"),
        (DOUYIN, "ok:c3"),
        (WECOM, "ok:c4"),
        (ALIPAY, "ok:2088004"),
    ] {
        ids.push((appid, session_of(h, appid, code).await));
    }
    // Warm: each read once fills the cache.
    for (_, id) in &ids {
        assert_eq!(h.get_session(id).await.0, 200);
    }
    h.redis.cmd::<String>(&["CONFIG", "RESETSTAT"]);
    for (appid, id) in &ids {
        for _ in 0..5 {
            let (status, me) = h.get_session(id).await;
            assert_eq!((status, me["appid"].as_str()), (200, Some(*appid)), "{me}");
        }
    }
    assert_eq!(
        h.redis.commands_but_pings(),
        0,
        "every app's sessions from memory"
    );
}

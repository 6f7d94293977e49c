//! Contract §11: the stand-in's answers for the other platforms' login calls
//! (QQ on WeChat's path, Douyin, WeCom and its token), over plain HTTP, so the
//! tests of wxsession's platform dispatch can rely on them.

use std::sync::atomic::Ordering;

use serde_json::json;

use crate::support::*;

const DOUYIN: &str = "/api/apps/v2/jscode2session";
const GETTOKEN: &str = "/cgi-bin/gettoken";
const WECOM: &str = "/cgi-bin/miniprogram/jscode2session";

async fn douyin(wechat: &WechatStandIn, code: &str) -> serde_json::Value {
    let (status, body) = send(
        client()
            .post(format!("{}{DOUYIN}", wechat.base))
            .json(&json!({"appid": "tt_app", "secret": "tt-secret", "code": code})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn gettoken(wechat: &WechatStandIn, corpid: &str, corpsecret: &str) -> serde_json::Value {
    let (status, body) = send(
        client()
            .get(format!("{}{GETTOKEN}", wechat.base))
            .query(&[("corpid", corpid), ("corpsecret", corpsecret)]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn wecom_login(wechat: &WechatStandIn, token: &str, code: &str) -> serde_json::Value {
    let (status, body) = send(client().get(format!("{}{WECOM}", wechat.base)).query(&[
        ("access_token", token),
        ("js_code", code),
        ("grant_type", "authorization_code"),
    ]))
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[actix_web::test]
async fn platform_qq_logs_in_on_wechats_path() {
    let wechat = WechatStandIn::start();
    let (status, body) = send(
        client()
            .get(format!("{}/sns/jscode2session", wechat.base))
            .query(&[
                ("appid", "1110"),
                ("secret", "qq"),
                ("js_code", "union:q~1"),
            ]),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["openid"], "q");
    assert_eq!(body["unionid"], "u-q");
    assert_eq!(wechat.calls(), 1);
}

#[actix_web::test]
async fn platform_douyin_answers_in_its_envelope() {
    let wechat = WechatStandIn::start();

    let body = douyin(&wechat, "ok:alice~1").await;
    assert_eq!(body["err_no"], 0, "{body}");
    assert_eq!(body["data"]["openid"], "alice");
    assert_eq!(body["data"]["unionid"], "");
    assert_eq!(
        wechat.issued_keys(),
        [body["data"]["session_key"].as_str().unwrap()]
    );

    let body = douyin(&wechat, "union:bob~2").await;
    assert_eq!(body["data"]["openid"], "bob");
    assert_eq!(body["data"]["unionid"], "u-bob");

    let body = douyin(&wechat, "err:40017").await;
    assert_eq!(body["err_no"], 40017);
    assert_eq!(body["err_tips"], "stand-in error 40017");
    assert_eq!(body["data"]["openid"], "");

    let body = douyin(&wechat, "used-up").await;
    assert_eq!(
        (&body["err_no"], &body["err_tips"]),
        (&json!(40018), &json!("bad code"))
    );

    let body = douyin(&wechat, "noopenid").await;
    assert_eq!(
        (&body["err_no"], &body["data"]["openid"]),
        (&json!(0), &json!(""))
    );
    assert_eq!(wechat.issued_keys().len(), 2, "noopenid hands out no key");

    assert_eq!(wechat.calls_to(DOUYIN), 5);
    assert_eq!(wechat.calls(), 0, "not WeChat's path");
    let sent = &wechat.received()[0];
    assert_eq!(
        sent.json(),
        json!({"appid": "tt_app", "secret": "tt-secret", "code": "ok:alice~1"})
    );
}

#[actix_web::test]
async fn platform_wecom_token_checks_the_corp() {
    let wechat = WechatStandIn::start();
    let body = gettoken(&wechat, "ww_corp", "corp-secret").await;
    assert_eq!(body["errcode"], 40013, "no corp set yet: {body}");

    wechat.set_wecom_corp("ww_corp", "corp-secret");
    assert_eq!(
        gettoken(&wechat, "ww_else", "corp-secret").await["errcode"],
        40013
    );
    assert_eq!(
        gettoken(&wechat, "ww_corp", "wrong").await["errcode"],
        40001
    );
    let body = gettoken(&wechat, "ww_corp", "corp-secret").await;
    assert_eq!(body["errcode"], 0);
    assert_eq!(body["access_token"], "WECOM-TOKEN-1");
    assert_eq!(body["expires_in"], 7200);

    // The knobs of WeChat's tokens hold for WeCom's.
    wechat.state.token_errcode.store(45009, Ordering::SeqCst);
    assert_eq!(
        gettoken(&wechat, "ww_corp", "corp-secret").await["errcode"],
        45009
    );
    wechat.state.token_errcode.store(0, Ordering::SeqCst);
    wechat.state.token_expires_in.store(30, Ordering::SeqCst);
    let body = gettoken(&wechat, "ww_corp", "corp-secret").await;
    assert_eq!(
        (&body["access_token"], &body["expires_in"]),
        (&json!("WECOM-TOKEN-2"), &json!(30))
    );
    assert_eq!(wechat.calls_to(GETTOKEN), 6);
}

#[actix_web::test]
async fn platform_wecom_login_needs_a_wecom_token() {
    let wechat = WechatStandIn::start();
    wechat.set_wecom_corp("ww_corp", "corp-secret");
    let token = gettoken(&wechat, "ww_corp", "corp-secret").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();

    let body = wecom_login(&wechat, &token, "ok:zhangsan~1").await;
    assert_eq!(body["errcode"], 0);
    assert_eq!(body["corpid"], "ww_corp");
    assert_eq!(body["userid"], "zhangsan");
    assert_eq!(
        wechat.issued_keys(),
        [body["session_key"].as_str().unwrap()]
    );

    let body = wecom_login(&wechat, &token, "othercorp:lisi").await;
    assert_eq!(
        (&body["corpid"], &body["userid"]),
        (&json!(OTHER_CORPID), &json!("lisi"))
    );
    let body = wecom_login(&wechat, &token, "nouserid").await;
    assert_eq!(body["corpid"], "ww_corp");
    assert!(body.get("userid").is_none(), "{body}");
    assert_eq!(wecom_login(&wechat, &token, "err:-1").await["errcode"], -1);
    assert_eq!(
        wecom_login(&wechat, &token, "used-up").await["errcode"],
        40029
    );

    // A WeChat token, a made-up one, one the knobs refuse: 40014.
    for refused in ["TOKEN-1", "WECOM-TOKEN-x", ""] {
        assert_eq!(
            wecom_login(&wechat, refused, "ok:a").await["errcode"],
            40014,
            "{refused}"
        );
    }
    wechat.state.tokens_valid_from.store(2, Ordering::SeqCst);
    assert_eq!(wecom_login(&wechat, &token, "ok:a").await["errcode"], 40014);

    let logins: Vec<_> = wechat
        .received()
        .into_iter()
        .filter(|r| r.path == WECOM)
        .collect();
    assert_eq!(logins.len(), wechat.calls_to(WECOM));
    for login in logins {
        assert!(login.param("access_token").is_some());
        assert_eq!(login.param("grant_type"), Some("authorization_code"));
        assert!(login.param("corpsecret").is_none());
    }
}

#[actix_web::test]
async fn platform_wecom_tokens_are_refused_by_wechat() {
    let wechat = WechatStandIn::start();
    wechat.set_wecom_corp("ww_corp", "corp-secret");
    gettoken(&wechat, "ww_corp", "corp-secret").await;
    let (_, body) = send(
        client()
            .get(format!("{}/wxa/checksession", wechat.base))
            .query(&[("access_token", "WECOM-TOKEN-1"), ("openid", "o")]),
    )
    .await;
    assert_eq!(body["errcode"], 40001);
}

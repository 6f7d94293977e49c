//! `device` on `POST /login`, where it shows (`GET /session`, the admin
//! listing, `wxsession sessions list|show`), and `session.one_per_device`.

use crate::support::*;

const TOKEN: &str = "admin-token-0123456789abcdef01234567";

async fn login_on(base: &str, code: &str, device: Option<&str>) -> (u16, serde_json::Value) {
    let mut body = serde_json::json!({ "code": code });
    if let Some(device) = device {
        body["device"] = device.into();
    }
    send(client().post(format!("{base}/login")).json(&body)).await
}

async fn login_device(h: &Harness, code: &str, device: &str) -> String {
    let (status, body) = login_on(&h.servers[0].base, code, Some(device)).await;
    assert_eq!(status, 200, "{body}");
    body["sessionid"].as_str().unwrap().to_string()
}

#[actix_web::test]
async fn a_login_names_its_device_and_the_session_shows_it() {
    let h = Harness::with(&[("admin.token", TOKEN)]);
    let phone = login_device(&h, "ok:gina", "phone").await;
    let plain = h.login("ok:gina~2").await;

    let (status, body) = h.get_session(&phone).await;
    assert_eq!(status, 200);
    assert_eq!(body["device"], "phone", "{body}");
    let (_, body) = h.get_session(&plain).await;
    assert_eq!(body["device"], serde_json::Value::Null, "{body}");
    assert!(body.as_object().unwrap().contains_key("device"), "{body}");

    let stored: String = h.redis.cmd(&["GET", &format!("wxsess:s:{phone}")]);
    assert!(stored.contains(r#""device":"phone""#), "{stored}");

    let (status, listing) = send(
        client()
            .get(h.url("/admin/users/gina/sessions"))
            .header("authorization", format!("Bearer {TOKEN}")),
    )
    .await;
    assert_eq!(status, 200);
    let devices: Vec<_> = listing["sessions"]
        .as_array()
        .unwrap_or_else(|| panic!("{listing}"))
        .iter()
        .map(|s| s["device"].clone())
        .collect();
    assert_eq!(
        devices,
        [serde_json::json!("phone"), serde_json::Value::Null]
    );

    let (code, out, err) = run_cli(&h.redis, &[], &["sessions", "list", "gina"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<_> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with(&phone) && lines[0].ends_with("\tphone"),
        "{out}"
    );
    assert!(
        lines[1].starts_with(&plain) && lines[1].ends_with("\t-"),
        "{out}"
    );
    let (code, out, _) = run_cli(&h.redis, &[], &["sessions", "show", &phone]);
    assert_eq!(code, 0);
    assert!(out.contains("device:     phone"), "{out}");
}

#[actix_web::test]
async fn a_device_outside_its_alphabet_is_400_and_reaches_nothing() {
    let h = Harness::start();
    let base = h.servers[0].base.clone();
    for device in [
        serde_json::json!(""),
        serde_json::json!("Phone"),
        serde_json::json!("pc "),
        serde_json::json!("手机"),
        serde_json::json!("a".repeat(33)),
        serde_json::json!(5),
        serde_json::Value::Null,
        serde_json::json!(["phone"]),
    ] {
        let (status, body) = send(
            client()
                .post(format!("{base}/login"))
                .json(&serde_json::json!({ "code": "ok:hana", "device": device })),
        )
        .await;
        assert_eq!(status, 400, "{device}: {body}");
        assert_error(&body, "invalid_request");
    }
    assert_eq!(h.wechat.calls(), 0, "no code was sent to WeChat");
    assert!(h.redis.keys("wxsess:*").is_empty());
    // The same code still works: nothing was spent.
    let (status, _) = login_on(&base, "ok:hana", Some("watch")).await;
    assert_eq!(status, 200);
}

#[actix_web::test]
async fn one_per_device_ends_the_previous_session_of_that_device_only() {
    let h = Harness::with(&[("session.one_per_device", "true")]);
    let phone = login_device(&h, "ok:ivan", "phone").await;
    let pc = login_device(&h, "ok:ivan~2", "pc").await;
    let plain = h.login("ok:ivan~3").await;
    let new_phone = login_device(&h, "ok:ivan~4", "phone").await;

    let (status, body) = h.get_session(&phone).await;
    assert_eq!(status, 401);
    assert_error(&body, "session_replaced");
    for live in [&pc, &plain, &new_phone] {
        assert_eq!(h.get_session(live).await.0, 200);
    }
    let members: Vec<String> = h
        .redis
        .cmd(&["ZRANGE", "wxsess:user:{ivan}:sessions", "0", "-1"]);
    assert_eq!(members, vec![pc.clone(), plain.clone(), new_phone.clone()]);
    let devices: Vec<String> = h.redis.cmd(&["HGETALL", "wxsess:user:{ivan}:devices"]);
    assert_eq!(devices, ["phone", &new_phone, "pc", &pc]);
    let ttl: i64 = h.redis.cmd(&["TTL", "wxsess:user:{ivan}:devices"]);
    assert!(ttl > 0 && ttl <= 2_592_000, "{ttl}");
    // Another user's phone is theirs.
    let other = login_device(&h, "ok:jack", "phone").await;
    assert_eq!(h.get_session(&new_phone).await.0, 200);
    assert_eq!(h.get_session(&other).await.0, 200);

    // Without the setting, a second phone is just another session.
    let h = Harness::start();
    let first = login_device(&h, "ok:ivan", "phone").await;
    let second = login_device(&h, "ok:ivan~2", "phone").await;
    assert_eq!(h.get_session(&first).await.0, 200);
    assert_eq!(h.get_session(&second).await.0, 200);
    assert!(h.redis.keys("wxsess:user:*:devices").is_empty());
}

#[actix_web::test]
async fn a_replaced_session_does_not_count_again_against_max_per_user() {
    let h = Harness::with(&[
        ("session.one_per_device", "true"),
        ("session.max_per_user", "2"),
    ]);
    let pc = login_device(&h, "ok:kate", "pc").await;
    let phone = login_device(&h, "ok:kate~2", "phone").await;
    let new_phone = login_device(&h, "ok:kate~3", "phone").await;
    assert_eq!(
        h.get_session(&pc).await.0,
        200,
        "the pc is not the oldest of three"
    );
    assert_eq!(h.get_session(&phone).await.0, 401);
    assert_eq!(h.get_session(&new_phone).await.0, 200);
}

#[actix_web::test]
async fn fifty_logins_on_one_device_from_two_instances_leave_exactly_one() {
    let h = Harness::setup()
        .set(&[("session.one_per_device", "true")])
        .instances(2)
        .start();
    let logins = (0..50).map(|i| {
        let base = h.servers[i % 2].base.clone();
        async move {
            let (status, body) = login_on(&base, &format!("ok:lena~{i}"), Some("phone")).await;
            assert_eq!(status, 200, "{body}");
            body["sessionid"].as_str().unwrap().to_string()
        }
    });
    let ids = futures_util::future::join_all(logins).await;
    let mut live = Vec::new();
    for id in &ids {
        if h.servers[0].get_session(id).await.0 == 200 {
            live.push(id.clone());
        }
    }
    assert_eq!(live.len(), 1, "live phones: {live:?}");
    assert_eq!(
        h.redis.live_session_keys(),
        [format!("wxsess:s:{}", live[0])]
    );
    let mapped: String = h
        .redis
        .cmd(&["HGET", "wxsess:user:{lena}:devices", "phone"]);
    assert_eq!(mapped, live[0]);
    let members: Vec<String> = h
        .redis
        .cmd(&["ZRANGE", "wxsess:user:{lena}:sessions", "0", "-1"]);
    assert_eq!(members, live);
}

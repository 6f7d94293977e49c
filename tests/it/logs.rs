//! What never appears in a log line, at any level: a `RUST_LOG=trace` run of the
//! real binary through every route, then a scan of everything it printed.

use serde_json::json;

use crate::support::*;

#[actix_web::test]
async fn a_trace_level_run_logs_no_secret_key_id_token_code_or_phone() {
    let h = Harness::bare();
    let mut server = h.start_process(&[
        ("RUST_LOG", "trace"),
        (
            "WXSESSION_ADMIN_TOKEN",
            "ADMIN-TOKEN-SECRET-42-0123456789abcdef",
        ),
    ]);
    let codes = [
        "ok:alice-code-1",
        "union:bob-code-2",
        "err:40029",
        "err:40163",
        "garbage",
    ];
    let mut ids = Vec::new();
    for code in codes {
        let (status, body) = server.try_login(code).await;
        if status == 200 {
            ids.push(body["sessionid"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(ids.len(), 2);
    let unknown = "0123456789abcdef0123456789abcdef";
    for id in ids.iter().map(String::as_str).chain([unknown, "not-an-id"]) {
        for path in ["/session", "/auth", "/session/check"] {
            send(client().get(server.url(path)).header("sessionid", id)).await;
        }
    }
    let id = &ids[0];
    let (status, phone) = server
        .post_as(id, "/session/phone", &json!({"code": "num"}))
        .await;
    assert_eq!(status, 200, "{phone}");
    server
        .post_as(
            id,
            "/session/userinfo",
            &json!({"rawData": "{}", "signature": "00", "encryptedData": "AAAA", "iv": "AAAAAAAAAAAAAAAAAAAAAA=="}),
        )
        .await;
    let (status, token) = send(
        client()
            .get(server.url("/admin/wechat/access-token"))
            .header(
                "authorization",
                "Bearer ADMIN-TOKEN-SECRET-42-0123456789abcdef",
            ),
    )
    .await;
    assert_eq!(status, 200, "{token}");
    server.logout(id).await;
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(server
        .terminate(std::time::Duration::from_secs(10))
        .success());

    let log = server.log();
    println!("{} log lines scanned", log.lines().count());
    assert!(log.contains("TRACE"), "the run logged at trace level");
    assert!(log.contains("login ok"), "no login line at all?\n{log}");
    assert!(log.contains("guard rejected"), "{log}");
    let mut secrets: Vec<String> = vec![
        TEST_SECRET.into(),
        "ADMIN-TOKEN-SECRET-42".into(),
        token["access_token"].as_str().unwrap().into(),
        "13912345678".into(),
        unknown.into(),
    ];
    secrets.extend(h.wechat.issued_keys());
    secrets.extend(ids.iter().cloned());
    secrets.extend(
        codes
            .iter()
            .filter(|c| c.contains("-code-"))
            .map(|c| c.to_string()),
    );
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "the log holds {secret:?}");
    }
}

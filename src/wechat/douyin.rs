//! Douyin (Toutiao) mini-programs: `code2Session` v2, a `tt.login` code
//! exchanged for the user's identity, and Douyin's `err_no` numbers mapped onto
//! [`WechatError`].
//!
//! Douyin answers in an envelope of its own (`err_no`, `err_tips`, `data`) with
//! no `errcode`, so its answer is read as text and judged here.

use serde::Deserialize;
use serde_json::Value;

use super::{call::HttpClient, Identity, LoginCode, WechatError};
use crate::secret::Secret;

/// Douyin's answer, success or not. Every field may be missing or null: an
/// error answer may carry `data` with empty strings, or none.
#[derive(Deserialize)]
struct Answer {
    err_no: Option<i64>,
    err_tips: Option<String>,
    data: Option<Data>,
}

#[derive(Deserialize)]
struct Data {
    openid: Option<String>,
    session_key: Option<String>,
    unionid: Option<String>,
}

/// `POST {api_base}/api/apps/v2/jscode2session`: one call, never retried
/// (Douyin accepts each code once).
pub(super) async fn code_to_session(
    http: &HttpClient,
    api_base: &str,
    appid: &str,
    secret: &Secret,
    code: &LoginCode,
) -> Result<Identity, WechatError> {
    let request = http
        .post(format!("{api_base}/api/apps/v2/jscode2session"))
        .json(&serde_json::json!({
            "appid": appid,
            "secret": secret.expose(),
            "code": code.as_str(),
        }));
    identity(&http.send_text(request).await?)
}

/// The identity in Douyin's answer, or the error it stands for. The decision
/// is `err_no`'s alone: `data` is only read on success.
fn identity(body: &str) -> Result<Identity, WechatError> {
    let answer: Value = serde_json::from_str(body)
        .map_err(|_| WechatError::Upstream(format!("not JSON ({} bytes)", body.len())))?;
    let answer: Answer = serde_json::from_value(answer)
        .map_err(|_| WechatError::Upstream("unexpected answer shape".into()))?;
    match answer.err_no {
        Some(0) => {}
        Some(err_no) => return Err(error(err_no, answer.err_tips.as_deref().unwrap_or(""))),
        None => return Err(WechatError::Upstream("an answer without err_no".into())),
    }
    let nonempty = |field: Option<String>| field.filter(|v| !v.is_empty());
    let data = answer.data;
    let (openid, session_key, unionid) = match data {
        Some(d) => (
            nonempty(d.openid),
            nonempty(d.session_key),
            nonempty(d.unionid),
        ),
        None => (None, None, None),
    };
    match (openid, session_key) {
        (Some(openid), Some(session_key)) => Ok(Identity {
            openid,
            unionid,
            session_key: Secret::new(session_key),
            corpid: None,
        }),
        _ => Err(WechatError::Upstream(
            "success without openid or session_key".into(),
        )),
    }
}

/// Douyin's `err_no` by what the caller should do. Douyin documents no rate
/// limit and no high-risk user, so neither is ever answered for it.
fn error(err_no: i64, err_tips: &str) -> WechatError {
    match err_no {
        // "bad code": wrong, used, expired, or another app's.
        40018 => WechatError::InvalidCode(err_no),
        -1 => WechatError::Busy,
        // 40015 (appid), 40017 (secret), 40019 (anonymous code, never sent),
        // missing parameters: nothing a user can do about them.
        _ => WechatError::Upstream(format!("err_no {err_no}: {err_tips}")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::wechat::one_shot::OneShot;

    #[test]
    fn success_is_the_data_openid_session_key_and_unionid() {
        let body = r#"{"err_no": 0, "err_tips": "success", "log_id": "2024",
            "data": {"session_key": "c2s=", "openid": "o-tt", "anonymous_openid": "",
                     "unionid": "u-tt"}}"#;
        let id = identity(body).unwrap();
        assert_eq!(id.openid, "o-tt");
        assert_eq!(id.session_key.expose(), "c2s=");
        assert_eq!(id.unionid.as_deref(), Some("u-tt"));
        assert_eq!(id.corpid, None);
    }

    #[test]
    fn an_empty_unionid_is_none() {
        for data in [
            r#"{"session_key": "k", "openid": "o", "unionid": ""}"#,
            r#"{"session_key": "k", "openid": "o", "unionid": null}"#,
            r#"{"session_key": "k", "openid": "o"}"#,
        ] {
            let body = format!(r#"{{"err_no": 0, "data": {data}}}"#);
            assert_eq!(identity(&body).unwrap().unionid, None, "{data}");
        }
    }

    #[test]
    fn err_no_decides_whatever_data_says() {
        let with = |err_no: i64| {
            identity(&format!(
                r#"{{"err_no": {err_no}, "err_tips": "bad code",
                    "data": {{"session_key": "k", "openid": "o", "unionid": ""}}}}"#
            ))
            .unwrap_err()
        };
        assert_eq!(with(40018), WechatError::InvalidCode(40018));
        assert_eq!(with(-1), WechatError::Busy);
        assert_eq!(
            with(40017),
            WechatError::Upstream("err_no 40017: bad code".into())
        );
        for err_no in [40015, 40019, 40020, 1] {
            assert_eq!(with(err_no).tag(), "wechat_error", "{err_no}");
        }
    }

    #[test]
    fn an_error_answer_may_lack_data_and_tips() {
        assert_eq!(
            identity(r#"{"err_no": 40018}"#).unwrap_err(),
            WechatError::InvalidCode(40018)
        );
        assert_eq!(
            identity(r#"{"err_no": 40015, "err_tips": null, "data": null}"#).unwrap_err(),
            WechatError::Upstream("err_no 40015: ".into())
        );
    }

    #[test]
    fn what_is_not_a_usable_success_is_upstream() {
        for body in [
            "<html>502 Bad Gateway</html>",
            "",
            r#"{"errcode": 40029, "errmsg": "invalid code"}"#,
            r#"{"err_no": "0"}"#,
            r#"[0]"#,
            r#"{"err_no": 0}"#,
            r#"{"err_no": 0, "data": null}"#,
            r#"{"err_no": 0, "data": {"session_key": "k", "openid": ""}}"#,
            r#"{"err_no": 0, "data": {"openid": "o"}}"#,
        ] {
            let e = identity(body).unwrap_err();
            assert!(matches!(e, WechatError::Upstream(_)), "{body}: {e:?}");
        }
    }

    #[tokio::test]
    async fn the_request_is_a_json_post_of_appid_secret_and_code() {
        let server =
            OneShot::answering(r#"{"err_no": 0, "data": {"session_key": "k", "openid": "o"}}"#);
        let http = HttpClient::new(Duration::from_secs(5)).unwrap();
        let code = LoginCode::parse("tt-code".into()).unwrap();
        let id = code_to_session(&http, &server.base, "tt123", &Secret::new("s3cret"), &code)
            .await
            .unwrap();
        assert_eq!(id.openid, "o");
        let sent = server.received();
        assert_eq!(sent.line, "POST /api/apps/v2/jscode2session HTTP/1.1");
        assert_eq!(
            serde_json::from_str::<Value>(&sent.body).unwrap(),
            serde_json::json!({"appid": "tt123", "secret": "s3cret", "code": "tt-code"})
        );
    }
}

//! WeCom (企业微信) mini-programs, `wx.qy.login`: a code exchanged for the
//! user's identity with the corp's access_token (fetched and shared by
//! `token`), and WeCom's errcodes, for both calls, mapped onto [`WechatError`].

use serde::Deserialize;

use super::{call::HttpClient, Identity, LoginCode, WechatError};
use crate::secret::Secret;

/// The answer of `miniprogram/jscode2session` (errors are handled by
/// `HttpClient::send_json_with` and [`from_errcode`]).
#[derive(Deserialize)]
struct Answer {
    corpid: Option<String>,
    userid: Option<String>,
    session_key: Option<String>,
}

/// `GET {api_base}/cgi-bin/miniprogram/jscode2session` with the corp's
/// access_token: one call (the caller retries it once with a fresh token after
/// [`WechatError::TokenRejected`]). The identity's `openid` is the `userid`,
/// its `corpid` is `corpid`, which the answer must name.
pub(super) async fn code_to_session(
    http: &HttpClient,
    api_base: &str,
    corpid: &str,
    token: &Secret,
    code: &LoginCode,
) -> Result<Identity, WechatError> {
    let request = http
        .get(format!("{api_base}/cgi-bin/miniprogram/jscode2session"))
        .query(&[
            ("access_token", token.expose()),
            ("js_code", code.as_str()),
            ("grant_type", "authorization_code"),
        ]);
    identity(http.send_json_with(request, from_errcode).await?, corpid)
}

/// The identity in a successful answer. A mini-program linked to several corps
/// may be answered for a corp other than the one whose token was sent: that
/// user is not one of our corp's, so the answer is refused.
fn identity(answer: Answer, corpid: &str) -> Result<Identity, WechatError> {
    let nonempty = |field: Option<String>| field.filter(|v| !v.is_empty());
    match nonempty(answer.corpid) {
        Some(answered) if answered == corpid => {}
        Some(answered) => {
            return Err(WechatError::Upstream(format!(
                "an answer for corp {answered:?}, not for {corpid:?}"
            )))
        }
        None => return Err(WechatError::Upstream("success without corpid".into())),
    }
    match (nonempty(answer.userid), nonempty(answer.session_key)) {
        (Some(userid), Some(session_key)) => Ok(Identity {
            openid: userid,
            unionid: None,
            session_key: Secret::new(session_key),
            corpid: Some(corpid.to_string()),
        }),
        _ => Err(WechatError::Upstream(
            "success without userid or session_key".into(),
        )),
    }
}

/// WeCom's errcodes (its global table) by what the caller should do, for
/// `gettoken` and `jscode2session` alike. WeCom has no high-risk user.
pub(super) fn from_errcode(errcode: i64, errmsg: &str) -> WechatError {
    match errcode {
        // Invalid, used or expired code.
        40029 => WechatError::InvalidCode(errcode),
        -1 => WechatError::Busy,
        // The call rate, and concurrent calls.
        45009 | 45033 => WechatError::RateLimited,
        // 40014: invalid token, 42001: expired. WeCom's 40001 is a bad
        // corpsecret at `gettoken`, not a refused token; §11 treats it as one
        // anyway, which is harmless: dropping the token and fetching again
        // fails at `gettoken` the same way, and no call is made twice.
        40001 | 40014 | 42001 => WechatError::TokenRejected(errcode),
        // 40013 (corpid), 48002 (the token is another WeCom app's), 60020
        // (our address is not allowed), …: nothing a user can do about them.
        _ => WechatError::Upstream(format!("errcode {errcode}: {errmsg}")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::wechat::one_shot::OneShot;

    fn parse(body: &str) -> Result<Identity, WechatError> {
        identity(serde_json::from_str(body).unwrap(), "ww_corp")
    }

    #[test]
    fn the_userid_is_the_openid_and_the_corpid_is_kept() {
        let id = parse(
            r#"{"errcode": 0, "errmsg": "ok", "corpid": "ww_corp", "userid": "zhangsan",
                "session_key": "kJtdi6RF+Dv67QkbLlPGjw=="}"#,
        )
        .unwrap();
        assert_eq!(id.openid, "zhangsan");
        assert_eq!(id.session_key.expose(), "kJtdi6RF+Dv67QkbLlPGjw==");
        assert_eq!(id.unionid, None);
        assert_eq!(id.corpid.as_deref(), Some("ww_corp"));
    }

    #[test]
    fn another_corps_user_is_refused() {
        let e = parse(r#"{"corpid": "ww_other", "userid": "u", "session_key": "k"}"#).unwrap_err();
        assert_eq!(
            e,
            WechatError::Upstream(r#"an answer for corp "ww_other", not for "ww_corp""#.into())
        );
        assert_eq!(e.tag(), "wechat_error");
    }

    #[test]
    fn a_success_missing_a_part_is_upstream() {
        for body in [
            r#"{"userid": "u", "session_key": "k"}"#,
            r#"{"corpid": "", "userid": "u", "session_key": "k"}"#,
            r#"{"corpid": "ww_corp", "session_key": "k"}"#,
            r#"{"corpid": "ww_corp", "userid": "", "session_key": "k"}"#,
            r#"{"corpid": "ww_corp", "userid": "u", "session_key": null}"#,
        ] {
            let e = parse(body).unwrap_err();
            assert!(matches!(e, WechatError::Upstream(_)), "{body}: {e:?}");
        }
    }

    #[test]
    fn errcodes_follow_wecoms_table() {
        assert_eq!(from_errcode(40029, ""), WechatError::InvalidCode(40029));
        assert_eq!(from_errcode(-1, ""), WechatError::Busy);
        assert_eq!(from_errcode(45009, ""), WechatError::RateLimited);
        assert_eq!(from_errcode(45033, ""), WechatError::RateLimited);
        for code in [40001, 40014, 42001] {
            assert_eq!(from_errcode(code, ""), WechatError::TokenRejected(code));
        }
        assert_eq!(
            from_errcode(48002, "api forbidden"),
            WechatError::Upstream("errcode 48002: api forbidden".into())
        );
        // WeChat's numbers mean nothing special here.
        for code in [40013, 60020, 40163, 40226, 45011, 87009] {
            assert_eq!(from_errcode(code, "").tag(), "wechat_error", "{code}");
        }
    }

    async fn call(answer: &str) -> (Result<Identity, WechatError>, String) {
        let server = OneShot::answering(answer);
        let http = HttpClient::new(Duration::from_secs(5)).unwrap();
        let code = LoginCode::parse("qy-code".into()).unwrap();
        let result =
            code_to_session(&http, &server.base, "ww_corp", &Secret::new("TOK"), &code).await;
        (result, server.received().line)
    }

    #[tokio::test]
    async fn the_request_carries_the_token_and_the_code() {
        let (result, line) =
            call(r#"{"errcode": 0, "corpid": "ww_corp", "userid": "u", "session_key": "k"}"#).await;
        assert_eq!(result.unwrap().openid, "u");
        assert_eq!(
            line,
            "GET /cgi-bin/miniprogram/jscode2session\
             ?access_token=TOK&js_code=qy-code&grant_type=authorization_code HTTP/1.1"
        );
    }

    #[tokio::test]
    async fn errcodes_are_read_by_wecoms_table() {
        let (result, _) = call(r#"{"errcode": 45009, "errmsg": "api freq out of limit"}"#).await;
        assert_eq!(result.unwrap_err(), WechatError::RateLimited);
    }
}

//! One call to a WeChat server API over HTTP: send it, read its JSON answer
//! whatever the Content-Type, and turn a non-zero `errcode` into [`WechatError`].

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::WechatError;

/// Sends a WeChat API request and reads its JSON answer, whatever the
/// Content-Type (WeChat sometimes says text/plain); a non-zero `errcode` becomes
/// the matching [`WechatError`].
pub(super) async fn send_json<T: DeserializeOwned>(
    request: reqwest::RequestBuilder,
) -> Result<T, WechatError> {
    let response = request.send().await.map_err(request_error)?;
    let status = response.status();
    let body = response.bytes().await.map_err(request_error)?;
    if !status.is_success() {
        return Err(WechatError::Upstream(format!("HTTP {}", status.as_u16())));
    }
    let answer: Value = serde_json::from_slice(&body)
        .map_err(|_| WechatError::Upstream(format!("not JSON ({} bytes)", body.len())))?;
    let errcode = answer.get("errcode").and_then(Value::as_i64).unwrap_or(0);
    if errcode != 0 {
        let errmsg = answer.get("errmsg").and_then(Value::as_str).unwrap_or("");
        return Err(WechatError::from_errcode(errcode, errmsg));
    }
    serde_json::from_value(answer)
        .map_err(|_| WechatError::Upstream("unexpected answer shape".into()))
}

/// reqwest's error text can carry the request URL, and with it the AppSecret;
/// keep only the kind of failure.
fn request_error(e: reqwest::Error) -> WechatError {
    if e.is_timeout() {
        WechatError::Timeout
    } else if e.is_connect() {
        WechatError::Upstream("cannot connect".into())
    } else {
        WechatError::Upstream("request failed".into())
    }
}

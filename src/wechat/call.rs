//! WeChat's HTTP: [`HttpClient`], the one client for its APIs and the runtime
//! its calls run on; one call sends a request and reads its JSON answer,
//! turning a non-zero `errcode` into [`WechatError`] (by WeChat's table, or by
//! another platform's that shares the `errcode` envelope).

use std::{future::Future, sync::Arc, time::Duration};

use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::{runtime::Runtime, task::JoinHandle};

use super::WechatError;

/// A platform's non-zero `errcode` (and its `errmsg`, for logs) as a [`WechatError`].
pub(super) type ErrcodeTable = fn(i64, &str) -> WechatError;

/// The HTTP client for WeChat's APIs, and the runtime every call runs on.
///
/// Why a runtime of its own: hyper spawns the task that drives a connection on
/// the runtime of the call that opened it, and the pool hands that connection
/// to any later call. Each actix worker is a runtime of its own, and at SIGTERM
/// a worker with nothing in flight stops at once, dropping its tasks: a login
/// in flight on another worker, over a connection the stopped one had opened,
/// lost its answer (502 within milliseconds, the code already spent at
/// WeChat). Here every call and every connection lives on one runtime that
/// ends with the last handle on it, after the last worker has stopped.
#[derive(Clone)]
pub(super) struct HttpClient {
    client: reqwest::Client,
    runtime: Arc<CallRuntime>,
}

impl HttpClient {
    /// `timeout` bounds each call as a whole.
    pub fn new(timeout: Duration) -> Result<HttpClient, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            // A redirect would carry the AppSecret's query string to another host.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        // One thread: WeChat calls spend their time waiting on the network.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("wechat-http")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the WeChat HTTP runtime: {e}"))?;
        Ok(HttpClient {
            client,
            runtime: Arc::new(CallRuntime(Some(runtime))),
        })
    }

    pub fn get(&self, url: String) -> reqwest::RequestBuilder {
        self.client.get(url)
    }

    pub fn post(&self, url: String) -> reqwest::RequestBuilder {
        self.client.post(url)
    }

    /// Sends a WeChat API request and reads its JSON answer, whatever the
    /// Content-Type (WeChat sometimes says text/plain); a non-zero `errcode`
    /// becomes the matching [`WechatError`]. A caller that stops waiting
    /// cancels its call.
    pub async fn send_json<T: DeserializeOwned + Send + 'static>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, WechatError> {
        self.send_json_with(request, WechatError::from_errcode)
            .await
    }

    /// [`HttpClient::send_json`] for a platform whose answers share WeChat's
    /// `errcode`/`errmsg` envelope but not its numbers (WeCom's rate limits are
    /// 45009 and 45033, WeChat's 45011): `errors` maps a non-zero `errcode`.
    pub async fn send_json_with<T: DeserializeOwned + Send + 'static>(
        &self,
        request: reqwest::RequestBuilder,
        errors: ErrcodeTable,
    ) -> Result<T, WechatError> {
        let mut call = CancelOnDrop(self.runtime.handle().spawn(send_json(request, errors)));
        (&mut call.0).await.unwrap_or_else(|_| {
            Err(WechatError::Upstream(
                "the call stopped without an answer".into(),
            ))
        })
    }

    /// Sends an API request and answers its body as text, whatever it says,
    /// for platforms whose errors or signatures are read from the text itself
    /// (a non-2xx status is an error, as for [`HttpClient::send_json`]).
    pub async fn send_text(&self, request: reqwest::RequestBuilder) -> Result<String, WechatError> {
        let mut call = CancelOnDrop(self.runtime.handle().spawn(send_text(request)));
        (&mut call.0).await.unwrap_or_else(|_| {
            Err(WechatError::Upstream(
                "the call stopped without an answer".into(),
            ))
        })
    }

    /// Sends one `GET url` (it must carry no secret: the reason may name it)
    /// and answers its HTTP status, whatever it is; else why no answer came.
    pub async fn reach(&self, url: String) -> Result<u16, String> {
        let request = self.client.get(url);
        let call = async move {
            match request.send().await {
                Ok(response) => Ok(response.status().as_u16()),
                Err(e) => Err(unreached(&e)),
            }
        };
        let mut call = CancelOnDrop(self.runtime.handle().spawn(call));
        (&mut call.0)
            .await
            .unwrap_or_else(|_| Err("the call stopped without an answer".into()))
    }

    /// Runs `task` to its end on the calls' runtime, whoever waits for it.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        drop(self.runtime.handle().spawn(task));
    }
}

/// The calls' runtime. Dropping a runtime waits for its tasks, which panics
/// inside another runtime (the last handle goes at the end of `serve`, inside
/// actix's): it is shut down without waiting instead.
struct CallRuntime(Option<Runtime>);

impl CallRuntime {
    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("running until dropped").handle()
    }
}

impl Drop for CallRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// A spawned call that ends when its caller stops waiting, as it would have
/// run inside the caller.
struct CancelOnDrop<T>(JoinHandle<T>);

impl<T> Drop for CancelOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn send_text(request: reqwest::RequestBuilder) -> Result<String, WechatError> {
    let body = send_bytes(request).await?;
    let len = body.len();
    String::from_utf8(body).map_err(|_| WechatError::Upstream(format!("not UTF-8 ({len} bytes)")))
}

/// One request's body, if it answered 2xx.
async fn send_bytes(request: reqwest::RequestBuilder) -> Result<Vec<u8>, WechatError> {
    let response = request.send().await.map_err(request_error)?;
    let status = response.status();
    let body = response.bytes().await.map_err(request_error)?;
    if !status.is_success() {
        return Err(WechatError::Upstream(format!("HTTP {}", status.as_u16())));
    }
    Ok(body.to_vec())
}

async fn send_json<T: DeserializeOwned>(
    request: reqwest::RequestBuilder,
    errors: ErrcodeTable,
) -> Result<T, WechatError> {
    let body = send_bytes(request).await?;
    let answer: Value = serde_json::from_slice(&body)
        .map_err(|_| WechatError::Upstream(format!("not JSON ({} bytes)", body.len())))?;
    let errcode = answer.get("errcode").and_then(Value::as_i64).unwrap_or(0);
    if errcode != 0 {
        let errmsg = answer.get("errmsg").and_then(Value::as_str).unwrap_or("");
        return Err(errors(errcode, errmsg));
    }
    serde_json::from_value(answer)
        .map_err(|_| WechatError::Upstream("unexpected answer shape".into()))
}

/// Why a request got no HTTP answer: the kind of failure and its causes
/// (refused, DNS, TLS…), without the URL.
fn unreached(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "no answer in time"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut reason = kind.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = cause.to_string();
        // hyper's "client error (Connect)" only repeats the kind.
        if !text.starts_with("client error") && !reason.ends_with(&text) {
            reason.push_str(": ");
            reason.push_str(&text);
        }
        source = cause.source();
    }
    reason
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

//! Everything about WeChat's server APIs, one file per idea:
//!
//! - `code`: [`LoginCode`], a `wx.login` code checked before it goes anywhere;
//! - `identity`: [`Identity`], what `code2Session` says a code belongs to;
//! - `error`: [`WechatError`], WeChat's errcodes by what the caller should do;
//! - `apps`: [`Apps`], every configured app's client by appid;
//! - `client`: [`Client`], one app's API calls (its platform's login call;
//!   on WeChat the phone number by code and the session-key check) over the
//!   HTTP client all apps share;
//! - `call`: `HttpClient`, the HTTP client and the runtime every call runs on
//!   (it outlives the workers), and one request and its JSON answer, errcodes
//!   included;
//! - `token`: [`AccessTokens`], the one access_token the whole fleet shares
//!   (per app: WeChat's or a WeCom corp's), kept in Redis through the
//!   [`RedisConn`](crate::redis_conn::RedisConn) handed to the client (this
//!   module's only use of Redis);
//! - `douyin`, `wecom`: the login call of those platforms and their error
//!   numbers (QQ's login call is WeChat's, at another `api_base`);
//! - `alipay`: Alipay's login call (`alipay.system.oauth.token`): its RSA2
//!   keys, the signed request, and the answer whose signature is checked;
//! - `mock`: the answers of mock mode (development only);
//! - [`userdata`]: the signature check and decryption of user data.
//!
//! It knows no HTTP routes and no sessions; the HTTP layer maps [`WechatError`]
//! to the contract's statuses.

mod alipay;
mod apps;
mod call;
mod client;
mod code;
mod douyin;
mod error;
mod identity;
mod mock;
#[cfg(test)]
mod one_shot;
mod token;
pub mod userdata;
mod wecom;

pub use apps::Apps;
pub use client::Client;
pub use code::LoginCode;
pub use error::WechatError;
pub use identity::Identity;
pub use token::{AccessToken, AccessTokens, TokenStatus};

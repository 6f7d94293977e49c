//! `Identity`: who the platform says a login code belongs to.

use crate::secret::Secret;

/// What `code2Session` (or another platform's equivalent) says about a login code.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The user within the app: WeChat's, QQ's or Douyin's `openid`, WeCom's `userid`.
    pub openid: String,
    pub unionid: Option<String>,
    pub session_key: Secret,
    /// WeCom only: the corp the user belongs to, which is always the app's own
    /// (an answer for another corp is refused), kept for `GET /session`.
    pub corpid: Option<String>,
}

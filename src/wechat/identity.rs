//! `Identity`: who WeChat says a login code belongs to.

use crate::secret::Secret;

/// What `code2Session` says about a login code.
#[derive(Debug, Clone)]
pub struct Identity {
    pub openid: String,
    pub unionid: Option<String>,
    pub session_key: Secret,
}

//! `Login`: a login code in, a session out — WeChat `code2Session` at most once per
//! code (repeats get the first attempt's outcome), then a new session in Redis.
//!
//! It joins [`wechat`](crate::wechat) and [`session`](crate::session), which know
//! nothing of each other; the HTTP layer only translates.

use std::time::Duration;

use crate::{
    session::{CodeClaim, LoginCodes, NewSession, Session, SessionStore, StoreError},
    wechat::{Client, LoginCode, WechatError},
};

/// Why a login failed.
#[derive(Debug)]
pub enum LoginError {
    Wechat(WechatError),
    Store(StoreError),
}

impl From<WechatError> for LoginError {
    fn from(e: WechatError) -> Self {
        LoginError::Wechat(e)
    }
}

impl From<StoreError> for LoginError {
    fn from(e: StoreError) -> Self {
        LoginError::Store(e)
    }
}

#[derive(Clone)]
pub struct Login {
    wechat: Client,
    store: SessionStore,
    codes: LoginCodes,
    /// How long a repeat waits for the first attempt (WeChat's timeout plus a margin).
    wait: Duration,
}

impl Login {
    pub fn new(wechat: Client, store: SessionStore, wechat_timeout: Duration) -> Login {
        Login {
            codes: store.login_codes(),
            wechat,
            store,
            wait: wechat_timeout + Duration::from_secs(1),
        }
    }

    pub async fn login(&self, code: &LoginCode) -> Result<Session, LoginError> {
        match self.codes.claim(code.as_str(), self.wait).await? {
            CodeClaim::First => {}
            CodeClaim::Session(id) => {
                // The first attempt's session, while it lives; once it has ended the
                // code is spent, as WeChat would say.
                return self
                    .store
                    .touch(&id)
                    .await?
                    .ok_or(LoginError::Wechat(WechatError::InvalidCode(40163)));
            }
            CodeClaim::Failed(tag) => return Err(WechatError::from_tag(&tag).into()),
            CodeClaim::StillPending => return Err(WechatError::Timeout.into()),
        }
        let identity = match self.wechat.code_to_session(code).await {
            Ok(identity) => identity,
            Err(e) => {
                if let Err(store) = self.codes.settle_failure(code.as_str(), e.tag()).await {
                    log::warn!("could not record a failed login code: {store}");
                }
                return Err(e.into());
            }
        };
        let session = self
            .store
            .create(&NewSession {
                openid: &identity.openid,
                unionid: identity.unionid.as_deref(),
                session_key: &identity.session_key,
            })
            .await?;
        if let Err(e) = self.codes.settle_session(code.as_str(), session.id()).await {
            log::warn!("could not record a login code's session: {e}");
        }
        Ok(session)
    }
}

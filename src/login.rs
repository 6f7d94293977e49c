//! `Login`: a login code in, a session out — WeChat `code2Session` at most once per
//! code (repeats get the first attempt's outcome), then a new session in Redis;
//! and the step-up, a fresh code of the same user elevating a live session.
//!
//! It joins [`wechat`](crate::wechat) and [`session`](crate::session), which know
//! nothing of each other; the HTTP layer only translates.

use std::{net::IpAddr, sync::Arc, time::Duration};

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::{
    clock,
    config::Config,
    session::{
        CodeClaim, Device, EndReason, LoginCodes, LoginRate, Lookup, NewSession, Session,
        SessionStore, StoreError,
    },
    wechat::{Apps, Client, Identity, LoginCode, WechatError},
};

/// Why a login failed.
#[derive(Debug)]
pub enum LoginError {
    Wechat(WechatError),
    Store(StoreError),
    /// Over `login.rate_per_minute` for this client address.
    RateLimited,
    /// The openid WeChat named is banned, until then (unix seconds; `None`: no end).
    Banned(Option<u64>),
    /// A step-up code of another user than the session's.
    IdentityMismatch,
    /// The session to elevate ended while its step-up ran: with this reason,
    /// which its client may learn.
    SessionEnded(EndReason),
    /// … or without one (a logout, an expiry).
    SessionGone,
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

/// The recorded outcome of an attempt whose session could not be stored.
const STORE_FAILED: &str = "store_unavailable";

#[derive(Clone)]
pub struct Login {
    apps: Apps,
    store: SessionStore,
    codes: LoginCodes,
    /// `login.rate_per_minute`, when set.
    rate: Option<LoginRate>,
    /// How long a claim on a code lasts, and so how long a repeat may wait
    /// for the first attempt: its WeChat call, the Redis work on either side
    /// of it (creating the session, settling the record) and a margin. A claim
    /// that ran out while its attempt was still going would let a repeat send
    /// the spent code to WeChat again.
    wait: Duration,
    repeat_window: Duration,
    /// Permits for `code2Session` calls at once (`wechat.max_in_flight`).
    in_flight: Option<Arc<Semaphore>>,
    /// How long a step-up holds (`session.elevate_secs`).
    elevate_secs: u64,
}

impl Login {
    pub fn new(apps: Apps, store: SessionStore, config: &Config) -> Login {
        let cap = config.wechat.max_in_flight;
        Login {
            codes: store.login_codes(),
            rate: match config.login.rate_per_minute {
                0 => None,
                per_minute => Some(store.login_rate(per_minute)),
            },
            apps,
            store,
            wait: config.wechat_timeout() + 2 * config.redis_timeout() + Duration::from_secs(1),
            repeat_window: config.login.repeat_window(),
            in_flight: (cap > 0).then(|| Arc::new(Semaphore::new(cap))),
            elevate_secs: config.session.elevate_secs,
        }
    }

    /// Logs in to `app` with `code` on behalf of `client` (the address the
    /// rate limit counts; `None` counts nothing).
    pub async fn login(
        &self,
        app: &Client,
        code: &LoginCode,
        client: Option<IpAddr>,
        device: Option<&Device>,
    ) -> Result<Session, LoginError> {
        // A code is one app's: recorded under both, so two apps' codes never meet.
        let code_record = [app.appid(), ":", code.as_str()].concat();
        if let (Some(rate), Some(client)) = (&self.rate, client) {
            if !rate.admit(client).await? {
                return Err(LoginError::RateLimited);
            }
        }
        // Taken before the code is claimed: a login turned away here has not
        // spent its code, and may be retried with it.
        let _permit = self.wechat_permit("login")?;
        match self
            .codes
            .claim(&code_record, self.wait, self.repeat_window)
            .await?
        {
            CodeClaim::First => {}
            CodeClaim::Expired => return Err(WechatError::InvalidCode(40163).into()),
            CodeClaim::Session(id) => {
                // The first attempt's session, while it lives; once it has ended the
                // code is spent, as WeChat would say.
                return match self.store.touch(&id).await? {
                    Lookup::Live(session) => Ok(session),
                    Lookup::Ended(_) | Lookup::Unknown => {
                        Err(LoginError::Wechat(WechatError::InvalidCode(40163)))
                    }
                };
            }
            CodeClaim::Failed(tag) if tag == STORE_FAILED => {
                return Err(StoreError::Unavailable(
                    "an earlier attempt with this code could not store its session".into(),
                )
                .into())
            }
            CodeClaim::Failed(tag) => return Err(WechatError::from_tag(&tag).into()),
            CodeClaim::StillPending => return Err(WechatError::Timeout.into()),
        }
        let identity = match app.code_to_session(code).await {
            Ok(identity) => identity,
            Err(e) => {
                self.record_failure(&code_record, e.tag()).await;
                return Err(e.into());
            }
        };
        // The code is spent at WeChat from here on: whatever ends the login is
        // recorded, so a repeat gets that answer, not a second call. A ban's
        // repeat is invalid_code: the record does not know whose code it was.
        let session = match self.session_for(app, &identity, device).await {
            Ok(session) => session,
            Err(e) => {
                let tag = match e {
                    LoginError::Banned(_) => WechatError::InvalidCode(40163).tag(),
                    _ => STORE_FAILED,
                };
                self.record_failure(&code_record, tag).await;
                return Err(e);
            }
        };
        if let Err(e) = self.codes.settle_session(&code_record, session.id()).await {
            log::warn!("could not record a login code's session: {e}");
        }
        Ok(session)
    }

    /// Step-up: `code`, fresh from `wx.login`, elevates `session` for
    /// `session.elevate_secs` if WeChat says it is the session's own user's,
    /// whose `session_key` is then the new one. Answers the elevation's end
    /// (unix seconds). Codes are not recorded as a login's are: WeChat refuses
    /// a spent one, and a step-up has no session to hand a repeat.
    pub async fn elevate(&self, session: &Session, code: &LoginCode) -> Result<u64, LoginError> {
        // The guard answered for this session, so its app is configured.
        let app = self
            .apps
            .get(session.appid())
            .ok_or(LoginError::SessionGone)?;
        let _permit = self.wechat_permit("step-up")?;
        let identity = app.code_to_session(code).await?;
        if identity.openid != session.openid() {
            log::warn!(
                "step-up refused: the code is another user's than openid={}",
                session.openid()
            );
            return Err(LoginError::IdentityMismatch);
        }
        let until = clock::unix_secs() + self.elevate_secs;
        let elevated = self
            .store
            .elevate(
                session,
                &identity.session_key,
                identity.unionid.as_deref(),
                until,
            )
            .await?;
        if !elevated {
            // Ended meanwhile: the client learns why, as the guard would tell it.
            return Err(match self.store.touch(session.id()).await? {
                Lookup::Ended(reason) => LoginError::SessionEnded(reason),
                Lookup::Live(_) | Lookup::Unknown => LoginError::SessionGone,
            });
        }
        log::info!("step-up ok openid={} until={until}", session.openid());
        Ok(until)
    }

    /// A permit for one `code2Session` call under `wechat.max_in_flight`.
    fn wechat_permit(&self, what: &str) -> Result<Option<SemaphorePermit<'_>>, WechatError> {
        self.in_flight
            .as_ref()
            .map(|permits| {
                permits.try_acquire().map_err(|_| {
                    log::warn!("wechat.max_in_flight reached: {what} turned away");
                    WechatError::Busy
                })
            })
            .transpose()
    }

    /// A new session for a verified identity, unless its openid is banned
    /// (checked only now: only WeChat says whose code it was).
    async fn session_for(
        &self,
        app: &Client,
        identity: &Identity,
        device: Option<&Device>,
    ) -> Result<Session, LoginError> {
        let user = self.store.user_key(app.appid(), &identity.openid);
        if let Some(ban) = self.store.ban_of(&user).await? {
            log::info!("login refused: user {} is banned", user.as_str());
            return Err(LoginError::Banned(ban.until));
        }
        Ok(self
            .store
            .create(&NewSession {
                appid: app.appid(),
                openid: &identity.openid,
                corpid: identity.corpid.as_deref(),
                unionid: identity.unionid.as_deref(),
                session_key: &identity.session_key,
                device,
            })
            .await?)
    }

    /// Records how an attempt with a code (its record, as `login` names it)
    /// failed, for its repeats.
    async fn record_failure(&self, code_record: &str, tag: &str) {
        if let Err(store) = self.codes.settle_failure(code_record, tag).await {
            log::warn!("could not record a failed login code ({tag}): {store}");
        }
    }
}

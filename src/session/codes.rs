//! `LoginCodes`: which login codes have gone to WeChat and what came of them, so a
//! repeated code (a retry after a lost answer, a double tap, two instances at once)
//! reaches WeChat at most once, and the repeat gets the first attempt's outcome.
//!
//! One key per code, `{p}code:<SHA-256 of the code>`; the raw code is never stored.
//! It holds `pending` while the first attempt runs, then `s:<unix ms>:<id>` or
//! `e:<error>` for [`SETTLED_TTL`] (a WeChat code lives 5 minutes). The session
//! id in `s:` is masked with a hash of the code, so the record is no bearer token
//! to whoever reads Redis without the code; a repeat gets it only within the
//! repeat window after the time beside it, so a code seen in passing (a log, a
//! proxy) does not open a live session for long.

use std::time::{Duration, Instant};

use redis::AsyncCommands;
use sha2::{Digest, Sha256};

use super::{backend::Backend, SessionId, StoreError};
use crate::clock;

/// How long a settled outcome is remembered.
pub const SETTLED_TTL: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(20);

/// What a login attempt finds when it claims its code.
#[derive(Debug, PartialEq, Eq)]
pub enum CodeClaim {
    /// This attempt owns the code: call WeChat, then settle.
    First,
    /// An earlier attempt made this session, within the repeat window.
    Session(SessionId),
    /// An earlier attempt made a session, longer ago than the repeat window.
    Expired,
    /// An earlier attempt failed with this error tag.
    Failed(String),
    /// An earlier attempt is still running after the wait.
    StillPending,
}

#[derive(Clone)]
pub struct LoginCodes {
    backend: Backend,
}

impl LoginCodes {
    pub(super) fn new(backend: Backend) -> LoginCodes {
        LoginCodes { backend }
    }

    /// Claims `code` for this attempt, or waits up to `wait` for the attempt that
    /// claimed it first. A pending claim expires after `wait`, so a crashed
    /// instance cannot block a code for longer.
    pub async fn claim(
        &self,
        code: &str,
        wait: Duration,
        repeat_window: Duration,
    ) -> Result<CodeClaim, StoreError> {
        let key = self.key(code);
        let deadline = Instant::now() + wait;
        loop {
            let claimed: Option<String> = self
                .backend
                .bounded(async {
                    Ok(redis::cmd("SET")
                        .arg(&key)
                        .arg("pending")
                        .arg("NX")
                        .arg("PX")
                        .arg(wait.as_millis() as u64)
                        .query_async(&mut self.backend.conn())
                        .await?)
                })
                .await?;
            if claimed.is_some() {
                return Ok(CodeClaim::First);
            }
            let record: Option<String> = self
                .backend
                .bounded(async { Ok(self.backend.conn().get(&key).await?) })
                .await?;
            match record.as_deref() {
                None => continue, // the pending claim just expired: claim it again
                Some("pending") => {}
                Some(r) => {
                    if let Some(settled) = r.strip_prefix("s:") {
                        let (at_ms, masked) = settled.split_once(':').unwrap_or(("", settled));
                        let age_ms = at_ms
                            .parse::<u64>()
                            .map_or(0, |at| clock::unix_millis().saturating_sub(at));
                        if age_ms > repeat_window.as_millis() as u64 {
                            return Ok(CodeClaim::Expired);
                        }
                        if let Some(id) = unmask(masked, code) {
                            return Ok(CodeClaim::Session(id));
                        }
                    }
                    let tag = r.strip_prefix("e:").unwrap_or("wechat_error");
                    return Ok(CodeClaim::Failed(tag.to_string()));
                }
            }
            if Instant::now() >= deadline {
                return Ok(CodeClaim::StillPending);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Records that the first attempt created session `id`.
    pub async fn settle_session(&self, code: &str, id: &SessionId) -> Result<(), StoreError> {
        let record = format!("s:{}:{}", clock::unix_millis(), mask(id, code));
        self.settle(code, record).await
    }

    /// Records that the first attempt failed with `tag` (an error code).
    pub async fn settle_failure(&self, code: &str, tag: &str) -> Result<(), StoreError> {
        self.settle(code, format!("e:{tag}")).await
    }

    async fn settle(&self, code: &str, record: String) -> Result<(), StoreError> {
        self.backend
            .bounded(async {
                let () = self
                    .backend
                    .conn()
                    .set_ex(self.key(code), record, SETTLED_TTL.as_secs())
                    .await?;
                Ok(())
            })
            .await
    }

    fn key(&self, code: &str) -> String {
        let hash = hex::encode(Sha256::digest(code.as_bytes()));
        self.backend.keys.login_code(&hash)
    }
}

/// 16 bytes derived from the code in another domain than the key's hash.
fn code_mask(code: &str) -> [u8; 16] {
    let digest = Sha256::new()
        .chain_update(b"wxsession login-code mask\0")
        .chain_update(code.as_bytes())
        .finalize();
    digest[..16].try_into().expect("16 of 32 bytes")
}

fn mask(id: &SessionId, code: &str) -> String {
    let bytes = hex::decode(id.as_str()).expect("a session id is hex");
    let masked: Vec<u8> = bytes
        .iter()
        .zip(code_mask(code))
        .map(|(a, b)| a ^ b)
        .collect();
    hex::encode(masked)
}

fn unmask(masked: &str, code: &str) -> Option<SessionId> {
    let bytes = hex::decode(masked).ok()?;
    let plain: Vec<u8> = bytes
        .iter()
        .zip(code_mask(code))
        .map(|(a, b)| a ^ b)
        .collect();
    SessionId::parse(hex::encode(plain).as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_round_trips_only_with_the_code() {
        let id = SessionId::generate();
        let masked = mask(&id, "code-1");
        assert_ne!(masked, id.as_str());
        assert_eq!(unmask(&masked, "code-1"), Some(id.clone()));
        assert_ne!(unmask(&masked, "code-2"), Some(id));
    }
}

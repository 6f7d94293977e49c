//! Mock mode (`wechat.mock = true`, development only): WeChat's answers made up
//! locally, so a login works with no AppSecret and no network.

use base64::Engine as _;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::Identity;
use crate::secret::{os_random_bytes, Secret};

/// The phone number every mock `getuserphonenumber` answers.
const PHONE: &str = "13800138000";

/// Development stand-in: the openid follows from the code (same code, same user),
/// the session_key is fresh and random as WeChat's is.
pub(super) fn identity(code: &str) -> Identity {
    let digest = Sha256::digest(code.as_bytes());
    let key: [u8; 16] = os_random_bytes();
    Identity {
        openid: format!("mock_{}", hex::encode(&digest[..12])),
        unionid: None,
        session_key: Secret::new(base64::engine::general_purpose::STANDARD.encode(key)),
        corpid: None,
    }
}

/// A `phone_info` object as `getuserphonenumber` gives it, watermarked for `appid`.
pub(super) fn phone_info(appid: &str) -> Map<String, Value> {
    serde_json::json!({
        "phoneNumber": PHONE, "purePhoneNumber": PHONE, "countryCode": "86",
        "watermark": {"appid": appid, "timestamp": 0}
    })
    .as_object()
    .cloned()
    .unwrap_or_default()
}

/// A fresh made-up access_token, valid for WeChat's usual 7200 s.
pub(super) fn access_token() -> (Secret, u64) {
    (
        Secret::new(format!(
            "mock-access-token-{}",
            hex::encode(os_random_bytes::<8>())
        )),
        7200,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mock_openid_follows_the_code_and_keys_are_fresh() {
        let (a, b) = (identity("c1"), identity("c1"));
        assert_eq!(a.openid, b.openid);
        assert_ne!(a.session_key, b.session_key);
        assert_ne!(a.openid, identity("c2").openid);
    }
}

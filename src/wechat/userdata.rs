//! User data the mini-program got from WeChat and only the server can open:
//! the `rawData` signature, `encryptedData` (AES-128-CBC, PKCS#7) with its
//! watermark, and what the decrypted objects hold (profile, phone number).
//!
//! All crypto is RustCrypto's (`sha1`, `aes` + `cbc`, `subtle`); nothing here is
//! hand-rolled.

use std::fmt;

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, KeyIvInit};
use base64::{engine::general_purpose::STANDARD, Engine as _};
use serde_json::{Map, Value};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use crate::secret::Secret;

type Aes128CbcDec = cbc::Decryptor<aes::Aes128>;

/// Why user data could not be verified or opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataError {
    /// A field is missing, not base64, or of the wrong length (the client's fault).
    Malformed(&'static str),
    /// `signature` is not SHA-1(rawData + session_key).
    BadSignature,
    /// Wrong key, wrong iv, bad padding, truncated, or not JSON after decryption:
    /// in practice a stale `session_key` — the client should call `wx.login` again.
    DecryptFailed,
    /// The decrypted `watermark.appid` is another mini-program's.
    AppidMismatch,
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataError::Malformed(why) => f.write_str(why),
            DataError::BadSignature => f.write_str("signature mismatch"),
            DataError::DecryptFailed => f.write_str("decryption failed"),
            DataError::AppidMismatch => f.write_str("watermark appid mismatch"),
        }
    }
}

impl std::error::Error for DataError {}

/// `encryptedData` and `iv` as the client sent them, decoded and length-checked.
pub struct EncryptedData {
    ciphertext: Vec<u8>,
    iv: [u8; 16],
}

impl EncryptedData {
    pub fn parse(encrypted_data: &str, iv: &str) -> Result<EncryptedData, DataError> {
        let ciphertext = STANDARD
            .decode(encrypted_data)
            .map_err(|_| DataError::Malformed("encryptedData is not base64"))?;
        if ciphertext.is_empty() {
            return Err(DataError::Malformed("encryptedData is empty"));
        }
        let iv: [u8; 16] = STANDARD
            .decode(iv)
            .map_err(|_| DataError::Malformed("iv is not base64"))?
            .try_into()
            .map_err(|_| DataError::Malformed("iv must decode to 16 bytes"))?;
        Ok(EncryptedData { ciphertext, iv })
    }

    /// AES-128-CBC with strict PKCS#7 under the base64 `session_key`: the plaintext bytes.
    pub fn decrypt(&self, session_key: &Secret) -> Result<Vec<u8>, DataError> {
        let key: [u8; 16] = STANDARD
            .decode(session_key.expose())
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or(DataError::DecryptFailed)?;
        let mut buffer = self.ciphertext.clone();
        let plaintext_len = Aes128CbcDec::new(&key.into(), &self.iv.into())
            .decrypt_padded_mut::<Pkcs7>(&mut buffer)
            .map_err(|_| DataError::DecryptFailed)?
            .len();
        buffer.truncate(plaintext_len);
        Ok(buffer)
    }

    /// Decrypts with the user's current `session_key` and checks the watermark
    /// against our AppID; answers the object without its watermark.
    pub fn open(&self, session_key: &Secret, appid: &str) -> Result<Map<String, Value>, DataError> {
        let plaintext = self.decrypt(session_key)?;
        let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(&plaintext) else {
            return Err(DataError::DecryptFailed);
        };
        check_watermark(&object, appid)?;
        object.remove("watermark");
        Ok(object)
    }
}

/// Checks that the object's `watermark.appid` is ours.
pub fn check_watermark(object: &Map<String, Value>, appid: &str) -> Result<(), DataError> {
    let watermark_appid = object
        .get("watermark")
        .and_then(|w| w.get("appid"))
        .and_then(Value::as_str);
    if watermark_appid == Some(appid) {
        Ok(())
    } else {
        Err(DataError::AppidMismatch)
    }
}

/// Checks `signature` = hex SHA-1(`rawData` + `session_key`), in constant time.
pub fn verify_signature(
    raw_data: &str,
    signature: &str,
    session_key: &Secret,
) -> Result<(), DataError> {
    let mut sha1 = Sha1::new();
    sha1.update(raw_data.as_bytes());
    sha1.update(session_key.expose().as_bytes());
    let expected = hex::encode(sha1.finalize());
    if bool::from(
        expected
            .as_bytes()
            .ct_eq(signature.to_ascii_lowercase().as_bytes()),
    ) {
        Ok(())
    } else {
        Err(DataError::BadSignature)
    }
}

/// The fields of a decrypted user object kept as the user's profile.
pub const PROFILE_FIELDS: [&str; 8] = [
    "nickName",
    "avatarUrl",
    "gender",
    "language",
    "city",
    "province",
    "country",
    "unionId",
];

/// The profile part of a decrypted user object (unknown fields dropped).
pub fn profile_of(user: &Map<String, Value>) -> Map<String, Value> {
    PROFILE_FIELDS
        .iter()
        .filter_map(|f| user.get(*f).map(|v| (f.to_string(), v.clone())))
        .collect()
}

/// A phone number as WeChat hands it over: never stored, never logged, and
/// `Debug` shows none of it.
#[derive(serde::Serialize)]
pub struct PhoneNumber {
    #[serde(rename = "phoneNumber")]
    pub phone_number: String,
    #[serde(rename = "purePhoneNumber")]
    pub pure_phone_number: String,
    #[serde(rename = "countryCode")]
    pub country_code: String,
}

impl PhoneNumber {
    /// Reads the three fields; `countryCode` may be a string or a number.
    pub fn from_object(object: &Map<String, Value>) -> Option<PhoneNumber> {
        let text = |name: &str| match object.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        Some(PhoneNumber {
            phone_number: text("phoneNumber")?,
            pure_phone_number: text("purePhoneNumber")?,
            country_code: text("countryCode")?,
        })
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PhoneNumber(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors() -> Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/wechat-vectors.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn s(v: &Value) -> &str {
        v.as_str().unwrap()
    }

    #[test]
    fn wechat_user_info_vector_decrypts_byte_for_byte() {
        let v = &vectors()["userinfo"];
        let data = EncryptedData::parse(s(&v["encryptedData"]), s(&v["iv"])).unwrap();
        let key = Secret::new(s(&v["sessionKey"]));
        assert_eq!(data.decrypt(&key).unwrap(), s(&v["plaintext"]).as_bytes());
        let mut expected: Map<String, Value> = serde_json::from_str(s(&v["plaintext"])).unwrap();
        expected.remove("watermark");
        assert_eq!(data.open(&key, s(&v["appId"])).unwrap(), expected);
        assert_eq!(data.open(&key, "wx_other"), Err(DataError::AppidMismatch));
        let wrong = Secret::new("AAAAAAAAAAAAAAAAAAAAAA==");
        assert_eq!(
            data.open(&wrong, s(&v["appId"])),
            Err(DataError::DecryptFailed)
        );
    }

    #[test]
    fn wechat_phone_vector_decrypts() {
        let v = &vectors()["phone"];
        let data = EncryptedData::parse(s(&v["encryptedData"]), s(&v["iv"])).unwrap();
        let plaintext = data.decrypt(&Secret::new(s(&v["sessionKey"]))).unwrap();
        assert_eq!(plaintext, s(&v["plaintext"]).as_bytes());
        let object = data
            .open(&Secret::new(s(&v["sessionKey"])), s(&v["appId"]))
            .unwrap();
        let phone = PhoneNumber::from_object(&object).unwrap();
        assert_eq!(phone.phone_number, "18017448610");
        assert_eq!(phone.pure_phone_number, "18017448610");
        assert_eq!(phone.country_code, "86");
        assert_eq!(format!("{phone:?}"), "PhoneNumber(***)");
    }

    #[test]
    fn wechat_raw_data_signature_vector() {
        let v = &vectors()["rawdata_signature"];
        let key = Secret::new(s(&v["sessionKey"]));
        verify_signature(s(&v["rawData"]), s(&v["signature"]), &key).unwrap();
        assert_eq!(
            verify_signature(&format!("{} ", s(&v["rawData"])), s(&v["signature"]), &key),
            Err(DataError::BadSignature)
        );
    }

    #[test]
    fn malformed_fields_are_rejected_before_any_crypto() {
        let iv = "AAAAAAAAAAAAAAAAAAAAAA==";
        for (data, iv) in [("***", iv), ("", iv), ("AAAA", "AAAA"), ("AAAA", "!!")] {
            assert!(
                matches!(EncryptedData::parse(data, iv), Err(DataError::Malformed(_))),
                "{data:?} {iv:?}"
            );
        }
    }
}

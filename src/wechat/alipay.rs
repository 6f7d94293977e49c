//! Alipay's login call, `alipay.system.oauth.token` (contract §11): the app's
//! and Alipay's RSA keys ([`AlipayKeys`], read once at start), the signed form
//! of one call, and the signed answer read back into an [`Identity`].
//!
//! Alipay's gateway is not WeChat's: every request carries an RSA2 signature
//! made with the app's private key, and every answer one made with Alipay's,
//! over the exact text of the answer's node, so the answer is read as text
//! (`HttpClient::send_text`) rather than as JSON.

use std::{fmt, path::Path};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use ring::{
    rand::SystemRandom,
    signature::{RsaKeyPair, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256},
};
use serde::Deserialize;
use serde_json::{value::RawValue, Value};

use super::{call::HttpClient, Identity, LoginCode, WechatError};
use crate::secret::Secret;

/// The app's private key, which signs our requests, and Alipay's public key,
/// which signs its answers.
pub struct AlipayKeys {
    app_private_key: RsaKeyPair,
    /// PKCS#1 `RSAPublicKey` DER, the form ring verifies with; checked when
    /// loaded, because ring only parses it at the first verification.
    alipay_public_key: Vec<u8>,
}

/// Which of the two key files a [`KeyError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WhichKey {
    AppPrivate,
    AlipayPublic,
}

/// Why a key could not be used: which key, from which file if any, and why,
/// in one line and without any of the key itself.
#[derive(Debug)]
pub struct KeyError {
    key: WhichKey,
    file: Option<String>,
    reason: String,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.key {
            WhichKey::AppPrivate => "the app's private key (private_key_file",
            WhichKey::AlipayPublic => "Alipay's public key (alipay_public_key_file",
        };
        match &self.file {
            Some(file) => write!(f, "{what} {file}): {}", self.reason),
            None => write!(f, "{what}): {}", self.reason),
        }
    }
}

impl std::error::Error for KeyError {}

impl AlipayKeys {
    /// Reads both key files: PEM or the bare base64 Alipay's key tool and
    /// console give (see `AlipayKeys::from_text`).
    pub fn load(
        private_key_file: &Path,
        alipay_public_key_file: &Path,
    ) -> Result<AlipayKeys, KeyError> {
        Ok(AlipayKeys {
            app_private_key: from_file(WhichKey::AppPrivate, private_key_file, app_private_key)?,
            alipay_public_key: from_file(
                WhichKey::AlipayPublic,
                alipay_public_key_file,
                alipay_public_key,
            )?,
        })
    }

    /// Both keys from their text. The private key: PKCS#8 (`BEGIN PRIVATE
    /// KEY`) or PKCS#1 (`BEGIN RSA PRIVATE KEY`), PEM or bare base64; the public
    /// key: SPKI (`BEGIN PUBLIC KEY`) or PKCS#1 (`BEGIN RSA PUBLIC KEY`), PEM or
    /// bare base64. (The server reads files; the tests hand in text.)
    #[cfg(test)]
    pub fn from_text(private: &str, public: &str) -> Result<AlipayKeys, KeyError> {
        let error = |key| {
            move |reason| KeyError {
                key,
                file: None,
                reason,
            }
        };
        Ok(AlipayKeys {
            app_private_key: app_private_key(private).map_err(error(WhichKey::AppPrivate))?,
            alipay_public_key: alipay_public_key(public).map_err(error(WhichKey::AlipayPublic))?,
        })
    }

    /// RSA-SHA256, PKCS#1 v1.5, base64 (standard, padded): Alipay's "RSA2".
    fn sign(&self, text: &str) -> Result<String, WechatError> {
        let mut signature = vec![0; self.app_private_key.public().modulus_len()];
        self.app_private_key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                text.as_bytes(),
                &mut signature,
            )
            .map_err(|_| WechatError::Upstream("cannot sign the request".into()))?;
        Ok(STANDARD.encode(signature))
    }

    fn alipay_signed(&self, text: &str, signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &self.alipay_public_key)
            .verify(text.as_bytes(), signature)
            .is_ok()
    }
}

impl fmt::Debug for AlipayKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AlipayKeys {{ app_private_key: RSA-{} ***, alipay_public_key: RSA-{} }}",
            self.app_private_key.public().modulus_len() * 8,
            rsa_modulus_bits(&self.alipay_public_key).unwrap_or(0),
        )
    }
}

/// One key read from its file by `parse`.
fn from_file<T>(
    key: WhichKey,
    path: &Path,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, KeyError> {
    std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read it: {e}"))
        .and_then(|text| parse(&text))
        .map_err(|reason| KeyError {
            key,
            file: Some(path.display().to_string()),
            reason,
        })
}

/// The DER inside a key file's text: PEM armor lines (`-----…`) dropped, the
/// rest read as one base64 text, which is also what a bare base64 file is.
fn der_of(text: &str) -> Result<Vec<u8>, String> {
    // Only armor mentions it (`BEGIN ENCRYPTED PRIVATE KEY`, `Proc-Type:
    // 4,ENCRYPTED`): a base64 line has neither dashes nor a colon.
    let armor = |line: &str| line.starts_with("-----") || line.contains(':');
    if text
        .lines()
        .any(|line| armor(line) && line.contains("ENCRYPTED"))
    {
        return Err("an encrypted key: give it unencrypted".into());
    }
    let base64: String = text
        .trim_start_matches('\u{feff}')
        .lines()
        .filter(|line| !line.trim_start().starts_with("-----"))
        .flat_map(|line| line.chars().filter(|c| !c.is_whitespace()))
        .collect();
    if base64.is_empty() {
        return Err("empty".into());
    }
    // The decoder's message would quote a byte of the file.
    STANDARD
        .decode(base64)
        .map_err(|_| "neither PEM nor base64".into())
}

fn app_private_key(text: &str) -> Result<RsaKeyPair, String> {
    let der = der_of(text)?;
    match (RsaKeyPair::from_pkcs8(&der), RsaKeyPair::from_der(&der)) {
        (Ok(key), _) | (_, Ok(key)) => Ok(key),
        _ if public_key_der(&der).is_some() => {
            Err("a public key, not the app's private key".into())
        }
        // One of the formats matched, but not the key (1024 bits, say).
        (Err(e), _) | (_, Err(e)) if e.to_string() != "InvalidEncoding" => {
            Err(format!("not a usable RSA private key: {e}"))
        }
        _ => Err("not an RSA private key (PKCS#8 or PKCS#1)".into()),
    }
}

fn alipay_public_key(text: &str) -> Result<Vec<u8>, String> {
    let der = der_of(text)?;
    match public_key_der(&der) {
        Some(key) => match rsa_modulus_bits(key) {
            Some(bits) if !(2048..=8192).contains(&bits) => Err(format!(
                "a {bits}-bit RSA key; RSA2 takes 2048 to 8192 bits"
            )),
            _ => Ok(key.to_vec()),
        },
        None if RsaKeyPair::from_pkcs8(&der).is_ok() || RsaKeyPair::from_der(&der).is_ok() => {
            Err("a private key; give Alipay's public key".into())
        }
        None => Err("not an RSA public key (SPKI or PKCS#1)".into()),
    }
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OID: u8 = 0x06;
const NULL: [u8; 2] = [0x05, 0x00];
/// 1.2.840.113549.1.1.1, rsaEncryption.
const RSA_ENCRYPTION: [u8; 9] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// The PKCS#1 `RSAPublicKey` in `der`: unwrapped from an SPKI
/// (`SEQUENCE { SEQUENCE { rsaEncryption, NULL }, BIT STRING { 0, RSAPublicKey } }`),
/// or `der` itself; `None` unless it is `SEQUENCE { INTEGER, INTEGER }`.
fn public_key_der(der: &[u8]) -> Option<&[u8]> {
    let key = spki_contents(der).unwrap_or(der);
    rsa_modulus_bits(key).map(|_| key)
}

fn spki_contents(der: &[u8]) -> Option<&[u8]> {
    let (spki, rest) = der_element(der, SEQUENCE)?;
    let (algorithm, bits) = der_element(spki, SEQUENCE)?;
    let (oid, parameters) = der_element(algorithm, OID)?;
    let (bits, rest_of_spki) = der_element(bits, BIT_STRING)?;
    let ok = rest.is_empty()
        && oid == RSA_ENCRYPTION
        && (parameters == NULL || parameters.is_empty())
        && rest_of_spki.is_empty();
    match bits.split_first() {
        Some((0, key)) if ok => Some(key),
        _ => None,
    }
}

/// The modulus size of a PKCS#1 `RSAPublicKey` (`SEQUENCE { INTEGER n,
/// INTEGER e }`, nothing after), or `None` if `der` is not one.
fn rsa_modulus_bits(der: &[u8]) -> Option<usize> {
    let (key, rest) = der_element(der, SEQUENCE)?;
    let (modulus, key) = der_element(key, INTEGER)?;
    let (exponent, key) = der_element(key, INTEGER)?;
    if !rest.is_empty() || !key.is_empty() || exponent.is_empty() {
        return None;
    }
    let modulus = &modulus[modulus.iter().position(|&b| b != 0)?..];
    Some(modulus.len() * 8 - modulus[0].leading_zeros() as usize)
}

/// One DER element with tag `tag` at the start of `input`: its contents and
/// what follows it.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, input) = input.split_first()?;
    let (&first, input) = input.split_first()?;
    let (len, input) = match first {
        0..=0x7f => (usize::from(first), input),
        // Lengths of 1 to 4 bytes; 0x80 (indefinite) is not DER.
        0x81..=0x84 => {
            let (len, input) = input.split_at_checked(usize::from(first & 0x7f))?;
            let len = len.iter().fold(0, |len, &b| len << 8 | usize::from(b));
            (len, input)
        }
        _ => return None,
    };
    let (contents, rest) = input.split_at_checked(len)?;
    (found == tag).then_some((contents, rest))
}

/// The form parameters of one `alipay.system.oauth.token` call, `sign` last;
/// `unix_secs` is now, by the caller's clock.
fn request_params(
    appid: &str,
    code: &LoginCode,
    unix_secs: u64,
    keys: &AlipayKeys,
) -> Result<Vec<(&'static str, String)>, WechatError> {
    let mut params = vec![
        ("app_id", appid.to_string()),
        ("method", "alipay.system.oauth.token".to_string()),
        ("format", "JSON".to_string()),
        ("charset", "utf-8".to_string()),
        ("sign_type", "RSA2".to_string()),
        ("timestamp", china_time(unix_secs)),
        ("version", "1.0".to_string()),
        ("grant_type", "authorization_code".to_string()),
        ("code", code.as_str().to_string()),
    ];
    let sign = keys.sign(&signing_string(&params))?;
    params.push(("sign", sign));
    Ok(params)
}

/// What a request's `sign` signs (§11): every parameter but `sign` itself
/// (`sign_type` included), sorted by name, `k=v` joined with `&`, values as
/// they are (not URL-encoded).
fn signing_string(params: &[(&str, String)]) -> String {
    let mut signed: Vec<_> = params.iter().filter(|(k, _)| *k != "sign").collect();
    signed.sort_by_key(|(k, _)| *k);
    let pairs: Vec<String> = signed.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join("&")
}

/// `yyyy-MM-dd HH:mm:ss` in GMT+8: the format and zone Alipay's gateway reads,
/// wherever the server runs.
fn china_time(unix_secs: u64) -> String {
    let local = unix_secs.saturating_add(8 * 3600);
    let (year, month, day) = civil_date(local / 86_400);
    let secs = local % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, in unsigned arithmetic: nothing here is before 1970).
fn civil_date(days: u64) -> (u64, u64, u64) {
    // Years counted from 1 March, so a leap day is the last day of its year.
    let days = days + 719_468;
    let era = days / 146_097;
    let day_of_era = days % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

/// An answer as it comes: the node's exact text, which `sign` signs.
#[derive(Deserialize)]
struct SignedAnswer<'a> {
    #[serde(borrow)]
    alipay_system_oauth_token_response: Option<&'a RawValue>,
    #[serde(borrow)]
    error_response: Option<&'a RawValue>,
    /// Owned: JSON may escape its `/` as `\/`.
    sign: Option<String>,
}

/// The fields of a node we read. The access_token and refresh_token are not
/// among them, so they are skipped unread and never held.
#[derive(Deserialize)]
struct TokenNode {
    /// A numeric string in practice; a number is taken too.
    code: Option<Value>,
    sub_code: Option<String>,
    open_id: Option<String>,
    user_id: Option<String>,
    union_id: Option<String>,
}

/// The identity in an answer's exact text, once Alipay's signature over its
/// node has been checked.
fn identity_of(raw: &str, keys: &AlipayKeys) -> Result<Identity, WechatError> {
    let upstream = |detail: &str| WechatError::Upstream(detail.into());
    let answer: SignedAnswer = serde_json::from_str(raw)
        .map_err(|_| WechatError::Upstream(format!("not a JSON object ({} bytes)", raw.len())))?;
    let node = answer
        .alipay_system_oauth_token_response
        .or(answer.error_response)
        .ok_or_else(|| upstream("no alipay_system_oauth_token_response or error_response"))?;
    // Error answers too: Alipay's SDK takes an unsigned error answer as it
    // is, but §11 makes any answer without a good signature a 502.
    let sign = answer.sign.ok_or_else(|| upstream("answer not signed"))?;
    let signature = STANDARD
        .decode(sign)
        .map_err(|_| upstream("answer signature is not base64"))?;
    if !keys.alipay_signed(node.get(), &signature) {
        return Err(upstream(
            "answer signature does not match alipay_public_key_file",
        ));
    }
    let node: TokenNode =
        serde_json::from_str(node.get()).map_err(|_| upstream("unexpected answer shape"))?;
    if let Some(sub_code) = node.sub_code.filter(|s| !s.is_empty()) {
        let code = match node.code {
            Some(Value::String(code)) => code,
            Some(other) => other.to_string(),
            None => "-".into(),
        };
        return Err(match (code.as_str(), sub_code.as_str()) {
            (_, "isv.code-invalid") => WechatError::InvalidCode(40002),
            ("20000", _) | (_, "isp.unknow-error" | "aop.unknow-error") => WechatError::Busy,
            _ => WechatError::Upstream(format!("alipay {code} {sub_code}")),
        });
    }
    let non_empty = |id: Option<String>| id.filter(|id| !id.is_empty());
    let openid = non_empty(node.open_id)
        .or(non_empty(node.user_id))
        .ok_or_else(|| upstream("success without open_id or user_id"))?;
    Ok(Identity {
        openid,
        // Kept as the session's unionid, so one person is found across apps.
        unionid: non_empty(node.union_id),
        // Alipay has none: the store keeps no session_key for its sessions.
        session_key: Secret::new(""),
        corpid: None,
    })
}

/// Exchanges an authCode from `my.getAuthCode` for the user's identity: one
/// call, never retried (a code is accepted once). `unix_secs` is now, by the
/// fleet's clock.
pub(super) async fn code_to_session(
    http: &HttpClient,
    api_base: &str,
    appid: &str,
    keys: &AlipayKeys,
    code: &LoginCode,
    unix_secs: u64,
) -> Result<Identity, WechatError> {
    let params = request_params(appid, code, unix_secs, keys)?;
    let request = http.post(format!("{api_base}/gateway.do")).form(&params);
    identity_of(&http.send_text(request).await?, keys)
}

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead, BufReader, Read, Write},
        net::TcpListener,
        path::PathBuf,
        process::Command,
        sync::atomic::{AtomicU64, Ordering::Relaxed},
        time::Duration,
    };

    use super::*;

    /// `openssl`'s files for one test, in a directory removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Scratch {
            static SEQ: AtomicU64 = AtomicU64::new(0);
            let dir = std::env::temp_dir().join(format!(
                "wxsession-alipay-{}-{}",
                std::process::id(),
                SEQ.fetch_add(1, Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }

        fn read(&self, name: &str) -> String {
            std::fs::read_to_string(self.path(name)).unwrap()
        }

        fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
            std::fs::write(self.path(name), contents).unwrap();
            self.path(name)
        }

        /// Runs `openssl` in the directory and answers what it wrote to stdout.
        fn openssl(&self, args: &[&str]) -> Vec<u8> {
            let out = Command::new("openssl")
                .current_dir(&self.0)
                .args(args)
                .output()
                .expect("openssl must be installed");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        }

        /// An RSA key pair `name` in every form a key file may take:
        /// `name.pem` (PKCS#8), `name-pkcs1.pem`, `name-pkcs8.b64`,
        /// `name-pkcs1.b64`, and its public key as `name-spki.pem`,
        /// `name-rsapub.pem` (PKCS#1), `name-spki.b64`, `name-rsapub.b64`
        /// (`.b64`: bare base64 on one line, as Alipay's tools write keys).
        fn key_pair(&self, name: &str, bits: u32) {
            let pem = format!("{name}.pem");
            let keygen_bits = format!("rsa_keygen_bits:{bits}");
            self.openssl(&[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                &keygen_bits,
                "-out",
                &pem,
            ]);
            let pkcs1_pem = format!("{name}-pkcs1.pem");
            self.openssl(&["rsa", "-in", &pem, "-traditional", "-out", &pkcs1_pem]);
            let spki_pem = format!("{name}-spki.pem");
            self.openssl(&["pkey", "-in", &pem, "-pubout", "-out", &spki_pem]);
            let rsapub_pem = format!("{name}-rsapub.pem");
            self.openssl(&["rsa", "-in", &pem, "-RSAPublicKey_out", "-out", &rsapub_pem]);
            // Not `pkey -outform DER` for PKCS#8: OpenSSL 3 writes an RSA
            // key's DER as PKCS#1.
            for (form, args) in [
                (
                    "pkcs8",
                    &["pkcs8", "-topk8", "-nocrypt", "-outform", "DER"][..],
                ),
                ("pkcs1", &["rsa", "-traditional", "-outform", "DER"]),
                ("spki", &["pkey", "-pubout", "-outform", "DER"]),
                ("rsapub", &["rsa", "-RSAPublicKey_out", "-outform", "DER"]),
            ] {
                let der = self.openssl(&[args, &["-in", &pem]].concat());
                self.write(&format!("{name}-{form}.b64"), STANDARD.encode(der));
            }
            // Each file is in the form its name says.
            let der = |form| {
                STANDARD
                    .decode(self.read(&format!("{name}-{form}.b64")))
                    .unwrap()
            };
            let is_spki = |der: &[u8]| der.windows(9).any(|oid| oid == RSA_ENCRYPTION);
            if bits >= 2048 {
                assert!(RsaKeyPair::from_pkcs8(&der("pkcs8")).is_ok());
                assert!(RsaKeyPair::from_pkcs8(&der("pkcs1")).is_err());
                assert!(RsaKeyPair::from_der(&der("pkcs1")).is_ok());
            }
            assert!(is_spki(&der("spki")) && !is_spki(&der("rsapub")));
            let label = |file, label| {
                assert!(self
                    .read(file)
                    .starts_with(&format!("-----BEGIN {label}-----")))
            };
            label(&pem, "PRIVATE KEY");
            label(&pkcs1_pem, "RSA PRIVATE KEY");
            label(&spki_pem, "PUBLIC KEY");
            label(&rsapub_pem, "RSA PUBLIC KEY");
        }

        /// base64 of `openssl dgst -sha256 -sign name.pem` over `text`.
        fn sign(&self, name: &str, text: &str) -> String {
            let file = self.write("signed.txt", text);
            let pem = format!("{name}.pem");
            let signature =
                self.openssl(&["dgst", "-sha256", "-sign", &pem, file.to_str().unwrap()]);
            STANDARD.encode(signature)
        }

        /// The app's key pair and one playing Alipay's, loaded as Alipay's
        /// tools give them: bare PKCS#8 and bare SPKI.
        fn keys(&self) -> AlipayKeys {
            self.key_pair("app", 2048);
            self.key_pair("alipay", 2048);
            AlipayKeys::load(&self.path("app-pkcs8.b64"), &self.path("alipay-spki.b64")).unwrap()
        }

        /// An answer whose `node_name` is `node`, signed by key pair `signer`.
        fn answer(&self, node_name: &str, node: &str, signer: &str) -> String {
            let sign = self.sign(signer, node);
            format!(r#"{{"{node_name}":{node},"sign":"{sign}"}}"#)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const SUCCESS: &str = "alipay_system_oauth_token_response";
    const ERROR: &str = "error_response";

    fn upstream<T: fmt::Debug>(result: Result<T, WechatError>) -> String {
        match result {
            Err(WechatError::Upstream(detail)) => detail,
            other => panic!("expected Upstream, got {other:?}"),
        }
    }

    #[test]
    fn timestamps_are_gmt_plus_8() {
        for (unix, expected) in [
            (0, "1970-01-01 08:00:00"),
            (1_700_000_000, "2023-11-15 06:13:20"),
            (1_714_536_000, "2024-05-01 12:00:00"),
            (1_709_135_999, "2024-02-28 23:59:59"),
            (1_709_136_000, "2024-02-29 00:00:00"),
            (951_839_999, "2000-02-29 23:59:59"),
            (4_107_513_600, "2100-03-01 00:00:00"),
            // 16:00 UTC on 31 December is already the new year in GMT+8.
            (1_704_038_399, "2023-12-31 23:59:59"),
            (1_704_038_400, "2024-01-01 00:00:00"),
        ] {
            assert_eq!(china_time(unix), expected, "{unix}");
        }
    }

    #[test]
    fn keys_load_in_every_accepted_form() {
        let dir = Scratch::new();
        dir.key_pair("app", 2048);
        dir.key_pair("alipay", 2048);
        let expected = dir.sign("app", "text");
        let alipay_signature = STANDARD.decode(dir.sign("alipay", "text")).unwrap();
        let privates = ["app.pem", "app-pkcs1.pem", "app-pkcs8.b64", "app-pkcs1.b64"];
        let publics = [
            "alipay-spki.pem",
            "alipay-rsapub.pem",
            "alipay-spki.b64",
            "alipay-rsapub.b64",
        ];
        for (private, public) in privates.into_iter().zip(publics) {
            let keys = AlipayKeys::load(&dir.path(private), &dir.path(public)).unwrap();
            assert_eq!(keys.sign("text").unwrap(), expected, "{private}");
            assert!(keys.alipay_signed("text", &alipay_signature), "{public}");
            assert!(!keys.alipay_signed("text!", &alipay_signature), "{public}");
        }
        // As a Windows editor may leave them: a byte-order mark and CRLF.
        let windows = |name| format!("\u{feff}{}", dir.read(name).replace('\n', "\r\n"));
        let keys =
            AlipayKeys::from_text(&windows("app-pkcs1.pem"), &windows("alipay-spki.pem")).unwrap();
        assert_eq!(keys.sign("text").unwrap(), expected);
        assert!(keys.alipay_signed("text", &alipay_signature));
        assert_eq!(
            format!("{keys:?}"),
            "AlipayKeys { app_private_key: RSA-2048 ***, alipay_public_key: RSA-2048 }"
        );
    }

    #[test]
    fn key_errors_say_which_file_and_why() {
        let dir = Scratch::new();
        dir.key_pair("app", 2048);
        dir.key_pair("small", 1024);
        // Encrypted, as PKCS#8 (`BEGIN ENCRYPTED PRIVATE KEY`) and as PKCS#1
        // (`Proc-Type: 4,ENCRYPTED`).
        dir.openssl(&[
            "pkcs8", "-topk8", "-in", "app.pem", "-passout", "pass:x", "-out", "enc8.pem",
        ]);
        dir.openssl(&[
            "rsa",
            "-aes256",
            "-traditional",
            "-in",
            "app.pem",
            "-passout",
            "pass:x",
            "-out",
            "enc1.pem",
        ]);
        let garbage = dir.write("garbage.txt", "not a key\n");
        let not_der = dir.write("not-der.txt", "aGVsbG8gd29ybGQ=\n");
        let empty = dir.write(
            "empty.txt",
            "-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n",
        );
        let good_private = dir.path("app-pkcs8.b64");
        let good_public = dir.path("app-spki.b64");
        let error = |private: &Path, public: &Path| {
            let e = AlipayKeys::load(private, public).unwrap_err();
            let text = e.to_string();
            let (file, other) = match e.key {
                WhichKey::AppPrivate => (private, "alipay_public_key_file"),
                WhichKey::AlipayPublic => (public, "private_key_file"),
            };
            let name = format!("_file {}): ", file.display());
            assert!(text.contains(&name) && !text.contains(other), "{text}");
            assert!(!text.contains("MII") && !text.contains('\n'), "{text}");
            (e.key, text.split("): ").nth(1).unwrap().to_string())
        };
        let missing = dir.path("missing.pem");
        let unreadable = "cannot read it: No such file or directory (os error 2)";
        let public_key = "a public key, not the app's private key";
        let encrypted = "an encrypted key: give it unencrypted";
        for (file, reason) in [
            (&garbage, "neither PEM nor base64"),
            (&not_der, "not an RSA private key (PKCS#8 or PKCS#1)"),
            (&empty, "empty"),
            (&dir.path("app-spki.pem"), public_key),
            (&dir.path("app-rsapub.b64"), public_key),
            (
                &dir.path("small.pem"),
                "not a usable RSA private key: TooSmall",
            ),
            (&dir.path("enc8.pem"), encrypted),
            (&dir.path("enc1.pem"), encrypted),
            (&missing, unreadable),
        ] {
            let expected = (WhichKey::AppPrivate, reason.to_string());
            assert_eq!(error(file, &good_public), expected);
        }
        let private_key = "a private key; give Alipay's public key";
        for (file, reason) in [
            (&garbage, "neither PEM nor base64"),
            (&not_der, "not an RSA public key (SPKI or PKCS#1)"),
            (&dir.path("app.pem"), private_key),
            (&dir.path("app-pkcs1.b64"), private_key),
            (
                &dir.path("small-spki.pem"),
                "a 1024-bit RSA key; RSA2 takes 2048 to 8192 bits",
            ),
            (&missing, unreadable),
        ] {
            let expected = (WhichKey::AlipayPublic, reason.to_string());
            assert_eq!(error(&good_private, file), expected);
        }
        let e = AlipayKeys::from_text(&dir.read("app.pem"), "junk!").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Alipay's public key (alipay_public_key_file): neither PEM nor base64"
        );
    }

    #[test]
    fn requests_are_signed_over_the_sorted_parameters() {
        let dir = Scratch::new();
        let keys = dir.keys();
        let code = LoginCode::parse("4b203fe6c11548bcabd8da5bb087a83b".into()).unwrap();
        let params = request_params("2021000000000000", &code, 1_714_536_000, &keys).unwrap();
        let expected = "app_id=2021000000000000&charset=utf-8\
            &code=4b203fe6c11548bcabd8da5bb087a83b&format=JSON\
            &grant_type=authorization_code&method=alipay.system.oauth.token\
            &sign_type=RSA2&timestamp=2024-05-01 12:00:00&version=1.0";
        assert_eq!(signing_string(&params), expected);
        let (name, sign) = params.last().unwrap();
        assert_eq!((*name, sign), ("sign", &dir.sign("app", expected)));
        assert_eq!(params.len(), 10);
    }

    fn success_node(ids: &str) -> String {
        format!(
            r#"{{"access_token":"authusrB0123","alipay_user_id":"20881000","auth_start":"2024-05-01 12:00:00","expires_in":1296000,"re_expires_in":2592000,"refresh_token":"authusrB4567"{ids}}}"#
        )
    }

    #[test]
    fn success_answers_give_the_identity() {
        let dir = Scratch::new();
        let keys = dir.keys();
        let identity = |ids: &str| {
            let raw = dir.answer(SUCCESS, &success_node(ids), "alipay");
            identity_of(&raw, &keys).map(|i| (i.openid, i.unionid, i.session_key))
        };
        let user = r#","user_id":"2088102150477652""#;
        assert_eq!(
            identity(&format!(r#"{user},"open_id":"074aOpen","union_id":"u-1""#)).unwrap(),
            ("074aOpen".into(), Some("u-1".into()), Secret::new(""))
        );
        assert_eq!(
            identity(&format!(r#"{user},"open_id":"","union_id":"""#)).unwrap(),
            ("2088102150477652".into(), None, Secret::new(""))
        );
        assert_eq!(identity(user).unwrap().0, "2088102150477652");
        assert_eq!(identity(r#","open_id":"074aOpen""#).unwrap().0, "074aOpen");
        let detail = upstream(identity(r#","user_id":"","open_id":"""#));
        assert_eq!(detail, "success without open_id or user_id");

        // The exact text is what is signed, spaces and all; and a `/` of the
        // signature may come escaped.
        let spaced = r#"{ "user_id" : "2088102150477652" }"#;
        let sign = dir.sign("alipay", spaced).replace('/', r"\/");
        let raw = format!("{{\n  \"{SUCCESS}\": {spaced},\n  \"sign\": \"{sign}\"\n}}");
        assert_eq!(identity_of(&raw, &keys).unwrap().openid, "2088102150477652");
    }

    #[test]
    fn answers_without_alipays_signature_are_refused() {
        let dir = Scratch::new();
        let keys = dir.keys();
        let node = success_node(r#","user_id":"2088102150477652""#);
        let signed = dir.answer(SUCCESS, &node, "alipay");
        let sign = dir.sign("alipay", &node);
        let bad = "answer signature does not match alipay_public_key_file";
        for (raw, expected) in [
            (signed.replacen("477652", "477653", 1), bad),
            (dir.answer(SUCCESS, &node, "app"), bad),
            (
                format!(
                    r#"{{"{SUCCESS}":{node},"sign":"{}"}}"#,
                    dir.sign("alipay", &node.replace(',', ", "))
                ),
                bad,
            ),
            (format!(r#"{{"{SUCCESS}":{node}}}"#), "answer not signed"),
            (
                format!(r#"{{"{SUCCESS}":{node},"sign":"%%"}}"#),
                "answer signature is not base64",
            ),
            (
                // An unsigned error is refused as well (§11), unlike the SDK.
                format!(r#"{{"{ERROR}":{{"code":"40002","sub_code":"isv.code-invalid"}}}}"#),
                "answer not signed",
            ),
            (
                format!(r#"{{"sign":"{sign}"}}"#),
                "no alipay_system_oauth_token_response or error_response",
            ),
            (
                "<html>502</html>".to_string(),
                "not a JSON object (16 bytes)",
            ),
            ("[1,2]".to_string(), "not a JSON object (5 bytes)"),
        ] {
            assert_eq!(upstream(identity_of(&raw, &keys)), expected, "{raw}");
        }
        // Signed, but not an object: its fields cannot be read.
        let raw = dir.answer(SUCCESS, r#""text""#, "alipay");
        assert_eq!(
            upstream(identity_of(&raw, &keys)),
            "unexpected answer shape"
        );
    }

    #[test]
    fn error_answers_map_to_what_the_caller_should_do() {
        let dir = Scratch::new();
        let keys = dir.keys();
        let error = |node_name: &str, node: &str| {
            identity_of(&dir.answer(node_name, node, "alipay"), &keys)
        };
        let invalid = r#"{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.code-invalid","sub_msg":"授权码code无效"}"#;
        assert_eq!(
            error(ERROR, invalid).unwrap_err(),
            WechatError::InvalidCode(40002)
        );
        assert_eq!(
            error(SUCCESS, invalid).unwrap_err(),
            WechatError::InvalidCode(40002)
        );
        for sub_code in ["isp.unknow-error", "aop.unknow-error"] {
            let busy = format!(
                r#"{{"code":"20000","msg":"Service Currently Unavailable","sub_code":"{sub_code}","sub_msg":"系统繁忙"}}"#
            );
            assert_eq!(error(ERROR, &busy).unwrap_err(), WechatError::Busy);
        }
        let denied = r#"{"code":"40006","msg":"Insufficient Permissions","sub_code":"isv.insufficient-isv-permissions","sub_msg":"ISV权限不足"}"#;
        assert_eq!(
            upstream(error(ERROR, denied)),
            "alipay 40006 isv.insufficient-isv-permissions"
        );
        let numeric = r#"{"code":40004,"sub_code":"isv.unknown"}"#;
        assert_eq!(upstream(error(ERROR, numeric)), "alipay 40004 isv.unknown");
    }

    /// A one-request HTTP server: answers `body` to the first request and
    /// hands back that request's head and body.
    fn one_answer(body: String) -> (String, std::thread::JoinHandle<(String, String)>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let mut reader = BufReader::new(listener.accept().unwrap().0);
            let mut head = String::new();
            while !head.ends_with("\r\n\r\n") {
                assert!(reader.read_line(&mut head).unwrap() > 0, "{head}");
            }
            let length = head
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|n| n.trim().parse().unwrap())
                })
                .unwrap();
            let mut request = vec![0; length];
            reader.read_exact(&mut request).unwrap();
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html;charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            reader.get_mut().write_all(answer.as_bytes()).unwrap();
            (head, String::from_utf8(request).unwrap())
        });
        (base, server)
    }

    #[tokio::test]
    async fn code_to_session_posts_the_signed_form() {
        let dir = Scratch::new();
        let keys = dir.keys();
        let node = success_node(r#","user_id":"2088102150477652","open_id":"074aOpen""#);
        let (base, server) = one_answer(dir.answer(SUCCESS, &node, "alipay"));
        let http = HttpClient::new(Duration::from_secs(10)).unwrap();
        let code = LoginCode::parse("auth+code/=1".into()).unwrap();
        let identity = code_to_session(
            &http,
            &base,
            "2021000000000000",
            &keys,
            &code,
            1_714_536_000,
        )
        .await
        .unwrap();
        assert_eq!(identity.openid, "074aOpen");

        let (head, body) = server.join().unwrap();
        assert!(head.starts_with("POST /gateway.do HTTP/1.1\r\n"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("\r\ncontent-type: application/x-www-form-urlencoded\r\n"),
            "{head}"
        );
        let sent = actix_web::web::Query::<Vec<(String, String)>>::from_query(&body)
            .unwrap()
            .into_inner();
        let expected: Vec<(String, String)> =
            request_params("2021000000000000", &code, 1_714_536_000, &keys)
                .unwrap()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
        assert_eq!(sent, expected);
        assert!(body.contains("&code=auth%2Bcode%2F%3D1&"), "{body}");
    }
}

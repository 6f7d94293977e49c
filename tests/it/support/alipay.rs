//! An Alipay stand-in: `POST /gateway.do` on loopback, checking every
//! `alipay.system.oauth.token` request's RSA2 signature and parameters and
//! signing its answers as Alipay does; and the key pairs it needs, made with
//! `openssl` ([`AlipayKeyFiles`]).

use std::{
    net::TcpListener,
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use actix_web::{dev::ServerHandle, http::KeepAlive, web, App, HttpResponse};
use base64::{engine::general_purpose::STANDARD, Engine as _};
use ring::{
    rand::SystemRandom,
    signature::{RsaKeyPair, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256},
};

use super::{serve_stand_in, tls::openssl, unique_dir};

/// An app's key pair and Alipay's, as files in a directory of their own
/// (removed on drop), in the forms people are given them.
pub struct AlipayKeyFiles {
    dir: PathBuf,
    /// The app's private key as Alipay's key tool writes it ("PKCS8"): bare
    /// base64 of PKCS#8, one line.
    pub app_private_key: String,
    /// The same key as PEM PKCS#1 (`BEGIN RSA PRIVATE KEY`).
    pub app_private_key_pem: String,
    /// Alipay's public key as its console shows it: bare base64 of SPKI.
    pub alipay_public_key: String,
    /// The same key as PEM SPKI (`BEGIN PUBLIC KEY`).
    pub alipay_public_key_pem: String,
    /// The app's public key, PKCS#1 DER: the stand-in checks requests with it.
    app_public_der: Vec<u8>,
    /// Alipay's private key, PKCS#8 DER: the stand-in signs answers with it.
    alipay_private_der: Vec<u8>,
    /// A key that is not Alipay's, PKCS#8 DER (for `badsign`).
    impostor_private_der: Vec<u8>,
}

impl AlipayKeyFiles {
    /// Three 2048-bit RSA key pairs (the app's, Alipay's, an impostor's).
    pub fn generate() -> AlipayKeyFiles {
        let dir = unique_dir("alipay");
        let run = |args: &str| openssl(&dir, &[&args.split(' ').collect::<Vec<_>>()]);
        for name in ["app", "alipay", "impostor"] {
            run(&format!(
                "genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out {name}.pem"
            ));
            // Not `pkey -outform DER`: OpenSSL 3 writes an RSA key's DER as PKCS#1.
            run(&format!(
                "pkcs8 -topk8 -nocrypt -in {name}.pem -outform DER -out {name}.der"
            ));
        }
        run("rsa -in app.pem -traditional -out app-pkcs1.pem");
        run("rsa -in app.pem -RSAPublicKey_out -outform DER -out app-public.der");
        run("pkey -in alipay.pem -pubout -out alipay-public.pem");
        run("pkey -in alipay.pem -pubout -outform DER -out alipay-public.der");
        let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
        let bare = |name: &str, der: Vec<u8>| {
            std::fs::write(dir.join(name), STANDARD.encode(der)).unwrap();
            dir.join(name).display().to_string()
        };
        let path = |name: &str| dir.join(name).display().to_string();
        AlipayKeyFiles {
            app_private_key: bare("app-private.txt", read("app.der")),
            app_private_key_pem: path("app-pkcs1.pem"),
            alipay_public_key: bare("alipay-public.txt", read("alipay-public.der")),
            alipay_public_key_pem: path("alipay-public.pem"),
            app_public_der: read("app-public.der"),
            alipay_private_der: read("alipay.der"),
            impostor_private_der: read("impostor.der"),
            dir,
        }
    }
}

impl Drop for AlipayKeyFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The stand-in's keys (the app's public key as PKCS#1 DER) and its count.
struct AlipayState {
    app_public_key: Vec<u8>,
    alipay: RsaKeyPair,
    impostor: RsaKeyPair,
    calls: AtomicUsize,
}

/// An Alipay stand-in: a real HTTP/1.1 server on loopback serving `POST
/// /gateway.do`.
///
/// Every request must be a form with `method=alipay.system.oauth.token`,
/// `format=JSON`, `charset=utf-8`, `sign_type=RSA2`, `version=1.0`,
/// `grant_type=authorization_code`, a `timestamp` within 10 minutes of now in
/// GMT+8, and a `sign` the app's public key verifies over the other
/// parameters (sorted, `k=v` joined with `&`); else it answers an
/// `error_response` (`isv.invalid-signature`, `isv.invalid-timestamp`, …).
/// Then it answers by the `code`:
///
/// | code | answer |
/// |---|---|
/// | `ok:<user_id>` | success: `user_id`, `open_id` `open-<user_id>`, tokens |
/// | `union:<user_id>` | as `ok`, plus `union_id` `u-<user_id>` |
/// | `invalid` (and any other) | 40002 `isv.code-invalid` |
/// | `busy` | 20000 `isp.unknow-error` |
/// | `unsigned` | a success (user `unsigned`) without `sign` |
/// | `badsign` | a success (user `badsign`) signed by a key not Alipay's |
///
/// A `~suffix` gives another code with the same meaning (`ok:alice~2`).
/// Answers are signed with Alipay's private key over the exact text of the
/// node written.
pub struct AlipayStandIn {
    pub base: String,
    state: Arc<AlipayState>,
    handle: ServerHandle,
}

impl AlipayStandIn {
    /// Answers as the Alipay of `keys`, one call per connection (see
    /// `WechatStandIn::start`).
    pub fn start(keys: &AlipayKeyFiles) -> AlipayStandIn {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(AlipayState {
            app_public_key: keys.app_public_der.clone(),
            alipay: RsaKeyPair::from_pkcs8(&keys.alipay_private_der).unwrap(),
            impostor: RsaKeyPair::from_pkcs8(&keys.impostor_private_der).unwrap(),
            calls: AtomicUsize::new(0),
        });
        let data = web::Data::from(state.clone());
        let handle = serve_stand_in(listener, KeepAlive::Disabled, move || {
            App::new()
                .app_data(data.clone())
                .route("/gateway.do", web::post().to(gateway))
        });
        AlipayStandIn {
            base,
            state,
            handle,
        }
    }

    /// Requests to `/gateway.do` that were forms.
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }
}

impl Drop for AlipayStandIn {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

/// The parameters every request carries with these values, and the sub_code
/// Alipay answers when one does not.
const FIXED: [(&str, &str, &str); 6] = [
    ("method", "alipay.system.oauth.token", "isv.invalid-method"),
    ("format", "JSON", "isv.invalid-format"),
    ("charset", "utf-8", "isv.invalid-charset"),
    ("sign_type", "RSA2", "isv.invalid-signature-type"),
    ("version", "1.0", "isv.invalid-version"),
    ("grant_type", "authorization_code", "isv.grant-type-invalid"),
];

async fn gateway(
    form: web::Form<Vec<(String, String)>>,
    state: web::Data<AlipayState>,
) -> HttpResponse {
    state.calls.fetch_add(1, Ordering::SeqCst);
    let params = form.into_inner();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if let Some((_, _, sub_code)) = FIXED.iter().find(|(k, v, _)| param(k) != Some(*v)) {
        return error_answer(&state, "40002", sub_code);
    }
    let now = unix_now();
    let timestamp = param("timestamp").and_then(parse_alipay_time);
    if timestamp.is_none_or(|t| t.abs_diff(now) > 600) {
        return error_answer(&state, "40002", "isv.invalid-timestamp");
    }
    let mut signed: Vec<_> = params.iter().filter(|(k, _)| k != "sign").collect();
    signed.sort_by_key(|(k, _)| k);
    let signed: Vec<String> = signed.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let signature = param("sign").and_then(|s| STANDARD.decode(s).ok());
    let verified = signature.is_some_and(|signature| {
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &state.app_public_key)
            .verify(signed.join("&").as_bytes(), &signature)
            .is_ok()
    });
    if !verified {
        return error_answer(&state, "40002", "isv.invalid-signature");
    }
    let sent = param("code").unwrap_or("");
    // A `~suffix` makes another code with the same meaning: `ok:alice~2`.
    let code = sent.split('~').next().unwrap_or_default();
    if let Some(user_id) = code.strip_prefix("ok:") {
        success(&state.alipay, user_id, false)
    } else if let Some(user_id) = code.strip_prefix("union:") {
        success(&state.alipay, user_id, true)
    } else if code == "busy" {
        error_answer(&state, "20000", "isp.unknow-error")
    } else if code == "unsigned" {
        let node = success_node("unsigned", false);
        json_ok(format!(
            r#"{{"alipay_system_oauth_token_response":{node}}}"#
        ))
    } else if code == "badsign" {
        success(&state.impostor, "badsign", false)
    } else {
        error_answer(&state, "40002", "isv.code-invalid")
    }
}

fn success_node(user_id: &str, union: bool) -> String {
    let mut node = serde_json::json!({
        "access_token": format!("authusrB{user_id}"),
        "alipay_user_id": user_id,
        "auth_start": alipay_time(unix_now()),
        "expires_in": 1_296_000,
        "re_expires_in": 2_592_000,
        "refresh_token": format!("authusrR{user_id}"),
        "user_id": user_id,
        "open_id": format!("open-{user_id}"),
    });
    if union {
        node["union_id"] = format!("u-{user_id}").into();
    }
    node.to_string()
}

fn success(signer: &RsaKeyPair, user_id: &str, union: bool) -> HttpResponse {
    let node = success_node(user_id, union);
    signed(signer, "alipay_system_oauth_token_response", &node)
}

fn error_answer(state: &AlipayState, code: &str, sub_code: &str) -> HttpResponse {
    let msg = match code {
        "20000" => "Service Currently Unavailable",
        _ => "Invalid Arguments",
    };
    // Alipay's sub_msg is Chinese: the signature covers UTF-8 beyond ASCII.
    let node = serde_json::json!({
        "code": code, "msg": msg, "sub_code": sub_code, "sub_msg": "替身网关的错误",
    });
    signed(&state.alipay, "error_response", &node.to_string())
}

/// `{"<name>": node, "sign": …}`, signed over the node's exact text.
fn signed(signer: &RsaKeyPair, name: &str, node: &str) -> HttpResponse {
    let mut signature = vec![0; signer.public().modulus_len()];
    signer
        .sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            node.as_bytes(),
            &mut signature,
        )
        .unwrap();
    let sign = STANDARD.encode(signature);
    json_ok(format!(r#"{{"{name}":{node},"sign":"{sign}"}}"#))
}

fn json_ok(body: String) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html;charset=utf-8")
        .body(body)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `yyyy-MM-dd HH:mm:ss` in GMT+8, as Alipay's `timestamp` wants it; counted
/// day by day, as plainly as possible, to check wxsession's arithmetic.
pub fn alipay_time(unix_secs: u64) -> String {
    let local = unix_secs + 8 * 3600;
    let (mut days, secs) = (local / 86_400, local % 86_400);
    let mut year = 1970;
    while days >= year_days(year) {
        days -= year_days(year);
        year += 1;
    }
    let mut month = 1;
    while days >= month_days(year, month) {
        days -= month_days(year, month);
        month += 1;
    }
    format!(
        "{year:04}-{month:02}-{:02} {:02}:{:02}:{:02}",
        days + 1,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The Unix time of an [`alipay_time`], written exactly so.
fn parse_alipay_time(text: &str) -> Option<u64> {
    let numbers: Vec<u64> = text
        .split(['-', ' ', ':'])
        .map(|n| n.parse().ok())
        .collect::<Option<_>>()?;
    let [year, month, day, hour, minute, second] = numbers[..] else {
        return None;
    };
    if !(1970..3000).contains(&year) || !(1..=12).contains(&month) || day == 0 {
        return None;
    }
    let days = (1970..year).map(year_days).sum::<u64>()
        + (1..month).map(|m| month_days(year, m)).sum::<u64>()
        + day
        - 1;
    let unix = (days * 86_400 + hour * 3600 + minute * 60 + second).checked_sub(8 * 3600)?;
    (alipay_time(unix) == text).then_some(unix)
}

fn leap(year: u64) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn year_days(year: u64) -> u64 {
    365 + u64::from(leap(year))
}

fn month_days(year: u64, month: u64) -> u64 {
    match month {
        2 => 28 + u64::from(leap(year)),
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

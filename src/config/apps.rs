//! The mini-programs one deployment serves: `[apps.<name>]` tables, each on a
//! [`Platform`], and the `[wechat]` section, which (with its `appid` set) is
//! one more app named `default` on `wechat`. What an app's keys mean, their
//! defaults per platform, and the checks that stop a start.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ConfigError, WechatConfig};
use crate::secret::Secret;

/// The name `[wechat]`'s app goes by.
pub const DEFAULT_APP: &str = "default";

/// The keys of an `[apps.<name>]` table, longest first: a variable
/// `WXSESSION_APPS_<NAME>_<KEY>` is split at the key its name ends with, since
/// a name may itself hold `_`.
pub(super) const APP_KEYS: [&str; 8] = [
    "alipay_public_key_file",
    "private_key_file",
    "api_base",
    "platform",
    "corpid",
    "secret",
    "appid",
    "mock",
];

/// A mini-program platform: whose login API an app's codes go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Wechat,
    Qq,
    Douyin,
    Wecom,
    Alipay,
}

impl Platform {
    /// How the configuration and `GET /session` name it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Platform::Wechat => "wechat",
            Platform::Qq => "qq",
            Platform::Douyin => "douyin",
            Platform::Wecom => "wecom",
            Platform::Alipay => "alipay",
        }
    }

    /// The platform's own API host, unless `api_base` says otherwise.
    pub const fn default_api_base(self) -> &'static str {
        match self {
            Platform::Wechat => "https://api.weixin.qq.com",
            Platform::Qq => "https://api.q.qq.com",
            Platform::Douyin => "https://developer.toutiao.com",
            Platform::Wecom => "https://qyapi.weixin.qq.com",
            Platform::Alipay => "https://openapi.alipay.com",
        }
    }

    /// Whether its apps have a fleet-shared access_token here (WeChat's, a
    /// WeCom corp's): what `/admin/wechat/access-token` and `wxsession wechat`
    /// serve.
    pub const fn has_access_token(self) -> bool {
        matches!(self, Platform::Wechat | Platform::Wecom)
    }
}

/// One `[apps.<name>]` table as written; [`App`] is what it means.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppTable {
    pub platform: Option<Platform>,
    pub appid: String,
    /// The AppSecret (the corpsecret for `wecom`); Alipay signs with keys instead.
    pub secret: Secret,
    /// Empty: the platform's own.
    pub api_base: String,
    pub mock: bool,
    /// `wecom`: the corporation whose members log in.
    pub corpid: Option<String>,
    /// `alipay`: the app's RSA2 private key (PEM or bare base64, PKCS#8 or PKCS#1).
    pub private_key_file: Option<String>,
    /// `alipay`: Alipay's public key, which signs its answers.
    pub alipay_public_key_file: Option<String>,
}

/// A request or command named no app, or one that is not configured, or
/// left it out while several could be meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownApp;

/// The one of `apps` that `appid` names, or when it names none, the only one
/// on a platform `serves` accepts: the rule every route and command that
/// takes an appid follows.
pub fn pick_app<'a, T>(
    apps: impl IntoIterator<Item = &'a T>,
    appid: Option<&str>,
    serves: impl Fn(Platform) -> bool,
    of: impl Fn(&T) -> (&str, Platform),
) -> Result<&'a T, UnknownApp> {
    let mut candidates = apps.into_iter().filter(|app| {
        let (id, platform) = of(app);
        match appid {
            Some(appid) => id == appid,
            None => serves(platform),
        }
    });
    match (candidates.next(), candidates.next()) {
        (Some(app), None) => Ok(app),
        _ => Err(UnknownApp),
    }
}

/// One mini-program the server logs in for.
#[derive(Debug, Clone)]
pub struct App {
    /// `[apps.<name>]`'s name, or `default` for `[wechat]`.
    pub name: String,
    pub platform: Platform,
    pub appid: String,
    pub secret: Secret,
    /// Without a trailing `/`.
    pub api_base: String,
    pub mock: bool,
    pub corpid: Option<String>,
    pub private_key_file: Option<String>,
    pub alipay_public_key_file: Option<String>,
    /// Where its keys are set: `apps.<name>`, or `wechat` for the default app.
    pub section: String,
}

impl App {
    /// The dotted name of one of its keys, as errors give it.
    pub fn key(&self, key: &str) -> String {
        format!("{}.{key}", self.section)
    }
}

/// Every configured app: `[wechat]`'s (when its `appid` is set) first, then
/// `[apps.*]` by name. Checked: names, required keys per platform, `https://`
/// bases, one app per appid, at least one app.
pub(super) fn resolve(
    wechat: &WechatConfig,
    tables: &BTreeMap<String, AppTable>,
) -> Result<Vec<App>, ConfigError> {
    if tables.contains_key(DEFAULT_APP) {
        // The default app's users keep the key names from before apps:
        // only [wechat]'s app may be it.
        return Err(ConfigError::new(
            "apps.default",
            "the name default is [wechat]'s app; name this app otherwise",
        ));
    }
    let mut apps = Vec::new();
    if !wechat.appid.is_empty() {
        apps.push(App {
            name: DEFAULT_APP.into(),
            platform: Platform::Wechat,
            appid: wechat.appid.clone(),
            secret: wechat.secret.clone(),
            api_base: wechat.api_base.clone(),
            mock: wechat.mock,
            corpid: None,
            private_key_file: None,
            alipay_public_key_file: None,
            section: "wechat".into(),
        });
    }
    for (name, table) in tables {
        let section = format!("apps.{name}");
        let name_ok = (1..=32).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !name_ok {
            return Err(ConfigError::new(
                section,
                "an app's name is 1-32 characters of a-z, 0-9 and _",
            ));
        }
        let Some(platform) = table.platform else {
            return Err(ConfigError::new(
                format!("{section}.platform"),
                "is required: wechat, qq, douyin, wecom or alipay",
            ));
        };
        let trimmed = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let api_base = match table.api_base.trim().trim_end_matches('/') {
            "" => platform.default_api_base().to_string(),
            base => base.to_string(),
        };
        apps.push(App {
            name: name.clone(),
            platform,
            appid: table.appid.trim().to_string(),
            secret: Secret::new(table.secret.expose().trim()),
            api_base,
            mock: table.mock,
            corpid: trimmed(&table.corpid),
            private_key_file: trimmed(&table.private_key_file),
            alipay_public_key_file: trimmed(&table.alipay_public_key_file),
            section,
        });
    }
    for app in &apps {
        check(app, wechat.allow_insecure_api_base)?;
    }
    for (i, app) in apps.iter().enumerate() {
        if let Some(first) = apps[..i].iter().find(|a| a.appid == app.appid) {
            return Err(ConfigError::new(
                app.key("appid"),
                format!(
                    "{:?} is also {}'s appid: one app per appid",
                    app.appid,
                    first.key("appid")
                ),
            ));
        }
    }
    if apps.is_empty() {
        return Err(ConfigError::new(
            "wechat.appid",
            "is required (set it in config.toml or WXSESSION_WECHAT_APPID), or configure [apps.<name>]",
        ));
    }
    Ok(apps)
}

/// What one app needs to log anyone in.
fn check(app: &App, allow_insecure: bool) -> Result<(), ConfigError> {
    let fail = |key: &str, message: &str| Err(ConfigError::new(app.key(key), message));
    if app.appid.is_empty() {
        return fail("appid", "is required");
    }
    // It names the app's keys in Redis ({<appid>/<openid>}, appid:code): no
    // character that could join two names into one.
    let appid_ok = app.appid.len() <= 64
        && app
            .appid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !appid_ok {
        return fail(
            "appid",
            "expected 1-64 characters of A-Z, a-z, 0-9, _ and -",
        );
    }
    let needs_secret = app.platform != Platform::Alipay;
    if needs_secret && app.secret.is_empty() && !app.mock {
        let message = if app.section == "wechat" {
            "is required unless wechat.mock = true (set WXSESSION_WECHAT_SECRET)".to_string()
        } else {
            format!("is required unless {} = true", app.key("mock"))
        };
        return fail("secret", &message);
    }
    if app.platform == Platform::Wecom && app.corpid.is_none() {
        return fail("corpid", "is required for a wecom app");
    }
    // Reading and checking the files is the Alipay client's (wechat::Apps::check).
    if app.platform == Platform::Alipay && !app.mock {
        if app.private_key_file.is_none() {
            return fail(
                "private_key_file",
                "is required for an alipay app (unless mock = true)",
            );
        }
        if app.alipay_public_key_file.is_none() {
            return fail(
                "alipay_public_key_file",
                "is required for an alipay app (unless mock = true)",
            );
        }
    }
    let base = &app.api_base;
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return fail("api_base", "expected an http:// or https:// URL");
    }
    if base.starts_with("http://") && !app.mock && !allow_insecure {
        return fail(
            "api_base",
            "must be https:// (the AppSecret travels in it); for a local stand-in set \
             wechat.allow_insecure_api_base = true",
        );
    }
    Ok(())
}

//! `Apps`: every configured app's [`Client`], found by appid, over one HTTP
//! client (and one runtime for its calls) that all of them share.

use std::{collections::HashMap, sync::Arc, time::Duration};

use super::{
    call::HttpClient,
    client::{alipay_keys, Shared},
    Client,
};
use crate::{
    config::{pick_app, Config, Platform, UnknownApp},
    redis_conn::RedisConn,
    telemetry::Metrics,
};

/// The clients of every app, in the configuration's order.
#[derive(Clone)]
pub struct Apps {
    clients: Arc<Vec<Client>>,
    by_appid: Arc<HashMap<String, usize>>,
}

impl Apps {
    /// `redis` holds the apps' shared access_tokens, under `redis.key_prefix`.
    pub fn new(config: &Config, redis: RedisConn, metrics: Arc<Metrics>) -> Result<Apps, String> {
        let http = HttpClient::new(config.wechat_timeout())?;
        let shared = Shared {
            http: &http,
            redis: &redis,
            key_prefix: &config.redis.key_prefix,
            wechat_timeout: Duration::from_millis(config.wechat.timeout_ms),
            redis_timeout: config.redis_timeout(),
            metrics: &metrics,
        };
        let clients = config
            .apps()
            .iter()
            .map(|app| Client::new(app, &shared))
            .collect::<Result<Vec<Client>, String>>()?;
        let by_appid = clients
            .iter()
            .enumerate()
            .map(|(i, client)| (client.appid().to_string(), i))
            .collect();
        Ok(Apps {
            clients: Arc::new(clients),
            by_appid: Arc::new(by_appid),
        })
    }

    /// Reads and checks what each app needs beyond the configuration's own
    /// checks (an Alipay app's key files), as the server would at start: the
    /// error names the app and the file.
    pub fn check(config: &Config) -> Result<(), String> {
        for app in config.apps() {
            alipay_keys(app)?;
        }
        Ok(())
    }

    pub fn get(&self, appid: &str) -> Option<&Client> {
        self.by_appid.get(appid).map(|&i| &self.clients[i])
    }

    /// The app a request names, or the only one on a platform `serves`
    /// accepts when it names none (see [`pick_app`]).
    pub fn select(
        &self,
        appid: Option<&str>,
        serves: impl Fn(Platform) -> bool,
    ) -> Result<&Client, UnknownApp> {
        pick_app(self.clients.iter(), appid, serves, |c| {
            (c.appid(), c.platform())
        })
    }

    /// Every app, in the configuration's order.
    pub fn iter(&self) -> impl Iterator<Item = &Client> {
        self.clients.iter()
    }
}

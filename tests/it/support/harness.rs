//! What most tests start: a Redis of their own, the WeChat stand-in, and
//! wxsession instances on both; the steps they take go through [`Instance`].

use std::sync::Arc;

use wxsession::config::Config;

use super::{
    config, free_port, Certs, Instance, RedisServer, ServerProcess, StandInState, TestServer,
    WechatStandIn,
};

/// Redis, the stand-in, and in-process instances of wxsession configured for
/// both. As an [`Instance`], it is the first of its servers.
///
/// Fields drop in order: the servers stop before what they talk to.
pub struct Harness {
    /// In-process instances, all with the harness's configuration.
    pub servers: Vec<TestServer>,
    pub wechat: WechatStandIn,
    pub redis: RedisServer,
    wechat_base: String,
}

/// How a [`Harness`] starts; from [`Harness::setup`].
pub struct Setup {
    extra: Vec<(String, String)>,
    instances: usize,
    redis_args: Vec<String>,
    tls: Option<Arc<Certs>>,
    wechat_unreachable: bool,
    wechat_keeps_connections: bool,
    knobs: fn(&StandInState),
    adjust: fn(&mut Config),
}

impl Harness {
    /// One instance with the test configuration.
    pub fn start() -> Harness {
        Harness::setup().start()
    }

    /// One instance with the test configuration plus `extra` (`("section.key", "value")`).
    pub fn with(extra: &[(&str, &str)]) -> Harness {
        Harness::setup().set(extra).start()
    }

    /// Redis and the stand-in only, for tests that start the binary or servers
    /// of their own.
    pub fn bare() -> Harness {
        Harness::setup().instances(0).start()
    }

    pub fn setup() -> Setup {
        Setup {
            extra: Vec::new(),
            instances: 1,
            redis_args: Vec::new(),
            tls: None,
            wechat_unreachable: false,
            wechat_keeps_connections: false,
            knobs: |_| {},
            adjust: |_| {},
        }
    }

    /// The test configuration for this Redis and WeChat, plus `extra`.
    pub fn config(&self, extra: &[(&str, &str)]) -> Config {
        config(&self.redis, &self.wechat_base, extra)
    }

    /// Another in-process instance, owned by the test: the test configuration plus `extra`.
    pub fn start_server(&self, extra: &[(&str, &str)]) -> TestServer {
        TestServer::start(&self.config(extra))
    }

    /// The real binary on this Redis and WeChat, configured by `env` on top of
    /// what [`ServerProcess::start`] sets.
    pub fn start_process(&self, env: &[(&str, &str)]) -> ServerProcess {
        ServerProcess::start(&self.redis, &self.wechat_base, env)
    }
}

impl Instance for Harness {
    fn base(&self) -> &str {
        &self
            .servers
            .first()
            .expect("a harness set up with instances(0) has no server")
            .base
    }
}

impl Setup {
    /// Configuration on top of the test configuration, as `("section.key", "value")`.
    pub fn set(mut self, extra: &[(&str, &str)]) -> Setup {
        self.extra
            .extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    /// How many in-process instances share the Redis (1 unless said).
    pub fn instances(mut self, n: usize) -> Setup {
        self.instances = n;
        self
    }

    /// Extra `redis-server` arguments, e.g. `["--appendonly", "yes"]`.
    pub fn redis_args(mut self, args: &[&str]) -> Setup {
        self.redis_args = args.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Redis over TLS only (`rediss://`, see [`RedisServer::start_tls`]), and the
    /// instances configured to trust its CA and present the client certificate.
    pub fn tls(mut self, certs: &Arc<Certs>) -> Setup {
        self = self.set(&certs.client_keys());
        self.tls = Some(certs.clone());
        self
    }

    /// Points the instances at a loopback port nobody listens on, instead of the stand-in.
    pub fn wechat_unreachable(mut self) -> Setup {
        self.wechat_unreachable = true;
        self
    }

    /// A stand-in that keeps connections open, as WeChat does
    /// ([`WechatStandIn::start_keeping_connections`]).
    pub fn wechat_keeps_connections(mut self) -> Setup {
        self.wechat_keeps_connections = true;
        self
    }

    /// Turns the stand-in's knobs before any instance starts, so that nothing an
    /// instance does at start-up sees them unset.
    pub fn wechat_knobs(mut self, knobs: fn(&StandInState)) -> Setup {
        self.knobs = knobs;
        self
    }

    /// A last change to the configuration that `set` cannot express.
    pub fn adjust(mut self, adjust: fn(&mut Config)) -> Setup {
        self.adjust = adjust;
        self
    }

    /// Starts Redis, the stand-in and the instances. The instances run on the
    /// caller's actix runtime: call this inside `#[actix_web::test]`.
    pub fn start(self) -> Harness {
        let args: Vec<&str> = self.redis_args.iter().map(String::as_str).collect();
        let redis = match &self.tls {
            Some(certs) => RedisServer::start_tls(certs, &args),
            None => RedisServer::start_with(&args),
        };
        let wechat = if self.wechat_keeps_connections {
            WechatStandIn::start_keeping_connections()
        } else {
            WechatStandIn::start()
        };
        (self.knobs)(&wechat.state);
        let wechat_base = if self.wechat_unreachable {
            format!("http://127.0.0.1:{}", free_port())
        } else {
            wechat.base.clone()
        };
        let mut harness = Harness {
            servers: Vec::new(),
            wechat,
            redis,
            wechat_base,
        };
        let extra: Vec<(&str, &str)> = self
            .extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut config = harness.config(&extra);
        (self.adjust)(&mut config);
        harness.servers = (0..self.instances)
            .map(|_| TestServer::start(&config))
            .collect();
        harness
    }
}

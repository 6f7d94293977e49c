//! The integration tests, as one binary: the support code is compiled and linked
//! once instead of once per test file, and every part of it is used, so it needs
//! no `dead_code` allowance. nextest still runs each test in a process of its own.

mod support;

mod admin;
mod alipay_stand_in;
mod apps;
mod check_config;
mod cluster;
mod devices;
mod end_reasons;
mod guard;
mod hardening;
mod limits;
mod local_cache;
mod login;
mod logs;
mod nginx_lb;
mod observability;
mod openapi;
mod platform_clients;
mod process;
mod readme_zh;
mod redis_deploy;
mod redis_faults;
mod step_up;
mod userdata;
mod wechat_api;

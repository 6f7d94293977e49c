//! What operators watch: the alerting rules (`deploy/prometheus/alerts.yml`)
//! and the Grafana dashboard (`deploy/grafana/wxsession.json`) name only
//! metrics the server exports, the dashboard is importable JSON with a query in
//! every panel, and `wxsession_redis_up` follows Redis.
//!
//! The rules' own behaviour is tested by promtool (`alerts_test.yml`, run by
//! `scripts/test.sh`).

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use regex::Regex;
use serde_json::{json, Value};

use crate::support::*;

fn deploy_file(path: &str) -> String {
    let path = format!("{}/deploy/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every metric name a scrape holds: each sample's (so a histogram's
/// `_bucket`, `_sum` and `_count`) and each one a `# HELP` or `# TYPE` line names.
fn exported_names(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter_map(|line| match line.strip_prefix('#') {
            Some(comment) => {
                let mut words = comment.split_whitespace();
                match words.next() {
                    Some("HELP" | "TYPE") => words.next(),
                    _ => None,
                }
            }
            None => line.split(['{', ' ']).next(),
        })
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .collect()
}

/// The `wxsession_*` metric names a PromQL expression uses. (`up`, the one
/// other name the rules use, is Prometheus's own.)
fn referenced_names(expr: &str) -> BTreeSet<String> {
    let name = Regex::new(r"wxsession_[a-z0-9_]+").unwrap();
    name.find_iter(expr)
        .map(|m| m.as_str().to_string())
        .collect()
}

/// Each rule of alerts.yml as (alert name, expression). An `expr:` is inline
/// or a block scalar (`|`, `>`, with or without a chomping sign), whose lines
/// are those indented deeper than the key.
fn alert_rules(yaml: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = yaml.lines().collect();
    let indent = |line: &str| line.len() - line.trim_start().len();
    let mut rules = Vec::new();
    let mut alert = None;
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if let Some(name) = trimmed.strip_prefix("- alert:") {
            alert = Some(name.trim().to_string());
        } else if let Some(value) = trimmed.strip_prefix("expr:") {
            let value = value.trim();
            let expr = if value.starts_with(['|', '>']) {
                lines[i + 1..]
                    .iter()
                    .take_while(|l| l.trim().is_empty() || indent(l) > indent(line))
                    .map(|l| l.trim())
                    .collect::<Vec<_>>()
                    .join("\n")
            } else {
                value.to_string()
            };
            let name = alert.take().expect("every expr: follows its - alert:");
            rules.push((name, expr));
        }
    }
    rules
}

/// The dashboard's panels, those inside rows included, less the rows.
fn dashboard_panels(dashboard: &Value) -> Vec<&Value> {
    let mut panels = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            panels.extend(panel["panels"].as_array().into_iter().flatten());
        } else {
            panels.push(panel);
        }
    }
    panels
}

/// Every PromQL expression of the dashboard, with where it is: each panel's
/// targets and each query variable's.
fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    let mut exprs = Vec::new();
    for panel in dashboard_panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push((
                format!("panel {:?}", panel["title"].as_str().unwrap_or("")),
                target["expr"].as_str().unwrap_or("").to_string(),
            ));
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] == "query" {
            let query = &variable["query"];
            let query = query["query"].as_str().or(query.as_str()).unwrap_or("");
            exprs.push((format!("variable ${}", variable["name"]), query.to_string()));
        }
    }
    exprs
}

/// `(where, name)` for every name in `exprs` that `exported` lacks.
fn missing_names(exprs: &[(String, String)], exported: &BTreeSet<String>) -> Vec<String> {
    exprs
        .iter()
        .flat_map(|(place, expr)| {
            referenced_names(expr)
                .into_iter()
                .filter(|name| !exported.contains(name))
                .map(move |name| format!("{place}: {name}"))
        })
        .collect()
}

fn sample(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{scrape}"))
        .parse()
        .unwrap()
}

/// A login, guarded requests (a live session, an unknown one, a malformed one),
/// a phone number by code (the access_token's fetch) and a logout, so that
/// every kind of series has seen traffic.
async fn exercise(server: &impl Instance, user: &str) -> String {
    let id = server.login(&format!("ok:{user}")).await;
    assert_eq!(server.get_session(&id).await.0, 200);
    assert_eq!(
        server
            .get_session("0123456789abcdef0123456789abcdef")
            .await
            .0,
        401
    );
    assert_eq!(server.get_session("not-a-session").await.0, 401);
    let (status, body) = server
        .post_as(&id, "/session/phone", &json!({ "code": "num" }))
        .await;
    assert_eq!(status, 200, "{body}");
    id
}

/// The real binary with the local cache off and on (both export every series
/// today; the names of both scrapes are taken together, so a series only one
/// of them exports would still count): every `wxsession_*` name in every alert
/// expression and every dashboard query is in a scrape.
#[actix_web::test]
async fn every_metric_the_alerts_and_the_dashboard_use_is_exported() {
    let h = Harness::bare();
    let plain = h.start_process(&[]);
    let cached = h.start_process(&[("session.local_cache", "true")]);

    let id = exercise(&plain, "plain").await;
    assert_eq!(plain.logout(&id).await.0, 204);
    let id = exercise(&cached, "cached").await;
    crate::local_cache::warm(&cached, &id).await;

    let plain_scrape = plain.metrics().await;
    let cached_scrape = cached.metrics().await;
    // The traffic above shows in the series the rules and panels read.
    for (scrape, tracking) in [(&plain_scrape, "disabled"), (&cached_scrape, "on")] {
        assert_eq!(sample(scrape, "wxsession_redis_up"), 1.0);
        assert_eq!(
            sample(scrape, "wxsession_logins_total{outcome=\"ok\"}"),
            1.0
        );
        assert_eq!(
            sample(scrape, "wxsession_login_duration_seconds_count"),
            1.0
        );
        assert_eq!(
            sample(
                scrape,
                "wxsession_login_duration_seconds_bucket{le=\"+Inf\"}"
            ),
            1.0
        );
        assert!(sample(scrape, "wxsession_guard_checks_total{outcome=\"ok\"}") >= 1.0);
        assert_eq!(
            sample(scrape, "wxsession_guard_checks_total{outcome=\"unknown\"}"),
            1.0
        );
        assert_eq!(
            sample(scrape, "wxsession_wechat_phone_calls_total{outcome=\"ok\"}"),
            1.0
        );
        assert!(sample(scrape, "wxsession_http_request_duration_seconds_count") >= 5.0);
        assert_eq!(
            sample(
                scrape,
                &format!("wxsession_cache_tracking{{state=\"{tracking}\"}}")
            ),
            1.0
        );
    }
    assert!(
        sample(
            &cached_scrape,
            "wxsession_cache_lookups_total{result=\"hit\"}"
        ) >= 1.0
    );
    // The plain instance fetched the token; the cached one found it in Redis.
    assert_eq!(
        sample(
            &plain_scrape,
            "wxsession_wechat_token_fetches_total{outcome=\"ok\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &cached_scrape,
            "wxsession_wechat_token_cache_hits_total{cache=\"redis\"}"
        ),
        1.0
    );

    let mut exported = exported_names(&plain_scrape);
    exported.extend(exported_names(&cached_scrape));
    for name in [
        "wxsession_http_request_duration_seconds_bucket",
        "wxsession_http_request_duration_seconds_sum",
        "wxsession_http_request_duration_seconds_count",
        "wxsession_http_request_duration_seconds",
        "wxsession_cache_tracking",
    ] {
        assert!(exported.contains(name), "{name} in {exported:?}");
    }

    let rules = alert_rules(&deploy_file("prometheus/alerts.yml"));
    let alerts: Vec<(String, String)> = rules
        .iter()
        .map(|(alert, expr)| (format!("alert {alert}"), expr.clone()))
        .collect();
    let dashboard: Value =
        serde_json::from_str(&deploy_file("grafana/wxsession.json")).expect("dashboard JSON");
    let queries = dashboard_exprs(&dashboard);

    let used: BTreeSet<String> = alerts
        .iter()
        .chain(&queries)
        .flat_map(|(_, expr)| referenced_names(expr))
        .collect();
    assert!(used.len() >= 15, "too few names found: {used:?}");
    let missing: Vec<String> = missing_names(&alerts, &exported)
        .into_iter()
        .chain(missing_names(&queries, &exported))
        .collect();
    assert!(
        missing.is_empty(),
        "named but not exported:\n{}\nexported: {exported:?}",
        missing.join("\n")
    );
}

/// The checks above would pass on nothing: they find what they look for, and a
/// name that is not exported is caught.
#[test]
fn the_name_checks_find_names_and_miss_nothing() {
    let rules = alert_rules(&deploy_file("prometheus/alerts.yml"));
    let yaml = deploy_file("prometheus/alerts.yml");
    assert_eq!(rules.len(), yaml.matches("- alert:").count());
    assert!(rules.iter().all(|(_, expr)| !expr.is_empty()), "{rules:?}");
    let wechat = &rules
        .iter()
        .find(|(name, _)| name == "WxsessionWechatErrors")
        .expect("WxsessionWechatErrors")
        .1;
    assert_eq!(
        referenced_names(wechat).into_iter().collect::<Vec<_>>(),
        [
            "wxsession_logins_total",
            "wxsession_wechat_check_calls_total",
            "wxsession_wechat_phone_calls_total"
        ]
    );
    assert_eq!(
        alert_rules(
            "- alert: A\n  expr: up == 0\n- alert: B\n  expr: |\n    x\n    y\n  for: 1m\n"
        ),
        [
            ("A".to_string(), "up == 0".to_string()),
            ("B".to_string(), "x\ny".to_string())
        ]
    );

    let scrape = "# HELP wxsession_a_total A.\n# TYPE wxsession_a_total counter\n\
                  wxsession_a_total{outcome=\"ok\"} 1\nwxsession_b_bucket{le=\"+Inf\"} 2\n\
                  wxsession_b_count 2\n";
    let exported = exported_names(scrape);
    assert_eq!(
        exported.iter().map(String::as_str).collect::<Vec<_>>(),
        [
            "wxsession_a_total",
            "wxsession_b_bucket",
            "wxsession_b_count"
        ]
    );
    let mut dashboard: Value =
        serde_json::from_str(&deploy_file("grafana/wxsession.json")).unwrap();
    let bogus = "sum(rate(wxsession_no_such_metric_total[5m])) / wxsession_b_count";
    dashboard["panels"][1]["targets"][0]["expr"] = json!(bogus);
    let queries = dashboard_exprs(&dashboard);
    assert_eq!(
        missing_names(&queries[..1], &exported),
        [format!(
            "panel {:?}: wxsession_no_such_metric_total",
            dashboard["panels"][1]["title"].as_str().unwrap()
        )]
    );
}

/// The dashboard imports as it is: JSON of a recent schema, its data source a
/// variable, a PromQL query in every panel.
#[test]
fn the_dashboard_is_importable_json_with_a_query_in_every_panel() {
    let dashboard: Value =
        serde_json::from_str(&deploy_file("grafana/wxsession.json")).expect("dashboard JSON");
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36);
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables
            .iter()
            .any(|v| v["name"] == "DS_PROMETHEUS" && v["type"] == "datasource"),
        "a data source variable"
    );

    let panels = dashboard_panels(&dashboard);
    assert!(panels.len() >= 15, "{} panels", panels.len());
    let mut ids = BTreeSet::new();
    for panel in &panels {
        let title = panel["title"].as_str().unwrap_or("");
        assert!(!title.is_empty(), "a panel without a title: {panel}");
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "{title}: id reused"
        );
        assert!(panel["gridPos"]["w"].as_u64().unwrap() > 0, "{title}");
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = panel["targets"].as_array().map_or(&[][..], Vec::as_slice);
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or("");
            assert!(!expr.trim().is_empty(), "{title}: an empty query");
            assert!(
                !referenced_names(expr).is_empty() || expr.starts_with("up{"),
                "{title}: {expr}"
            );
            assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        }
    }
    // What the dashboard shows, by metric.
    let used: BTreeSet<String> = dashboard_exprs(&dashboard)
        .iter()
        .flat_map(|(_, expr)| referenced_names(expr))
        .collect();
    for name in [
        "wxsession_http_request_duration_seconds_bucket",
        "wxsession_http_request_duration_seconds_count",
        "wxsession_guard_checks_total",
        "wxsession_logins_total",
        "wxsession_login_duration_seconds_bucket",
        "wxsession_wechat_phone_calls_total",
        "wxsession_wechat_check_calls_total",
        "wxsession_wechat_token_fetches_total",
        "wxsession_wechat_token_cache_hits_total",
        "wxsession_wechat_token_recoveries_total",
        "wxsession_cache_lookups_total",
        "wxsession_cache_entries",
        "wxsession_cache_tracking",
        "wxsession_cache_invalidations_total",
        "wxsession_clock_offset_seconds",
        "wxsession_redis_up",
    ] {
        assert!(used.contains(name), "no panel shows {name}");
    }
}

/// `wxsession_redis_up`, which WxsessionRedisUnreachable reads: 0 while Redis
/// is gone (the scrape still answers, within `redis.timeout_ms` and a margin),
/// 1 again once it is back.
#[actix_web::test]
async fn redis_up_follows_redis() {
    let mut h = Harness::start();
    assert_eq!(sample(&h.metrics().await, "wxsession_redis_up"), 1.0);

    h.redis.kill();
    let started = Instant::now();
    let scrape = h.metrics().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(sample(&scrape, "wxsession_redis_up"), 0.0);
    let (status, _) = h.get_session("0123456789abcdef0123456789abcdef").await;
    assert_eq!(status, 503);
    assert_eq!(
        sample(
            &h.metrics().await,
            "wxsession_guard_checks_total{outcome=\"store_unavailable\"}"
        ),
        1.0
    );

    h.redis.restart();
    let deadline = Instant::now() + Duration::from_secs(5);
    while sample(&h.metrics().await, "wxsession_redis_up") != 1.0 {
        assert!(Instant::now() < deadline, "redis_up stayed 0");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

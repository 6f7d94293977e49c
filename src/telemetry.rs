//! Telemetry: the Prometheus counters and latency histogram behind `/metrics`,
//! and logger set-up.
//!
//! Counters are fixed arrays of atomics indexed by a closed set of outcome labels,
//! so recording costs one relaxed add and no label can grow without bound.

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

/// Outcomes of `POST /login`: `ok` or the contract's error code.
pub const LOGIN_OUTCOMES: &[&str] = &[
    "ok",
    "invalid_request",
    "payload_too_large",
    "invalid_code",
    "user_blocked",
    "rate_limited",
    "wechat_error",
    "wechat_busy",
    "wechat_timeout",
    "store_unavailable",
    "other",
];

/// Outcomes of a guard check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardOutcome {
    Ok,
    /// No session header.
    Missing,
    /// Not 32 lower-case hex; rejected without Redis.
    Malformed,
    /// Unknown, expired or logged out.
    Unknown,
    StoreUnavailable,
}

impl GuardOutcome {
    const ALL: [GuardOutcome; 5] = [
        GuardOutcome::Ok,
        GuardOutcome::Missing,
        GuardOutcome::Malformed,
        GuardOutcome::Unknown,
        GuardOutcome::StoreUnavailable,
    ];

    pub fn label(self) -> &'static str {
        match self {
            GuardOutcome::Ok => "ok",
            GuardOutcome::Missing => "missing",
            GuardOutcome::Malformed => "malformed",
            GuardOutcome::Unknown => "unknown",
            GuardOutcome::StoreUnavailable => "store_unavailable",
        }
    }
}

/// Upper bounds of the request-latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Process-wide counters, shared by every worker.
pub struct Metrics {
    logins: [AtomicU64; LOGIN_OUTCOMES.len()],
    guard_checks: [AtomicU64; GuardOutcome::ALL.len()],
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            logins: std::array::from_fn(|_| AtomicU64::new(0)),
            guard_checks: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_count: AtomicU64::new(0),
            latency_sum_micros: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// `outcome` is `ok` or an error code; anything not in [`LOGIN_OUTCOMES`] counts as `other`.
    pub fn record_login(&self, outcome: &str) {
        let index = LOGIN_OUTCOMES
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(LOGIN_OUTCOMES.len() - 1);
        self.logins[index].fetch_add(1, Relaxed);
    }

    pub fn record_guard(&self, outcome: GuardOutcome) {
        self.guard_checks[outcome as usize].fetch_add(1, Relaxed);
    }

    pub fn record_latency(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        // Cumulative buckets are summed at render time; here only the first that fits.
        if let Some(i) = LATENCY_BUCKETS.iter().position(|le| secs <= *le) {
            self.latency_buckets[i].fetch_add(1, Relaxed);
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_micros
            .fetch_add(elapsed.as_micros() as u64, Relaxed);
    }

    /// The Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        out.push_str("# HELP wxsession_logins_total Logins by outcome.\n");
        out.push_str("# TYPE wxsession_logins_total counter\n");
        for (label, n) in LOGIN_OUTCOMES.iter().zip(&self.logins) {
            let _ = writeln!(
                out,
                "wxsession_logins_total{{outcome=\"{label}\"}} {}",
                n.load(Relaxed)
            );
        }
        out.push_str("# HELP wxsession_guard_checks_total Session guard checks by outcome.\n");
        out.push_str("# TYPE wxsession_guard_checks_total counter\n");
        for (outcome, n) in GuardOutcome::ALL.iter().zip(&self.guard_checks) {
            let _ = writeln!(
                out,
                "wxsession_guard_checks_total{{outcome=\"{}\"}} {}",
                outcome.label(),
                n.load(Relaxed)
            );
        }
        out.push_str(
            "# HELP wxsession_http_request_duration_seconds Time to answer an HTTP request.\n",
        );
        out.push_str("# TYPE wxsession_http_request_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (le, n) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            cumulative += n.load(Relaxed);
            let _ = writeln!(
                out,
                "wxsession_http_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let count = self.latency_count.load(Relaxed);
        let _ = writeln!(
            out,
            "wxsession_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "wxsession_http_request_duration_seconds_sum {}",
            self.latency_sum_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "wxsession_http_request_duration_seconds_count {count}");
        out
    }
}

/// env_logger at `info` unless `RUST_LOG` says otherwise.
pub fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.record_login("ok");
        m.record_login("invalid_code");
        m.record_login("something_new");
        m.record_guard(GuardOutcome::Malformed);
        m.record_latency(Duration::from_micros(300));
        m.record_latency(Duration::from_millis(3));
        m.record_latency(Duration::from_secs(9));
        let text = m.render();
        assert!(text.contains("wxsession_logins_total{outcome=\"ok\"} 1"));
        assert!(text.contains("wxsession_logins_total{outcome=\"other\"} 1"));
        assert!(text.contains("wxsession_guard_checks_total{outcome=\"malformed\"} 1"));
        assert!(text.contains("wxsession_http_request_duration_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(text.contains("wxsession_http_request_duration_seconds_bucket{le=\"0.005\"} 2"));
        assert!(text.contains("wxsession_http_request_duration_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("wxsession_http_request_duration_seconds_count 3"));
    }
}

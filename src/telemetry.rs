//! Telemetry: the Prometheus counters, gauges and latency histograms behind `/metrics`,
//! and logger set-up.
//!
//! Every counter is a [`CounterVec`] over a closed set of label values, so
//! recording costs one relaxed add and no label set can grow without bound (no
//! per-user or per-address labels). The adds land in per-thread shards
//! ([`Shards`]) that `/metrics` sums.
//!
//! The outcome labels that are HTTP error codes ([`LOGIN_OUTCOMES`],
//! [`ELEVATE_OUTCOMES`], [`WECHAT_OUTCOMES`]) are plain constants here, because this module imports
//! no other: the HTTP layer's tests check them against its error table.

use std::{
    cell::Cell,
    fmt::Write as _,
    sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed},
    time::Duration,
};

/// Threads are spread over this many shards; more threads share them.
const SHARDS: usize = 8;
/// Unused cells after each shard's counters (128 bytes): no two shards' counters
/// ever share a cache line, whatever the allocation's alignment.
const SHARD_PADDING: usize = 16;

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: Cell<Option<usize>> = const { Cell::new(None) };
}

/// This thread's shard, assigned round-robin on first use.
fn this_shard() -> usize {
    SHARD.with(|shard| {
        shard.get().unwrap_or_else(|| {
            let assigned = NEXT_SHARD.fetch_add(1, Relaxed) % SHARDS;
            shard.set(Some(assigned));
            assigned
        })
    })
}

/// A row of counters that many threads add to. Each thread adds to its own
/// shard: with one shared row, the workers took the cache line from each other
/// on every request, at a cost that showed in the guard's CPU per request
/// (README, Performance). Reads sum the shards.
pub struct Shards {
    width: usize,
    cells: Box<[AtomicU64]>,
}

impl Shards {
    pub fn new(width: usize) -> Shards {
        Shards {
            width,
            cells: (0..SHARDS * (width + SHARD_PADDING))
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    pub fn add(&self, index: usize, n: u64) {
        debug_assert!(index < self.width);
        self.row()[index].fetch_add(n, Relaxed);
    }

    /// This thread's row, for adding to several of its counters at once.
    fn row(&self) -> &[AtomicU64] {
        let start = this_shard() * (self.width + SHARD_PADDING);
        &self.cells[start..start + self.width]
    }

    pub fn sum(&self, index: usize) -> u64 {
        (0..SHARDS)
            .map(|shard| self.cells[shard * (self.width + SHARD_PADDING) + index].load(Relaxed))
            .sum()
    }
}

/// Outcomes of WeChat calls: `ok` or the error tag; anything else counts as `other`.
pub const WECHAT_OUTCOMES: &[&str] = &[
    "ok",
    "invalid_code",
    "user_blocked",
    "rate_limited",
    "wechat_error",
    "wechat_busy",
    "wechat_timeout",
    "store_unavailable",
    "other",
];

/// Outcomes of a login: those of its WeChat call, an earlier end on its body,
/// or a ban found after the call.
pub const LOGIN_OUTCOMES: &[&str] = &around_wechat::<
    { WECHAT_OUTCOMES.len() + BODY_ENDS.len() + LOGIN_LATE_ENDS.len() },
>(&BODY_ENDS, &LOGIN_LATE_ENDS);

/// Ends of a call on its body, before any WeChat call.
const BODY_ENDS: [&str; 3] = ["invalid_request", "payload_too_large", "request_timeout"];

/// Ends found after the WeChat call (a ban), or added later (an unknown app,
/// found before it); listed after its outcomes (before the catch-all), so the
/// series older versions had keep their order.
const LOGIN_LATE_ENDS: [&str; 2] = ["user_banned", "unknown_app"];

/// Outcomes of a step-up (`POST /session/elevate`) once its session passed the
/// guard: its body's checks, its WeChat call, then the identity and the store.
pub const ELEVATE_OUTCOMES: &[&str] = &around_wechat::<
    { WECHAT_OUTCOMES.len() + BODY_ENDS.len() + ELEVATE_LATE_ENDS.len() },
>(&BODY_ENDS, &ELEVATE_LATE_ENDS);

const ELEVATE_LATE_ENDS: [&str; 5] = [
    "identity_mismatch",
    "invalid_session",
    "session_replaced",
    "session_revoked",
    "user_banned",
];

/// `ok`, `early`, the error outcomes of a WeChat call, `late`, then the
/// catch-all: the labels of a call that wraps one WeChat call.
const fn around_wechat<const N: usize>(
    early: &[&'static str],
    late: &[&'static str],
) -> [&'static str; N] {
    let mut outcomes = [""; N];
    outcomes[0] = WECHAT_OUTCOMES[0];
    let mut n = 1;
    let mut i = 0;
    while i < early.len() {
        outcomes[n] = early[i];
        n += 1;
        i += 1;
    }
    let mut j = 1;
    while j < WECHAT_OUTCOMES.len() - 1 {
        outcomes[n] = WECHAT_OUTCOMES[j];
        n += 1;
        j += 1;
    }
    let mut k = 0;
    while k < late.len() {
        outcomes[n] = late[k];
        n += 1;
        k += 1;
    }
    outcomes[n] = WECHAT_OUTCOMES[WECHAT_OUTCOMES.len() - 1];
    outcomes
}

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
    /// Ended a short while ago with a reason the client is told (its error code).
    Ended(&'static str),
    StoreUnavailable,
}

impl GuardOutcome {
    pub fn label(self) -> &'static str {
        match self {
            GuardOutcome::Ok => "ok",
            GuardOutcome::Missing => "missing",
            GuardOutcome::Malformed => "malformed",
            GuardOutcome::Unknown => "unknown",
            GuardOutcome::Ended(code) => code,
            GuardOutcome::StoreUnavailable => "store_unavailable",
        }
    }
}

/// What the local cache's tracking connection is doing, for
/// `wxsession_cache_tracking`: the one state whose series is 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheTracking {
    /// `session.local_cache` is off.
    Disabled,
    /// `CLIENT TRACKING` is on: guarded requests are served from memory.
    On,
    /// No tracking connection (Redis out of reach, or not yet connected):
    /// every guarded request goes to Redis.
    Down,
    /// Redis refused `CLIENT TRACKING` (a proxy, a managed Redis, an ACL, a
    /// renamed command): every guarded request goes to Redis.
    Refused,
}

impl CacheTracking {
    const ALL: [CacheTracking; 4] = [
        CacheTracking::Disabled,
        CacheTracking::On,
        CacheTracking::Down,
        CacheTracking::Refused,
    ];

    pub fn label(self) -> &'static str {
        match self {
            CacheTracking::Disabled => "disabled",
            CacheTracking::On => "on",
            CacheTracking::Down => "down",
            CacheTracking::Refused => "refused",
        }
    }
}

/// A counter with one label whose values are fixed up front; the last value
/// catches anything not listed.
pub struct CounterVec {
    name: &'static str,
    help: &'static str,
    label: &'static str,
    values: &'static [&'static str],
    counts: Shards,
}

impl CounterVec {
    pub fn new(
        name: &'static str,
        help: &'static str,
        label: &'static str,
        values: &'static [&'static str],
    ) -> CounterVec {
        CounterVec {
            name,
            help,
            label,
            values,
            counts: Shards::new(values.len()),
        }
    }

    pub fn inc(&self, value: &str) {
        let index = self
            .values
            .iter()
            .position(|v| *v == value)
            .unwrap_or(self.values.len() - 1);
        self.counts.add(index, 1);
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} counter", self.name);
        for (index, value) in self.values.iter().enumerate() {
            let _ = writeln!(
                out,
                "{}{{{}=\"{value}\"}} {}",
                self.name,
                self.label,
                self.counts.sum(index)
            );
        }
    }
}

/// Upper bounds of the request-latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Upper bounds of the login-latency histogram, in seconds: a login waits for
/// WeChat (`wechat.timeout_ms`, 5 s by default), so its range reaches further.
const LOGIN_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// A latency histogram without labels. Each observation adds to the first
/// bucket it fits, or to the overflow past the last, and to the sum in
/// microseconds, in the recording thread's shard: two additions per request
/// (cumulative counts and the count are summed at render time).
pub struct Histogram {
    name: &'static str,
    help: &'static str,
    buckets: &'static [f64],
    /// The buckets (not cumulative), then the overflow, then the sum (µs).
    counts: Shards,
}

impl Histogram {
    pub fn new(name: &'static str, help: &'static str, buckets: &'static [f64]) -> Histogram {
        Histogram {
            name,
            help,
            buckets,
            counts: Shards::new(buckets.len() + 2),
        }
    }

    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let overflow = self.buckets.len();
        let bucket = self
            .buckets
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(overflow);
        let row = self.counts.row();
        row[bucket].fetch_add(1, Relaxed);
        row[overflow + 1].fetch_add(elapsed.as_micros() as u64, Relaxed);
    }

    fn render(&self, out: &mut String) {
        let name = self.name;
        let _ = writeln!(out, "# HELP {name} {}", self.help);
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, le) in self.buckets.iter().enumerate() {
            cumulative += self.counts.sum(i);
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let count = cumulative + self.counts.sum(self.buckets.len());
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.counts.sum(self.buckets.len() + 1) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Process-wide counters, shared by every worker.
pub struct Metrics {
    pub logins: CounterVec,
    pub elevations: CounterVec,
    pub guard_checks: CounterVec,
    pub token_fetches: CounterVec,
    pub token_cache_hits: CounterVec,
    pub token_recoveries: CounterVec,
    pub phone_calls: CounterVec,
    pub check_calls: CounterVec,
    pub cache_lookups: CounterVec,
    pub cache_invalidations: CounterVec,
    /// Sessions in the local cache (a gauge, refreshed by the cache's heartbeat).
    pub cache_entries: AtomicU64,
    /// A [`CacheTracking`] as its `u8`.
    cache_tracking: AtomicU8,
    /// Whether Redis answered the `PING` made for the latest scrape of `/metrics`.
    redis_up: AtomicBool,
    /// Every HTTP request, from the first byte handled to the answer.
    latency: Histogram,
    /// `POST /login`, WeChat's answer included.
    login_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            logins: CounterVec::new(
                "wxsession_logins_total",
                "Logins by outcome.",
                "outcome",
                LOGIN_OUTCOMES,
            ),
            elevations: CounterVec::new(
                "wxsession_elevations_total",
                "Step-ups (POST /session/elevate) by outcome.",
                "outcome",
                ELEVATE_OUTCOMES,
            ),
            guard_checks: CounterVec::new(
                "wxsession_guard_checks_total",
                "Session guard checks by outcome.",
                "outcome",
                &[
                    "ok",
                    "missing",
                    "malformed",
                    "unknown",
                    "store_unavailable",
                    "session_replaced",
                    "session_revoked",
                    "user_banned",
                ],
            ),
            token_fetches: CounterVec::new(
                "wxsession_wechat_token_fetches_total",
                "access_token fetches from WeChat (stable_token) by outcome.",
                "outcome",
                WECHAT_OUTCOMES,
            ),
            token_cache_hits: CounterVec::new(
                "wxsession_wechat_token_cache_hits_total",
                "access_token answered from a cache, by cache.",
                "cache",
                &["memory", "redis"],
            ),
            token_recoveries: CounterVec::new(
                "wxsession_wechat_token_recoveries_total",
                "Calls retried once with a fresh token after 40001/40014/42001, by outcome.",
                "outcome",
                &["ok", "failed"],
            ),
            phone_calls: CounterVec::new(
                "wxsession_wechat_phone_calls_total",
                "Phone-number requests by outcome.",
                "outcome",
                WECHAT_OUTCOMES,
            ),
            check_calls: CounterVec::new(
                "wxsession_wechat_check_calls_total",
                "Session-key checks by outcome.",
                "outcome",
                WECHAT_OUTCOMES,
            ),
            cache_lookups: CounterVec::new(
                "wxsession_cache_lookups_total",
                "Guard checks answered from the local cache (hit) or not (miss).",
                "result",
                &["hit", "miss"],
            ),
            cache_invalidations: CounterVec::new(
                "wxsession_cache_invalidations_total",
                "Invalidations received from Redis: one key, or a full flush.",
                "kind",
                &["key", "flush"],
            ),
            cache_entries: AtomicU64::new(0),
            cache_tracking: AtomicU8::new(CacheTracking::Disabled as u8),
            redis_up: AtomicBool::new(false),
            latency: Histogram::new(
                "wxsession_http_request_duration_seconds",
                "Time to answer an HTTP request.",
                &LATENCY_BUCKETS,
            ),
            login_latency: Histogram::new(
                "wxsession_login_duration_seconds",
                "Time to answer POST /login, WeChat's code2Session call included, \
                 whatever the outcome.",
                &LOGIN_BUCKETS,
            ),
        }
    }
}

impl Metrics {
    pub fn record_guard(&self, outcome: GuardOutcome) {
        self.guard_checks.inc(outcome.label());
    }

    pub fn set_cache_tracking(&self, state: CacheTracking) {
        self.cache_tracking.store(state as u8, Relaxed);
    }

    pub fn record_latency(&self, elapsed: Duration) {
        self.latency.observe(elapsed);
    }

    /// One `POST /login`, from the handler's start to its answer.
    pub fn record_login_latency(&self, elapsed: Duration) {
        self.login_latency.observe(elapsed);
    }

    /// Whether Redis answered the `PING` made for this scrape (`wxsession_redis_up`).
    pub fn set_redis_up(&self, up: bool) {
        self.redis_up.store(up, Relaxed);
    }

    /// The Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        for counter in [
            &self.logins,
            &self.elevations,
            &self.guard_checks,
            &self.token_fetches,
            &self.token_cache_hits,
            &self.token_recoveries,
            &self.phone_calls,
            &self.check_calls,
            &self.cache_lookups,
            &self.cache_invalidations,
        ] {
            counter.render(&mut out);
        }
        out.push_str("# HELP wxsession_cache_entries Sessions held in the local cache.\n");
        out.push_str("# TYPE wxsession_cache_entries gauge\n");
        let _ = writeln!(
            out,
            "wxsession_cache_entries {}",
            self.cache_entries.load(Relaxed)
        );
        out.push_str(
            "# HELP wxsession_cache_tracking The local cache's tracking connection: \
             on (served from memory), down (Redis out of reach), refused (Redis refused \
             CLIENT TRACKING; retried), disabled (session.local_cache off). \
             The current state is 1.\n",
        );
        out.push_str("# TYPE wxsession_cache_tracking gauge\n");
        let current = self.cache_tracking.load(Relaxed);
        for state in CacheTracking::ALL {
            let _ = writeln!(
                out,
                "wxsession_cache_tracking{{state=\"{}\"}} {}",
                state.label(),
                u8::from(state as u8 == current)
            );
        }
        out.push_str(
            "# HELP wxsession_clock_offset_seconds Redis's clock minus this host's; \
             session times follow Redis's.\n",
        );
        out.push_str("# TYPE wxsession_clock_offset_seconds gauge\n");
        let _ = writeln!(
            out,
            "wxsession_clock_offset_seconds {}",
            crate::clock::offset_ms() as f64 / 1000.0
        );
        out.push_str(
            "# HELP wxsession_redis_up 1 if Redis answered a PING made for this scrape \
             within redis.timeout_ms, else 0.\n",
        );
        out.push_str("# TYPE wxsession_redis_up gauge\n");
        let _ = writeln!(
            out,
            "wxsession_redis_up {}",
            u8::from(self.redis_up.load(Relaxed))
        );
        self.latency.render(&mut out);
        self.login_latency.render(&mut out);
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
    fn shards_sum_what_every_thread_added() {
        let shards = std::sync::Arc::new(Shards::new(3));
        let threads: Vec<_> = (0..SHARDS + 3)
            .map(|_| {
                let shards = shards.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        shards.add(1, 1);
                    }
                    shards.add(2, 5);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(shards.sum(0), 0);
        assert_eq!(shards.sum(1), 1000 * (SHARDS as u64 + 3));
        assert_eq!(shards.sum(2), 5 * (SHARDS as u64 + 3));
    }

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.logins.inc("ok");
        m.logins.inc("invalid_code");
        m.logins.inc("something_new");
        m.record_guard(GuardOutcome::Malformed);
        m.token_cache_hits.inc("redis");
        m.record_latency(Duration::from_micros(300));
        m.record_latency(Duration::from_millis(3));
        m.record_latency(Duration::from_secs(9));
        let text = m.render();
        assert!(text.contains("wxsession_logins_total{outcome=\"ok\"} 1"));
        assert!(text.contains("wxsession_logins_total{outcome=\"other\"} 1"));
        assert!(text.contains("wxsession_guard_checks_total{outcome=\"malformed\"} 1"));
        assert!(text.contains("wxsession_wechat_token_cache_hits_total{cache=\"redis\"} 1"));
        assert!(text.contains("wxsession_http_request_duration_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(text.contains("wxsession_http_request_duration_seconds_bucket{le=\"0.005\"} 2"));
        // Past the last bucket: only in +Inf and the count.
        assert!(text.contains("wxsession_http_request_duration_seconds_bucket{le=\"5\"} 2"));
        assert!(text.contains("wxsession_http_request_duration_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("wxsession_http_request_duration_seconds_sum 9.0033\n"));
        assert!(text.contains("wxsession_http_request_duration_seconds_count 3"));
        assert!(text.contains("wxsession_cache_tracking{state=\"disabled\"} 1"));
        assert!(text.contains("wxsession_login_duration_seconds_count 0"));
        assert!(text.contains("wxsession_redis_up 0"));
        m.record_login_latency(Duration::from_millis(1500));
        m.set_redis_up(true);
        let text = m.render();
        assert!(text.contains("wxsession_login_duration_seconds_bucket{le=\"1\"} 0"));
        assert!(text.contains("wxsession_login_duration_seconds_bucket{le=\"2\"} 1"));
        assert!(text.contains("wxsession_login_duration_seconds_bucket{le=\"+Inf\"} 1"));
        assert!(text.contains("wxsession_login_duration_seconds_sum 1.5\n"));
        assert!(text.contains("wxsession_http_request_duration_seconds_count 3"));
        assert!(text.contains("wxsession_redis_up 1"));
        m.set_cache_tracking(CacheTracking::Refused);
        let text = m.render();
        assert!(text.contains("wxsession_cache_tracking{state=\"disabled\"} 0"));
        assert!(text.contains("wxsession_cache_tracking{state=\"refused\"} 1"));
    }

    /// Dashboards and alerts select these series by label, and scrapes are
    /// compared from one version to the next: labels and order stay as they are.
    #[test]
    fn outcome_series_keep_their_labels_and_order() {
        let text = Metrics::default().render();
        let series = |name: &str| -> Vec<String> {
            text.lines()
                .filter_map(|l| l.strip_prefix(name)?.strip_prefix("{outcome=\""))
                .map(|l| l.split('"').next().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            series("wxsession_logins_total").join(" "),
            "ok invalid_request payload_too_large request_timeout invalid_code user_blocked \
             rate_limited \
             wechat_error wechat_busy wechat_timeout store_unavailable user_banned unknown_app other"
        );
        for name in [
            "wxsession_wechat_token_fetches_total",
            "wxsession_wechat_phone_calls_total",
            "wxsession_wechat_check_calls_total",
        ] {
            assert_eq!(
                series(name).join(" "),
                "ok invalid_code user_blocked rate_limited wechat_error wechat_busy \
                 wechat_timeout store_unavailable other",
                "{name}"
            );
        }
    }
}

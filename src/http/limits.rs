//! Per-client-address counting over one-minute windows, in process memory: the
//! brute-force signal on rejected session ids (a log line, so per instance is
//! enough and the guard sends Redis nothing for it; the login rate limit is
//! fleet-wide, in `session::LoginRate`).
//!
//! The map is bounded: it starts afresh each
//! minute and stops admitting new addresses at [`MAX_ADDRESSES`].

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked in one window; beyond it new ones are not counted.
pub const MAX_ADDRESSES: usize = 100_000;

struct Window {
    started: Instant,
    hits: HashMap<IpAddr, u32>,
}

/// Hits per address in the current minute.
pub struct PerAddressWindow {
    window: Mutex<Window>,
}

impl Default for PerAddressWindow {
    fn default() -> Self {
        PerAddressWindow {
            window: Mutex::new(Window {
                started: Instant::now(),
                hits: HashMap::new(),
            }),
        }
    }
}

impl PerAddressWindow {
    /// Counts one hit from `addr`; answers its count in this window (0 when the
    /// map is full and `addr` is new).
    pub fn hit(&self, addr: IpAddr) -> u32 {
        let mut window = self.window.lock().expect("window lock");
        if window.started.elapsed() >= WINDOW {
            window.started = Instant::now();
            window.hits.clear();
        }
        if window.hits.len() >= MAX_ADDRESSES && !window.hits.contains_key(&addr) {
            return 0;
        }
        let count = window.hits.entry(addr).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_address() {
        let w = PerAddressWindow::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(w.hit(a), 1);
        assert_eq!(w.hit(a), 2);
        assert_eq!(w.hit(b), 1);
    }
}

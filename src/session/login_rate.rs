//! `LoginRate`: logins per client address per minute, counted in Redis so that
//! the whole fleet shares one budget per address (`login.rate_per_minute`).
//!
//! One key per address, `{p}login_rate:<address>`, holding the count of the
//! current window; the window opens with the address's first login and lasts
//! [`WINDOW`] by the key's TTL, so no instance's clock is involved. An IPv6
//! client is counted by its /64, which is what one phone or one home gets.

use std::{
    net::{IpAddr, Ipv6Addr},
    time::Duration,
};

use super::{backend::Backend, StoreError};

pub const WINDOW: Duration = Duration::from_secs(60);

/// Counts one login and answers the count in the window. The TTL is set when the
/// count starts, and again if something left the key without one, so a counter
/// can never outlive its window. Sent as `EVAL` (Redis keeps the compiled
/// script): a login already costs several commands, this one only on login.
const HIT: &str = "local n = redis.call('INCR', KEYS[1])
if n == 1 or redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return n";

#[derive(Clone)]
pub struct LoginRate {
    backend: Backend,
    per_minute: u64,
}

impl LoginRate {
    pub(super) fn new(backend: Backend, per_minute: u64) -> LoginRate {
        LoginRate {
            backend,
            per_minute,
        }
    }

    /// Counts a login from `client`; `false` once it is over the limit.
    /// One command, on the login path only.
    pub async fn admit(&self, client: IpAddr) -> Result<bool, StoreError> {
        let key = self
            .backend
            .keys
            .login_rate(&counted_as(client).to_string());
        let count: u64 = self
            .backend
            .bounded(async {
                Ok(redis::cmd("EVAL")
                    .arg(HIT)
                    .arg(1)
                    .arg(&key)
                    .arg(WINDOW.as_millis() as u64)
                    .query_async(&mut self.backend.conn())
                    .await?)
            })
            .await?;
        Ok(count <= self.per_minute)
    }
}

/// The address a client is counted as: itself, or an IPv6 address's /64.
fn counted_as(client: IpAddr) -> IpAddr {
    match client.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_is_counted_by_its_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(counted_as(ip("2001:db8:1:2:aa::9")), ip("2001:db8:1:2::"));
        assert_eq!(counted_as(ip("::ffff:198.51.100.7")), ip("198.51.100.7"));
        assert_eq!(counted_as(ip("198.51.100.7")), ip("198.51.100.7"));
    }
}

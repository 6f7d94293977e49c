//! Who the client is: the TCP peer, or, when the peer is one of
//! `server.trusted_proxies`, the rightmost address in `X-Forwarded-For` that is
//! not a trusted proxy. Everything left of that address was written by the client
//! itself and proves nothing; from an untrusted peer the header is ignored.

use std::net::{IpAddr, SocketAddr};

use actix_web::{http::header::HeaderName, HttpRequest};

use crate::config::IpRange;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The proxies whose `X-Forwarded-For` is believed.
pub(super) struct TrustedProxies(Vec<IpRange>);

impl TrustedProxies {
    pub(super) fn new(ranges: &[IpRange]) -> TrustedProxies {
        TrustedProxies(ranges.to_vec())
    }

    fn trusts(&self, addr: IpAddr) -> bool {
        self.0.iter().any(|range| range.contains(addr))
    }

    /// The address limits count and logs show (`None` only without a peer,
    /// as in a test request).
    pub(super) fn client_of(&self, req: &HttpRequest) -> Option<IpAddr> {
        let peer = req.peer_addr()?.ip().to_canonical();
        if !self.trusts(peer) {
            return Some(peer);
        }
        // Several header lines are one list in order (RFC 9110 §5.3), so walk
        // the lines and their items from the right.
        let mut nearest = peer;
        for line in req.headers().get_all(&X_FORWARDED_FOR).rev() {
            let Ok(line) = line.to_str() else {
                return Some(nearest);
            };
            for item in line.rsplit(',') {
                match parse_hop(item) {
                    Some(addr) if !self.trusts(addr) => return Some(addr),
                    Some(addr) => nearest = addr,
                    // Garbage a trusted hop passed on: the hop is all we know.
                    None => return Some(nearest),
                }
            }
        }
        Some(nearest)
    }
}

/// One `X-Forwarded-For` item: an address, with a port as some proxies write it.
fn parse_hop(item: &str) -> Option<IpAddr> {
    let item = item.trim();
    item.parse::<IpAddr>()
        .or_else(|_| item.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|addr| addr.to_canonical())
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    fn client(trusted: &[&str], peer: &str, xff: &[&str]) -> IpAddr {
        let ranges: Vec<IpRange> = trusted.iter().map(|r| r.parse().unwrap()).collect();
        let mut req = TestRequest::default().peer_addr(peer.parse().unwrap());
        for line in xff {
            req = req.append_header(("x-forwarded-for", *line));
        }
        TrustedProxies::new(&ranges)
            .client_of(&req.to_http_request())
            .unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        assert_eq!(
            client(&[], "203.0.113.5:9", &["1.1.1.1"]),
            ip("203.0.113.5")
        );
        assert_eq!(
            client(&["10.0.0.0/8"], "203.0.113.5:9", &["1.1.1.1"]),
            ip("203.0.113.5")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
        let trusted = ["10.0.0.0/8", "::1"];
        // What the client wrote (9.9.9.9) is left of what nginx appended.
        assert_eq!(
            client(&trusted, "10.0.0.2:9", &["9.9.9.9, 198.51.100.7"]),
            ip("198.51.100.7")
        );
        // Two proxies in a row, over two header lines, one hop with a port.
        assert_eq!(
            client(
                &trusted,
                "[::1]:9",
                &["9.9.9.9", "198.51.100.7:5000, 10.0.0.3"]
            ),
            ip("198.51.100.7")
        );
        // Only trusted hops: the leftmost is the client.
        assert_eq!(
            client(&trusted, "10.0.0.2:9", &["10.9.9.9"]),
            ip("10.9.9.9")
        );
        // No header: the proxy itself.
        assert_eq!(client(&trusted, "10.0.0.2:9", &[]), ip("10.0.0.2"));
        // Garbage behind a trusted hop stops the walk at that hop.
        assert_eq!(
            client(&trusted, "10.0.0.2:9", &["198.51.100.7, junk, 10.0.0.4"]),
            ip("10.0.0.4")
        );
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
}

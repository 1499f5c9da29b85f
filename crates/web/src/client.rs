//! Who sent a request: the client address the abuse limits are keyed on.
//!
//! A web server's peer is its load balancer, so the client is named by the
//! `X-Forwarded-For` chain — but only hops appended by a proxy the configuration
//! trusts (`http.trusted_proxies`) are believed: anything a client writes into the
//! header itself sits to the left of them and is never taken as its address.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;
use subtle::ConstantTimeEq;

use crate::state::AppState;

/// The header that carries the operator's token past the per-address limits
/// (`abuse.bypass_token`).
pub const BYPASS_HEADER: &str = "x-bypass-limits";

/// The client's address, as far as the trusted proxies vouch for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// Who sent a request, for the abuse limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// Its address ([`client_ip`]).
    pub addr: ClientAddr,
    /// It carried the operator's token ([`BYPASS_HEADER`]): the per-address
    /// limits do not hold it.
    pub operator: bool,
}

impl ClientAddr {
    /// The key a per-address limit counts under: an IPv4 address whole, an IPv6
    /// address by its /64 (one host usually has a whole /64 to pick from).
    pub fn limit_key(self) -> String {
        match self.0 {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => {
                let s = v6.segments();
                format!("{}/64", Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        }
    }
}

impl FromRequestParts<AppState> for Client {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // The server always records the peer; were it missing, the unspecified
        // address is one shared key, limited rather than unlimited.
        let peer = peer_of(parts);
        let config = state.config();
        let addr = ClientAddr(client_ip(peer, &parts.headers, &config.http.trusted_proxies));
        let operator = match (&config.abuse.bypass_token, parts.headers.get(BYPASS_HEADER)) {
            (Some(token), Some(given)) => bool::from(token.as_bytes().ct_eq(given.as_bytes())),
            _ => false,
        };
        Ok(Client { addr, operator })
    }
}

/// The client of a request from `peer` carrying `headers`: `peer` itself unless it
/// is a trusted proxy; then, walking `X-Forwarded-For` from the right, the first
/// hop that is not a trusted proxy (each trusted proxy appended the address it
/// was talking to). A chain of trusted proxies only, or an entry that is not an
/// address, ends the walk at the last hop vouched for.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    // Several header lines are one list, in order (RFC 9110, section 5.3).
    let values: Vec<&str> =
        headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect();
    for entry in values.iter().rev().flat_map(|v| v.rsplit(',')) {
        let Some(ip) = parse_hop(entry.trim()) else { return client };
        client = ip;
        if !is_trusted(&ip) {
            return ip;
        }
    }
    client
}

/// Whether the request reached the site over HTTPS: `X-Forwarded-Proto: https`,
/// believed only when `peer` is a trusted proxy (the load balancer that ended TLS
/// sets it); from anyone else the header is the client's to write, and the
/// request is taken as plain HTTP. Of several values, the last one (what the
/// nearest proxy said) counts.
pub fn forwarded_https(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> bool {
    if !trusted.iter().any(|net| net.contains(&peer)) {
        return false;
    }
    let Some(last) = headers.get_all("x-forwarded-proto").iter().next_back() else { return false };
    let last = last.to_str().ok().and_then(|v| v.rsplit(',').next()).unwrap_or_default();
    last.trim().eq_ignore_ascii_case("https")
}

/// The peer of a request (the unspecified address should the server not have
/// recorded it: trusted by no configuration that names real proxies).
pub fn peer_of(parts: &Parts) -> IpAddr {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip())
}

/// One `X-Forwarded-For` entry: an address, perhaps with a port
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`).
fn parse_hop(entry: &str) -> Option<IpAddr> {
    entry.parse::<IpAddr>().ok().or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_trusted_hops_are_believed() {
        let lbs: Vec<IpNet> = vec!["10.0.0.0/24".parse().unwrap(), "127.0.0.9/32".parse().unwrap()];
        let lb = ip("10.0.0.5");
        // Straight from a client: the header is the client's to forge.
        assert_eq!(client_ip(ip("198.51.100.7"), &headers(&["1.2.3.4"]), &lbs), ip("198.51.100.7"));
        // Through a load balancer: the hop it appended.
        assert_eq!(client_ip(lb, &headers(&["198.51.100.7"]), &lbs), ip("198.51.100.7"));
        // A forged entry to the left of what the load balancer appended is ignored.
        assert_eq!(client_ip(lb, &headers(&["6.6.6.6, 198.51.100.7"]), &lbs), ip("198.51.100.7"));
        assert_eq!(client_ip(lb, &headers(&["6.6.6.6", "198.51.100.7"]), &lbs), ip("198.51.100.7"));
        // A chain of trusted proxies is walked through.
        assert_eq!(client_ip(lb, &headers(&["198.51.100.7, 127.0.0.9"]), &lbs), ip("198.51.100.7"));
        // Ports, IPv6.
        assert_eq!(client_ip(lb, &headers(&["198.51.100.7:4711"]), &lbs), ip("198.51.100.7"));
        assert_eq!(client_ip(lb, &headers(&["[2001:db8::1]:4711"]), &lbs), ip("2001:db8::1"));
        // No header, garbage, or only proxies: the last hop vouched for.
        assert_eq!(client_ip(lb, &headers(&[]), &lbs), lb);
        assert_eq!(client_ip(lb, &headers(&["unknown"]), &lbs), lb);
        assert_eq!(client_ip(lb, &headers(&["garbage, 127.0.0.9"]), &lbs), ip("127.0.0.9"));
        // Nothing trusted: the peer, whatever the header says.
        assert_eq!(client_ip(lb, &headers(&["198.51.100.7"]), &[]), lb);
    }

    #[test]
    fn https_is_believed_only_from_a_trusted_proxy() {
        let lbs: Vec<IpNet> = vec!["10.0.0.0/24".parse().unwrap()];
        let proto = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append("x-forwarded-proto", v.parse().unwrap());
            }
            h
        };
        let lb = ip("10.0.0.5");
        assert!(forwarded_https(lb, &proto(&["https"]), &lbs));
        assert!(forwarded_https(lb, &proto(&["HTTPS"]), &lbs));
        assert!(!forwarded_https(lb, &proto(&["http"]), &lbs));
        assert!(!forwarded_https(lb, &proto(&[]), &lbs), "no header: plain HTTP");
        // The nearest proxy's word counts.
        assert!(forwarded_https(lb, &proto(&["http, https"]), &lbs));
        assert!(!forwarded_https(lb, &proto(&["https", "http"]), &lbs));
        // Anyone else's header is ignored.
        assert!(!forwarded_https(ip("198.51.100.7"), &proto(&["https"]), &lbs));
        assert!(!forwarded_https(lb, &proto(&["https"]), &[]));
    }

    #[test]
    fn ipv6_clients_are_limited_by_their_64() {
        assert_eq!(ClientAddr(ip("192.0.2.1")).limit_key(), "192.0.2.1");
        assert_eq!(ClientAddr(ip("2001:db8:1:2:3:4:5:6")).limit_key(), "2001:db8:1:2::/64");
        assert_eq!(
            ClientAddr(ip("2001:db8:1:2:ffff::1")).limit_key(),
            ClientAddr(ip("2001:db8:1:2::9")).limit_key()
        );
    }
}

//! The rules a DNS configuration must follow, each refusal naming its setting.
//!
//! Validation builds what the server runs on ([`crate::zone::Zone`],
//! [`crate::geo::Geo`]) and throws it away, so a configuration that passes is one
//! [`crate::start`] can serve; the zone's and the regions' own rules live with
//! them.

use std::net::IpAddr;

use settings::invalid;

use crate::config::{ConfigError, DnsConfig, is_answerable, is_plain_name};

impl settings::Validate for DnsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.listen == self.admin && self.listen.port() != 0 {
            return Err(invalid("admin", "must differ from listen"));
        }
        if let Some(token) = &self.admin_token {
            guard::check(token).map_err(|why| invalid("admin_token", why))?;
        }
        if self.ttl_secs == 0 {
            return Err(invalid("ttl_secs", "must be positive (0 would disable caching entirely)"));
        }
        if self.ttl_secs > 86_400 {
            return Err(invalid("ttl_secs", "must be at most 86400 (a day)"));
        }
        if self.static_ttl_secs == 0 || self.static_ttl_secs > 604_800 {
            return Err(invalid("static_ttl_secs", "must be between 1 and 604800 (a week)"));
        }
        if !(512..=4096).contains(&self.max_udp_payload) {
            return Err(invalid("max_udp_payload", "must be between 512 and 4096"));
        }
        let soa = &self.soa;
        if soa.refresh == 0 || soa.retry == 0 || soa.expire == 0 {
            return Err(invalid("soa.refresh", "refresh, retry and expire must be positive"));
        }
        if soa.minimum > 86_400 {
            return Err(invalid("soa.minimum", "must be at most 86400 (RFC 2308 advises hours at most)"));
        }
        validate_dcs(self)?;
        validate_cdn(self)?;
        let h = &self.health;
        if h.interval_ms == 0 {
            return Err(invalid("health.interval_ms", "must be positive"));
        }
        if h.timeout_ms == Some(0) {
            return Err(invalid("health.timeout_ms", "must be positive"));
        }
        if h.healthy_threshold == 0 || h.unhealthy_threshold == 0 {
            return Err(invalid("health.healthy_threshold", "both thresholds must be at least 1"));
        }
        if self.tcp.idle_timeout_ms == 0 {
            return Err(invalid("tcp.idle_timeout_ms", "must be positive"));
        }
        if self.tcp.max_connections == 0 {
            return Err(invalid("tcp.max_connections", "must be at least 1"));
        }
        if self.udp.workers > 256 {
            return Err(invalid("udp.workers", "must be at most 256"));
        }
        if !(64 * 1024..=64 * 1024 * 1024).contains(&self.udp.buffer_bytes) {
            return Err(invalid("udp.buffer_bytes", "must be between 64 KiB and 64 MiB"));
        }
        // The zone's names and the client regions: built as the server builds them.
        crate::zone::Zone::build(self)?;
        crate::geo::Geo::build(self)?;
        Ok(())
    }
}

fn validate_dcs(config: &DnsConfig) -> Result<(), ConfigError> {
    if config.dcs.is_empty() {
        return Err(invalid("dc", "at least one [[dc]] is needed"));
    }
    let mut addresses: Vec<IpAddr> = Vec::new();
    for (i, dc) in config.dcs.iter().enumerate() {
        if !is_plain_name(&dc.name) {
            return Err(invalid("dc.name", format!("{:?}: letters, digits, '-' and '_' only", dc.name)));
        }
        if config.dcs[..i].iter().any(|d| d.name == dc.name) {
            return Err(invalid("dc.name", format!("{} is listed twice", dc.name)));
        }
        if dc.entries.is_empty() {
            return Err(invalid("dc.entry", format!("dc {} has no entry", dc.name)));
        }
        for e in &dc.entries {
            if !is_answerable(e.address) {
                return Err(invalid(
                    "dc.entry.address",
                    format!("dc {}: {} cannot be answered (unspecified or multicast)", dc.name, e.address),
                ));
            }
            if addresses.contains(&e.address) {
                return Err(invalid("dc.entry.address", format!("{} is listed twice", e.address)));
            }
            addresses.push(e.address);
            check_health_url("dc.entry.health_url", &dc.name, &e.health_url)?;
        }
    }
    Ok(())
}

/// `cdn` and `[[cdn_dc]]` come together; each `[[cdn_dc]]` names a `[[dc]]`
/// (the CDN name is placed with the DCs' orders, which index `[[dc]]`) once,
/// with edges of its own: answerable addresses that are no load balancer's and
/// no other edge's. The name itself is checked with the zone's names.
fn validate_cdn(config: &DnsConfig) -> Result<(), ConfigError> {
    match (&config.cdn, config.cdn_dcs.is_empty()) {
        (None, true) => return Ok(()),
        (Some(name), true) => {
            return Err(invalid(
                "cdn_dc",
                format!("cdn = {name:?} needs its edges: at least one [[cdn_dc]] with an entry"),
            ));
        }
        (None, false) => {
            return Err(invalid("cdn", "[[cdn_dc]] lists CDN edges but cdn (the CDN's name) is not set"));
        }
        (Some(_), false) => {}
    }
    let lbs: Vec<IpAddr> = config.dcs.iter().flat_map(|d| d.entries.iter().map(|e| e.address)).collect();
    let mut addresses: Vec<IpAddr> = Vec::new();
    for (i, dc) in config.cdn_dcs.iter().enumerate() {
        if !config.dcs.iter().any(|d| d.name == dc.name) {
            return Err(invalid(
                "cdn_dc.name",
                format!("cdn_dc {:?} names an unknown DC (every [[cdn_dc]] must be a [[dc]]'s)", dc.name),
            ));
        }
        if config.cdn_dcs[..i].iter().any(|d| d.name == dc.name) {
            return Err(invalid("cdn_dc.name", format!("{} is listed twice", dc.name)));
        }
        if dc.entries.is_empty() {
            return Err(invalid("cdn_dc.entry", format!("cdn_dc {} has no entry", dc.name)));
        }
        for e in &dc.entries {
            if !is_answerable(e.address) {
                return Err(invalid(
                    "cdn_dc.entry.address",
                    format!(
                        "cdn_dc {}: {} cannot be answered (unspecified or multicast)",
                        dc.name, e.address
                    ),
                ));
            }
            if lbs.contains(&e.address) {
                return Err(invalid(
                    "cdn_dc.entry.address",
                    format!("cdn_dc {}: {} is a load balancer's address ([[dc]])", dc.name, e.address),
                ));
            }
            if addresses.contains(&e.address) {
                return Err(invalid("cdn_dc.entry.address", format!("{} is listed twice", e.address)));
            }
            addresses.push(e.address);
            check_health_url("cdn_dc.entry.health_url", &dc.name, &e.health_url)?;
        }
    }
    Ok(())
}

fn check_health_url(field: &'static str, dc: &str, url: &str) -> Result<(), ConfigError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid(field, format!("dc {dc}: {url:?}: {e}")))?;
    // Plain HTTP only: the load balancers' and edges' admin listeners are
    // private and cleartext, and the prober has no TLS.
    if parsed.scheme() != "http" || parsed.host().is_none() {
        return Err(invalid(field, format!("dc {dc}: {url:?} is not an http:// URL")));
    }
    Ok(())
}

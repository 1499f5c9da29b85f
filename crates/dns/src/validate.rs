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
            check_health_url(&dc.name, &e.health_url)?;
        }
    }
    Ok(())
}

fn check_health_url(dc: &str, url: &str) -> Result<(), ConfigError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| invalid("dc.entry.health_url", format!("dc {dc}: {url:?}: {e}")))?;
    // Plain HTTP only: the load balancers' admin listeners are private and
    // cleartext, and the prober has no TLS.
    if parsed.scheme() != "http" || parsed.host().is_none() {
        return Err(invalid("dc.entry.health_url", format!("dc {dc}: {url:?} is not an http:// URL")));
    }
    Ok(())
}

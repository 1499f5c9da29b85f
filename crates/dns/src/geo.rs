//! Geo placement: which DCs a client prefers, and how far that holds.
//!
//! A client address (the EDNS Client Subnet address when the query has one,
//! else the packet's source) is looked up among the regions' ranges. Ranges may
//! not overlap (a configuration error), so an address is in at most one range,
//! found by binary search, and the ECS scope of the answer is exact: the matched
//! range's prefix length, or for an address in no range the shortest prefix
//! around it that touches no range (so a resolver never applies the default
//! answer to a client of a region).
//!
//! Every order lists every DC: a region's own order first, then the DCs it does
//! not name in `default_order`'s order, then those in `[[dc]]` order. So when a
//! client's DCs are all down it is sent to the others, never left without one.

use std::net::IpAddr;

use settings::invalid;

use crate::cidr::{Cidr, bits, common_prefix};
use crate::config::{ConfigError, DnsConfig, is_plain_name};

/// The regions, ready for lookups.
#[derive(Debug)]
pub struct Geo {
    /// Every region's ranges, sorted by family then network address, each with
    /// the index of its region's DC order in `orders`.
    ranges: Vec<(Cidr, usize)>,
    /// DC orders (indices into the configuration's `[[dc]]`, complete): one per
    /// region, then the default order last.
    orders: Vec<Vec<usize>>,
}

/// Where a client is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement<'g> {
    /// The DCs in the client's order of preference (indices into `[[dc]]`).
    pub order: &'g [usize],
    /// For how many leading bits of the client's address this placement holds
    /// (the ECS scope prefix length).
    pub scope: u8,
}

impl Geo {
    /// Build the lookup table, naming the setting that is wrong.
    pub fn build(config: &DnsConfig) -> Result<Geo, ConfigError> {
        let dcs = config.dc_names();
        let index = |field: &'static str, owner: &str, name: &str| {
            dcs.iter()
                .position(|d| *d == name)
                .ok_or_else(|| invalid(field, format!("{owner} names an unknown DC {name:?}")))
        };
        let mut default = Vec::new();
        for name in &config.default_order {
            let i = index("default_order", "default_order", name)?;
            if default.contains(&i) {
                return Err(invalid("default_order", format!("{name} is listed twice")));
            }
            default.push(i);
        }
        let rest: Vec<usize> = (0..dcs.len()).filter(|i| !default.contains(i)).collect();
        default.extend(rest);

        let mut orders = Vec::new();
        let mut ranges: Vec<(Cidr, usize)> = Vec::new();
        for (r, region) in config.regions.iter().enumerate() {
            let who = format!("region {}", region.name);
            if !is_plain_name(&region.name) {
                return Err(invalid(
                    "region.name",
                    format!("{:?}: letters, digits, '-' and '_' only", region.name),
                ));
            }
            if config.regions[..r].iter().any(|o| o.name == region.name) {
                return Err(invalid("region.name", format!("{} is listed twice", region.name)));
            }
            if region.order.is_empty() {
                return Err(invalid("region.order", format!("{who} names no DC")));
            }
            let mut order = Vec::new();
            for name in &region.order {
                let i = index("region.order", &who, name)?;
                if order.contains(&i) {
                    return Err(invalid("region.order", format!("{who} lists {name} twice")));
                }
                order.push(i);
            }
            let rest: Vec<usize> = default.iter().copied().filter(|i| !order.contains(i)).collect();
            order.extend(rest);
            orders.push(order);
            if region.ranges.is_empty() {
                return Err(invalid("region.ranges", format!("{who} has no range")));
            }
            for text in &region.ranges {
                let cidr: Cidr = text.parse().map_err(|e| invalid("region.ranges", format!("{who}: {e}")))?;
                if let Some((other, o)) = ranges.iter().find(|(c, _)| c.overlaps(&cidr)) {
                    let owner = &config.regions[*o].name;
                    return Err(invalid(
                        "region.ranges",
                        format!("{who}: {cidr} overlaps {other} of region {owner} (ranges may not overlap)"),
                    ));
                }
                ranges.push((cidr, r));
            }
        }
        orders.push(default);
        ranges.sort_by_key(|(c, _)| (c.network().is_ipv6(), c.network()));
        Ok(Geo { ranges, orders })
    }

    /// The placement of a client at `addr`.
    pub fn place(&self, addr: IpAddr) -> Placement<'_> {
        let key = (addr.is_ipv6(), addr);
        let after = self.ranges.partition_point(|(c, _)| (c.network().is_ipv6(), c.network()) <= key);
        if let Some((cidr, region)) = after.checked_sub(1).map(|i| &self.ranges[i])
            && cidr.contains(addr)
        {
            return Placement { order: &self.orders[*region], scope: cidr.prefix() };
        }
        // In no range: the answer holds for the largest block around `addr` that
        // touches no range; its closest ranges are its neighbours in the sorted list.
        let mut scope = 0;
        for neighbour in [after.checked_sub(1), Some(after)].into_iter().flatten() {
            if let Some((cidr, _)) = self.ranges.get(neighbour)
                && cidr.network().is_ipv4() == addr.is_ipv4()
            {
                scope = scope.max(common_prefix(addr, cidr.network()) + 1);
            }
        }
        Placement {
            order: self.orders.last().expect("the default order is always there"),
            scope: scope.min(bits(addr)),
        }
    }

    /// Whether any region is configured (without regions, answers never depend
    /// on the client).
    pub fn has_regions(&self) -> bool {
        !self.ranges.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo(regions: &str, default: &str) -> Geo {
        let text = format!(
            r#"
zone = "millions.test"
listen = "127.0.0.1:5300"
admin = "127.0.0.1:5301"
nameservers = ["127.0.0.53"]
default_order = {default}
[[dc]]
name = "dc1"
entry = [{{ address = "127.0.1.1", health_url = "http://127.0.1.1:8001/readyz" }}]
[[dc]]
name = "dc2"
entry = [{{ address = "127.0.2.1", health_url = "http://127.0.2.1:8001/readyz" }}]
[[dc]]
name = "dc3"
entry = [{{ address = "127.0.3.1", health_url = "http://127.0.3.1:8001/readyz" }}]
{regions}
"#
        );
        Geo::build(&DnsConfig::parse(&text, "t").unwrap()).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const REGIONS: &str = r#"
[[region]]
name = "one"
ranges = ["127.0.11.0/24", "2001:db8:1::/48"]
order = ["dc1"]
[[region]]
name = "two"
ranges = ["127.0.12.0/24", "10.0.0.0/8"]
order = ["dc2", "dc3"]
"#;

    #[test]
    fn places_by_range_with_complete_orders() {
        let g = geo(REGIONS, r#"["dc3"]"#);
        assert_eq!(g.place(ip("127.0.11.7")), Placement { order: &[0, 2, 1], scope: 24 });
        assert_eq!(g.place(ip("127.0.12.0")), Placement { order: &[1, 2, 0], scope: 24 });
        assert_eq!(g.place(ip("10.200.0.1")), Placement { order: &[1, 2, 0], scope: 8 });
        assert_eq!(g.place(ip("2001:db8:1:ffff::1")).scope, 48);
        assert_eq!(g.place(ip("2001:db8:1:ffff::1")).order, &[0, 2, 1]);
    }

    #[test]
    fn unplaced_clients_get_the_default_order_and_a_scope_touching_no_range() {
        let g = geo(REGIONS, "[]");
        let p = g.place(ip("127.0.13.1"));
        assert_eq!(p.order, &[0, 1, 2]);
        // 127.0.13.0 and 127.0.12.0 share 23 bits: /24 around it touches no range.
        assert_eq!(p.scope, 24);
        let p = g.place(ip("127.0.0.1"));
        assert_eq!(p.scope, 21); // 127.0.0.0/21 ends at 127.0.7.255
        assert_eq!(g.place(ip("192.0.2.1")).scope, 1); // 128.0.0.0/1 holds no range
        assert_eq!(g.place(ip("::1")).scope, 3);
        let none = geo("", r#"["dc2"]"#);
        assert_eq!(none.place(ip("127.0.11.7")), Placement { order: &[1, 0, 2], scope: 0 });
        assert!(!none.has_regions());
    }
}

//! Address ranges (`192.0.2.0/24`, `2001:db8::/32`): what a region is made of and
//! how far an answer holds for an EDNS Client Subnet (RFC 7871) scope.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An address range: a network address and a prefix length, host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The network address (its host bits are zero).
    network: IpAddr,
    /// How many leading bits are fixed: 0..=32 for IPv4, 0..=128 for IPv6.
    prefix: u8,
}

/// Why a range was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// Not `ADDRESS/PREFIX`.
    #[error("{0:?} is not ADDRESS/PREFIX")]
    Syntax(String),
    /// The prefix is longer than the address.
    #[error("{0:?}: the prefix is longer than the address")]
    Prefix(String),
    /// Bits past the prefix are set, so the range is not what it seems.
    #[error("{0:?} has bits set past its prefix (did you mean {1}?)")]
    HostBits(String, Cidr),
}

impl Cidr {
    /// The range of `prefix` leading bits around `addr` (host bits cleared).
    pub fn around(addr: IpAddr, prefix: u8) -> Cidr {
        let prefix = prefix.min(bits(addr));
        Cidr { network: mask(addr, prefix), prefix }
    }

    /// The network address.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `addr` is in the range (never across families).
    pub fn contains(&self, addr: IpAddr) -> bool {
        addr.is_ipv4() == self.network.is_ipv4() && mask(addr, self.prefix) == self.network
    }

    /// Whether the two ranges share an address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        let shorter = self.prefix.min(other.prefix);
        self.network.is_ipv4() == other.network.is_ipv4()
            && mask(self.network, shorter) == mask(other.network, shorter)
    }
}

/// The address's width in bits.
pub fn bits(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

/// How many leading bits two addresses of one family share.
pub fn common_prefix(a: IpAddr, b: IpAddr) -> u8 {
    let width = bits(a);
    let differ = as_u128(a) ^ as_u128(b);
    let shared = if a.is_ipv4() { (differ as u32).leading_zeros() } else { differ.leading_zeros() };
    (shared as u8).min(width)
}

/// `addr` with every bit past `prefix` cleared.
pub fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let keep = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) };
            IpAddr::V4((u32::from(v4) & keep).into())
        }
        IpAddr::V6(v6) => {
            let keep = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix.min(128))) };
            IpAddr::V6((u128::from(v6) & keep).into())
        }
    }
}

fn as_u128(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let (addr, prefix) = s.split_once('/').ok_or_else(|| CidrError::Syntax(s.to_owned()))?;
        let addr: IpAddr = addr.parse().map_err(|_| CidrError::Syntax(s.to_owned()))?;
        let prefix: u8 = prefix.parse().map_err(|_| CidrError::Syntax(s.to_owned()))?;
        if prefix > bits(addr) {
            return Err(CidrError::Prefix(s.to_owned()));
        }
        let cidr = Cidr::around(addr, prefix);
        if cidr.network != addr {
            return Err(CidrError::HostBits(s.to_owned(), cidr));
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_contains() {
        let c: Cidr = "127.0.11.0/24".parse().unwrap();
        assert!(c.contains(ip("127.0.11.200")));
        assert!(!c.contains(ip("127.0.12.1")));
        assert!(!c.contains(ip("::1")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")));
        assert!(!v6.contains(ip("2001:db9::")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        assert_eq!(c.to_string(), "127.0.11.0/24");
    }

    #[test]
    fn refuses_bad_ranges() {
        assert!(matches!("127.0.11.0".parse::<Cidr>(), Err(CidrError::Syntax(_))));
        assert!(matches!("127.0.11/24".parse::<Cidr>(), Err(CidrError::Syntax(_))));
        assert!(matches!("10.0.0.0/33".parse::<Cidr>(), Err(CidrError::Prefix(_))));
        let e = "10.0.0.1/8".parse::<Cidr>().unwrap_err();
        assert!(e.to_string().contains("did you mean 10.0.0.0/8"), "{e}");
    }

    #[test]
    fn overlap_and_common_prefix() {
        let a: Cidr = "10.0.0.0/8".parse().unwrap();
        let b: Cidr = "10.1.0.0/16".parse().unwrap();
        let c: Cidr = "11.0.0.0/8".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
        assert!(!a.overlaps(&"::/0".parse().unwrap()));
        assert_eq!(common_prefix(ip("127.0.12.0"), ip("127.0.11.0")), 21);
        assert_eq!(common_prefix(ip("1.2.3.4"), ip("1.2.3.4")), 32);
        assert_eq!(common_prefix(ip("::1"), ip("::1")), 128);
        assert_eq!(mask(ip("127.0.12.77"), 24), ip("127.0.12.0"));
        assert_eq!(mask(ip("127.0.12.77"), 0), ip("0.0.0.0"));
    }
}

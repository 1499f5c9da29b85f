//! Address ranges (`127.0.1.0/24`, `fd00:1::/64`) and arithmetic within them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;
use std::str::FromStr;

/// A block of IPv4 or IPv6 addresses: a network address and a prefix length.
///
/// Its host bits are always zero (`127.0.1.5/24` is refused, not silently rounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The first address of the block.
    network: IpAddr,
    /// How many leading bits are fixed.
    prefix: u8,
}

/// Text that is not a CIDR block.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct CidrError(String);

impl Cidr {
    /// The block `network/prefix`; refused if the prefix is too long for the family or
    /// the network address has host bits set.
    pub fn new(network: IpAddr, prefix: u8) -> Result<Cidr, CidrError> {
        let bits = family_bits(network);
        if prefix > bits {
            return Err(CidrError(format!(
                "prefix /{prefix} is longer than the {bits} bits of an {} address",
                if bits == 32 { "IPv4" } else { "IPv6" }
            )));
        }
        let masked = from_u128(network, to_u128(network) & mask(bits, prefix));
        if masked != network {
            return Err(CidrError(format!(
                "{network}/{prefix} has host bits set; the block containing it is {masked}/{prefix}"
            )));
        }
        Ok(Cidr { network, prefix })
    }

    /// The first address of the block.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.offset_of(ip).is_some()
    }

    /// Whether the two blocks share an address (blocks of different families never do).
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }

    /// The address `offset` places after the network address, if it is in the block.
    pub fn host(&self, offset: u128) -> Option<IpAddr> {
        (offset <= self.last_offset()).then(|| from_u128(self.network, to_u128(self.network) + offset))
    }

    /// How far `ip` is from the network address, if it is in the block.
    pub fn offset_of(&self, ip: IpAddr) -> Option<u128> {
        if family_bits(ip) != family_bits(self.network) {
            return None;
        }
        let (ip, net) = (to_u128(ip), to_u128(self.network));
        (ip & mask(family_bits(self.network), self.prefix) == net).then(|| ip - net)
    }

    /// The offsets a node may have: all but the network address and, in IPv4 blocks
    /// of four or more addresses, the broadcast address. (IPv6 has no broadcast; /31
    /// and /32 blocks have no network/broadcast addresses, RFC 3021.)
    pub fn usable_offsets(&self) -> RangeInclusive<u128> {
        let last = self.last_offset();
        match self.network {
            IpAddr::V4(_) if last >= 3 => 1..=last - 1,
            IpAddr::V6(_) if last >= 1 => 1..=last,
            _ => 0..=last,
        }
    }

    /// Offset of the block's last address.
    fn last_offset(&self) -> u128 {
        let host_bits = family_bits(self.network) - self.prefix;
        if host_bits == 128 { u128::MAX } else { (1u128 << host_bits) - 1 }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let (addr, prefix) = s.split_once('/').ok_or_else(|| {
            CidrError(format!("\"{s}\" is not a range: expected ADDRESS/PREFIX, like \"127.0.1.0/24\""))
        })?;
        let network: IpAddr = addr
            .parse()
            .map_err(|_| CidrError(format!("\"{addr}\" in \"{s}\" is not an IPv4 or IPv6 address")))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| CidrError(format!("\"{prefix}\" in \"{s}\" is not a prefix length (0 to 128)")))?;
        Cidr::new(network, prefix)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

fn family_bits(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// The mask of `prefix` leading ones in a `bits`-wide address, as a `u128`.
fn mask(bits: u8, prefix: u8) -> u128 {
    let all = if bits == 128 { u128::MAX } else { (1u128 << bits) - 1 };
    let host_bits = bits - prefix;
    let host = if host_bits == 128 { u128::MAX } else { (1u128 << host_bits) - 1 };
    all & !host
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address of `like`'s family with value `n` (which must fit the family).
fn from_u128(like: IpAddr, n: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(n as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_prints() {
        assert_eq!(cidr("127.0.1.0/24").to_string(), "127.0.1.0/24");
        assert_eq!(cidr("fd00:1::/64").to_string(), "fd00:1::/64");
        assert_eq!(cidr("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(cidr("::/0").usable_offsets(), 1..=u128::MAX);
    }

    #[test]
    fn refuses_bad_text() {
        let err = |s: &str| s.parse::<Cidr>().unwrap_err().to_string();
        assert!(err("127.0.1.0").contains("expected ADDRESS/PREFIX"));
        assert!(err("127.0.1/24").contains("not an IPv4 or IPv6 address"));
        assert!(err("127.0.1.0/x").contains("not a prefix length"));
        assert!(err("127.0.1.0/33").contains("longer than the 32 bits"));
        assert!(err("127.0.1.5/24").contains("the block containing it is 127.0.1.0/24"));
    }

    #[test]
    fn hosts_and_offsets() {
        let c = cidr("127.0.1.0/24");
        assert_eq!(c.host(20), Some("127.0.1.20".parse().unwrap()));
        assert_eq!(c.host(256), None);
        assert_eq!(c.offset_of("127.0.1.20".parse().unwrap()), Some(20));
        assert_eq!(c.offset_of("127.0.2.20".parse().unwrap()), None);
        assert_eq!(c.offset_of("::1".parse().unwrap()), None);
        assert_eq!(c.usable_offsets(), 1..=254);
        assert_eq!(cidr("10.0.0.4/31").usable_offsets(), 0..=1);
        assert_eq!(cidr("fd00::/120").host(300), None);
        assert_eq!(cidr("fd00::/120").host(255), Some("fd00::ff".parse().unwrap()));
    }

    #[test]
    fn overlap() {
        assert!(cidr("127.0.0.0/16").overlaps(&cidr("127.0.1.0/24")));
        assert!(cidr("127.0.1.0/24").overlaps(&cidr("127.0.0.0/16")));
        assert!(!cidr("127.0.1.0/24").overlaps(&cidr("127.0.2.0/24")));
        assert!(!cidr("0.0.0.0/0").overlaps(&cidr("::/0")));
    }
}

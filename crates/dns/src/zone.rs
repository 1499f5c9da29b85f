//! The zone's static contents: its apex (SOA, NS), the name servers' glue, the
//! static records, and which names exist. The app's name and the CDN's (when
//! `cdn` is set) exist here too, but their addresses are chosen per query
//! ([`crate::answer`]).
//!
//! Names compare case-insensitively (hickory's `Name` does), so a query in mixed
//! case (0x20) finds its name; records are stored lower case.

use std::collections::HashMap;
use std::net::IpAddr;

use hickory_proto::rr::rdata::{A, AAAA, NS, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use settings::invalid;

use crate::config::{ConfigError, DnsConfig, is_answerable};

/// The zone as the server answers it.
#[derive(Debug)]
pub struct Zone {
    /// The apex (lower case, absolute).
    origin: Name,
    /// The app's name (lower case, absolute).
    app: Name,
    /// The CDN's name (lower case, absolute), when configured.
    cdn: Option<Name>,
    /// The SOA record as an SOA query gets it.
    soa: Record,
    /// The SOA record sent with negative answers: its TTL is the SOA minimum
    /// (RFC 2308 section 3), so resolvers cache NXDOMAIN and NODATA that long.
    negative_soa: Record,
    /// The A/AAAA records of the name servers, added to NS answers.
    glue: Vec<Record>,
    /// Every name that exists, with its static records (empty for the app's and
    /// the CDN's names and for names that only have names below them).
    names: HashMap<Name, Vec<Record>>,
}

/// What the zone holds for a name.
#[derive(Debug)]
pub enum Found<'z> {
    /// The name is not in this zone: refused.
    OutOfZone,
    /// The name is in the zone but does not exist: NXDOMAIN.
    NxDomain,
    /// The app's name: addresses of the nearest healthy DC.
    App,
    /// The CDN's name: the nearest healthy DC's edges, else what the app's name
    /// answers.
    Cdn,
    /// A name with static records (perhaps none: then every type is NODATA).
    Static {
        /// Its records.
        records: &'z [Record],
        /// Whether it is the apex (NS answers carry the glue).
        apex: bool,
    },
}

impl Zone {
    /// Build the zone from a configuration, naming the setting that is wrong.
    pub fn build(config: &DnsConfig) -> Result<Zone, ConfigError> {
        let origin = parse_name(&config.zone, None).map_err(|m| invalid("zone", m))?;
        if origin.is_root() {
            return Err(invalid("zone", "must not be the root"));
        }
        let ttl = config.static_ttl_secs;
        let app = in_zone(&config.app, &origin).map_err(|m| invalid("app", m))?;
        if app == origin {
            return Err(invalid("app", "must be a name below the zone's apex"));
        }
        if config.nameservers.is_empty() {
            return Err(invalid("nameservers", "at least one name server address is needed"));
        }
        let mut names: HashMap<Name, Vec<Record>> = HashMap::new();
        let mut glue = Vec::new();
        let mut ns_records = Vec::new();
        for (i, addr) in config.nameservers.iter().enumerate() {
            if !is_answerable(*addr) {
                return Err(invalid("nameservers", format!("{addr} cannot be answered")));
            }
            let name = in_zone(&format!("ns{}", i + 1), &origin).map_err(|m| invalid("nameservers", m))?;
            ns_records.push(Record::from_rdata(origin.clone(), ttl, RData::NS(NS(name.clone()))));
            let record = Record::from_rdata(name.clone(), ttl, address_rdata(*addr));
            glue.push(record.clone());
            names.insert(name, vec![record]);
        }
        if names.contains_key(&app) {
            return Err(invalid("app", format!("{app} is a name server's name")));
        }
        let cdn = match &config.cdn {
            None => None,
            Some(text) => {
                let cdn = in_zone(text, &origin).map_err(|m| invalid("cdn", m))?;
                if cdn == origin {
                    return Err(invalid("cdn", "must be a name below the zone's apex"));
                }
                if cdn == app {
                    return Err(invalid("cdn", format!("{cdn} is the app's name")));
                }
                if names.contains_key(&cdn) {
                    return Err(invalid("cdn", format!("{cdn} is a name server's name")));
                }
                Some(cdn)
            }
        };
        let soa_data = SOA::new(
            names_of(&ns_records)[0].clone(),
            in_zone(&config.soa.hostmaster, &origin).map_err(|m| invalid("soa.hostmaster", m))?,
            config.soa.serial,
            to_i32(config.soa.refresh),
            to_i32(config.soa.retry),
            to_i32(config.soa.expire),
            config.soa.minimum,
        );
        let soa = Record::from_rdata(origin.clone(), ttl, RData::SOA(soa_data.clone()));
        let negative_soa =
            Record::from_rdata(origin.clone(), ttl.min(config.soa.minimum), RData::SOA(soa_data));
        let mut apex = vec![soa.clone()];
        apex.extend(ns_records);
        names.insert(origin.clone(), apex);

        for r in &config.records {
            let name = in_zone(&r.name, &origin).map_err(|m| invalid("record.name", m))?;
            if name == origin || name == app || cdn.as_ref() == Some(&name) || names.contains_key(&name) {
                return Err(invalid(
                    "record.name",
                    format!(
                        "{name} is already taken (the apex, the app, the CDN, a name server or another record)"
                    ),
                ));
            }
            if r.a.is_empty() && r.aaaa.is_empty() {
                return Err(invalid("record", format!("{name} has no address (a or aaaa)")));
            }
            let mut records = Vec::new();
            for (list, field, v4) in [(&r.a, "record.a", true), (&r.aaaa, "record.aaaa", false)] {
                for addr in list {
                    if addr.is_ipv4() != v4 {
                        let family = if v4 { "IPv4" } else { "IPv6" };
                        return Err(invalid(field, format!("{name}: {addr} is not an {family} address")));
                    }
                    if !is_answerable(*addr) {
                        return Err(invalid(field, format!("{name}: {addr} cannot be answered")));
                    }
                    records.push(Record::from_rdata(name.clone(), ttl, address_rdata(*addr)));
                }
            }
            names.insert(name, records);
        }
        names.insert(app.clone(), Vec::new());
        if let Some(cdn) = &cdn {
            names.insert(cdn.clone(), Vec::new());
        }
        // Names between a name and the apex exist (empty non-terminals, RFC 8020):
        // they answer NODATA, never NXDOMAIN.
        let owners: Vec<Name> = names.keys().cloned().collect();
        for name in owners {
            let mut parent = name.base_name();
            while parent.num_labels() > origin.num_labels() {
                names.entry(parent.clone()).or_default();
                parent = parent.base_name();
            }
        }
        Ok(Zone { origin, app, cdn, soa, negative_soa, glue, names })
    }

    /// What the zone holds for `name` (any case).
    pub fn find(&self, name: &Name) -> Found<'_> {
        if !self.origin.zone_of(name) {
            return Found::OutOfZone;
        }
        if *name == self.app {
            return Found::App;
        }
        if self.cdn.as_ref() == Some(name) {
            return Found::Cdn;
        }
        match self.names.get(name) {
            None => Found::NxDomain,
            Some(records) => Found::Static { records, apex: *name == self.origin },
        }
    }

    /// The apex.
    pub fn origin(&self) -> &Name {
        &self.origin
    }

    /// The app's name.
    pub fn app(&self) -> &Name {
        &self.app
    }

    /// The CDN's name, when configured.
    pub fn cdn(&self) -> Option<&Name> {
        self.cdn.as_ref()
    }

    /// The SOA for the authority section of a negative answer.
    pub fn negative_soa(&self) -> &Record {
        &self.negative_soa
    }

    /// The SOA as an SOA query gets it.
    pub fn soa(&self) -> &Record {
        &self.soa
    }

    /// The name servers' addresses.
    pub fn glue(&self) -> &[Record] {
        &self.glue
    }
}

/// An A record's data for IPv4, AAAA for IPv6.
pub fn address_rdata(addr: IpAddr) -> RData {
    match addr {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}

/// The record type answering for an address.
pub fn address_type(addr: IpAddr) -> RecordType {
    if addr.is_ipv4() { RecordType::A } else { RecordType::AAAA }
}

fn names_of(ns: &[Record]) -> Vec<Name> {
    ns.iter()
        .filter_map(|r| match &r.data {
            RData::NS(NS(name)) => Some(name.clone()),
            _ => None,
        })
        .collect()
}

fn to_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// `text` relative to `origin` (or absolute with a final dot), which it must be in.
fn in_zone(text: &str, origin: &Name) -> Result<Name, String> {
    let name = parse_name(text, Some(origin))?;
    if !origin.zone_of(&name) {
        return Err(format!("{name} is outside the zone {origin}"));
    }
    Ok(name)
}

/// A host name: labels of letters, digits, '-' and '_' (1 to 63 bytes, no '-' at
/// either end), 255 bytes at most on the wire; relative names are appended to
/// `origin`. Lower case, absolute.
pub(crate) fn parse_name(text: &str, origin: Option<&Name>) -> Result<Name, String> {
    let absolute = text.ends_with('.');
    let body = text.strip_suffix('.').unwrap_or(text);
    if body.is_empty() {
        return if absolute { Ok(Name::root()) } else { Err("an empty name".into()) };
    }
    for label in body.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!("{text:?} is not a valid name ({label:?} is not a valid label)"));
        }
    }
    let mut name = Name::from_ascii(body.to_ascii_lowercase()).map_err(|e| format!("{text:?}: {e}"))?;
    name.set_fqdn(true);
    if let (false, Some(origin)) = (absolute, origin) {
        name = name.append_domain(origin).map_err(|e| format!("{text:?}: {e}"))?;
    }
    if name.len() > 255 {
        return Err(format!("{text:?} is longer than 255 bytes"));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(extra: &str) -> Zone {
        let text = format!(
            r#"
zone = "Millions.Test"
listen = "127.0.0.1:5300"
admin = "127.0.0.1:5301"
nameservers = ["127.0.0.53", "::53"]
app = "www.eu"
{extra}
[[dc]]
name = "dc1"
entry = [{{ address = "127.0.1.1", health_url = "http://127.0.1.1:8001/readyz" }}]
"#
        );
        Zone::build(&DnsConfig::parse(&text, "t").unwrap()).unwrap()
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn finds_names_in_any_case() {
        let z = zone("[[record]]\nname = \"a.b.api\"\na = [\"192.0.2.1\"]\n");
        assert!(matches!(z.find(&name("WwW.eU.MILLIONS.test.")), Found::App));
        assert!(matches!(z.find(&name("millions.test.")), Found::Static { apex: true, .. }));
        match z.find(&name("NS2.millions.test.")) {
            Found::Static { records, apex: false } => assert_eq!(records[0].record_type(), RecordType::AAAA),
            other => panic!("{other:?}"),
        }
        match z.find(&name("a.b.api.millions.test.")) {
            Found::Static { records, .. } => assert_eq!(records.len(), 1),
            other => panic!("{other:?}"),
        }
        // Empty non-terminals exist.
        for ent in ["b.api.millions.test.", "api.millions.test.", "eu.millions.test."] {
            assert!(matches!(z.find(&name(ent)), Found::Static { records: [], .. }), "{ent}");
        }
        assert!(matches!(z.find(&name("nope.millions.test.")), Found::NxDomain));
        assert!(matches!(z.find(&name("example.com.")), Found::OutOfZone));
        assert!(matches!(z.find(&name("test.")), Found::OutOfZone));
        assert_eq!(z.negative_soa().ttl, 60);
        assert_eq!(z.glue().len(), 2);
    }

    #[test]
    fn the_cdn_name_exists_only_when_configured() {
        let z = zone("");
        assert!(z.cdn().is_none());
        assert!(matches!(z.find(&name("cdn.millions.test.")), Found::NxDomain));
        let edges = "cdn = \"CDN.eu\"\n[[cdn_dc]]\nname = \"dc1\"\n\
                     entry = [{ address = \"127.0.1.50\", health_url = \"http://127.0.1.50:8001/readyz\" }]\n";
        let text = format!(
            r#"
zone = "millions.test"
listen = "127.0.0.1:5300"
admin = "127.0.0.1:5301"
nameservers = ["127.0.0.53"]
{edges}
[[dc]]
name = "dc1"
entry = [{{ address = "127.0.1.1", health_url = "http://127.0.1.1:8001/readyz" }}]
"#
        );
        let z = Zone::build(&DnsConfig::parse(&text, "t").unwrap()).unwrap();
        assert_eq!(z.cdn().map(ToString::to_string).as_deref(), Some("cdn.eu.millions.test."));
        assert!(matches!(z.find(&name("cDn.Eu.millions.test.")), Found::Cdn));
        assert!(matches!(z.find(&name("www.millions.test.")), Found::App));
        // Its parent is an empty non-terminal.
        assert!(matches!(z.find(&name("eu.millions.test.")), Found::Static { records: [], .. }));
    }

    #[test]
    fn names_are_checked() {
        let origin = name("millions.test.");
        assert!(parse_name("bad..name", None).is_err());
        assert!(parse_name("-x", None).is_err());
        assert!(parse_name("a b", None).is_err());
        assert!(parse_name(&"a".repeat(64), None).is_err());
        assert_eq!(parse_name("WWW", Some(&origin)).unwrap().to_string(), "www.millions.test.");
        assert!(in_zone("www.example.com.", &origin).is_err());
        assert!(in_zone("www.millions.test.", &origin).is_ok());
    }
}

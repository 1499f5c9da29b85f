//! Answering a query: the zone's rules (authoritative, never recursive), geo
//! placement and health for the app's name.
//!
//! - A name outside the zone, a class other than IN, or a zone transfer:
//!   REFUSED, not authoritative.
//! - A name in the zone that does not exist: NXDOMAIN with the SOA (TTL = its
//!   minimum) in the authority section; an existing name without the type asked:
//!   NOERROR with no answer and the same SOA (NODATA).
//! - The app's name: the healthy entries of the first healthy DC in the client's
//!   order ([`crate::geo`]), rotated by one on each answer so clients spread over
//!   a DC's load balancers. If every DC is down, every entry of every DC (fail
//!   open: a wrong answer may still work, no answer never does).
//! - ANY: every record the name has (our names have a handful, so the answer
//!   stays small, and over UDP it is truncated like any other); we chose this
//!   over RFC 8482's minimal answer because there is nothing to protect.
//! - An EDNS version above 0: BADVERS (RFC 6891).
//!
//! Every zone answer has AA=1; RA is always 0.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hickory_proto::op::{Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Record, RecordType};

use crate::geo::Geo;
use crate::health::HealthTable;
use crate::metrics::DnsMetrics;
use crate::wire::{EdnsQuery, Request, Response, answer_edns, subnet_address};
use crate::zone::{Found, Zone, address_rdata};

/// Everything a query is answered from.
#[derive(Debug)]
pub struct Answerer {
    /// The static names.
    zone: Zone,
    /// Client regions.
    geo: Geo,
    /// Which entries are answered.
    health: Arc<HealthTable>,
    /// Each entry's record for the app's name, by DC then entry.
    app_records: Vec<Vec<Record>>,
    /// Turns each app answer's rotation.
    rotation: AtomicUsize,
    /// Our advertised EDNS UDP size.
    max_udp_payload: u16,
    /// App answers by DC, fail-open answers.
    metrics: DnsMetrics,
}

/// The parts of an [`Answerer`].
#[derive(Debug)]
pub struct Parts {
    /// The static names.
    pub zone: Zone,
    /// Client regions.
    pub geo: Geo,
    /// Entry health, shared with the prober.
    pub health: Arc<HealthTable>,
    /// The entries' addresses, by DC then entry.
    pub entries: Vec<Vec<IpAddr>>,
    /// The app's answers' TTL.
    pub ttl_secs: u32,
    /// Our advertised EDNS UDP size.
    pub max_udp_payload: u16,
    /// Where app answers are counted.
    pub metrics: DnsMetrics,
}

impl Answerer {
    /// Assemble an answerer.
    pub fn new(parts: Parts) -> Answerer {
        let app = parts.zone.app().clone();
        let app_records = parts
            .entries
            .iter()
            .map(|dc| {
                dc.iter()
                    .map(|a| Record::from_rdata(app.clone(), parts.ttl_secs, address_rdata(*a)))
                    .collect()
            })
            .collect();
        Answerer {
            zone: parts.zone,
            geo: parts.geo,
            health: parts.health,
            app_records,
            rotation: AtomicUsize::new(0),
            max_udp_payload: parts.max_udp_payload,
            metrics: parts.metrics,
        }
    }

    /// The answer to `request` from a client at `source`.
    pub fn answer<'a>(&'a self, request: &'a Request, source: IpAddr) -> Response<'a> {
        let query = &request.query;
        let edns = request.edns.as_ref();
        if let Some(e) = edns
            && e.version > 0
        {
            let mut response = Response::to(&request.metadata, Some(query), ResponseCode::BADVERS);
            response.edns = Some(answer_edns(e, self.max_udp_payload, 0));
            return response;
        }
        let qtype = query.query_type();
        let found = match query.query_class() {
            DNSClass::IN | DNSClass::ANY => self.zone.find(query.name()),
            _ => Found::OutOfZone,
        };
        if matches!(found, Found::OutOfZone) || matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            let mut response = Response::to(&request.metadata, Some(query), ResponseCode::Refused);
            response.edns = edns.map(|e| answer_edns(e, self.max_udp_payload, 0));
            return response;
        }
        let mut response = Response::to(&request.metadata, Some(query), ResponseCode::NoError);
        response.metadata.authoritative = true;
        let mut scope = 0;
        match found {
            Found::OutOfZone => unreachable!("refused above"),
            Found::NxDomain => response.metadata.response_code = ResponseCode::NXDomain,
            Found::App => scope = self.app_answer(query, edns, source, &mut response),
            Found::Static { records, apex } => {
                response.answers.extend(records.iter().filter(|r| matches(qtype, r.record_type())));
                if apex && matches(qtype, RecordType::NS) {
                    response.additionals.extend(self.zone.glue());
                }
            }
        }
        if response.answers.is_empty() {
            response.authorities.push(self.zone.negative_soa());
        }
        response.edns = edns.map(|e| answer_edns(e, self.max_udp_payload, scope));
        response
    }

    /// Fill in the app's addresses; returns the ECS scope of the answer.
    fn app_answer<'a>(
        &'a self,
        query: &Query,
        edns: Option<&EdnsQuery>,
        source: IpAddr,
        response: &mut Response<'a>,
    ) -> u8 {
        let qtype = query.query_type();
        let wanted = |r: &&Record| matches(qtype, r.record_type());
        let client = subnet_address(edns).unwrap_or(source);
        let placement = self.geo.place(client);
        let chosen = placement.order.iter().copied().find(|&d| self.health.dc_healthy(d));
        let start = self.rotation.fetch_add(1, Ordering::Relaxed);
        match chosen {
            Some(dc) => {
                let records = &self.app_records[dc];
                let healthy = (0..records.len())
                    .map(|i| (start + i) % records.len())
                    .filter(|&i| self.health.entry_healthy(dc, i))
                    .map(|i| &records[i]);
                response.answers.extend(healthy.filter(wanted));
                if !response.answers.is_empty() {
                    self.metrics.app_answer(Some(dc));
                }
                if self.geo.has_regions() { placement.scope } else { 0 }
            }
            None => {
                let all = self.app_records.iter().flatten();
                response.answers.extend(all.filter(wanted));
                if !response.answers.is_empty() {
                    self.metrics.app_answer(None);
                }
                0
            }
        }
    }

    /// The entries' health (for readiness and the admin API).
    pub fn health(&self) -> &Arc<HealthTable> {
        &self.health
    }
}

/// Whether a record of type `have` answers a question for `asked`.
fn matches(asked: RecordType, have: RecordType) -> bool {
    asked == RecordType::ANY || asked == have
}

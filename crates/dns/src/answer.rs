//! Answering a query: the zone's rules (authoritative, never recursive), geo
//! placement and health for the app's name and the CDN's.
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
//! - The CDN's name (with `cdn` only): the healthy edges of the first DC in the
//!   client's order that has a healthy edge (the same placement, ECS scope and
//!   rotation as the app's name; DCs without edges are skipped). If no edge is
//!   healthy anywhere, exactly what the app's name answers: the load balancers
//!   serve the same `/media/` paths, so photos keep coming from the origin (the
//!   CDN's health-checked fallback), and if every load balancer is down too,
//!   the app's fail-open answer. The CDN never fails open to its own edges: a
//!   healthy origin beats edges all found dead.
//! - A/AAAA of either name are filtered from the chosen DC's entries: a DC
//!   whose healthy entries have no address of the asked family answers NODATA
//!   rather than moving on (resolvers ask both; clients use what exists).
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

use crate::geo::{Geo, Placement};
use crate::health::{HealthTable, Service};
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
    /// Each edge's record for the CDN's name, by DC (every `[[dc]]`; empty for
    /// a DC without edges, and for all without a CDN name) then edge.
    cdn_records: Vec<Vec<Record>>,
    /// Each load balancer's record for the CDN's name (its fallback), by DC
    /// then entry, as `app_records` but owned by the CDN's name: a resolver
    /// takes only records of the name it asked for.
    cdn_fallback_records: Vec<Vec<Record>>,
    /// Turns each app and CDN answer's rotation.
    rotation: AtomicUsize,
    /// Our advertised EDNS UDP size.
    max_udp_payload: u16,
    /// App and CDN answers by DC, fallbacks, fail-open answers.
    metrics: DnsMetrics,
}

/// Which of a service's DCs answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chosen {
    /// The first DC in the client's order with a healthy entry.
    Dc(usize),
    /// Every entry of every DC: no DC is healthy (fail open).
    All,
    /// Nothing: no DC is healthy and the service does not fail open.
    None,
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
    /// The CDN edges' addresses, by DC (every `[[dc]]`, in order; empty for a
    /// DC without edges) then edge; ignored when the zone has no CDN name.
    pub cdn_entries: Vec<Vec<IpAddr>>,
    /// The app's and the CDN's answers' TTL (both fail over alike).
    pub ttl_secs: u32,
    /// Our advertised EDNS UDP size.
    pub max_udp_payload: u16,
    /// Where app answers are counted.
    pub metrics: DnsMetrics,
}

impl Answerer {
    /// Assemble an answerer.
    pub fn new(parts: Parts) -> Answerer {
        let records = |name: &hickory_proto::rr::Name, entries: &[Vec<IpAddr>]| -> Vec<Vec<Record>> {
            entries
                .iter()
                .map(|dc| {
                    dc.iter()
                        .map(|a| Record::from_rdata(name.clone(), parts.ttl_secs, address_rdata(*a)))
                        .collect()
                })
                .collect()
        };
        let app_records = records(parts.zone.app(), &parts.entries);
        let (cdn_records, cdn_fallback_records) = match parts.zone.cdn() {
            Some(cdn) => (records(cdn, &parts.cdn_entries), records(cdn, &parts.entries)),
            None => (Vec::new(), Vec::new()),
        };
        Answerer {
            zone: parts.zone,
            geo: parts.geo,
            health: parts.health,
            app_records,
            cdn_records,
            cdn_fallback_records,
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
            Found::Cdn => scope = self.cdn_answer(query, edns, source, &mut response),
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
        let placement = self.geo.place(subnet_address(edns).unwrap_or(source));
        let start = self.rotation.fetch_add(1, Ordering::Relaxed);
        let records = &self.app_records;
        let (chosen, added) =
            self.fill(Service::App, records, query.query_type(), placement, start, response);
        if added {
            match chosen {
                Chosen::Dc(dc) => self.metrics.app_answer(Some(dc)),
                Chosen::All => self.metrics.app_answer(None),
                Chosen::None => {}
            }
        }
        self.scope(chosen, placement)
    }

    /// Fill in the CDN's addresses: the nearest DC's healthy edges, else (no
    /// edge healthy anywhere) what the app's name answers; returns the ECS
    /// scope of the answer.
    fn cdn_answer<'a>(
        &'a self,
        query: &Query,
        edns: Option<&EdnsQuery>,
        source: IpAddr,
        response: &mut Response<'a>,
    ) -> u8 {
        let placement = self.geo.place(subnet_address(edns).unwrap_or(source));
        let start = self.rotation.fetch_add(1, Ordering::Relaxed);
        let qtype = query.query_type();
        let (chosen, added) = self.fill(Service::Cdn, &self.cdn_records, qtype, placement, start, response);
        if let Chosen::Dc(dc) = chosen {
            if added {
                self.metrics.cdn_answer(dc);
            }
            return self.scope(chosen, placement);
        }
        // No edge is healthy anywhere: the origin's load balancers, as the app
        // (chosen by their health, answered under the CDN's name).
        let records = &self.cdn_fallback_records;
        let (chosen, added) = self.fill(Service::App, records, qtype, placement, start, response);
        if added {
            match chosen {
                Chosen::Dc(dc) => self.metrics.cdn_fallback(Some(dc)),
                Chosen::All => self.metrics.cdn_fallback(None),
                Chosen::None => {}
            }
        }
        self.scope(chosen, placement)
    }

    /// Put `service`'s answer for a client placed at `placement` into
    /// `response`, from `all` (its entries' records, by DC then entry, under the
    /// name asked for): the healthy entries of the first DC in its order with one,
    /// rotated to start at `start`; with none, the app fails open (every entry of
    /// every DC) and the CDN adds nothing. Only records of the asked type are
    /// added. Returns what was chosen and whether any record was added (a
    /// chosen DC may have no address of the asked family: NODATA).
    fn fill<'a>(
        &'a self,
        service: Service,
        all: &'a [Vec<Record>],
        qtype: RecordType,
        placement: Placement<'_>,
        start: usize,
        response: &mut Response<'a>,
    ) -> (Chosen, bool) {
        let wanted = |r: &&Record| matches(qtype, r.record_type());
        let before = response.answers.len();
        let chosen = match placement.order.iter().copied().find(|&d| self.health.dc_healthy(service, d)) {
            Some(dc) => {
                let records = &all[dc];
                let healthy = (0..records.len())
                    .map(|i| (start + i) % records.len())
                    .filter(|&i| self.health.entry_healthy(service, dc, i))
                    .map(|i| &records[i]);
                response.answers.extend(healthy.filter(wanted));
                Chosen::Dc(dc)
            }
            None if service == Service::App => {
                response.answers.extend(all.iter().flatten().filter(wanted));
                Chosen::All
            }
            None => Chosen::None,
        };
        (chosen, response.answers.len() > before)
    }

    /// The ECS scope of an answer: the placement's when a DC was chosen by it
    /// (and regions exist), else 0 (the answer is the same for every client).
    fn scope(&self, chosen: Chosen, placement: Placement<'_>) -> u8 {
        match chosen {
            Chosen::Dc(_) if self.geo.has_regions() => placement.scope,
            _ => 0,
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

//! The DNS server's metrics, registered in the process's `telemetry::Registry`.
//!
//! - `millions_dns_queries_total{qtype, rcode, transport}`: answers sent;
//! - `millions_dns_truncated_total`: UDP answers cut to TC=1 (the client retries over TCP);
//! - `millions_dns_malformed_total{transport, reason}`: packets that were not a
//!   query we could read (`short`: no header, dropped; `response`: a response,
//!   dropped; `format`: answered FORMERR);
//! - `millions_dns_app_answers_total{dc}`: the app's name answered with a DC's
//!   entries (`dc="all"` when every DC is down and the answer fails open);
//! - `millions_dns_fail_open_total`: answers given while every DC was down
//!   (the app's name's, and the CDN's name's when it fell back to them);
//! - `millions_dns_entry_healthy{dc, entry}`: 1 while an entry is answered.
//!
//! With a CDN name (`cdn`) only, so a server without one shows exactly what it
//! always did:
//!
//! - `millions_dns_cdn_answers_total{dc}`: the CDN's name answered with a DC's
//!   edges;
//! - `millions_dns_cdn_fallback_total{dc}`: the CDN's name answered with the
//!   load balancers (of DC `dc`, or `all` failing open) because no edge was
//!   healthy anywhere: the CDN's health-checked fallback to the origin;
//! - `millions_dns_cdn_edge_healthy{dc, edge}`: 1 while an edge is answered.
//!
//! Queries only touch atomics: each label set's counter is looked up in its
//! family once, then kept in a slot of its own.

use std::sync::{Arc, OnceLock};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::health::Service;

/// How a query arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A datagram: answers are size-limited and may be truncated.
    Udp,
    /// A stream: answers are whole.
    Tcp,
}

impl Transport {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// Why a packet was not a readable query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Shorter than a header: dropped.
    Short,
    /// A response, not a query: dropped (answering could loop or reflect).
    Response,
    /// The header is readable, the rest is not: FORMERR.
    Format,
}

const MALFORMED: [Malformed; 3] = [Malformed::Short, Malformed::Response, Malformed::Format];

impl Malformed {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Malformed::Short => "short",
            Malformed::Response => "response",
            Malformed::Format => "format",
        }
    }
}

/// The query types counted by name; the rest are `OTHER`, and a query without a
/// readable question is `NONE`.
const QTYPES: [&str; 13] =
    ["A", "AAAA", "NS", "SOA", "ANY", "CNAME", "MX", "TXT", "PTR", "SRV", "HTTPS", "OTHER", "NONE"];

fn qtype_slot(qtype: Option<RecordType>) -> usize {
    match qtype {
        Some(RecordType::A) => 0,
        Some(RecordType::AAAA) => 1,
        Some(RecordType::NS) => 2,
        Some(RecordType::SOA) => 3,
        Some(RecordType::ANY) => 4,
        Some(RecordType::CNAME) => 5,
        Some(RecordType::MX) => 6,
        Some(RecordType::TXT) => 7,
        Some(RecordType::PTR) => 8,
        Some(RecordType::SRV) => 9,
        Some(RecordType::HTTPS) => 10,
        Some(_) => 11,
        None => 12,
    }
}

/// The response codes we send, by name; anything else is `OTHER`.
const RCODES: [&str; 8] =
    ["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "BADVERS", "OTHER"];

fn rcode_slot(rcode: ResponseCode) -> usize {
    match rcode {
        ResponseCode::NoError => 0,
        ResponseCode::FormErr => 1,
        ResponseCode::ServFail => 2,
        ResponseCode::NXDomain => 3,
        ResponseCode::NotImp => 4,
        ResponseCode::Refused => 5,
        ResponseCode::BADVERS => 6,
        _ => 7,
    }
}

/// Labels of an answer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueryLabels {
    /// The question's type.
    qtype: &'static str,
    /// The answer's response code.
    rcode: &'static str,
    /// `udp` or `tcp`.
    transport: &'static str,
}

/// Labels of a malformed packet.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MalformedLabels {
    /// `udp` or `tcp`.
    transport: &'static str,
    /// See [`Malformed`].
    reason: &'static str,
}

/// Labels naming a DC.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DcLabels {
    /// The DC's name, or `all` for a fail-open answer.
    dc: String,
}

/// Labels naming an entry.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EntryLabels {
    /// The DC's name.
    dc: String,
    /// The entry's answered address.
    entry: String,
}

/// Labels naming a CDN edge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EdgeLabels {
    /// The DC's name.
    dc: String,
    /// The edge's answered address.
    edge: String,
}

/// The DNS server's metrics, cheap to clone.
#[derive(Clone, Debug)]
pub struct DnsMetrics {
    /// Shared by the listeners, the prober and the admin API.
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Answers by type, rcode and transport.
    queries: Family<QueryLabels, Counter>,
    /// `queries`' counters once looked up, by (qtype, rcode, transport) slot.
    query_slots: Vec<OnceLock<Counter>>,
    /// Truncated UDP answers.
    truncated: Counter,
    /// Malformed packets, by reason then transport (every label set is shown,
    /// at zero until it happens).
    malformed: Vec<[Counter; 2]>,
    /// App answers by DC; the last slot is `all` (fail open).
    app_answers: Vec<Counter>,
    /// Answers given while every DC was down.
    fail_open: Counter,
    /// Entry health, by DC then entry.
    entry_healthy: Vec<Vec<Gauge>>,
    /// The CDN name's metrics, when it has one.
    cdn: Option<CdnMetrics>,
}

/// The CDN name's metrics, by `[[dc]]` index.
#[derive(Debug)]
struct CdnMetrics {
    /// CDN answers with a DC's edges (`None` for a DC without edges, which
    /// never answers the CDN's name).
    answers: Vec<Option<Counter>>,
    /// CDN answers with a DC's load balancers; the last slot is `all` (fail open).
    fallback: Vec<Counter>,
    /// Edge health, by DC then edge (empty for a DC without edges).
    edge_healthy: Vec<Vec<Gauge>>,
}

impl CdnMetrics {
    /// Register the CDN's families; `edges` names each DC (every `[[dc]]`, in
    /// order) with its edges' addresses.
    fn new(registry: &telemetry::Registry, edges: &[(String, Vec<String>)]) -> CdnMetrics {
        let answers = Family::<DcLabels, Counter>::default();
        let fallback = Family::<DcLabels, Counter>::default();
        let healthy = Family::<EdgeLabels, Gauge>::default();
        registry.register(
            "dns_cdn_answers",
            "Answers for the CDN's name with a DC's CDN edges, by DC",
            answers.clone(),
        );
        registry.register(
            "dns_cdn_fallback",
            "Answers for the CDN's name with the load balancers, no edge being healthy (by DC; all: fail open)",
            fallback.clone(),
        );
        registry.register("dns_cdn_edge_healthy", "1 while a DC's CDN edge is answered", healthy.clone());
        let counter =
            |f: &Family<DcLabels, Counter>, dc: &str| f.get_or_create(&DcLabels { dc: dc.into() }).clone();
        let mut fallback_slots: Vec<Counter> = edges.iter().map(|(dc, _)| counter(&fallback, dc)).collect();
        fallback_slots.push(counter(&fallback, "all"));
        CdnMetrics {
            answers: edges
                .iter()
                .map(|(dc, list)| (!list.is_empty()).then(|| counter(&answers, dc)))
                .collect(),
            fallback: fallback_slots,
            edge_healthy: edges
                .iter()
                .map(|(dc, list)| {
                    list.iter()
                        .map(|e| {
                            healthy.get_or_create(&EdgeLabels { dc: dc.clone(), edge: e.clone() }).clone()
                        })
                        .collect()
                })
                .collect(),
        }
    }
}

impl DnsMetrics {
    /// Create and register the metrics; `dcs` names each DC with its entries'
    /// addresses, in `[[dc]]` order; `cdn_edges`, with a CDN name only, names
    /// each DC (every one, in the same order) with its CDN edges' addresses
    /// (none for a DC without edges).
    pub fn new(
        registry: &telemetry::Registry,
        dcs: &[(String, Vec<String>)],
        cdn_edges: Option<&[(String, Vec<String>)]>,
    ) -> DnsMetrics {
        let queries = Family::<QueryLabels, Counter>::default();
        let truncated = Counter::default();
        let malformed = Family::<MalformedLabels, Counter>::default();
        let answers = Family::<DcLabels, Counter>::default();
        let fail_open = Counter::default();
        let healthy = Family::<EntryLabels, Gauge>::default();
        registry.register(
            "dns_queries",
            "DNS answers sent, by query type, rcode and transport",
            queries.clone(),
        );
        registry.register(
            "dns_truncated",
            "UDP answers truncated (TC=1) to fit the client's size",
            truncated.clone(),
        );
        registry.register("dns_malformed", "Packets that were not a readable DNS query", malformed.clone());
        registry.register(
            "dns_app_answers",
            "Answers for the app's name, by DC (all: fail open)",
            answers.clone(),
        );
        registry.register(
            "dns_fail_open",
            "Answers (the app's name's, or the CDN's falling back) given with every DC's entries, every DC being down",
            fail_open.clone(),
        );
        registry.register(
            "dns_entry_healthy",
            "1 while a DC's entry (load balancer) is answered",
            healthy.clone(),
        );
        let mut app_answers: Vec<Counter> =
            dcs.iter().map(|(dc, _)| answers.get_or_create(&DcLabels { dc: dc.clone() }).clone()).collect();
        app_answers.push(answers.get_or_create(&DcLabels { dc: "all".into() }).clone());
        let entry_healthy = dcs
            .iter()
            .map(|(dc, entries)| {
                entries
                    .iter()
                    .map(|e| healthy.get_or_create(&EntryLabels { dc: dc.clone(), entry: e.clone() }).clone())
                    .collect()
            })
            .collect();
        let malformed_slots = MALFORMED
            .iter()
            .map(|reason| {
                [Transport::Udp, Transport::Tcp].map(|transport| {
                    let labels = MalformedLabels { transport: transport.label(), reason: reason.label() };
                    malformed.get_or_create(&labels).clone()
                })
            })
            .collect();
        let query_slots = (0..QTYPES.len() * RCODES.len() * 2).map(|_| OnceLock::new()).collect();
        let cdn = cdn_edges.map(|edges| CdnMetrics::new(registry, edges));
        DnsMetrics {
            inner: Arc::new(Inner {
                queries,
                query_slots,
                truncated,
                malformed: malformed_slots,
                app_answers,
                fail_open,
                entry_healthy,
                cdn,
            }),
        }
    }

    /// Count an answer.
    pub fn answered(&self, qtype: Option<RecordType>, rcode: ResponseCode, transport: Transport) {
        let (q, r, t) = (qtype_slot(qtype), rcode_slot(rcode), transport as usize);
        let slot = (q * RCODES.len() + r) * 2 + t;
        let counter = self.inner.query_slots[slot].get_or_init(|| {
            let labels = QueryLabels { qtype: QTYPES[q], rcode: RCODES[r], transport: transport.label() };
            self.inner.queries.get_or_create(&labels).clone()
        });
        counter.inc();
    }

    /// Count a truncated UDP answer.
    pub fn truncated(&self) {
        self.inner.truncated.inc();
    }

    /// Count a malformed packet.
    pub fn malformed(&self, transport: Transport, reason: Malformed) {
        self.inner.malformed[reason as usize][transport as usize].inc();
    }

    /// Count an answer for the app's name from DC `dc` (`None`: fail open).
    pub fn app_answer(&self, dc: Option<usize>) {
        match dc {
            Some(d) => {
                self.inner.app_answers[d].inc();
            }
            None => {
                self.inner.app_answers.last().expect("the fail-open slot is always there").inc();
                self.inner.fail_open.inc();
            }
        }
    }

    /// Count an answer for the CDN's name with DC `dc`'s edges.
    pub fn cdn_answer(&self, dc: usize) {
        if let Some(Some(counter)) = self.inner.cdn.as_ref().map(|c| &c.answers[dc]) {
            counter.inc();
        }
    }

    /// Count an answer for the CDN's name with the load balancers, no edge being
    /// healthy: DC `dc`'s (`None`: every DC's, failing open, which is also
    /// counted as a fail-open answer).
    pub fn cdn_fallback(&self, dc: Option<usize>) {
        let Some(cdn) = &self.inner.cdn else { return };
        match dc {
            Some(d) => {
                cdn.fallback[d].inc();
            }
            None => {
                cdn.fallback.last().expect("the fail-open slot is always there").inc();
                self.inner.fail_open.inc();
            }
        }
    }

    /// Set an entry's health gauge (a load balancer's, or a CDN edge's).
    pub fn set_entry_health(&self, service: Service, dc: usize, entry: usize, healthy: bool) {
        let gauge = match service {
            Service::App => Some(&self.inner.entry_healthy[dc][entry]),
            Service::Cdn => self.inner.cdn.as_ref().map(|c| &c.edge_healthy[dc][entry]),
        };
        if let Some(g) = gauge {
            g.set(i64::from(healthy));
        }
    }
}

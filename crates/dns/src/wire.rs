//! DNS messages on the wire: reading a query and writing an answer that fits.
//!
//! Reading is strict and cheap: a packet shorter than a header, or a response,
//! is dropped; anything else that is not exactly one readable question (with at
//! most one OPT record and a well-formed Client Subnet option) is a FORMERR.
//! The question count is checked before anything is allocated for it, so a
//! header claiming 65535 questions costs nothing.
//!
//! Writing: an answer that does not fit the size allowed (UDP) first loses its
//! additional section (glue is optional), then everything but the question and
//! the OPT record, with TC=1 so the client asks again over TCP. An RRset is
//! never sent in part.

use std::net::IpAddr;

use hickory_proto::op::{
    Edns, Header, Message, MessageType, Metadata, OpCode, Query, ResponseCode, emit_message_parts,
};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncoder};

use crate::cidr::{bits, mask};
use crate::metrics::Malformed;

/// Bytes of a DNS header.
pub const HEADER_LEN: usize = 12;

/// A UDP answer's size without EDNS (RFC 1035 4.2.1).
pub const CLASSIC_UDP_SIZE: usize = 512;

/// A query we can answer.
#[derive(Debug)]
pub struct Request {
    /// The header's fields (id, opcode, flags).
    pub metadata: Metadata,
    /// The one question, as asked (its case is echoed).
    pub query: Query,
    /// The query's EDNS, when it had an OPT record.
    pub edns: Option<EdnsQuery>,
}

/// What a query's OPT record said.
#[derive(Debug, Clone, Copy)]
pub struct EdnsQuery {
    /// The client's UDP payload size (at least 512).
    pub payload: u16,
    /// The EDNS version (we speak 0).
    pub version: u8,
    /// The DNSSEC OK bit, copied into the answer (RFC 3225).
    pub dnssec_ok: bool,
    /// The Client Subnet option (RFC 7871), address bits past the source prefix zero.
    pub subnet: Option<ClientSubnet>,
}

/// What reading a packet gave.
#[derive(Debug)]
pub enum Parsed {
    /// Not answered: counted and dropped.
    Drop(Malformed),
    /// Answered with an error code and nothing else (FORMERR, NOTIMP).
    Error {
        /// The header's fields.
        metadata: Metadata,
        /// The question, when it could be read.
        query: Option<Query>,
        /// The code to answer.
        rcode: ResponseCode,
        /// Set when the packet is counted as malformed.
        malformed: Option<Malformed>,
    },
    /// A query to answer.
    Query(Request),
}

/// Read a packet.
pub fn parse(packet: &[u8]) -> Parsed {
    if packet.len() < HEADER_LEN {
        return Parsed::Drop(Malformed::Short);
    }
    let mut decoder = BinDecoder::new(packet);
    let Ok(Header { metadata, counts }) = Header::read(&mut decoder) else {
        return Parsed::Drop(Malformed::Short);
    };
    if metadata.message_type == MessageType::Response {
        return Parsed::Drop(Malformed::Response);
    }
    let format_error = |query: Option<Query>| Parsed::Error {
        metadata,
        query,
        rcode: ResponseCode::FormErr,
        malformed: Some(Malformed::Format),
    };
    if counts.queries != 1 {
        return format_error(None);
    }
    let Ok(query) = Query::read(&mut decoder) else {
        return format_error(None);
    };
    if metadata.op_code != OpCode::Query {
        return Parsed::Error { metadata, query: Some(query), rcode: ResponseCode::NotImp, malformed: None };
    }
    // Answer and authority records mean nothing in a query; they are read (the
    // count is bounded by the bytes there) only to reach the additional section.
    for (count, additional) in
        [(counts.answers, false), (counts.authorities, false), (counts.additionals, true)]
    {
        match Message::read_records(&mut decoder, usize::from(count), additional, metadata.op_code) {
            Ok((_, None, _)) => {}
            Ok((_, Some(edns), _)) => match edns_query(&edns) {
                Some(edns) => return Parsed::Query(Request { metadata, query, edns: Some(edns) }),
                None => return format_error(Some(query)),
            },
            Err(_) => return format_error(Some(query)),
        }
    }
    Parsed::Query(Request { metadata, query, edns: None })
}

/// The OPT record's meaning, or `None` when its Client Subnet option is malformed
/// (RFC 7871 section 7.1.2: FORMERR).
fn edns_query(edns: &Edns) -> Option<EdnsQuery> {
    let mut subnet = None;
    for (code, option) in edns.options().as_ref() {
        if *code != EdnsCode::Subnet {
            continue;
        }
        let EdnsOption::Subnet(ecs) = option else { return None };
        if subnet.is_some()
            || ecs.source_prefix() > bits(ecs.addr())
            || ecs.scope_prefix() != 0
            || mask(ecs.addr(), ecs.source_prefix()) != ecs.addr()
        {
            return None;
        }
        subnet = Some(*ecs);
    }
    Some(EdnsQuery {
        payload: edns.max_payload(),
        version: edns.version(),
        dnssec_ok: edns.flags().dnssec_ok,
        subnet,
    })
}

/// An answer to write.
#[derive(Debug)]
pub struct Response<'a> {
    /// The header's fields (rcode, AA, ...); TC is set by [`encode`] when needed.
    pub metadata: Metadata,
    /// The question, echoed as asked.
    pub query: Option<&'a Query>,
    /// The answer section.
    pub answers: Vec<&'a Record>,
    /// The authority section (the SOA of a negative answer).
    pub authorities: Vec<&'a Record>,
    /// The additional section (glue); dropped first when the answer is too large.
    pub additionals: Vec<&'a Record>,
    /// Our OPT record, when the query had one.
    pub edns: Option<Edns>,
}

impl<'a> Response<'a> {
    /// An empty answer to `metadata`'s query with `rcode`.
    pub fn to(metadata: &Metadata, query: Option<&'a Query>, rcode: ResponseCode) -> Response<'a> {
        let mut metadata = Metadata::response_from_request(metadata);
        metadata.checking_disabled = false;
        metadata.response_code = rcode;
        Response {
            metadata,
            query,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
            edns: None,
        }
    }
}

/// Our OPT record for an answer: our own UDP size, version 0, the DO bit copied,
/// and the Client Subnet option echoed with `scope` when the query had one.
pub fn answer_edns(query: &EdnsQuery, max_payload: u16, scope: u8) -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(max_payload).set_version(0).set_dnssec_ok(query.dnssec_ok);
    if let Some(ecs) = query.subnet {
        // A source prefix of 0 places nobody, so the answer holds for everyone (RFC 7871 7.2.1).
        let scope = if ecs.source_prefix() == 0 { 0 } else { scope.min(bits(ecs.addr())) };
        let echoed = ClientSubnet::new(ecs.addr(), ecs.source_prefix(), scope);
        edns.options_mut().insert(EdnsOption::Subnet(echoed));
    }
    edns
}

/// The client address a Client Subnet option places a query at, when it carries
/// one (a source prefix of 0 means the client asked not to be placed by it).
pub fn subnet_address(edns: Option<&EdnsQuery>) -> Option<IpAddr> {
    edns.and_then(|e| e.subnet).filter(|s| s.source_prefix() > 0).map(|s| s.addr())
}

/// Write `response` into `out` in at most `limit` bytes; returns whether it had
/// to be truncated (TC=1).
pub fn encode(response: &mut Response<'_>, limit: usize, out: &mut Vec<u8>) -> bool {
    write(response, out);
    if out.len() <= limit {
        return false;
    }
    if !response.additionals.is_empty() {
        response.additionals.clear();
        write(response, out);
        if out.len() <= limit {
            return false;
        }
    }
    response.answers.clear();
    response.authorities.clear();
    response.metadata.truncation = true;
    write(response, out);
    true
}

fn write(response: &Response<'_>, out: &mut Vec<u8>) {
    out.clear();
    let mut encoder = BinEncoder::new(out);
    let written = emit_message_parts(
        &response.metadata,
        &mut response.query.into_iter(),
        &mut response.answers.iter().copied(),
        &mut response.authorities.iter().copied(),
        &mut response.additionals.iter().copied(),
        response.edns.as_ref(),
        None,
        &mut encoder,
    );
    if let Err(e) = written {
        // Nothing we build can fail to encode; if it ever does, say SERVFAIL.
        tracing::error!(error = %e, "cannot encode an answer");
        out.clear();
        let mut metadata = response.metadata;
        metadata.response_code = ResponseCode::ServFail;
        let header = Header { metadata, counts: Default::default() };
        let mut encoder = BinEncoder::new(out);
        let _ = hickory_proto::serialize::binary::BinEncodable::emit(&header, &mut encoder);
    }
}

/// The record type a question asks for, for the metrics.
pub fn question_type(query: Option<&Query>) -> Option<RecordType> {
    query.map(|q| q.query_type())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Name;

    fn query_bytes(edit: impl FnOnce(&mut Message)) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 7;
        m.add_query(Query::query(Name::from_ascii("www.millions.test.").unwrap(), RecordType::A));
        edit(&mut m);
        m.to_vec().unwrap()
    }

    #[test]
    fn reads_a_query_with_ecs() {
        let bytes = query_bytes(|m| {
            let mut edns = Edns::new();
            edns.set_max_payload(4096);
            edns.options_mut().insert(EdnsOption::Subnet("127.0.12.0/24".parse().unwrap()));
            m.set_edns(edns);
        });
        let Parsed::Query(r) = parse(&bytes) else { panic!("not a query") };
        let e = r.edns.unwrap();
        assert_eq!(e.payload, 4096);
        assert_eq!(subnet_address(Some(&e)), Some("127.0.12.0".parse().unwrap()));
    }

    #[test]
    fn refuses_what_is_not_one_readable_question() {
        assert!(matches!(parse(&[0; 5]), Parsed::Drop(Malformed::Short)));
        let mut response = query_bytes(|_| {});
        response[2] |= 0x80;
        assert!(matches!(parse(&response), Parsed::Drop(Malformed::Response)));
        let two = query_bytes(|m| {
            m.add_query(Query::query(Name::root(), RecordType::NS));
        });
        assert!(matches!(parse(&two), Parsed::Error { rcode: ResponseCode::FormErr, .. }));
        // Host bits past the ECS source prefix (in its last octet), and a scope in a query.
        for ecs in [
            ClientSubnet::new("127.0.15.0".parse().unwrap(), 20, 0),
            ClientSubnet::new("127.0.0.0".parse().unwrap(), 16, 8),
        ] {
            let bad_ecs = query_bytes(|m| {
                let mut edns = Edns::new();
                edns.options_mut().insert(EdnsOption::Subnet(ecs));
                m.set_edns(edns);
            });
            assert!(matches!(parse(&bad_ecs), Parsed::Error { rcode: ResponseCode::FormErr, .. }), "{ecs:?}");
        }
        let notify = query_bytes(|m| m.metadata.op_code = OpCode::Notify);
        assert!(matches!(parse(&notify), Parsed::Error { rcode: ResponseCode::NotImp, malformed: None, .. }));
        // A header claiming 65535 questions, and nothing after it.
        let mut absurd = vec![0u8; HEADER_LEN];
        absurd[4] = 0xff;
        absurd[5] = 0xff;
        assert!(matches!(parse(&absurd), Parsed::Error { rcode: ResponseCode::FormErr, .. }));
    }
}

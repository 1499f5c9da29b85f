//! One packet in, at most one packet out: what the UDP and TCP listeners share.
//!
//! Reads the query ([`crate::wire`]), answers it ([`crate::answer`]), writes the
//! answer within the transport's size (UDP: the client's EDNS size capped by
//! `max_udp_payload`, 512 without EDNS; TCP: whole) and counts it.

use std::net::IpAddr;

use crate::answer::Answerer;
use crate::metrics::{DnsMetrics, Transport};
use crate::wire::{self, CLASSIC_UDP_SIZE, Parsed, Response};

/// The largest DNS message over TCP (its 2-byte length prefix).
pub const MAX_TCP_MESSAGE: usize = u16::MAX as usize;

/// Answers packets.
#[derive(Debug)]
pub struct Handler {
    /// Answers queries.
    pub answerer: Answerer,
    /// Counts them.
    pub metrics: DnsMetrics,
    /// Our cap on UDP answers.
    pub max_udp_payload: u16,
}

impl Handler {
    /// Answer `packet` from `source` into `out`; returns false when nothing is
    /// to be sent (the packet was dropped).
    pub fn handle(&self, packet: &[u8], source: IpAddr, transport: Transport, out: &mut Vec<u8>) -> bool {
        match wire::parse(packet) {
            Parsed::Drop(reason) => {
                self.metrics.malformed(transport, reason);
                false
            }
            Parsed::Error { metadata, query, rcode, malformed } => {
                if let Some(reason) = malformed {
                    self.metrics.malformed(transport, reason);
                }
                let mut response = Response::to(&metadata, query.as_ref(), rcode);
                self.send(&mut response, None, transport, out);
                true
            }
            Parsed::Query(request) => {
                let mut response = self.answerer.answer(&request, source);
                let payload = request.edns.as_ref().map(|e| e.payload);
                self.send(&mut response, payload, transport, out);
                true
            }
        }
    }

    /// Encode within the transport's limit and count.
    fn send(
        &self,
        response: &mut Response<'_>,
        client_payload: Option<u16>,
        transport: Transport,
        out: &mut Vec<u8>,
    ) {
        let limit = match (transport, client_payload) {
            (Transport::Tcp, _) => MAX_TCP_MESSAGE,
            (Transport::Udp, None) => CLASSIC_UDP_SIZE,
            (Transport::Udp, Some(p)) => usize::from(p.min(self.max_udp_payload)).max(CLASSIC_UDP_SIZE),
        };
        if wire::encode(response, limit, out) {
            self.metrics.truncated();
        }
        self.metrics.answered(
            wire::question_type(response.query),
            response.metadata.response_code,
            transport,
        );
    }
}

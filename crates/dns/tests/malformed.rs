//! Garbage over UDP and TCP: the server answers FORMERR where it can read a
//! header and drops the rest, never stops answering, and counts every packet.

mod support;

use dns::DnsConfig;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

async fn server() -> (dns::Running, HealthUrl) {
    let health = HealthUrl::start().await;
    let config = DnsConfig::parse(&config_text(&health.url, "", ""), "test").unwrap();
    (dns::start(config, None).await.unwrap(), health)
}

/// A header with id `id`, one question, and a name that is a compression
/// pointer to itself.
fn pointer_loop(id: u16) -> Vec<u8> {
    let mut p = id.to_be_bytes().to_vec();
    p.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    p.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
    p
}

/// A header with id `id` claiming 65535 records in every section, and nothing else.
fn absurd_counts(id: u16) -> Vec<u8> {
    let mut p = id.to_be_bytes().to_vec();
    p.extend_from_slice(&[0x01, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    p
}

/// A valid query whose last label runs past the end of the packet.
fn cut_short(id: u16) -> Vec<u8> {
    let mut q = query("www.millions.test.", RecordType::A, None);
    q.metadata.id = id;
    let mut p = q.to_vec().unwrap();
    p.truncate(p.len() - 8);
    p
}

/// Deterministic pseudo-random bytes (xorshift), so a failure can be replayed.
fn garbage(seed: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed as u8
        })
        .collect()
}

/// Send `bad`, then a valid query; every answer before the valid query's must
/// be a FORMERR (or NOTIMP, for a random opcode) for `bad`'s id.
async fn survives(client: &UdpClient, bad: &[u8]) {
    client.send_raw(bad).await;
    let probe = query("www.millions.test.", RecordType::A, None);
    client.send_raw(&probe.to_vec().unwrap()).await;
    loop {
        let raw = client.recv_raw().await;
        let answer = Message::from_vec(&raw).expect("every answer is a valid message");
        if answer.metadata.id == probe.metadata.id && answer.queries.len() == 1 {
            assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
            assert_eq!(answer.answers.len(), 2, "{answer}");
            return;
        }
        assert_eq!(&raw[..2], &bad[..2], "an answer to the bad packet carries its id");
        assert!(
            matches!(answer.metadata.response_code, ResponseCode::FormErr | ResponseCode::NotImp),
            "{answer}"
        );
    }
}

#[tokio::test]
async fn garbage_over_udp_is_answered_formerr_or_dropped_and_counted() {
    let (dns, _health) = server().await;
    let client = UdpClient::new("127.0.0.1", dns.udp).await;

    // Too short for a header: dropped.
    client.send_raw(&[1, 2, 3, 4, 5]).await;
    // A response (QR set): dropped, never answered.
    let mut response = query("www.millions.test.", RecordType::A, None);
    response.metadata.message_type = hickory_proto::op::MessageType::Response;
    client.send_raw(&response.to_vec().unwrap()).await;

    for (bad, id) in
        [(absurd_counts(0xA001), 0xA001), (pointer_loop(0xA002), 0xA002), (cut_short(0xA003), 0xA003)]
    {
        client.send_raw(&bad).await;
        let answer = Message::from_vec(&client.recv_raw().await).unwrap();
        assert_eq!(answer.metadata.id, id);
        assert_eq!(answer.metadata.response_code, ResponseCode::FormErr, "{answer}");
        assert!(!answer.metadata.authoritative);
    }

    let mut seed = 0x9E37_79B9_7F4A_7C15;
    for round in 0..200 {
        let len = round % 100;
        let mut bad = garbage(&mut seed, len);
        if len >= 3 {
            bad[2] &= 0x7f; // a query, so that it is answered when it can be
        }
        survives(&client, &bad).await;
    }

    let count =
        |reason: &str| format!("millions_dns_malformed_total{{transport=\"udp\",reason=\"{reason}\"}}");
    let short = metric(dns.admin, &count("short")).await;
    assert!(short >= 13.0, "the 5-byte packet and the random ones under 12 bytes: {short}");
    assert!(metric(dns.admin, &count("response")).await >= 1.0);
    assert!(metric(dns.admin, &count("format")).await >= 3.0);
    let formerr =
        metric(dns.admin, r#"millions_dns_queries_total{qtype="NONE",rcode="FORMERR",transport="udp"}"#)
            .await;
    assert!(formerr >= 2.0, "{formerr}");
    dns.stop().await;
}

#[tokio::test]
async fn garbage_over_tcp_closes_or_answers_formerr_and_the_server_keeps_serving() {
    let (dns, _health) = server().await;
    let valid = query("www.millions.test.", RecordType::A, None).to_vec().unwrap();

    // A frame too short for a header: not DNS, the connection is closed.
    let mut c = TcpStream::connect(dns.tcp).await.unwrap();
    write_frame(&mut c, &[1, 2, 3]).await;
    assert!(read_frame(&mut c).await.is_none());

    // Absurd counts and a pointer loop: FORMERR, and the same connection goes on.
    let mut c = TcpStream::connect(dns.tcp).await.unwrap();
    for bad in [absurd_counts(0xB001), pointer_loop(0xB002), cut_short(0xB003)] {
        write_frame(&mut c, &bad).await;
        let answer = Message::from_vec(&read_frame(&mut c).await.unwrap()).unwrap();
        assert_eq!(answer.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(&answer.metadata.id.to_be_bytes(), &bad[..2]);
    }
    write_frame(&mut c, &valid).await;
    let answer = Message::from_vec(&read_frame(&mut c).await.unwrap()).unwrap();
    assert_eq!(answer.answers.len(), 2);

    // A length prefix promising more than is sent, then the client leaves.
    let mut c = TcpStream::connect(dns.tcp).await.unwrap();
    c.write_all(&[0x03, 0xE8, 1, 2, 3]).await.unwrap();
    drop(c);

    // Unframed random bytes: read as frames of whatever lengths they spell.
    let mut seed = 0xDEAD_BEEF_u64;
    for _ in 0..20 {
        let mut c = TcpStream::connect(dns.tcp).await.unwrap();
        c.write_all(&garbage(&mut seed, 300)).await.unwrap();
        drop(c);
    }

    // Still serving, over both transports.
    let answer = ask_tcp(dns.tcp, &query("www.millions.test.", RecordType::A, None)).await;
    assert_eq!(answer.answers.len(), 2);
    let answer = ask_udp(dns.udp, "127.0.0.1", &query("www.millions.test.", RecordType::A, None)).await;
    assert_eq!(answer.answers.len(), 2);
    let short = metric(dns.admin, r#"millions_dns_malformed_total{transport="tcp",reason="short"}"#).await;
    let format = metric(dns.admin, r#"millions_dns_malformed_total{transport="tcp",reason="format"}"#).await;
    assert!(short >= 1.0 && format >= 3.0, "short {short}, format {format}");
    dns.stop().await;
}

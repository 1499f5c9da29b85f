//! The relay against real sockets on loopback: dc1's gateway relays to targets of
//! the test's own in dc2. No sleeps as synchronization: waits poll a condition
//! with a deadline; the only timing assertions are lower bounds that follow from
//! the model (a one-way delay d makes a round trip take at least 2d).

mod common;

use std::time::{Duration, Instant};

use common::*;
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wan::Conditions;

#[tokio::test]
async fn bytes_cross_both_ways_intact_in_order_from_the_source_address() {
    let echo = echo().await;
    let gw = start(config(echo.addr, Conditions::default()));
    let client = connect(&gw).await;

    let mut payload = vec![0u8; 8 << 20];
    rand::rng().fill_bytes(&mut payload);
    let (mut r, mut w) = client.into_split();
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        // Many writes of random sizes, so the relay sees many chunks.
        let mut rng = SmallRng::from_os_rng();
        let mut at = 0;
        while at < sent.len() {
            let n = rng.random_range(1..=100_000).min(sent.len() - at);
            w.write_all(&sent[at..at + n]).await.unwrap();
            at += n;
        }
        // Half-close: the echo sees the end after every byte, and passes it back.
        w.shutdown().await.unwrap();
        w
    });
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), r.read_to_end(&mut back)).await.unwrap().unwrap();
    let _w = writer.await.unwrap();
    assert!(back == payload, "the echo came back altered ({} of {} bytes)", back.len(), payload.len());

    // The target saw dc1's source address, not the client's 127.0.0.1.
    let peers = echo.peers.lock().unwrap().clone();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].ip(), ip(DC1));
    let l = link(&gw);
    assert_eq!((l.bytes_to_target, l.bytes_to_client), (payload.len() as u64, payload.len() as u64));
    assert_eq!(l.accepted_connections, 1);
    eventually("the connection is closed", || link(&gw).open_connections == 0).await;
    assert_eq!(link(&gw).held_bytes, 0);
}

#[tokio::test]
async fn a_half_close_from_the_target_arrives_after_its_data_and_the_client_can_still_send() {
    let target = target().await;
    let gw = start(config(target.addr, Conditions { delay_ms: 20, ..Default::default() }));
    let mut client = connect(&gw).await;
    client.write_all(b"hello").await.unwrap();
    let (mut server, _) = target.listener.accept().await.unwrap();
    assert_eq!(read_exact(&mut server, 5).await, b"hello");
    server.write_all(b"bye").await.unwrap();
    server.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut client).await, b"bye");
    // The other direction stays open.
    client.write_all(b"still here").await.unwrap();
    client.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut server).await, b"still here");
    eventually("the connection is closed", || link(&gw).open_connections == 0).await;
}

#[tokio::test]
async fn a_one_way_delay_makes_every_round_trip_at_least_twice_as_long() {
    let echo = echo().await;
    let gw = start(config(echo.addr, Conditions { delay_ms: 100, ..Default::default() }));
    let mut client = connect(&gw).await;
    for i in 0..3u8 {
        let t = Instant::now();
        client.write_all(&[i; 10]).await.unwrap();
        assert_eq!(read_exact(&mut client, 10).await, [i; 10]);
        let rtt = t.elapsed();
        assert!(rtt >= Duration::from_millis(200), "round trip {i} took {rtt:?}");
    }
}

#[tokio::test]
async fn jitter_keeps_the_order_of_bytes() {
    let echo = echo().await;
    let gw = start(config(echo.addr, Conditions { delay_ms: 5, jitter_ms: 5, ..Default::default() }));
    let client = connect(&gw).await;
    let (mut r, mut w) = client.into_split();
    let messages: Vec<u8> = (0..2000u32).flat_map(|i| i.to_be_bytes()).collect();
    let sent = messages.clone();
    let writer = tokio::spawn(async move {
        // One small write per message: each is likely a chunk of its own, each
        // with its own jitter.
        for m in sent.chunks(4) {
            w.write_all(m).await.unwrap();
        }
        w
    });
    let mut back = vec![0u8; messages.len()];
    tokio::time::timeout(Duration::from_secs(60), r.read_exact(&mut back)).await.unwrap().unwrap();
    let _w = writer.await.unwrap();
    assert!(back == messages, "the echo came back reordered or altered");
}

#[tokio::test]
async fn with_loss_one_every_chunk_waits_the_penalty_and_nothing_is_lost() {
    let echo = echo().await;
    let lossy = Conditions { loss: 1.0, loss_penalty_ms: 150, ..Default::default() };
    let gw = start(config(echo.addr, lossy));
    let mut client = connect(&gw).await;
    let mut rng = rand::rng();
    for size in [1usize, 1000, 200_000] {
        let mut payload = vec![0u8; size];
        rng.fill_bytes(&mut payload);
        let t = Instant::now();
        client.write_all(&payload).await.unwrap();
        let back = read_exact(&mut client, size).await;
        let rtt = t.elapsed();
        assert!(back == payload, "{size} bytes came back altered");
        // Lost once on the way there and once on the way back, at least.
        assert!(rtt >= Duration::from_millis(300), "{size} bytes: round trip {rtt:?}");
    }
}

#[tokio::test]
async fn the_target_going_away_closes_the_client_side() {
    let target = target().await;
    let gw = start(config(target.addr, Conditions::default()));
    let mut client = connect(&gw).await;
    client.write_all(b"x").await.unwrap();
    let (mut server, _) = target.listener.accept().await.unwrap();
    assert_eq!(read_exact(&mut server, 1).await, b"x");
    drop(server);
    assert_eq!(read_to_end(&mut client).await, b"");
    drop(client);
    eventually("the relay closed the connection", || link(&gw).open_connections == 0).await;
}

#[tokio::test]
async fn the_client_going_away_closes_the_target_side() {
    let target = target().await;
    let gw = start(config(target.addr, Conditions { delay_ms: 10, ..Default::default() }));
    let mut client = connect(&gw).await;
    client.write_all(b"abc").await.unwrap();
    let (mut server, peer) = target.listener.accept().await.unwrap();
    assert_eq!(peer.ip(), ip(DC1));
    drop(client);
    assert_eq!(read_to_end(&mut server).await, b"abc");
    drop(server);
    eventually("the relay closed the connection", || link(&gw).open_connections == 0).await;
}

#[tokio::test]
async fn a_refused_target_closes_the_client_and_is_counted() {
    // A port that was free a moment ago: nothing listens there.
    let gone = {
        let l = std::net::TcpListener::bind(addr(DC2, 0)).unwrap();
        l.local_addr().unwrap()
    };
    let gw = start(config(gone, Conditions::default()));
    let mut client = connect(&gw).await;
    client.write_all(b"hello?").await.unwrap();
    assert_eq!(read_to_end(&mut client).await, b"");
    eventually("the failure is counted", || link(&gw).connect_failures == 1).await;
}

#[tokio::test]
async fn stop_closes_the_listeners_and_ends_connections_after_what_they_hold() {
    let echo = echo().await;
    let mut c = config(echo.addr, Conditions { delay_ms: 1000, ..Default::default() });
    c.stop_grace_ms = 10_000;
    let gw = start(c);
    let listen = listen(&gw);
    let admin = gw.admin();
    let mut client = connect(&gw).await;
    client.write_all(b"last").await.unwrap();
    eventually("the relay read it", || {
        let l = link(&gw);
        l.held_bytes == 4 || l.bytes_to_target == 4
    })
    .await;
    gw.stop().await;
    // What the relay held was delivered before the target's stream ended; the
    // client's stream ended too (the echo's answer came after the stop).
    eventually("the echo got the bytes held at the stop", || echo.received() == 4).await;
    assert_eq!(read_to_end(&mut client).await, b"");
    assert!(tokio::net::TcpStream::connect(listen).await.is_err(), "a link still listens");
    assert!(tokio::net::TcpStream::connect(admin).await.is_err(), "the admin listener is still open");
}

#[tokio::test]
async fn stop_closes_held_connections_after_the_grace() {
    let echo = echo().await;
    let mut c = config(echo.addr, Conditions::default());
    c.stop_grace_ms = 100;
    let gw = start(c);
    let mut client = connect(&gw).await;
    client.write_all(b"ping").await.unwrap();
    assert_eq!(read_exact(&mut client, 4).await, b"ping");
    gw.handle().cut(None).unwrap();
    client.write_all(b"held").await.unwrap();
    eventually("the relay holds it", || link(&gw).held_bytes == 4).await;
    gw.stop().await;
    // Nothing held was delivered: the connection was closed with it.
    assert_eq!(read_to_end(&mut client).await, b"");
    assert_eq!(echo.received(), 4);
}

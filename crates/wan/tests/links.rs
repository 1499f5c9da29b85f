//! Links added to a running gateway (`POST /admin/links`, `Handle::add_links`):
//! they relay like configured ones, under the conditions in force, without
//! disturbing open connections; a repeated add changes nothing; a refused add
//! leaves nothing of itself behind; and they stop with the gateway.

mod common;

use std::net::SocketAddr;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use wan::{Conditions, LinkConfig};

/// The admin token of the gateways that need one.
const TOKEN: &str = "links-test-token-0123456789";

/// The admin API's answer to `method path` with `body` and `token`: status and JSON.
async fn admin(
    gw: &wan::Running,
    method: Method,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (u16, Value) {
    let url = format!("http://{}{path}", gw.admin());
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body.to_owned());
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the admin API answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// `POST /admin/links` with `links` (no token).
async fn add(gw: &wan::Running, links: &[LinkConfig]) -> (u16, Value) {
    let body = json!({ "links": links }).to_string();
    admin(gw, Method::POST, "/admin/links", Some(&body), None).await
}

/// A link of dc1 to `target` in dc2, listening on `listen`.
fn link_to(listen: SocketAddr, target: SocketAddr) -> LinkConfig {
    LinkConfig { listen, target, source: addr(DC1, 0), peer_dc: "dc2".into() }
}

/// An address of dc1 whose port was free a moment ago.
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind(addr(DC1, 0)).unwrap().local_addr().unwrap()
}

/// Whether something accepts connections on `addr`.
async fn listening(addr: SocketAddr) -> bool {
    TcpStream::connect(addr).await.is_ok()
}

/// `answer`'s links as listen → target pairs.
fn pairs(answer: &Value) -> Vec<(String, String)> {
    answer
        .as_array()
        .expect("a list of links")
        .iter()
        .map(|l| (l["listen"].as_str().unwrap().to_owned(), l["target"].as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test]
async fn a_link_added_at_runtime_relays_both_ways_and_leaves_open_connections_alone() {
    let first = echo().await;
    let gw = start(config(first.addr, Conditions::default()));
    let mut old = connect(&gw).await;
    old.write_all(b"before").await.unwrap();
    assert_eq!(read_exact(&mut old, 6).await, b"before");

    let second = echo().await;
    let (status, answer) = add(&gw, &[link_to(addr(DC1, 0), second.addr)]).await;
    assert_eq!(status, 200, "{answer}");
    let added = pairs(&answer["added"]);
    assert_eq!(added.len(), 1, "{answer}");
    assert_eq!(added[0].1, second.addr.to_string());
    let new_listen: SocketAddr = added[0].0.parse().unwrap();
    assert_ne!(new_listen.port(), 0, "the answer gives the port bound");
    let everything = vec![(listen(&gw).to_string(), first.addr.to_string()), added[0].clone()];
    assert_eq!(pairs(&answer["links"]), everything);
    assert_eq!(answer["added"][0]["peer_dc"], json!("dc2"));

    // The new link relays both ways, from dc1's source address.
    let mut client = TcpStream::connect(new_listen).await.unwrap();
    client.write_all(b"over the new link").await.unwrap();
    assert_eq!(read_exact(&mut client, 17).await, b"over the new link");
    assert_eq!(second.peers.lock().unwrap()[0].ip(), ip(DC1));

    // The connection open before the add is the same one, and still works.
    old.write_all(b"after").await.unwrap();
    assert_eq!(read_exact(&mut old, 5).await, b"after");
    assert_eq!(first.accepted(), 1, "the open connection was replaced");
    assert_eq!(second.accepted(), 1);

    // Everything that lists links lists it: Running, the handle, the admin API, metrics.
    let bound: Vec<(String, String)> =
        gw.links().iter().map(|l| (l.listen.to_string(), l.target.to_string())).collect();
    assert_eq!(bound, everything);
    let views = gw.handle().links();
    assert_eq!((views.len(), views[1].listen, views[1].bytes_to_target), (2, new_listen, 17));
    let (status, listed) = admin(&gw, Method::GET, "/admin/links", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(pairs(&listed), everything);
    assert_eq!(listed[1]["accepted_connections"], json!(1));
    let (_, metrics) = admin(&gw, Method::GET, "/metrics", None, None).await;
    let metrics = metrics.as_str().unwrap().to_owned();
    let labels = format!("link=\"{new_listen}\",peer_dc=\"dc2\",target=\"{}\"", second.addr);
    assert!(metrics.contains(&format!("wan_connections_accepted_total{{{labels}}} 1")), "{metrics}");
}

#[tokio::test]
async fn a_cut_in_force_holds_a_link_added_during_the_cut_until_the_heal() {
    let first = echo().await;
    let gw = start(config(first.addr, Conditions::default()));
    gw.handle().cut(Some("dc2")).unwrap();

    let second = echo().await;
    let added = gw.handle().add_links(&[link_to(addr(DC1, 0), second.addr)]).expect("the link is added");
    assert_eq!(added.added.len(), 1);
    assert_eq!(added.links, gw.links());
    let mut client = TcpStream::connect(added.added[0].listen).await.unwrap();
    client.write_all(b"held").await.unwrap();
    assert_nothing_arrives(&mut client).await;
    assert_eq!(second.accepted(), 0, "the target was reached through a cut link");
    assert!(gw.handle().links()[1].conditions.cut);

    gw.handle().heal(None).unwrap();
    assert_eq!(read_exact(&mut client, 4).await, b"held");
    assert_eq!(second.received(), 4);
}

#[tokio::test]
async fn adding_the_links_served_again_changes_nothing() {
    let first = echo().await;
    let gw = start(config(first.addr, Conditions::default()));
    let second = echo().await;
    // The whole list, as the controller sends it: the configured link and a new one.
    let whole = [link_to(listen(&gw), first.addr), link_to(free_addr(), second.addr)];
    let (status, answer) = add(&gw, &whole).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(pairs(&answer["added"]), [(whole[1].listen.to_string(), second.addr.to_string())]);
    let mut client = TcpStream::connect(whole[1].listen).await.unwrap();
    client.write_all(b"ping").await.unwrap();
    assert_eq!(read_exact(&mut client, 4).await, b"ping");

    for again in [&whole[..], &whole[1..], &whole[..1], &[]] {
        // Both shapes of the body: `{"links": [..]}` and the list alone.
        for body in [json!({ "links": again }), json!(again)] {
            let body = body.to_string();
            let (status, repeated) = admin(&gw, Method::POST, "/admin/links", Some(&body), None).await;
            assert_eq!(status, 200, "{body}: {repeated}");
            assert_eq!(repeated["links"], answer["links"], "{body} changed the links");
            assert_eq!(repeated["added"], json!([]), "{body}");
        }
    }
    assert_eq!(gw.links().len(), 2);
    // The connection on the link added first is untouched by the repeats.
    client.write_all(b"pong").await.unwrap();
    assert_eq!(read_exact(&mut client, 4).await, b"pong");
    assert_eq!(second.accepted(), 1);
}

#[tokio::test]
async fn a_refused_add_names_the_problem_and_serves_nothing_of_the_request() {
    let first = echo().await;
    let gw = start(config(first.addr, Conditions::default()));
    let served = gw.links();
    let taken = std::net::TcpListener::bind(addr(DC1, 0)).unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let elsewhere = SocketAddr::from(([192, 0, 2, 1], free_addr().port()));

    // Each: the body's second link (after a good new one), the status, the code,
    // and what the message must name.
    type Case = (&'static str, Value, u16, &'static str, String);
    let good_link = |listen: SocketAddr| json!(link_to(listen, first.addr));
    let with = |f: &dyn Fn(&mut LinkConfig)| {
        let mut l = link_to(free_addr(), first.addr);
        f(&mut l);
        json!(l)
    };
    let other = addr(DC2, first.addr.port().wrapping_add(1).max(1));
    let mut cases: Vec<Case> = vec![
        (
            "a served listen address to another target",
            json!(link_to(listen(&gw), other)),
            409,
            "conflict",
            listen(&gw).to_string(),
        ),
        ("a taken port", good_link(taken_addr), 409, "cannot_bind", taken_addr.to_string()),
        (
            "a listen address that is no address",
            json!({"listen": "nowhere", "target": first.addr, "source": addr(DC1, 0), "peer_dc": "dc2"}),
            400,
            "bad_request",
            "link 1 (listen nowhere)".into(),
        ),
        (
            "a link with a field missing",
            json!({"listen": addr(DC1, 0), "target": first.addr, "peer_dc": "dc2"}),
            400,
            "bad_request",
            "source".into(),
        ),
        (
            "a link with an unknown field",
            json!({"listen": addr(DC1, 0), "target": first.addr, "source": addr(DC1, 0), "peer_dc": "dc2", "delay_ms": 5}),
            400,
            "bad_request",
            "delay_ms".into(),
        ),
        (
            "a link as an array",
            json!(["127.0.1.1:0", first.addr, "127.0.1.1:0", "dc2"]),
            400,
            "bad_request",
            "link 1".into(),
        ),
        (
            "a target with port 0",
            with(&|l| l.target = addr(DC2, 0)),
            400,
            "bad_request",
            "links.target".into(),
        ),
        (
            "an unknown peer DC",
            with(&|l| l.peer_dc = "dc9".into()),
            400,
            "bad_request",
            "links.peer_dc".into(),
        ),
        (
            "this DC as the peer",
            with(&|l| l.peer_dc = "dc1".into()),
            400,
            "bad_request",
            "links.peer_dc".into(),
        ),
        (
            "a source with a port",
            with(&|l| l.source = addr(DC1, 9)),
            400,
            "bad_request",
            "links.source".into(),
        ),
        ("the admin address", good_link(gw.admin()), 400, "bad_request", "links.listen".into()),
    ];
    // TEST-NET-1 is no machine's, unless this one binds non-local addresses
    // (`ip_nonlocal_bind`).
    if std::net::TcpListener::bind(elsewhere).is_err() {
        cases.push((
            "another machine's address",
            good_link(elsewhere),
            400,
            "cannot_bind",
            elsewhere.to_string(),
        ));
    }
    for (what, bad, want, code, named) in cases {
        let good = free_addr();
        let body = json!({ "links": [good_link(good), bad] }).to_string();
        let (status, answer) = admin(&gw, Method::POST, "/admin/links", Some(&body), None).await;
        assert_eq!(status, want, "{what}: {answer}");
        assert_eq!(answer["error"]["code"], json!(code), "{what}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(&named), "{what}: {message} does not name {named}");
        assert!(!listening(good).await, "{what}: the good link of a refused request listens");
        assert_eq!(gw.links(), served, "{what}: a refused request changed the links");
    }

    // The same link twice in one request is refused as in a configuration.
    let twice = link_to(free_addr(), first.addr);
    let (status, answer) = add(&gw, &[twice.clone(), twice.clone()]).await;
    assert_eq!((status, &answer["error"]["code"]), (400, &json!("bad_request")), "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("link 1"), "{answer}");
    assert!(!listening(twice.listen).await);

    // Bodies that are no list of links.
    let bodies =
        ["not json", "3", "[3]", r#"{"links": 3}"#, r#"{"link": []}"#, r#"{"links": [], "extra": 1}"#];
    for body in bodies {
        let (status, answer) = admin(&gw, Method::POST, "/admin/links", Some(body), None).await;
        assert_eq!((status, &answer["error"]["code"]), (400, &json!("bad_request")), "{body}: {answer}");
    }
    assert_eq!(gw.links(), served);

    // The in-process API refuses the same way, with the error's variant.
    let conflict = gw.handle().add_links(&[link_to(listen(&gw), other)]).unwrap_err();
    assert!(matches!(conflict, wan::ControlError::Conflict { .. }), "{conflict}");
    let in_use = gw.handle().add_links(&[link_to(taken_addr, first.addr)]).unwrap_err();
    assert!(matches!(in_use, wan::ControlError::Bind { .. }), "{in_use}");
    assert_eq!(gw.links(), served);
    drop(taken);
}

#[tokio::test]
async fn the_links_endpoint_needs_the_admin_token() {
    let first = echo().await;
    let mut c = config(first.addr, Conditions::default());
    c.admin_token = Some(TOKEN.into());
    let gw = start(c);
    let new = free_addr();
    let body = json!({ "links": [link_to(new, first.addr)] }).to_string();
    for token in [None, Some("wrong-token-0123456789")] {
        let (status, answer) = admin(&gw, Method::POST, "/admin/links", Some(&body), token).await;
        assert_eq!((status, &answer["error"]["code"]), (401, &json!("unauthenticated")), "{token:?}");
        let (status, _) = admin(&gw, Method::GET, "/admin/links", None, token).await;
        assert_eq!(status, 401, "{token:?}");
    }
    assert!(!listening(new).await, "an unauthenticated request added a link");
    assert_eq!(gw.links().len(), 1);

    let (status, answer) = admin(&gw, Method::POST, "/admin/links", Some(&body), Some(TOKEN)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(pairs(&answer["added"]), [(new.to_string(), first.addr.to_string())]);
    let (status, listed) = admin(&gw, Method::GET, "/admin/links", None, Some(TOKEN)).await;
    assert_eq!((status, listed.as_array().map(Vec::len)), (200, Some(2)));
}

#[tokio::test]
async fn stop_closes_added_links_and_refuses_adds_afterwards() {
    let first = echo().await;
    let mut c = config(first.addr, Conditions { delay_ms: 300, ..Default::default() });
    c.stop_grace_ms = 10_000;
    let gw = start(c);
    let second = echo().await;
    let added = gw.handle().add_links(&[link_to(addr(DC1, 0), second.addr)]).unwrap().added;
    let new_listen = added[0].listen;
    let mut client = TcpStream::connect(new_listen).await.unwrap();
    client.write_all(b"last").await.unwrap();
    eventually("the relay read it", || {
        let l = &gw.handle().links()[1];
        l.held_bytes == 4 || l.bytes_to_target == 4
    })
    .await;
    let handle = gw.handle();
    gw.stop().await;
    // What the added link held was delivered within the grace, then its streams ended.
    eventually("the echo got the bytes held at the stop", || second.received() == 4).await;
    assert_eq!(read_to_end(&mut client).await, b"");
    assert!(!listening(new_listen).await, "an added link still listens");
    let e = handle.add_links(&[link_to(addr(DC1, 0), second.addr)]).unwrap_err();
    assert!(matches!(e, wan::ControlError::Stopping), "{e}");
}

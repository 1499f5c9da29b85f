//! Cuts, heals and changes of conditions, in process and through the admin API,
//! and configurations that must be refused before anything is bound.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use wan::{Conditions, ConditionsUpdate, LinkConfig, WanConfig};

#[tokio::test]
async fn a_cut_holds_bytes_both_ways_and_the_heal_releases_them_in_order() {
    let target = target().await;
    let gw = start(config(target.addr, Conditions::default()));
    let mut client = connect(&gw).await;
    client.write_all(b"before").await.unwrap();
    let (mut server, _) = target.listener.accept().await.unwrap();
    assert_eq!(read_exact(&mut server, 6).await, b"before");

    gw.handle().cut(Some("dc2")).unwrap();
    client.write_all(b"one ").await.unwrap();
    client.write_all(b"two").await.unwrap();
    server.write_all(b"reply").await.unwrap();
    eventually("the relay holds both directions", || link(&gw).held_bytes == 12).await;
    assert_nothing_arrives(&mut server).await;
    assert_nothing_arrives(&mut client).await;
    assert!(link(&gw).conditions.cut);

    gw.handle().heal(None).unwrap();
    assert_eq!(read_exact(&mut server, 7).await, b"one two");
    assert_eq!(read_exact(&mut client, 5).await, b"reply");
    eventually("nothing is held", || link(&gw).held_bytes == 0).await;
}

#[tokio::test]
async fn a_connection_made_during_a_cut_reaches_its_target_only_after_the_heal() {
    let echo = echo().await;
    let gw = start(config(echo.addr, Conditions { cut: true, ..Default::default() }));
    let mut client = connect(&gw).await;
    client.write_all(b"anyone?").await.unwrap();
    assert_nothing_arrives(&mut client).await;
    assert_eq!(echo.accepted(), 0, "the target was reached through a cut link");

    // A client that gives up during the cut is never connected for.
    let quitter = connect(&gw).await;
    eventually("both are accepted", || link(&gw).accepted_connections == 2).await;
    drop(quitter);
    eventually("the quitter's connection is closed", || link(&gw).open_connections == 1).await;

    gw.handle().heal(Some("dc2")).unwrap();
    assert_eq!(read_exact(&mut client, 7).await, b"anyone?");
    assert_eq!(echo.accepted(), 1, "the client that gave up was connected for");
}

#[tokio::test]
async fn a_full_window_stops_reading_instead_of_growing() {
    let target = target().await;
    let mut c = config(target.addr, Conditions::default());
    c.window_bytes = 64 * 1024;
    let gw = start(c);
    let mut client = connect(&gw).await;
    client.write_all(b"x").await.unwrap();
    let (mut server, _) = target.listener.accept().await.unwrap();
    assert_eq!(read_exact(&mut server, 1).await, b"x");
    gw.handle().cut(None).unwrap();
    let (_r, mut w) = client.into_split();
    // Far more than the window and the sockets' buffers: the writer blocks.
    let writer = tokio::spawn(async move {
        let chunk = vec![7u8; 64 * 1024];
        for _ in 0..1024 {
            if w.write_all(&chunk).await.is_err() {
                break;
            }
        }
    });
    eventually("the window is full", || link(&gw).held_bytes == 64 * 1024).await;
    // It stays full: the relay reads no more while the link is cut.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(link(&gw).held_bytes, 64 * 1024);
    }
    assert!(!writer.is_finished(), "64 MiB fit into a 64 KiB window");
    writer.abort();
}

#[tokio::test]
async fn conditions_change_at_runtime_and_bad_values_change_nothing() {
    let echo = echo().await;
    let gw = start(config(echo.addr, Conditions::default()));
    let h = gw.handle();
    let now = h.set_conditions("dc2", ConditionsUpdate { delay_ms: Some(30), ..Default::default() }).unwrap();
    assert_eq!(now.delay_ms, 30);
    let bad = ConditionsUpdate { delay_ms: Some(1), loss: Some(2.0), ..Default::default() };
    assert!(matches!(h.set_conditions("dc2", bad), Err(wan::ControlError::Invalid { .. })));
    assert_eq!(h.conditions()["dc2"].delay_ms, 30, "a refused update changed a field");
    assert!(matches!(h.cut(Some("dc9")), Err(wan::ControlError::UnknownPeer(_))));
    assert!(!h.conditions()["dc2"].cut);
}

/// The admin API's answer to `method path` with `body`: status and JSON.
async fn admin(gw: &wan::Running, method: reqwest::Method, path: &str, body: Option<&str>) -> (u16, Value) {
    let url = format!("http://{}{path}", gw.admin());
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body.to_owned());
    }
    let response = request.send().await.expect("the admin API answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[tokio::test]
async fn the_admin_api_cuts_heals_and_refuses_bad_requests_changing_nothing() {
    use reqwest::Method;
    let echo = echo().await;
    let gw = start(config(echo.addr, Conditions::default()));

    let (status, body) = admin(&gw, Method::POST, "/admin/cut?peer=dc2", None).await;
    assert_eq!((status, &body["dc2"]["cut"]), (200, &json!(true)));
    let (_, links) = admin(&gw, Method::GET, "/admin/links", None).await;
    assert_eq!(links[0]["conditions"]["cut"], json!(true));
    assert_eq!(links[0]["target"], json!(echo.addr.to_string()));
    let (status, _) = admin(&gw, Method::POST, "/admin/heal", None).await;
    assert_eq!(status, 200);
    assert!(!gw.handle().conditions()["dc2"].cut);

    let (status, body) =
        admin(&gw, Method::PUT, "/admin/conditions/dc2", Some(r#"{"delay_ms": 40, "jitter_ms": 5}"#)).await;
    assert_eq!((status, &body["delay_ms"], &body["jitter_ms"]), (200, &json!(40), &json!(5)));

    let refused: [(Method, &str, Option<&str>, u16, &str); 6] = [
        (Method::POST, "/admin/cut?peer=dc9", None, 404, "unknown_peer"),
        (Method::POST, "/admin/cut?peers=dc2", None, 400, "bad_request"),
        (Method::PUT, "/admin/conditions/dc9", Some(r#"{"delay_ms": 1}"#), 404, "unknown_peer"),
        (Method::PUT, "/admin/conditions/dc2", Some(r#"{"delay_ms": 1, "loss": 7}"#), 400, "bad_request"),
        (Method::PUT, "/admin/conditions/dc2", Some(r#"{"delay": 1}"#), 400, "bad_request"),
        (Method::PUT, "/admin/conditions/dc2", Some("[1]"), 400, "bad_request"),
    ];
    for (method, path, body, want, code) in refused {
        let (status, answer) = admin(&gw, method.clone(), path, body).await;
        assert_eq!(status, want, "{method} {path} {body:?}: {answer}");
        assert_eq!(answer["error"]["code"], json!(code), "{method} {path}");
    }
    let c = gw.handle().conditions()["dc2"];
    assert_eq!(
        (c.delay_ms, c.jitter_ms, c.loss, c.cut),
        (40, 5, 0.0, false),
        "a refused request changed something"
    );

    let (status, _) = admin(&gw, Method::GET, "/readyz", None).await;
    assert_eq!(status, 200);
    let (_, metrics) = admin(&gw, Method::GET, "/metrics", None).await;
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(metrics.contains("wan_delay_seconds{peer_dc=\"dc2\"} 0.04"), "{metrics}");
    // The exposition format's rules and Prometheus' naming, by the official checker.
    let (ok, said) = testkit::promtool(&["check", "metrics"], &metrics);
    assert!(ok && said.trim().is_empty(), "promtool check metrics: {said}\n{metrics}");
}

/// A change that makes a configuration invalid.
type Breaks = Box<dyn Fn(&mut WanConfig)>;

#[test]
fn bad_configurations_are_refused_naming_the_setting() {
    let good = || {
        let mut c = WanConfig::new("dc1", addr(DC1, 0));
        c.conditions.insert("dc2".into(), Conditions::default());
        c.links.push(LinkConfig {
            listen: addr(DC1, 15432),
            target: addr(DC2, 5432),
            source: addr(DC1, 0),
            peer_dc: "dc2".into(),
        });
        c
    };
    let parsed = WanConfig::parse(&good().to_toml(), "test").expect("a good configuration parses");
    assert_eq!(parsed.links, good().links);

    let cases: Vec<(&str, Breaks)> = vec![
        ("dc", Box::new(|c| c.dc = " ".into())),
        ("window_bytes", Box::new(|c| c.window_bytes = 0)),
        ("connect_timeout_ms", Box::new(|c| c.connect_timeout_ms = 0)),
        ("stop_grace_ms", Box::new(|c| c.stop_grace_ms = 3_600_000)),
        (
            "conditions",
            Box::new(|c| {
                c.conditions.insert("dc1".into(), Conditions::default());
            }),
        ),
        ("conditions.loss", Box::new(|c| c.conditions.get_mut("dc2").unwrap().loss = -1.0)),
        ("conditions.delay_ms", Box::new(|c| c.conditions.get_mut("dc2").unwrap().delay_ms = 99_999)),
        ("links.peer_dc", Box::new(|c| c.links[0].peer_dc = "dc3".into())),
        ("links.peer_dc", Box::new(|c| c.links[0].peer_dc = "dc1".into())),
        ("links.listen", Box::new(|c| c.links.push(c.links[0].clone()))),
        ("links.target", Box::new(|c| c.links[0].target = addr(DC2, 0))),
        ("links.source", Box::new(|c| c.links[0].source = addr(DC1, 9))),
        ("links.source", Box::new(|c| c.links[0].source = addr([0, 0, 0, 0], 0))),
        ("admin_token", Box::new(|c| c.admin_token = Some("short".into()))),
    ];
    for (setting, break_it) in cases {
        let mut c = good();
        break_it(&mut c);
        let e = WanConfig::parse(&c.to_toml(), "test").expect_err(setting).to_string();
        assert!(e.contains(setting), "breaking {setting} gave: {e}");
    }
    let e = WanConfig::parse("dc = \"dc1\"\nadmin = \"127.0.1.1:0\"\nlinks = 3\n", "test")
        .unwrap_err()
        .to_string();
    assert!(e.contains("links"), "{e}");
    let e = WanConfig::parse("dc = \"dc1\"\nadmin = \"127.0.1.1:0\"\nspeed = 3\n", "test")
        .unwrap_err()
        .to_string();
    assert!(e.contains("speed"), "{e}");
}

#[tokio::test]
async fn an_address_in_use_is_refused_and_nothing_stays_bound() {
    let taken = std::net::TcpListener::bind(addr(DC1, 0)).unwrap();
    let mut c = config(addr(DC2, 5432), Conditions::default());
    let free = std::net::TcpListener::bind(addr(DC1, 0)).unwrap().local_addr().unwrap();
    c.admin = free;
    c.links[0].listen = taken.local_addr().unwrap();
    let e = wan::start(c, &telemetry::Registry::default()).unwrap_err();
    assert!(matches!(e, wan::WanError::Bind { .. }), "{e}");
    assert!(e.to_string().contains("link 0"), "{e}");
    // The admin listener bound before the failure was released.
    std::net::TcpListener::bind(free).expect("the admin address is free again");
}

//! Property-based fuzzing of what a client or an operator hands the web tier
//! as text (docs/SECURITY.md): feed cursors, post ids and limits from a query or
//! a path, and the configuration file. Cursors and ids round-trip and garbage is
//! refused with the API's error, never a panic; a configuration is a validated
//! value or an error that names the setting or the file. Each runs
//! `PROPTEST_CASES` cases (256 by default; `make fuzz` runs many more).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use settings::fuzz::{config, mutated, says_why, toml_ish};
use sharding::{Bucket, PostId};
use web::WebConfig;
use web::error::ApiError;
use web::service::{parse_cursor, parse_limit, parse_post_id};

/// A cursor as the server issues one: the post id's 8 bytes, big-endian, in
/// URL-safe base64 without padding (`service::encode_cursor`).
fn issued(id: PostId) -> String {
    URL_SAFE_NO_PAD.encode(id.get().to_be_bytes())
}

/// The HTTP status an API error is answered with.
fn status(e: ApiError) -> u16 {
    use axum::response::IntoResponse as _;
    e.into_response().status().as_u16()
}

/// A web configuration with every section, for mutations to break.
const FULL: &str = r#"listen = "127.0.0.1:0"
[database]
shards = ["postgres://u:p@127.0.0.1:5432/a", "postgres://u:p@127.0.0.1:5432/b"]
replicas = [["postgres://u:p@127.0.0.2:5432/a"], []]
max_replica_lag_ms = 1000
pool_size = 8
[redis]
url = "redis://:pw@127.0.0.1:6379/"
prefix = "m:"
timeout_ms = 500
peers = ["redis://:pw@127.0.2.80:6379/"]
[cache]
jitter = 0.1
[feed]
celebrity_threshold = 10000
timeline_cap = 800
timeline_ttl_secs = 86400
[sessions]
ttl_secs = 1209600
secure_cookies = true
[passwords]
memory_kib = 19456
iterations = 2
parallelism = 1
max_concurrent = 2
max_waiting = 64
max_failed_logins = 10
lockout_secs = 900
[http]
max_body_bytes = 65536
request_timeout_secs = 30
shutdown_grace_secs = 10
[media]
max_upload_bytes = 10485760
max_pixels = 40000000
store_dir = "/tmp/media"
public_base = "/media/"
max_attempts = 5
[media.cdn]
dc = "dc1"
probe_interval_ms = 1000
probe_timeout_ms = 500
unhealthy_after = 2
healthy_after = 1
[[media.cdn.edges]]
name = "dc1-cdn-1"
dc = "dc1"
http = "127.0.1.50:8000"
https = "127.0.1.50:8443"
health = "http://127.0.1.50:8001/readyz"
[[media.cdn.edges]]
name = "dc2-cdn-1"
dc = "dc2"
http = "127.0.2.50:8000"
health = "http://127.0.2.50:8001/readyz"
"#;

proptest! {
    #![proptest_config(config(1.0))]

    #[test]
    fn an_issued_cursor_parses_back_to_its_post(ms in 0u64..(1 << 41), bucket in 0u16..4096, seq in 0u16..1024) {
        let id = PostId::from_parts(ms, Bucket::new(bucket).unwrap(), seq);
        prop_assume!(id.get() > 0);
        prop_assert_eq!(parse_cursor(Some(&issued(id))).ok(), Some(Some(id)));
        prop_assert_eq!(parse_post_id(&id.to_string()).ok(), Some(id));
        prop_assert_eq!(id.bucket().get(), bucket);
    }

    #[test]
    fn any_cursor_is_one_the_server_could_have_issued_or_a_400(raw in prop_oneof![
        any::<String>(),
        "[A-Za-z0-9_-]{0,16}",
        "[A-Za-z0-9_+/=-]{10,12}",
        prop::collection::vec(any::<u8>(), 0..12).prop_map(|b| URL_SAFE_NO_PAD.encode(b)),
    ]) {
        match parse_cursor(Some(&raw)) {
            // Exactly the issued spelling: no second cursor for the same post.
            Ok(Some(id)) => {
                prop_assert!(id.get() > 0);
                prop_assert_eq!(issued(id), raw);
            }
            Ok(None) => prop_assert!(false, "a cursor given is never none"),
            Err(e) => prop_assert_eq!(status(e), 400),
        }
    }

    #[test]
    fn any_post_id_or_limit_is_parsed_or_a_400(raw in prop_oneof![
        any::<String>(),
        "[-+]?[0-9]{0,21}",
        any::<i64>().prop_map(|n| n.to_string()),
    ]) {
        match parse_post_id(&raw) {
            Ok(id) => {
                prop_assert!(id.get() > 0);
                prop_assert_eq!(raw.parse::<i64>().ok(), Some(id.get()));
            }
            Err(e) => prop_assert_eq!(status(e), 400),
        }
        match parse_limit(Some(&raw)) {
            Ok(n) => prop_assert!((1..=100).contains(&n) && raw.parse::<usize>().ok() == Some(n)),
            Err(e) => prop_assert_eq!(status(e), 400),
        }
    }

    #[test]
    fn a_web_configuration_is_valid_or_says_why(text in prop_oneof![toml_ish(), mutated(FULL)]) {
        if let Err(e) = WebConfig::parse(&text, "web.toml") {
            prop_assert!(says_why(&e.to_string(), "web.toml"), "{}", e);
        }
    }
}

#[test]
fn the_full_configuration_is_valid() {
    WebConfig::parse(FULL, "web.toml").unwrap();
}

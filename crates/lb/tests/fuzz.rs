//! Property-based fuzzing of the load balancer's configuration file
//! (docs/SECURITY.md): TOML-ish text and a full valid file mutated. The result
//! is a validated configuration, which writes back to TOML that reads the same,
//! or an error that names the setting or the file; never a panic. Runs
//! `PROPTEST_CASES` cases (256 by default; `make fuzz` runs many more).

use lb::LbConfig;
use proptest::prelude::*;
use settings::fuzz::{config, mutated, says_why, toml_ish};

/// A load balancer configuration with every section.
const FULL: &str = r#"listen = "127.0.0.1:8000"
admin = "127.0.0.1:8001"
backends = ["127.0.0.1:8080", "127.0.0.1:8081"]
algorithm = "least_request"
threads = 2
admin_token = "0123456789abcdef0123456789abcdef"
[health]
path = "/readyz"
interval_ms = 1000
timeout_ms = 1000
healthy_threshold = 2
unhealthy_threshold = 2
[outlier]
consecutive_failures = 5
base_ejection_ms = 5000
max_ejection_ms = 60000
max_ejected_percent = 50
panic_below_percent = 50
[upstream]
connect_timeout_ms = 1000
read_timeout_ms = 60000
idle_timeout_secs = 60
max_retries = 2
keepalive_pool_size = 1024
[limits]
header_timeout_ms = 10000
idle_timeout_secs = 60
max_header_bytes = 32768
max_body_bytes = 16777216
[rate_limit]
per_second = 100
burst = 200
"#;

proptest! {
    #![proptest_config(config(1.0))]

    #[test]
    fn a_load_balancer_configuration_is_valid_or_says_why(text in prop_oneof![toml_ish(), mutated(FULL)]) {
        match LbConfig::parse(&text, "lb.toml") {
            Ok(c) => {
                let again = LbConfig::parse(&c.to_toml(), "again")
                    .map_err(|e| TestCaseError::fail(format!("its own TOML is refused: {e}")))?;
                prop_assert_eq!(again.to_toml(), c.to_toml());
            }
            Err(e) => prop_assert!(says_why(&e.to_string(), "lb.toml"), "{}", e),
        }
    }
}

#[test]
fn the_full_configuration_is_valid() {
    LbConfig::parse(FULL, "lb.toml").unwrap();
}

//! ARCHITECTURE.md's structural invariants, checked: the direction of the
//! dependencies between the workspace's crates (from `cargo metadata`), who may speak
//! to PostgreSQL and Redis, and that no crate but `data` holds SQL over the
//! application's tables. Each test fails, naming the offending crate or line, when a
//! change breaks the rule it states.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use regex::Regex;
use serde_json::Value;

/// The workspace's root directory.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

/// The layer of every workspace crate: a crate may depend (normally, or to build)
/// only on crates of a lower layer. Adding a crate means placing it here.
const LAYERS: &[(&str, u8)] = &[
    // Leaves: pure functions and types, or one concern with no crate of ours below.
    ("sharding", 0),
    ("settings", 0),
    ("telemetry", 0),
    ("media", 0),
    ("nodes", 0),
    ("guard", 0),
    ("acceptor", 0),
    ("tls", 0),
    // Building blocks: the data layer, the cache tier, the topology file, the proxy.
    ("topology", 1),
    ("data", 1),
    ("cache", 1),
    ("lb", 1),
    ("dns", 1),
    ("cdn", 1),
    ("wan", 1),
    // App logic shared by the web tier and the workers.
    ("feed", 2),
    // Roles.
    ("web", 3),
    ("worker", 3),
    ("control", 3),
    ("loadgen", 3),
    // The test harness, over the roles it starts.
    ("testkit", 4),
    // The one binary.
    ("millions", 5),
];

/// Crates of the request path, which must not depend on the control plane.
const REQUEST_PATH: &[&str] = &["web", "worker", "feed", "cache", "data"];
/// Control-plane and tooling crates.
const CONTROL_PLANE: &[&str] = &["control", "lb", "topology", "nodes", "loadgen", "testkit", "millions"];
/// PostgreSQL client crates.
const POSTGRES_CLIENTS: &[&str] = &["tokio-postgres", "deadpool-postgres", "postgres", "refinery", "sqlx"];
/// Crates that may depend on a PostgreSQL client (beyond dev-dependencies): the data
/// layer; the controller, for administrative SQL on the catalogs (replication,
/// recovery, slots); the seeder, for bulk `COPY` whose statements come from
/// `data::bulk`; and the test harness.
const POSTGRES_ALLOWED: &[&str] = &["data", "control", "loadgen", "testkit"];
/// Crates that may speak to Redis: the cache tier, and the web tier's session store.
const REDIS_ALLOWED: &[&str] = &["cache", "web"];
/// Crates that do no I/O of their own (no async runtime).
const PURE: &[&str] = &["sharding", "settings", "topology", "media"];

/// One dependency of a workspace crate.
#[derive(Debug)]
struct Dep {
    /// The depending crate.
    from: String,
    /// The crate depended on.
    to: String,
    /// `None` for a normal dependency, else `dev` or `build`.
    kind: Option<String>,
}

fn dependencies() -> (BTreeSet<String>, Vec<Dep>) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(root())
        .output()
        .expect("running cargo metadata");
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata's JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let members: BTreeSet<String> =
        packages.iter().map(|p| p["name"].as_str().expect("name").to_owned()).collect();
    let mut deps = Vec::new();
    for p in packages {
        for d in p["dependencies"].as_array().expect("dependencies") {
            deps.push(Dep {
                from: p["name"].as_str().unwrap().to_owned(),
                to: d["name"].as_str().unwrap().to_owned(),
                kind: d["kind"].as_str().map(str::to_owned),
            });
        }
    }
    (members, deps)
}

#[test]
fn every_crate_has_a_layer_and_depends_only_downward() {
    let (members, deps) = dependencies();
    let layers: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let unplaced: Vec<&String> = members.iter().filter(|m| !layers.contains_key(m.as_str())).collect();
    assert!(unplaced.is_empty(), "crates with no layer in LAYERS: {unplaced:?}");
    let mut wrong = Vec::new();
    for d in deps.iter().filter(|d| d.kind.as_deref() != Some("dev") && members.contains(&d.to)) {
        let (from, to) = (layers[d.from.as_str()], layers[d.to.as_str()]);
        if to >= from {
            wrong.push(format!("{} (layer {from}) -> {} (layer {to})", d.from, d.to));
        }
    }
    assert!(wrong.is_empty(), "dependencies that do not go down a layer: {wrong:#?}");
}

#[test]
fn the_request_path_never_depends_on_the_control_plane_and_testkit_is_for_tests() {
    let (_, deps) = dependencies();
    let mut wrong = Vec::new();
    for d in deps.iter().filter(|d| d.kind.as_deref() != Some("dev")) {
        if REQUEST_PATH.contains(&d.from.as_str()) && CONTROL_PLANE.contains(&d.to.as_str()) {
            wrong.push(format!("{} -> {}", d.from, d.to));
        }
        if d.to == "testkit" {
            wrong.push(format!("{} -> testkit outside dev-dependencies", d.from));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn only_the_allowed_crates_speak_to_postgresql_and_redis_and_pure_crates_do_no_io() {
    let (members, deps) = dependencies();
    let mut wrong = Vec::new();
    for d in deps.iter().filter(|d| d.kind.as_deref() != Some("dev") && members.contains(&d.from)) {
        let (from, to) = (d.from.as_str(), d.to.as_str());
        if POSTGRES_CLIENTS.contains(&to) && !POSTGRES_ALLOWED.contains(&from) {
            wrong.push(format!("{from} -> {to} (only {POSTGRES_ALLOWED:?} speak to PostgreSQL)"));
        }
        if to == "redis" && !REDIS_ALLOWED.contains(&from) {
            wrong.push(format!("{from} -> redis (only {REDIS_ALLOWED:?} speak to Redis)"));
        }
        if PURE.contains(&from) && to == "tokio" {
            wrong.push(format!("{from} -> tokio ({from} is pure)"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// The application's tables, from the migrations.
fn application_tables() -> BTreeSet<String> {
    let create = Regex::new(r"(?i)\bCREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?([a-z_][a-z0-9_]*)").unwrap();
    let mut tables = BTreeSet::new();
    for entry in std::fs::read_dir(root().join("crates/data/migrations")).expect("migrations") {
        let sql = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        tables.extend(create.captures_iter(&sql).map(|c| c[1].to_lowercase()));
    }
    tables
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Lines of `text` (comments aside) that name an application table after a SQL
/// keyword that reads or writes it.
fn sql_over(tables: &BTreeSet<String>, text: &str) -> Vec<(usize, String)> {
    let names = tables.iter().cloned().collect::<Vec<_>>().join("|");
    let statement =
        Regex::new(&format!(r"(?i)\b(FROM|INTO|UPDATE|JOIN|TABLE|COPY|TRUNCATE)\s+({names})\b")).unwrap();
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
        .filter(|(_, line)| statement.is_match(line))
        .map(|(i, line)| (i + 1, line.trim().to_owned()))
        .collect()
}

#[test]
fn no_application_table_sql_outside_data() {
    let tables = application_tables();
    for t in ["users", "posts", "follows_out", "follows_in", "likes", "jobs"] {
        assert!(tables.contains(t), "the migrations no longer create {t}: {tables:?}");
    }
    // The scan itself finds what it must.
    assert_eq!(sql_over(&tables, "let q = \"SELECT 1 FROM posts WHERE x\";").len(), 1);
    assert_eq!(sql_over(&tables, "\"INSERT INTO follows_in (a) VALUES ($1)\"").len(), 1);
    assert!(sql_over(&tables, "// UPDATE jobs SET state = 'x'").is_empty());
    assert!(sql_over(&tables, "\"SELECT pg_is_in_recovery()\"").is_empty());
    assert!(sql_over(&tables, "the users of the app").is_empty());

    let mut found = Vec::new();
    for krate in std::fs::read_dir(root().join("crates")).unwrap() {
        let krate = krate.unwrap().path();
        if krate.file_name().is_some_and(|n| n == "data") {
            continue;
        }
        // A crate's code; its tests, benchmarks and examples may read tables to
        // check or measure what the code did.
        let mut files = Vec::new();
        rust_files(&krate.join("src"), &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (line, sql) in sql_over(&tables, &text) {
                found.push(format!("{}:{line}: {sql}", file.strip_prefix(root()).unwrap().display()));
            }
        }
    }
    assert!(found.is_empty(), "SQL over application tables outside crates/data: {found:#?}");
}

#[test]
fn the_controllers_sql_is_in_one_module() {
    let dir = root().join("crates/control/src");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    let statement =
        Regex::new(r#""[^"]*\b(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|CHECKPOINT)\b"#).unwrap();
    let mut found = Vec::new();
    for file in files {
        let name = file.strip_prefix(&dir).unwrap().display().to_string();
        // pgadmin holds the SQL; error names the driver's error type.
        if name == "pgadmin.rs" || name == "error.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim_start().starts_with("//")) {
            if line.contains("tokio_postgres") || statement.is_match(line) {
                found.push(format!("control/src/{name}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "the controller's SQL outside pgadmin.rs: {found:#?}");
}

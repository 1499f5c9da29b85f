//! The served OpenAPI document: well-formed, self-contained, and in step with the
//! routes `api.rs` actually has (both ways).

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use testkit::spawn_app;

/// Every route of `api::routes()`, as (method, path under `/api/v1`). Keep in step
/// with `src/api.rs` *and* `src/openapi.json`: the test checks all three agree.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/openapi.json"),
    ("POST", "/users"),
    ("GET", "/users/me"),
    ("PATCH", "/users/me"),
    ("GET", "/users/{username}"),
    ("PUT", "/users/{username}/follow"),
    ("DELETE", "/users/{username}/follow"),
    ("GET", "/users/{username}/posts"),
    ("GET", "/users/{username}/followers"),
    ("GET", "/users/{username}/following"),
    ("POST", "/sessions"),
    ("DELETE", "/sessions/current"),
    ("POST", "/posts"),
    ("GET", "/posts/{id}"),
    ("DELETE", "/posts/{id}"),
    ("PUT", "/posts/{id}/like"),
    ("DELETE", "/posts/{id}/like"),
    ("GET", "/posts/{id}/comments"),
    ("POST", "/posts/{id}/comments"),
    ("DELETE", "/comments/{id}"),
    ("PUT", "/users/me/avatar"),
    ("GET", "/feed"),
    ("GET", "/search/users"),
    ("GET", "/suggestions"),
    ("GET", "/explore"),
    ("GET", "/notifications"),
    ("GET", "/notifications/unread"),
    ("POST", "/notifications/read"),
];

/// Path-item keys that are HTTP methods.
const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// Sample values for path parameters.
fn fill(path: &str) -> String {
    path.replace("{username}", "nobody_x").replace("{id}", "1")
}

type Routes = BTreeSet<(String, String)>;

fn routes_set(list: &[(&str, &str)]) -> Routes {
    list.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect()
}

/// The (method, path) pairs the document describes.
fn documented(doc: &Value) -> Routes {
    let paths = doc["paths"].as_object().expect("paths is an object");
    let mut out = BTreeSet::new();
    for (path, item) in paths {
        let item = item.as_object().unwrap_or_else(|| panic!("{path}: path item is an object"));
        for method in item.keys().filter(|k| METHODS.contains(&k.as_str())) {
            out.insert((method.to_ascii_uppercase(), path.clone()));
        }
    }
    out
}

/// The routes written in `api.rs`: each `.route("PATH", ...)` and the method
/// routers (`get(`, `put(`, ...) called in its second argument.
fn routes_in_source(src: &str) -> Routes {
    let mut out = BTreeSet::new();
    let mut rest = src;
    while let Some(at) = rest.find(".route(\"") {
        rest = &rest[at + ".route(\"".len()..];
        let end = rest.find('"').expect("route path literal ends");
        let path = &rest[..end];
        // The rest of the call: up to the parenthesis that closes `.route(`.
        let mut depth = 1usize;
        let mut call_end = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        call_end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let call = &rest[end + 1..call_end];
        let bytes = call.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i].is_ascii_alphabetic() || bytes[i] == b'_' {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                let word = &call[start..i];
                if bytes.get(i) == Some(&b'(') && METHODS.contains(&word) {
                    out.insert((word.to_ascii_uppercase(), path.to_owned()));
                }
            } else {
                i += 1;
            }
        }
        rest = &rest[call_end..];
    }
    out
}

/// Every `$ref` string in the document.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// Follow a local `$ref` (possibly through other `$ref`s) to what it names.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    let mut v = v;
    for _ in 0..16 {
        let Some(r) = v.get("$ref").and_then(Value::as_str) else { return v };
        v = doc.pointer(r.strip_prefix('#').expect("local ref")).unwrap_or_else(|| panic!("{r} resolves"));
    }
    panic!("$ref chain too long")
}

async fn served_document(app: &testkit::TestApp) -> Value {
    let r = reqwest::get(app.url("/api/v1/openapi.json")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("application/json"), "content type {ct}");
    let text = r.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("the served document is not JSON: {e}"))
}

#[test]
fn the_hard_coded_route_list_matches_api_rs() {
    let in_source = routes_in_source(include_str!("../src/api.rs"));
    assert!(!in_source.is_empty(), "found routes in api.rs");
    assert_eq!(in_source, routes_set(ROUTES), "api.rs routes (left) vs. ROUTES in this test (right)");
}

#[test]
fn the_document_describes_exactly_the_routes() {
    let doc: Value = serde_json::from_str(web::api::OPENAPI).expect("openapi.json is JSON");
    let documented = documented(&doc);
    let routes = routes_set(ROUTES);
    let undocumented: Vec<_> = routes.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routes).collect();
    assert!(undocumented.is_empty(), "routes missing from openapi.json: {undocumented:?}");
    assert!(unrouted.is_empty(), "documented but not in api.rs: {unrouted:?}");
}

#[test]
fn the_document_is_well_formed_and_self_contained() {
    let doc: Value = serde_json::from_str(web::api::OPENAPI).expect("openapi.json is JSON");
    let version = doc["openapi"].as_str().expect("openapi is a string");
    assert!(version.starts_with("3.1."), "OpenAPI 3.1.x, not {version}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    assert_eq!(doc["servers"][0]["url"], "/api/v1");
    for scheme in ["bearerAuth", "cookieAuth"] {
        assert!(doc["components"]["securitySchemes"][scheme].is_object(), "{scheme} declared");
    }
    for schema in ["UserView", "AuthorView", "PostView", "PostPage", "FollowView", "LikeView", "Error"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "schema {schema}");
    }

    // Every $ref points inside the document, at something that exists.
    let mut all = vec![];
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in &all {
        let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("{r} is not local"));
        assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
    }

    let mut operation_ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let placeholders: BTreeSet<&str> =
            path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}')).collect();
        for (method, op) in item.as_object().unwrap() {
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            let what = format!("{method} {path}");
            let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{what}: operationId"));
            assert!(operation_ids.insert(id.to_owned()), "{what}: operationId {id} is used twice");
            assert!(op["summary"].as_str().is_some_and(|s| !s.is_empty()), "{what}: summary");
            let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{what}: responses"));
            assert!(responses.keys().any(|s| s.starts_with('2')), "{what}: a success response");

            // Path placeholders are exactly the declared path parameters.
            let params =
                item["parameters"].as_array().into_iter().chain(op["parameters"].as_array()).flatten();
            let mut declared = BTreeSet::new();
            for p in params {
                let p = resolve(&doc, p);
                if p["in"] == "path" {
                    assert_eq!(p["required"], true, "{what}: path parameters are required");
                    declared.insert(p["name"].as_str().unwrap());
                }
            }
            assert_eq!(declared, placeholders, "{what}: path parameters");

            // JSON bodies refuse unknown fields, as the server does.
            // (A multipart-only body, an avatar's, has no JSON schema to check.)
            if let Some(body) = op.get("requestBody").filter(|b| {
                let b = resolve(&doc, b);
                b["content"].get("application/json").is_some()
            }) {
                let body = resolve(&doc, body);
                let schema = resolve(&doc, &body["content"]["application/json"]["schema"]);
                assert_eq!(schema["additionalProperties"], false, "{what}: additionalProperties");
                for code in ["400", "413", "415"] {
                    assert!(responses.contains_key(code), "{what}: a body can get {code}");
                }
            }
        }
    }
}

#[tokio::test]
async fn the_served_document_matches_the_router() {
    let app = spawn_app().await;
    let doc = served_document(&app).await;
    assert_eq!(doc, serde_json::from_str::<Value>(web::api::OPENAPI).unwrap(), "served verbatim");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
    assert_eq!(documented(&doc), routes_set(ROUTES));

    let client = reqwest::Client::new();
    let probe = |method: &str, path: &str| {
        let req = client.request(method.parse::<Method>().unwrap(), app.url(&format!("/api/v1{path}")));
        async move {
            let r = req.send().await.unwrap();
            let status = r.status();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            (status, body)
        }
    };
    let unrouted = |status: StatusCode, body: &Value| {
        status == StatusCode::METHOD_NOT_ALLOWED
            || (status == StatusCode::NOT_FOUND
                && body["error"]["code"] == "not_found"
                && body["error"]["message"] == "no such API route")
    };

    // The probe tells routed from unrouted.
    let (status, body) = probe("GET", "/no/such/route").await;
    assert!(unrouted(status, &body), "an unknown path reads as unrouted: {status} {body}");
    let (status, body) = probe("PATCH", "/users").await;
    assert!(unrouted(status, &body), "a wrong method reads as unrouted: {status} {body}");

    for (method, path) in documented(&doc) {
        let (status, body) = probe(&method, &fill(&path)).await;
        assert!(!unrouted(status, &body), "{method} {path} is documented but not routed: {status} {body}");
        assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{method} {path}: {body}");
    }
}

/// Error codes only the HTML pages answer with (their errors are pages, not JSON).
const HTML_ONLY_CODES: &[&str] = &["invalid_form", "empty_post", "csrf_failed"];

/// The status a `StatusCode::NAME` stands for, for the names `error.rs` uses.
fn status_named(name: &str) -> u16 {
    match name {
        "BAD_REQUEST" => 400,
        "UNAUTHORIZED" => 401,
        "FORBIDDEN" => 403,
        "NOT_FOUND" => 404,
        "METHOD_NOT_ALLOWED" => 405,
        "CONFLICT" => 409,
        "PAYLOAD_TOO_LARGE" => 413,
        "UNSUPPORTED_MEDIA_TYPE" => 415,
        "UNPROCESSABLE_ENTITY" => 422,
        "TOO_MANY_REQUESTS" => 429,
        "INTERNAL_SERVER_ERROR" => 500,
        "SERVICE_UNAVAILABLE" => 503,
        other => panic!("status_named: add StatusCode::{other}"),
    }
}

/// The string literal at the start of `s` (after optional whitespace), if any.
fn leading_literal(s: &str) -> Option<&str> {
    let s = s.trim_start().strip_prefix('"')?;
    Some(&s[..s.find('"')?])
}

/// Every (error code, status) written in the web crate's sources: the first
/// argument of `ApiError::bad_request` (400) and `ApiError::invalid` (422), each
/// `code: "..."` of a conflict (409), and each `(StatusCode::X, "...")` of
/// `error.rs`'s fixed codes.
fn codes_in_sources() -> BTreeSet<(String, u16)> {
    fn files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut paths = vec![];
    files(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut paths);
    assert!(paths.len() > 5, "found the sources: {paths:?}");
    let mut out = BTreeSet::new();
    for path in paths {
        let src = std::fs::read_to_string(&path).unwrap();
        for (needle, status) in
            [("ApiError::bad_request(", 400), ("ApiError::invalid(", 422), ("ApiError::Conflict {", 409)]
        {
            for (at, _) in src.match_indices(needle) {
                let rest = &src[at + needle.len()..];
                let rest = if status == 409 {
                    let Some(c) = rest.find("code:").filter(|c| rest[..*c].trim().is_empty()) else {
                        continue; // a pattern (`ApiError::Conflict { .. }`), not a construction
                    };
                    &rest[c + "code:".len()..]
                } else {
                    rest
                };
                match leading_literal(rest) {
                    Some(code) => {
                        out.insert((code.to_owned(), status));
                    }
                    None if status == 409 => {} // `code` passed through (the error mapping)
                    None => panic!("{}: {needle} without a literal code", path.display()),
                }
            }
        }
        if !path.ends_with("src/error.rs") {
            continue;
        }
        for (at, _) in src.match_indices("(StatusCode::") {
            let rest = &src[at + "(StatusCode::".len()..];
            let Some((name, rest)) = rest.split_once(',') else { continue };
            if let Some(code) = leading_literal(rest) {
                out.insert((code.to_owned(), status_named(name.trim())));
            }
        }
    }
    out
}

/// The (code, status) pairs the `Error` schema's `code` lists: "`a`, `b` (400); ...".
fn codes_in_document(doc: &Value) -> BTreeSet<(String, u16)> {
    let text =
        doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["description"]
            .as_str()
            .expect("the error code has a description");
    let list = text.split_once("In use:").expect("the description lists the codes in use").1;
    let mut out = BTreeSet::new();
    for group in list.split(';') {
        let open = group.find('(').unwrap_or_else(|| panic!("no status in {group:?}"));
        let status: u16 = group[open + 1..open + 4].parse().unwrap_or_else(|_| panic!("status in {group:?}"));
        let codes = &group[..open];
        let names: Vec<&str> = codes.split('`').skip(1).step_by(2).collect();
        assert!(!names.is_empty(), "no codes in {group:?}");
        for name in names {
            assert!(out.insert((name.to_owned(), status)), "{name} listed twice");
        }
    }
    out
}

#[test]
fn the_document_lists_every_error_code_the_api_answers_with() {
    let in_sources = codes_in_sources();
    let names: BTreeSet<&str> = in_sources.iter().map(|(c, _)| c.as_str()).collect();
    for html in HTML_ONLY_CODES {
        assert!(names.contains(html), "{html} is no longer used: drop it from HTML_ONLY_CODES");
    }
    for known in
        ["invalid_path", "empty_upload", "corrupt_image", "too_many_pixels", "missing_photo", "internal"]
    {
        assert!(names.contains(known), "the scan finds {known}: {in_sources:?}");
    }
    let api: BTreeSet<(String, u16)> =
        in_sources.into_iter().filter(|(c, _)| !HTML_ONLY_CODES.contains(&c.as_str())).collect();
    let doc: Value = serde_json::from_str(web::api::OPENAPI).expect("openapi.json is JSON");
    let documented = codes_in_document(&doc);
    let undocumented: Vec<_> = api.difference(&documented).collect();
    let unused: Vec<_> = documented.difference(&api).collect();
    assert!(undocumented.is_empty(), "codes (and statuses) missing from openapi.json: {undocumented:?}");
    assert!(unused.is_empty(), "documented codes the server never answers with: {unused:?}");
}

//! The rules both protocol paths apply, each once, as small pure functions: which
//! request framing is ambiguous ([`declared_framing`]: request smuggling), which
//! headers are hop-by-hop, which failed requests may go to another backend
//! ([`may_retry`]), what an answer of the load balancer's own says
//! ([`error_body`], [`gave_up`]).

use http::Method;
use http::header::{self, HeaderMap, HeaderName};
use pingora_error::{Error, ErrorType};

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), removed
/// in both directions. `Transfer-Encoding` is hop-by-hop too, but it is left to
/// the code that frames bodies (pingora's sessions for HTTP/2; HTTP/1 keeps it with
/// the body it checks). `Expect` is answered by the load balancer itself (it is the
/// one agreeing to receive the body).
pub const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "expect",
];

/// The request id header, carried LB → web → logs.
pub const REQUEST_ID: &str = telemetry::request_id::HEADER;

/// The header that tells browsers to use HTTPS only (RFC 6797); set by the load
/// balancer on every answer over HTTPS, a backend's own replaced.
pub const HSTS: &str = "strict-transport-security";

/// Methods that are safe to send twice (RFC 9110 §9.2.2 lists PUT and DELETE too;
/// the web tier's PUT and DELETE are idempotent, but a request body is streamed, not
/// kept, so only these, and only without a body, are retried after sending).
pub fn retryable_method(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// How a message says its body is delimited, as far as its header fields tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declared<'a> {
    /// Neither `Content-Length` nor `Transfer-Encoding`.
    Nothing,
    /// One `Content-Length`, all digits.
    Length(&'a [u8]),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// The body framing `fields` (name, trimmed value) declare, or why it is
/// ambiguous (request smuggling): both `Content-Length` and `Transfer-Encoding`,
/// more than one of either, a length that is not a plain number, a transfer coding
/// other than `chunked`. Names are compared without case; nothing is allocated.
pub fn declared_framing<'a>(
    fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<Declared<'a>, &'static str> {
    let (mut lengths, mut codings) = (0, 0);
    let (mut length, mut coding): (&[u8], &[u8]) = (b"", b"");
    for (name, value) in fields {
        if name.eq_ignore_ascii_case(b"content-length") {
            lengths += 1;
            length = value;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            codings += 1;
            coding = value;
        }
    }
    match (lengths, codings) {
        (0, 0) => Ok(Declared::Nothing),
        (1.., 1..) => Err("Content-Length with Transfer-Encoding"),
        (2.., _) => Err("more than one Content-Length"),
        (1, _) if length.is_empty() || !length.iter().all(u8::is_ascii_digit) => {
            Err("Content-Length is not a number")
        }
        (1, _) => Ok(Declared::Length(length)),
        (_, 2..) => Err("more than one Transfer-Encoding"),
        _ if !coding.eq_ignore_ascii_case(b"chunked") => Err("Transfer-Encoding other than chunked"),
        _ => Ok(Declared::Chunked),
    }
}

/// Whether a request whose attempt failed may go to another backend: never once
/// anything of the answer was passed on to the client (`passed_on`); otherwise one
/// that never reached the backend (`sent` false: its connection could not be
/// opened, say) may go anywhere, and one that did only if sending it twice is
/// harmless: GET, HEAD or OPTIONS without a body ([`retryable_method`]).
pub fn may_retry(method: &Method, has_body: bool, sent: bool, passed_on: bool) -> bool {
    !passed_on && (!sent || (retryable_method(method) && !has_body))
}

/// What the client is told when no backend answered: 503 if there was none to
/// try (`last_error` is `None`), 504 if the last one did not answer in time, else 502.
pub fn gave_up(last_error: Option<&Error>) -> (u16, &'static str) {
    match last_error {
        None => (503, "no_backend"),
        Some(e) if e.etype() == &ErrorType::ReadTimedout => (504, "gateway_timeout"),
        Some(_) => (502, "bad_gateway"),
    }
}

/// The body of an answer of the load balancer's own, in the API's error shape:
/// the code for programs, a sentence for people.
pub fn error_body(code: &str) -> String {
    format!("{{\"error\":{{\"code\":\"{code}\",\"message\":\"{}\"}}}}", error_message(code))
}

/// Every internal path of the system: what any process serves for the private
/// network only (probes, metrics, admin and control APIs), each a prefix (the
/// path itself and everything under it). The load balancer's public entry
/// answers a request for any of them 404 and never forwards it
/// ([`is_internal`]), however the path is spelled.
///
/// **A new route that is not for the public goes here**, whichever process
/// serves it: `lb`'s `tests/internal.rs` scans every route registered in the
/// workspace and fails for one that is neither internal by this list nor
/// listed there as public.
pub const INTERNAL_PATHS: [&str; 15] = [
    // Every process's probes and metrics (web servers, workers, the load
    // balancers', DNS servers' and WAN gateways' admin listeners, the controller).
    "/metrics",
    "/readyz",
    "/healthz",
    // Admin APIs: the load balancers' (`/admin/backends`, drain, resume,
    // `/admin/tls`, `/admin/tls/reload`), the WAN gateways' (links,
    // conditions, cut, heal), the DNS servers' (`/admin/health`), the CDN
    // edges' (`/admin/purge`, `/admin/tls`).
    "/admin",
    // Reserved for internal routes to come.
    "/internal",
    // The controller's API.
    "/api/nodes",
    "/api/events",
    "/api/dcs",
    "/api/shutdown",
    "/api/cdn",
    "/api/shards",
    "/api/scale",
    // The controller's dashboard: its page and assets, its JSON and stream.
    "/dashboard",
    "/api/dashboard",
    "/api/cluster",
];

/// Whether the request target `target` (origin form, query and fragment
/// included or not; or absolute form, `http://host/path`) names an internal
/// path: one of [`INTERNAL_PATHS`] or under one, compared after the path is
/// normalized the way some server behind might read it ([`normalize_path`]):
/// `%XX` decoded, `\` taken for `/`, empty and `.` segments dropped, `..`
/// applied, `;params` dropped, letters in lower case. A target spelled plainly
/// (the usual case) is judged without allocating.
pub fn is_internal(target: &str) -> bool {
    let path = target.split(['?', '#']).next().unwrap_or(target);
    let plain = path.starts_with('/')
        && !path.bytes().any(|b| matches!(b, b'%' | b'\\' | b';') || b.is_ascii_uppercase())
        && !path.contains("//")
        && !path.contains("/.");
    if plain {
        return under_internal(path);
    }
    normalize_path(path).is_some_and(|p| under_internal(&p))
}

/// Whether a normalized path is one of [`INTERNAL_PATHS`] or under one.
fn under_internal(path: &str) -> bool {
    INTERNAL_PATHS
        .iter()
        .any(|p| path.strip_prefix(p).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')))
}

/// The path of `target` (without its query) as the most lenient server behind
/// might read it: for the absolute form, the part after the authority; `%XX`
/// decoded (again, while that changes it: double encoding), `\` taken for `/`,
/// each segment's `;params` dropped, empty and `.` segments dropped, `..`
/// applied, in lower case. `None` for a target that has no path (`*`,
/// `host:port`).
pub fn normalize_path(target: &str) -> Option<String> {
    let path = match target.find("://") {
        Some(i) if !target.starts_with('/') => {
            let after = &target[i + 3..];
            after.find('/').map_or("/", |j| &after[j..])
        }
        _ if target.starts_with('/') || target.starts_with('\\') => target,
        _ => return None,
    };
    let mut decoded = path.to_owned();
    for _ in 0..4 {
        let next = percent_encoding::percent_decode_str(&decoded).decode_utf8_lossy().into_owned();
        if next == decoded {
            break;
        }
        decoded = next;
    }
    // A decoded `?` or `#` ends the path as a lenient server would read it.
    let decoded = decoded.split(['?', '#']).next().unwrap_or("").replace('\\', "/").to_ascii_lowercase();
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment.split(';').next().unwrap_or("") {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    Some(format!("/{}", segments.join("/")))
}

/// Where a plain-HTTP request is redirected when HTTPS is on: the same host
/// (`host`, the `Host` header or HTTP/2's authority, its port dropped) and
/// request target (`target`, origin form) on HTTPS at `https_port`. `None` when
/// either cannot be used in a `Location` as it is (no host, a host with
/// characters no host name or IP address has, a target not starting with `/`):
/// that request is refused (400) rather than redirected somewhere unintended.
pub fn https_location(host: &[u8], target: &str, https_port: u16) -> Option<String> {
    let host = std::str::from_utf8(host).ok()?.trim();
    // `[v6]` or `[v6]:port`, else `name` or `name:port`.
    let name = if let Some(rest) = host.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(|p| p.parse::<u16>().is_ok());
        if inside.is_empty()
            || !port_ok
            || !inside.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        &host[..inside.len() + 2]
    } else {
        let (name, port) = host.split_once(':').map_or((host, None), |(n, p)| (n, Some(p)));
        if port.is_some_and(|p| p.parse::<u16>().is_err()) {
            return None;
        }
        name
    };
    let plain_name = |n: &str| n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if name.is_empty() || (!name.starts_with('[') && !plain_name(name)) {
        return None;
    }
    // A target starting with `//` would make the Location's path an authority.
    if !target.starts_with('/') || target.starts_with("//") {
        return None;
    }
    let target = target.bytes().all(|b| b.is_ascii_graphic()).then_some(target)?;
    Some(match https_port {
        443 => format!("https://{name}{target}"),
        port => format!("https://{name}:{port}{target}"),
    })
}

/// What an error code of the load balancer's own means, in words.
pub fn error_message(code: &str) -> &'static str {
    match code {
        "bad_request" => "the request is malformed",
        "smuggling" => "the request's framing is ambiguous (Content-Length and Transfer-Encoding)",
        "method_not_allowed" => "this method is not allowed here",
        "header_too_large" => "the request's header fields are too large",
        "uri_too_long" => "the request's URI is too long",
        "not_found" => "no such page",
        "body_too_large" => "the request's body is too large",
        "rate_limited" => "too many requests from this client: retry after the Retry-After delay",
        "no_backend" => "no web server is available: retry shortly",
        "gateway_timeout" => "the web server did not answer in time",
        "bad_gateway" => "the web server's answer could not be used",
        _ => "the load balancer refused the request",
    }
}

/// Whether `name` is one of [`HOP_BY_HOP`].
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Remove hop-by-hop headers, and those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &HeaderMap) -> Vec<HeaderName> {
    // Most requests have none of them: no allocation then.
    let mut names: Vec<HeaderName> =
        HOP_BY_HOP.iter().filter(|n| headers.contains_key(**n)).map(|n| HeaderName::from_static(n)).collect();
    for v in headers.get_all(header::CONNECTION) {
        for token in v.to_str().unwrap_or("").split(',') {
            if let Ok(n) = HeaderName::from_bytes(token.trim().as_bytes())
                && n != header::TRANSFER_ENCODING
                && n != header::CONTENT_LENGTH
            {
                names.push(n);
            }
        }
    }
    names.retain(|n| headers.contains_key(n));
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_paths_are_told_apart_from_public_ones_however_spelled() {
        for path in [
            "/metrics",
            "/metrics?name=x",
            "/readyz",
            "/healthz",
            "/healthz/",
            "/metrics/extra",
            "/admin/backends",
            "/api/nodes/dc1-web-1/kill",
            "/api/cluster?dc=dc1",
            "/Metrics",
            "/METRICS",
            "/%6detrics",
            "/%6Detrics",
            "/%256detrics",
            "//metrics",
            "/./metrics",
            "/api/../metrics",
            "/api/v1/../../admin/tls",
            "/metrics/",
            "/metrics%2f",
            "/metrics;x=1",
            "\\metrics",
            "/\\metrics",
            "/%5cmetrics",
            "http://www.millions.test/metrics",
            "HTTPS://x/%2e/readyz",
        ] {
            assert!(is_internal(path), "{path}");
        }
        for path in [
            "/",
            "/metricsx",
            "/api/v1/metrics",
            "/u/readyz",
            "/api/v1/feed?x=/metrics",
            "/api/v1/users/ann",
            "/u/Ann",
            "/p/1%2f..",
            "/administrator",
            "*",
            "localhost:443",
            "http://www.millions.test",
            "/metrics%00",
        ] {
            assert!(!is_internal(path), "{path}");
        }
        assert_eq!(normalize_path("/a//b/./c/../D;x").as_deref(), Some("/a/b/d"));
        assert_eq!(normalize_path("/a/%2e%2e/metrics%3fx").as_deref(), Some("/metrics"));
        assert_eq!(normalize_path("http://h").as_deref(), Some("/"));
    }

    #[test]
    fn plain_requests_are_redirected_to_the_same_host_and_target_on_https() {
        for (host, target, port, want) in [
            ("www.millions.test:8000", "/u/ann?x=1", 8443, Some("https://www.millions.test:8443/u/ann?x=1")),
            ("www.millions.test", "/", 443, Some("https://www.millions.test/")),
            ("127.0.1.10:8000", "/p/1", 8443, Some("https://127.0.1.10:8443/p/1")),
            ("[::1]:8000", "/", 8443, Some("https://[::1]:8443/")),
            ("[::1]", "/", 443, Some("https://[::1]/")),
            ("", "/", 8443, None),
            ("evil.test/x", "/", 8443, None),
            ("a b", "/", 8443, None),
            ("host:port", "/", 8443, None),
            ("[::1]x", "/", 8443, None),
            ("[zz]", "/", 8443, None),
            ("www.millions.test", "*", 8443, None),
            ("www.millions.test", "//evil.test/", 8443, None),
            ("www.millions.test", "http://other/", 8443, None),
        ] {
            assert_eq!(https_location(host.as_bytes(), target, port).as_deref(), want, "{host} {target}");
        }
    }

    #[test]
    fn an_error_body_says_in_words_what_its_code_means() {
        let v: serde_json::Value = serde_json::from_str(&error_body("uri_too_long")).unwrap();
        assert_eq!(v["error"]["code"], "uri_too_long");
        assert_eq!(v["error"]["message"], "the request's URI is too long");
        for code in
            ["bad_request", "smuggling", "header_too_large", "body_too_large", "rate_limited", "no_backend"]
        {
            assert_ne!(error_message(code), error_message("unknown"), "{code} has no message of its own");
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), http::HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn smuggling_shapes() {
        // The `name: value` lines of `text`, as `declared_framing` takes them.
        let smuggling = |text: &str| {
            let fields = text.split("\r\n").filter_map(|line| line.split_once(':'));
            declared_framing(fields.map(|(n, v)| (n.as_bytes(), v.trim().as_bytes()))).err()
        };
        assert_eq!(declared_framing([(&b"Content-Length"[..], &b"5"[..])]), Ok(Declared::Length(b"5")));
        assert_eq!(declared_framing([(&b"transfer-encoding"[..], &b"Chunked"[..])]), Ok(Declared::Chunked));
        assert_eq!(declared_framing([(&b"host"[..], &b"x"[..])]), Ok(Declared::Nothing));
        assert_eq!(smuggling("Content-Length: 5\r\n"), None);
        assert_eq!(smuggling("transfer-encoding: Chunked\r\n"), None);
        for bad in [
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "Content-Length: 5\r\nContent-Length: 5\r\n",
            "Content-Length: 5\r\ncontent-length: 6\r\n",
            "Content-Length: 5, 6\r\n",
            "Content-Length: +5\r\n",
            "Transfer-Encoding: gzip, chunked\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        ] {
            assert!(smuggling(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let h = headers(&[
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "5"),
            ("host", "a"),
        ]);
        let mut names: Vec<String> = strip_hop_by_hop(&h).iter().map(|n| n.to_string()).collect();
        names.sort();
        assert_eq!(names, ["connection", "keep-alive", "x-secret"]);
    }

    #[test]
    fn a_request_is_sent_again_only_when_that_is_harmless() {
        let (get, post) = (Method::GET, Method::POST);
        // Never reached the backend: any request may go elsewhere.
        assert!(may_retry(&post, true, false, false));
        assert!(may_retry(&get, false, false, false));
        // Sent: only GET, HEAD and OPTIONS, and only without a body.
        assert!(may_retry(&get, false, true, false));
        assert!(may_retry(&Method::HEAD, false, true, false));
        assert!(may_retry(&Method::OPTIONS, false, true, false));
        assert!(!may_retry(&get, true, true, false));
        assert!(!may_retry(&post, false, true, false));
        assert!(!may_retry(&post, true, true, false));
        assert!(!may_retry(&Method::PUT, false, true, false));
        assert!(!may_retry(&Method::DELETE, false, true, false));
        // Part of the answer passed on: never, whatever the request.
        assert!(!may_retry(&get, false, true, true));
        assert!(!may_retry(&get, false, false, true));
    }

    #[test]
    fn giving_up_says_why() {
        assert_eq!(gave_up(None), (503, "no_backend"));
        let timed_out = Error::explain(ErrorType::ReadTimedout, "no answer");
        assert_eq!(gave_up(Some(&timed_out)), (504, "gateway_timeout"));
        let refused = Error::explain(ErrorType::ConnectRefused, "connecting");
        assert_eq!(gave_up(Some(&refused)), (502, "bad_gateway"));
    }
}

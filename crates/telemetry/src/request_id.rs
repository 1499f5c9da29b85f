//! The request-id rule, written once for every tier that takes or makes an id
//! (the load balancer and the web servers).
//!
//! An id arrives in the [`HEADER`] from a client or a load balancer and is carried
//! into every log line of the request, LB → web → database. An incoming id is kept
//! ([`accept`]) only if it is given once and [`is_sane`]: 1–[`MAX_LEN`] bytes of
//! ASCII letters, digits or `-_.:`, so it cannot forge or flood log lines; otherwise
//! (or when absent) a new one is made with [`new`].

use rand::Rng;

/// The header that carries a request's id (lower case, as HTTP/2 sends it).
pub const HEADER: &str = "x-request-id";

/// Longest request id taken from a client or a load balancer.
pub const MAX_LEN: usize = 128;

/// Whether an incoming request id (the header value's bytes) is kept.
pub fn is_sane(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len()) && id.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
}

/// The id to keep from a request's [`HEADER`] values (in order): the only one,
/// if it is sane; `None` (make one) when there is none, several, or an insane one.
pub fn accept<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> Option<&'a str> {
    match (values.next(), values.next()) {
        (Some(id), None) if is_sane(id) => std::str::from_utf8(id).ok(),
        _ => None,
    }
}

tokio::task_local! {
    /// The id of the request this task is serving (see [`scope`]).
    static CURRENT: String;
}

/// Run `fut` as the serving of request `id`: code it calls that outlives the
/// request — a job it enqueues — can carry the id on ([`current`]), so one
/// request's whole path can be found in the logs (`millions logs --request ID`).
pub async fn scope<F: std::future::Future>(id: String, fut: F) -> F::Output {
    CURRENT.scope(id, fut).await
}

/// The id of the request the calling task serves, if it runs in a [`scope`].
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

/// A new request id: 128 random bits as 32 lower-case hex digits.
pub fn new() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n: u128 = rand::rng().random();
    (0..32).rev().map(|i| HEX[((n >> (i * 4)) & 0xf) as usize] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_plain_ids_are_kept() {
        for good in ["a", "trace-me-123", "0af7651916cd43dd8448eb211c80319c", "lb.1:x_y", &"a".repeat(128)] {
            assert!(is_sane(good.as_bytes()), "{good:?}");
        }
        for bad in ["", "with space", "quote\"", "new\tline", "x/y", "é", "a\r\nb", &"a".repeat(129)] {
            assert!(!is_sane(bad.as_bytes()), "{bad:?}");
        }
        assert!(!is_sane(b"\xff\xfe"));
    }

    #[test]
    fn one_sane_id_is_accepted_and_nothing_else() {
        let ids = |v: &[&'static str]| v.iter().map(|s| s.as_bytes()).collect::<Vec<_>>();
        assert_eq!(accept(ids(&["abc-1"]).into_iter()), Some("abc-1"));
        assert_eq!(accept(ids(&[]).into_iter()), None, "absent");
        assert_eq!(accept(ids(&["a", "b"]).into_iter()), None, "given twice");
        assert_eq!(accept(ids(&["a b"]).into_iter()), None, "insane");
    }

    #[tokio::test]
    async fn the_current_id_is_known_inside_its_scope_only() {
        assert_eq!(current(), None);
        let inside = scope("abc".to_owned(), async { current() }).await;
        assert_eq!(inside, Some("abc".to_owned()));
        assert_eq!(current(), None);
    }

    #[test]
    fn new_ids_are_32_hex_digits_and_differ() {
        let id = new();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{id}");
        assert!(is_sane(id.as_bytes()));
        assert_ne!(id, new());
    }
}

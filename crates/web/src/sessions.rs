//! Login sessions: PostgreSQL is their store of record, caches copy them.
//!
//! A session token is 256 random bits behind the two bytes of its user's bucket,
//! URL-safe base64 (46 characters): the bucket routes a lookup to the user's shard
//! without knowing the user. The shard keeps the token's SHA-256 (a copy of the
//! table or of a cache hands out no live token), the user and the expiry; the row
//! commits like any write of that shard, so a session survives whatever its shard
//! survives — a node, or with a DC-safe shard a whole data center — and is valid
//! in every data center at once.
//!
//! Lookups go through a read-through cache (`session`: this process's memory, then
//! this DC's Redis, then the shard's primary — or, while it is being replaced, a
//! replica, whose answer is served but not cached). A logout deletes the row, then
//! invalidates the cached copies in every DC's Redis and every web server's
//! memory; a cached copy also carries the expiry and is refused past it. So losing
//! a DC's Redis costs signed-in users nothing: lookups fall through to the shards.
//!
//! The session's read-your-writes floor (per shard, the WAL position of its last
//! write) is not a fact worth a database write per request: it lives in this DC's
//! Redis only (`floor:<hash>`), created with the session. When that Redis cannot
//! be read, the floor is unknown and the request reads every shard's primary
//! ([`Lsns::unknown`]). When it can be read but the floor is gone — evicted under
//! the Redis's memory budget, or never kept in this data center (a user moved
//! here by DNS) — the session may have writes no replica has replayed, so its
//! floor becomes every primary's current position ([`Data::current_lsns`]: it
//! covers every write committed before), which is kept for the next requests.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cache::{Loaded, ReadThrough, Redis};
use data::{Data, Lsns, SessionRecord};
use rand::RngCore;
use redis::AsyncCommands;
use sha2::{Digest, Sha256};
use sharding::Bucket;

use crate::error::ApiError;

/// Length of a session token: base64 of 2 + 32 bytes.
const TOKEN_LEN: usize = 46;

/// A session token taken apart: whose bucket it routes to, and its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Token {
    /// The bucket of the user it was issued to.
    bucket: Bucket,
    /// SHA-256 of the token's text: what the shard and the caches know.
    hash: [u8; 32],
}

impl Token {
    /// Parse a presented token; anything not shaped like one we issue is `None`,
    /// refused unseen.
    fn parse(text: &str) -> Option<Token> {
        if text.len() != TOKEN_LEN
            || !text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        let bucket = Bucket::new(u16::from_be_bytes([bytes[0], bytes[1]]))?;
        Some(Token { bucket, hash: Sha256::digest(text.as_bytes()).into() })
    }

    /// The hash in hex: the key of the token's cached copies.
    fn key(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut key = String::with_capacity(64);
        for b in self.hash {
            key.push(HEX[usize::from(b >> 4)] as char);
            key.push(HEX[usize::from(b & 0xf)] as char);
        }
        key
    }
}

/// A fresh token for a user of `bucket`.
fn new_token(bucket: Bucket) -> String {
    let mut bytes = [0u8; 34];
    bytes[..2].copy_from_slice(&bucket.get().to_be_bytes());
    rand::rng().fill_bytes(&mut bytes[2..]);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether a stored or cached session is still live at `now_ms` (Unix ms).
fn live(record: &SessionRecord, now_ms: i64) -> bool {
    record.expires_at_ms > now_ms
}

fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos().div_euclid(1_000_000) as i64
}

/// The session store: rows on the shards, copies in the `session` cache, floors in
/// this DC's Redis.
#[derive(Clone)]
pub struct Sessions {
    /// The shards: the store of record.
    data: Data,
    /// Cached copies of live sessions, by token hash (L1 and this DC's Redis;
    /// invalidated everywhere on logout).
    cache: Arc<ReadThrough<SessionRecord>>,
    /// This DC's Redis: read-your-writes floors.
    redis: Redis,
    /// How long a session lives.
    ttl: Duration,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

impl Sessions {
    /// A session store over `data`, caching in `cache`, keeping floors in `redis`.
    pub fn new(data: Data, cache: Arc<ReadThrough<SessionRecord>>, redis: Redis, ttl: Duration) -> Sessions {
        Sessions { data, cache, redis, ttl }
    }

    fn floor_key(&self, token: &Token) -> String {
        self.redis.key(&format!("floor:{}", token.key()))
    }

    /// Start a session for `user_id`; returns its token once the shard committed it.
    pub async fn create(&self, user_id: i64) -> Result<String, ApiError> {
        let token = new_token(sharding::user_bucket(user_id));
        let parsed = Token::parse(&token).expect("a token we made parses");
        let record = self.data.create_session(user_id, &parsed.hash, self.ttl).await?;
        // Its first use, on whichever web server of this DC, finds it cached
        // instead of reading the shard's primary.
        self.cache.prime(&parsed.key(), record).await;
        // A new session has written nothing: its floor exists, empty. (If this
        // fails, the first lookup finds no floor and takes the primaries'.)
        if let Err(e) = self.store_floor(&parsed, &Lsns::new()).await {
            tracing::warn!(error = %e, "could not create the session's read-your-writes floor");
        }
        Ok(token)
    }

    /// The user a token belongs to, if it is a live session: usually from memory,
    /// with no round trip. Its read-your-writes floor is read apart
    /// ([`Sessions::floor_of`]), only by requests that need it.
    pub async fn lookup(&self, token: &str) -> Result<Option<i64>, ApiError> {
        let Some(token) = Token::parse(token) else { return Ok(None) };
        let data = self.data.clone();
        let record = self
            .cache
            .get_or_fill(&token.key(), || async move {
                let (found, served) = data::fill_reads(data.session(token.bucket, &token.hash)).await;
                let found = found?;
                Ok::<_, data::DataError>(match served {
                    data::Served::Primary => Loaded::Keep(found),
                    data::Served::Replica => Loaded::ServeOnly(found),
                })
            })
            .await?;
        Ok(record.filter(|r| live(r, now_ms())).map(|r| r.user_id))
    }

    /// The read-your-writes floor of a live session's token (one Redis round
    /// trip; see the module's documentation for a floor unknown or gone).
    pub async fn floor_of(&self, token: &str) -> Lsns {
        match Token::parse(token) {
            Some(token) => self.floor(&token).await,
            None => Lsns::new(),
        }
    }

    /// The session's floor from this DC's Redis; unknown (every read on the
    /// primaries) when Redis cannot be read; the primaries' current positions when
    /// the floor is gone (see the module's documentation).
    async fn floor(&self, token: &Token) -> Lsns {
        let key = self.floor_key(token);
        let read = self.redis.run(|mut c| async move { c.hgetall::<_, Vec<(String, u64)>>(key).await }).await;
        match read {
            Ok(fields) if fields.is_empty() => self.lost_floor(token).await,
            Ok(fields) => fields
                .into_iter()
                .filter_map(|(shard, lsn)| shard.parse::<u16>().ok().map(|s| (data::ShardId(s), lsn)))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "the session's read-your-writes floor is unknown; reading primaries");
                Lsns::unknown(self.data.shard_map().shard_count())
            }
        }
    }

    /// A floor for a session whose floor is gone: every primary's position now,
    /// kept if every primary answered (else asked again on the next request).
    async fn lost_floor(&self, token: &Token) -> Lsns {
        let floor = self.data.current_lsns().await;
        if floor.iter().all(|(_, lsn)| lsn != u64::MAX) {
            if let Err(e) = self.store_floor(token, &floor).await {
                tracing::warn!(error = %e, "could not keep the session's recovered floor");
            }
        } else {
            tracing::debug!("a primary did not tell its position; the recovered floor is not kept");
        }
        floor
    }

    /// Raise the session's floor to `written` (never lowers it: requests of one
    /// session may finish in any order).
    pub async fn raise_floor(&self, token: &str, written: &Lsns) -> Result<(), ApiError> {
        let Some(token) = Token::parse(token) else { return Ok(()) };
        self.store_floor(&token, written).await
    }

    /// Raise `token`'s floor to `written` (never lowering it), creating the floor if
    /// need be: the `_` field says it exists even with no position, so that a gone
    /// floor can be told from an empty one.
    async fn store_floor(&self, token: &Token, written: &Lsns) -> Result<(), ApiError> {
        static RAISE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
            redis::Script::new(
                "redis.call('HSETNX', KEYS[1], '_', '0') \
                 for i = 2, #ARGV, 2 do \
                   local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0') \
                   if tonumber(ARGV[i + 1]) > cur then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end \
                 end redis.call('EXPIRE', KEYS[1], ARGV[1]) return 1",
            )
        });
        let key = self.floor_key(token);
        let mut args = vec![self.ttl.as_secs().to_string()];
        args.extend(written.iter().flat_map(|(s, l)| [s.0.to_string(), l.to_string()]));
        self.redis
            .run(|mut c| {
                let (key, args) = (key.clone(), args.clone());
                async move {
                    let mut call = RAISE.key(key);
                    for a in &args {
                        call.arg(a);
                    }
                    call.invoke_async::<()>(&mut c).await
                }
            })
            .await?;
        Ok(())
    }

    /// End a session: its row goes, then every cached copy in every DC (a copy a
    /// DC could not be told about lives at most until its cache's TTL).
    pub async fn destroy(&self, token: &str) -> Result<(), ApiError> {
        let Some(token) = Token::parse(token) else { return Ok(()) };
        self.data.delete_session(token.bucket, &token.hash).await?;
        self.cache.invalidate(&token.key()).await;
        let key = self.floor_key(&token);
        if let Err(e) = self.redis.run(|mut c| async move { c.del::<_, ()>(key).await }).await {
            tracing::warn!(error = %e, "could not drop an ended session's floor (it expires with its TTL)");
        }
        Ok(())
    }

    /// Seconds a session lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_their_users_bucket_and_only_our_shape_parses() {
        let bucket = Bucket::new(4095).unwrap();
        let a = new_token(bucket);
        assert_eq!(a.len(), TOKEN_LEN);
        let parsed = Token::parse(&a).expect("ours");
        assert_eq!(parsed.bucket, bucket);
        assert_eq!(parsed.hash, <[u8; 32]>::from(Sha256::digest(a.as_bytes())));
        assert_ne!(new_token(bucket), a, "256 random bits each");
        assert_eq!(Token::parse(&new_token(Bucket::new(0).unwrap())).unwrap().bucket.get(), 0);
        for bad in [
            "short".to_owned(),
            format!("{a}x"),
            format!("{}!", &a[..TOKEN_LEN - 1]),
            // A bucket past 4095.
            URL_SAFE_NO_PAD.encode([0xff_u8; 34]),
            // An old-style 43-character token.
            URL_SAFE_NO_PAD.encode([7_u8; 32]),
        ] {
            assert_eq!(Token::parse(&bad), None, "{bad}");
        }
    }

    #[test]
    fn a_record_is_live_until_its_expiry() {
        let r = SessionRecord { user_id: 1, expires_at_ms: 1_000 };
        assert!(live(&r, 999));
        assert!(!live(&r, 1_000));
        assert!(!live(&r, 5_000));
    }
}

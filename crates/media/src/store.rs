//! Content-addressed object storage for photos and thumbnails.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::Format;

/// Length of the lowercase hex sha256 at the start of a key.
const HASH_HEX_LEN: usize = 64;

/// The address of a stored object: `<64 lowercase hex sha256>.<jpg|png|webp>`.
///
/// The only ways to get one are [`content_key`] and [`ObjectKey::parse`],
/// which accepts exactly that shape, so a key taken from a URL path segment
/// can never name anything outside the store (no `/`, no `..`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(String);

/// Why a string is not an [`ObjectKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid object key: {reason}")]
pub struct InvalidKey {
    /// What is wrong, for logs; never echo the key itself into HTML.
    pub reason: &'static str,
}

impl ObjectKey {
    /// Validate strictly: exactly 64 lowercase hex digits, one dot, and one of
    /// the extensions `jpg`, `png`, `webp`. Nothing else is accepted.
    pub fn parse(s: &str) -> Result<ObjectKey, InvalidKey> {
        let invalid = |reason| Err(InvalidKey { reason });
        let Some((hash, ext)) = s.split_once('.') else {
            return invalid("missing extension");
        };
        if hash.len() != HASH_HEX_LEN {
            return invalid("hash is not 64 characters");
        }
        if !hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return invalid("hash is not lowercase hex");
        }
        if Format::from_extension(ext).is_none() {
            return invalid("extension is not jpg, png or webp");
        }
        Ok(ObjectKey(s.to_owned()))
    }

    /// The key as text, e.g. for a URL path segment or a database column.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The sha256 of the content, as 64 lowercase hex digits.
    pub fn hash_hex(&self) -> &str {
        &self.0[..HASH_HEX_LEN]
    }

    /// The format named by the extension.
    pub fn format(&self) -> Format {
        match Format::from_extension(&self.0[HASH_HEX_LEN + 1..]) {
            Some(format) => format,
            // Unreachable: both constructors guarantee a known extension.
            None => Format::Jpeg,
        }
    }

    /// MIME type to serve the object with.
    pub fn content_type(&self) -> &'static str {
        self.format().content_type()
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for ObjectKey {
    type Err = InvalidKey;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ObjectKey::parse(s)
    }
}

impl AsRef<str> for ObjectKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The key `bytes` are stored under: their sha256 in lowercase hex, a dot,
/// and the format's extension.
pub fn content_key(bytes: &[u8], format: Format) -> ObjectKey {
    let digest = Sha256::digest(bytes);
    let mut key = String::with_capacity(HASH_HEX_LEN + 5);
    for byte in digest {
        key.push(char::from(HEX[usize::from(byte >> 4)]));
        key.push(char::from(HEX[usize::from(byte & 0x0F)]));
    }
    key.push('.');
    key.push_str(format.extension());
    ObjectKey(key)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("object store: {op} {}: {source}", path.display())]
    Io {
        /// What was being done ("write", "rename"...), for the log line.
        op: &'static str,
        /// The file or directory involved, for the log line.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl StoreError {
    fn io(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
        move |source| StoreError::Io { op, path: path.to_owned(), source }
    }
}

/// Where photo bytes live, addressed by content.
///
/// Synchronous: async callers wrap calls in `spawn_blocking`.
pub trait ObjectStore: Send + Sync + 'static {
    /// Store bytes under their content address; idempotent; returns the key.
    fn put(&self, bytes: &[u8], format: Format) -> Result<ObjectKey, StoreError>;
    /// The bytes stored under `key`, or `None` if there are none.
    fn get(&self, key: &ObjectKey) -> Result<Option<Vec<u8>>, StoreError>;
    /// Whether something is stored under `key`.
    fn exists(&self, key: &ObjectKey) -> Result<bool, StoreError>;
    /// Remove the object; removing a missing object is not an error.
    fn delete(&self, key: &ObjectKey) -> Result<(), StoreError>;
}

/// An [`ObjectStore`] on the local filesystem: the object with key `abcd…`
/// is the file `root/ab/cd/abcd….ext`, so no directory holds more than 256
/// entries of subdirectories.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

/// Makes temporary file names unique within this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl LocalStore {
    /// Open (creating it if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<LocalStore, StoreError> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(StoreError::io("create", &root))?;
        Ok(LocalStore { root })
    }

    /// The directory the store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the object with `key` is (or would be) stored; for serving it
    /// straight from disk.
    pub fn path_of(&self, key: &ObjectKey) -> PathBuf {
        let hash = key.hash_hex();
        self.root.join(&hash[0..2]).join(&hash[2..4]).join(key.as_str())
    }

    /// Write `bytes` to a new temporary file in `dir`, fsynced; returns its path.
    fn write_temp(dir: &Path, key: &ObjectKey, bytes: &[u8]) -> Result<PathBuf, StoreError> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        loop {
            // Leading dot: never a valid key, so never served or listed as one.
            let temp = dir.join(format!(
                ".tmp-{}-{}-{}-{nanos}",
                &key.hash_hex()[..16],
                std::process::id(),
                TEMP_COUNTER.fetch_add(1, Ordering::Relaxed),
            ));
            let mut file = match OpenOptions::new().write(true).create_new(true).open(&temp) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(StoreError::io("create", &temp)(e)),
            };
            let written = file
                .write_all(bytes)
                .map_err(StoreError::io("write", &temp))
                .and_then(|()| file.sync_all().map_err(StoreError::io("fsync", &temp)));
            if let Err(e) = written {
                let _ = fs::remove_file(&temp);
                return Err(e);
            }
            return Ok(temp);
        }
    }
}

impl ObjectStore for LocalStore {
    fn put(&self, bytes: &[u8], format: Format) -> Result<ObjectKey, StoreError> {
        let key = content_key(bytes, format);
        let path = self.path_of(&key);
        if path.exists() {
            return Ok(key);
        }
        let dir = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(StoreError::io("create", dir))?;
        let temp = Self::write_temp(dir, &key, bytes)?;
        // rename(2) is atomic: readers see no file or the whole file. Two
        // concurrent puts of the same content both succeed, and the loser
        // replaces identical bytes.
        if let Err(e) = fs::rename(&temp, &path) {
            let _ = fs::remove_file(&temp);
            return Err(StoreError::io("rename", &path)(e));
        }
        // Make the new directory entry durable too.
        File::open(dir).and_then(|d| d.sync_all()).map_err(StoreError::io("fsync", dir))?;
        Ok(key)
    }

    fn get(&self, key: &ObjectKey) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path_of(key);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("read", &path)(e)),
        }
    }

    fn exists(&self, key: &ObjectKey) -> Result<bool, StoreError> {
        let path = self.path_of(key);
        path.try_exists().map_err(StoreError::io("stat", &path))
    }

    fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        let path = self.path_of(key);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("delete", &path)(e)),
        }
    }
}

/// An [`ObjectStore`] in memory, for tests of the crates that use a store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: Mutex<HashMap<ObjectKey, Vec<u8>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// How many objects are stored.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, Vec<u8>>> {
        // A panic elsewhere cannot leave a map entry half-written.
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ObjectStore for MemoryStore {
    fn put(&self, bytes: &[u8], format: Format) -> Result<ObjectKey, StoreError> {
        let key = content_key(bytes, format);
        self.lock().entry(key.clone()).or_insert_with(|| bytes.to_vec());
        Ok(key)
    }

    fn get(&self, key: &ObjectKey) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().get(key).cloned())
    }

    fn exists(&self, key: &ObjectKey) -> Result<bool, StoreError> {
        Ok(self.lock().contains_key(key))
    }

    fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        self.lock().remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn content_key_is_sha256_hex_and_extension() {
        assert_eq!(content_key(b"", Format::Jpeg).as_str(), format!("{HASH}.jpg"));
        let key = content_key(b"abc", Format::Png);
        assert_eq!(key.as_str(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad.png");
        assert_eq!(ObjectKey::parse(key.as_str()), Ok(key.clone()));
        assert_eq!(key.content_type(), "image/png");
        assert_eq!(content_key(b"x", Format::WebP).content_type(), "image/webp");
    }

    #[test]
    fn parse_accepts_exactly_the_key_shape() {
        for ext in ["jpg", "png", "webp"] {
            let s = format!("{HASH}.{ext}");
            assert_eq!(ObjectKey::parse(&s).map(|k| k.to_string()), Ok(s));
        }
        let upper = format!("{}.jpg", HASH.to_uppercase());
        let bad = [
            "../etc/passwd".to_owned(),
            "..".to_owned(),
            String::new(),
            HASH.to_owned(),
            format!("{HASH}."),
            format!("{HASH}.gif"),
            format!("{HASH}.JPG"),
            format!("{HASH}.jpeg"),
            format!("{HASH}.jpg.png"),
            format!("{HASH}.jpg/"),
            format!("{HASH}.jpg\0"),
            format!("{HASH}0.jpg"),
            format!("{}.jpg", &HASH[1..]),
            format!("../{}.jpg", &HASH[3..]),
            format!("{}/{}.jpg", &HASH[..2], &HASH[3..]),
            format!("{}g.jpg", &HASH[1..]),
            upper,
            format!(".{HASH}.jpg"),
            format!("{HASH} .jpg"),
            format!("{}é.jpg", &HASH[2..]),
        ];
        for s in bad {
            assert!(ObjectKey::parse(&s).is_err(), "accepted {s:?}");
        }
    }

    #[test]
    fn memory_store_round_trip() {
        let store = MemoryStore::new();
        let a = store.put(b"hello", Format::Jpeg).unwrap();
        let b = store.put(b"hello", Format::Jpeg).unwrap();
        assert_eq!(a, b);
        assert_eq!(store.len(), 1);
        assert_eq!(store.get(&a).unwrap().as_deref(), Some(&b"hello"[..]));
        store.delete(&a).unwrap();
        store.delete(&a).unwrap();
        assert!(!store.exists(&a).unwrap());
        assert_eq!(store.get(&a).unwrap(), None);
    }
}

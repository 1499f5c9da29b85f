//! LocalStore on a temporary directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use media::{Format, LocalStore, ObjectKey, ObjectStore, content_key};

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn put_is_content_addressed_and_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path().join("objects")).unwrap();
    let bytes = b"\xFF\xD8\xFF pretend jpeg".to_vec();

    let first = store.put(&bytes, Format::Jpeg).unwrap();
    let second = store.put(&bytes, Format::Jpeg).unwrap();
    assert_eq!(first, second);
    assert_eq!(first, content_key(&bytes, Format::Jpeg));

    let files = files_under(store.root());
    assert_eq!(files.len(), 1, "{files:?}");
    let hash = first.hash_hex();
    assert_eq!(files[0], store.root().join(&hash[..2]).join(&hash[2..4]).join(first.as_str()));
    assert_eq!(files[0], store.path_of(&first));

    assert_eq!(store.get(&first).unwrap(), Some(bytes.clone()));
    assert!(store.exists(&first).unwrap());

    // Same bytes, other format: another key.
    let png = store.put(&bytes, Format::Png).unwrap();
    assert_ne!(png, first);
    assert_eq!(png.content_type(), "image/png");
    assert_eq!(files_under(store.root()).len(), 2);

    store.delete(&first).unwrap();
    store.delete(&first).unwrap();
    assert!(!store.exists(&first).unwrap());
    assert_eq!(store.get(&first).unwrap(), None);
    assert!(store.exists(&png).unwrap());
}

#[test]
fn missing_keys_read_as_none() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let key = ObjectKey::parse(&format!("{}.webp", "ab".repeat(32))).unwrap();
    assert_eq!(store.get(&key).unwrap(), None);
    assert!(!store.exists(&key).unwrap());
    store.delete(&key).unwrap();
}

#[test]
fn concurrent_puts_of_the_same_content_are_safe() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalStore::open(dir.path()).unwrap());
    let bytes: Arc<Vec<u8>> = Arc::new((0..200_000u32).map(|i| (i % 251) as u8).collect());
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            let bytes = Arc::clone(&bytes);
            std::thread::spawn(move || store.put(&bytes, Format::Png).unwrap())
        })
        .collect();
    let keys: Vec<ObjectKey> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(keys.windows(2).all(|w| w[0] == w[1]));
    // Exactly one file, no temporary files left behind.
    assert_eq!(files_under(store.root()), vec![store.path_of(&keys[0])]);
    assert_eq!(store.get(&keys[0]).unwrap().as_deref(), Some(&bytes[..]));
}

#[test]
fn usable_as_a_trait_object() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::open(dir.path()).unwrap());
    let key = store.put(b"x", Format::Jpeg).unwrap();
    assert_eq!(store.get(&key).unwrap().as_deref(), Some(&b"x"[..]));
}

//! The photo pipeline's pure library: no network, no database.
//!
//! Three parts, used by the web tier and the photo workers:
//!
//! 1. [`normalize`] validates an upload (size, format sniffed from magic bytes,
//!    declared dimensions before any pixel is decoded, completeness) and
//!    re-encodes it with its EXIF orientation applied and every piece of
//!    metadata (EXIF, ICC, XMP, comments) gone.
//! 2. [`thumbnails`] decodes a normalized photo once and produces one
//!    thumbnail per entry of [`THUMB_SIZES`], deterministically, so a worker
//!    that redoes a job produces the same content hashes.
//! 3. [`ObjectStore`] stores bytes under their content address
//!    ([`ObjectKey`]: sha256 + extension); [`LocalStore`] keeps them as files,
//!    [`MemoryStore`] in memory for tests.
#![forbid(unsafe_code)]

mod error;
mod format;
mod normalize;
mod store;
mod thumbs;

pub use error::MediaError;
pub use format::Format;
pub use normalize::{Limits, Normalized, normalize};
pub use store::{InvalidKey, LocalStore, MemoryStore, ObjectKey, ObjectStore, StoreError, content_key};
pub use thumbs::{THUMB_SIZES, Thumbnail, thumbnails, thumbnails_with_limits};

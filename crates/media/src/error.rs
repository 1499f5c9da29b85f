//! Why an image was refused or could not be processed.

/// Why [`crate::normalize`] or [`crate::thumbnails`] refused an image.
///
/// Every variant but [`MediaError::Encode`] is the uploader's fault (a 4xx in
/// the web tier); `Encode` is ours.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum MediaError {
    /// The upload had no bytes at all.
    #[error("the file is empty")]
    Empty,
    /// The upload is bigger than [`crate::Limits::max_bytes`].
    #[error("the file is {size} bytes; the limit is {max} bytes")]
    TooLarge {
        /// Size of the upload, so the message can tell the user by how much.
        size: usize,
        /// The limit that was exceeded.
        max: usize,
    },
    /// The bytes are not a JPEG, PNG or WebP image (judged from the content,
    /// never from a file name or content type), or use a variant of one of
    /// those formats that the decoders do not support.
    #[error("unsupported image format{}", detected.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    UnsupportedFormat {
        /// What the magic bytes say the file is ("GIF", "TIFF", "HEIC"...), if
        /// anything was recognized, so the user learns what to convert.
        detected: Option<String>,
    },
    /// The image declares more pixels than allowed (a decompression bomb or
    /// simply a huge image); detected from the header, before decoding.
    #[error("the image is {width}x{height} pixels, which is more than allowed")]
    TooManyPixels {
        /// Width declared in the image header.
        width: u32,
        /// Height declared in the image header.
        height: u32,
    },
    /// The file claims to be a supported format but is truncated or damaged.
    #[error("the image is damaged or incomplete: {0}")]
    Corrupt(String),
    /// Re-encoding or resizing failed; not the uploader's fault.
    #[error("could not encode the image: {0}")]
    Encode(String),
}

//! The three image formats the pipeline accepts.

/// An accepted image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    /// JPEG (JFIF/EXIF): photos; what opaque images are re-encoded to.
    Jpeg,
    /// PNG: what images with transparency are re-encoded to.
    Png,
    /// WebP: accepted as input only; never produced.
    WebP,
}

impl Format {
    /// File extension used in object keys ("jpg", "png", "webp").
    pub fn extension(self) -> &'static str {
        match self {
            Format::Jpeg => "jpg",
            Format::Png => "png",
            Format::WebP => "webp",
        }
    }

    /// The inverse of [`Format::extension`]; exact and case-sensitive.
    pub fn from_extension(ext: &str) -> Option<Format> {
        match ext {
            "jpg" => Some(Format::Jpeg),
            "png" => Some(Format::Png),
            "webp" => Some(Format::WebP),
            _ => None,
        }
    }

    /// MIME type to serve the bytes with.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::WebP => "image/webp",
        }
    }

    pub(crate) fn to_image(self) -> image::ImageFormat {
        match self {
            Format::Jpeg => image::ImageFormat::Jpeg,
            Format::Png => image::ImageFormat::Png,
            Format::WebP => image::ImageFormat::WebP,
        }
    }

    pub(crate) fn from_image(format: image::ImageFormat) -> Option<Format> {
        match format {
            image::ImageFormat::Jpeg => Some(Format::Jpeg),
            image::ImageFormat::Png => Some(Format::Png),
            image::ImageFormat::WebP => Some(Format::WebP),
            _ => None,
        }
    }

    /// Human-readable name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Format::Jpeg => "JPEG",
            Format::Png => "PNG",
            Format::WebP => "WebP",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

//! Validation and normalization of an upload.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageEncoder, ImageError, ImageReader};

use crate::{Format, MediaError};

/// JPEG quality of a normalized photo.
const NORMALIZED_JPEG_QUALITY: u8 = 90;

/// Decoder allocations allowed on top of the decoded pixels (headers, Huffman
/// tables, row buffers, metadata chunks).
const ALLOC_SLACK: u64 = 64 * 1024 * 1024;

/// Largest bytes-per-pixel any accepted format decodes to (16-bit RGBA PNG).
const MAX_BYTES_PER_PIXEL: u64 = 8;

/// What an upload may be; checked before anything is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted file, in bytes; checked first, before looking inside.
    pub max_bytes: usize,
    /// Largest accepted width × height, as declared by the header; bounds the
    /// memory a decode can take (a decompression bomb is a tiny file that
    /// declares a huge image).
    pub max_pixels: u64,
    /// Largest accepted width or height: a 1×40M-pixel strip passes
    /// `max_pixels` but makes absurd thumbnails and resizer kernels.
    pub max_side: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bytes: 10 * 1024 * 1024, max_pixels: 40_000_000, max_side: 20_000 }
    }
}

/// A validated upload, re-encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// The re-encoded original: EXIF orientation applied (so every viewer
    /// shows it upright without reading metadata), all metadata stripped
    /// (EXIF can carry GPS position and camera serial numbers).
    pub bytes: Vec<u8>,
    /// Format of `bytes`: PNG when the image has transparency, JPEG otherwise.
    pub format: Format,
    /// Width of `bytes` in pixels, after orientation was applied.
    pub width: u32,
    /// Height of `bytes` in pixels, after orientation was applied.
    pub height: u32,
    /// Format the upload was in, as detected from its magic bytes; for
    /// statistics and logs.
    pub source_format: Format,
}

/// Validate an upload and re-encode it.
///
/// Checks, in order: not empty ([`MediaError::Empty`]); at most
/// `limits.max_bytes` ([`MediaError::TooLarge`]); JPEG, PNG or WebP by magic
/// bytes ([`MediaError::UnsupportedFormat`]); declared dimensions within
/// `limits` before any pixel is decoded ([`MediaError::TooManyPixels`]);
/// complete and decodable ([`MediaError::Corrupt`]). Then applies the EXIF
/// orientation and re-encodes from pixels: PNG if any pixel is not fully
/// opaque, JPEG quality 90 otherwise. Re-encoding from pixels drops EXIF,
/// ICC, XMP and comments.
pub fn normalize(input: &[u8], limits: &Limits) -> Result<Normalized, MediaError> {
    let (image, source_format) = decode(input, limits)?;
    let image = to_8bit(image);
    let (width, height) = (image.width(), image.height());
    let (bytes, format) = encode(&image, NORMALIZED_JPEG_QUALITY)?;
    Ok(Normalized { bytes, format, width, height, source_format })
}

/// Run every check of [`normalize`] and decode, with the orientation applied.
pub(crate) fn decode(input: &[u8], limits: &Limits) -> Result<(DynamicImage, Format), MediaError> {
    if input.is_empty() {
        return Err(MediaError::Empty);
    }
    if input.len() > limits.max_bytes {
        return Err(MediaError::TooLarge { size: input.len(), max: limits.max_bytes });
    }
    let format = detect(input)?;

    // First look: construct the decoder, which reads only the header, with an
    // allocation cap but no dimension limits, so we can report the declared
    // dimensions ourselves.
    let mut reader = ImageReader::with_format(Cursor::new(input), format.to_image());
    let mut peek = image::Limits::default();
    peek.max_image_width = None;
    peek.max_image_height = None;
    peek.max_alloc = Some(limits.max_pixels.saturating_mul(MAX_BYTES_PER_PIXEL).saturating_add(ALLOC_SLACK));
    reader.limits(peek);
    let mut decoder = reader.into_decoder().map_err(|e| map_image_error(e, format, None))?;

    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(MediaError::Corrupt(format!("{format} header declares a {width}x{height} image")));
    }
    if width > limits.max_side
        || height > limits.max_side
        || u64::from(width) * u64::from(height) > limits.max_pixels
    {
        return Err(MediaError::TooManyPixels { width, height });
    }

    // Some decoders (zune-jpeg in the non-strict mode the image crate uses)
    // fill missing data silently; a JPEG must reach its EOI marker.
    if format == Format::Jpeg {
        jpeg_complete(input).map_err(MediaError::Corrupt)?;
    }

    // Second line of defence: the image crate enforces these too while decoding.
    let bytes_per_pixel = u64::from(decoder.color_type().bytes_per_pixel()).max(4);
    let budget = limits.max_pixels.saturating_mul(bytes_per_pixel).saturating_add(ALLOC_SLACK);
    let mut strict = image::Limits::default();
    strict.max_image_width = Some(limits.max_side);
    strict.max_image_height = Some(limits.max_side);
    strict.max_alloc = Some(budget);
    decoder.set_limits(strict).map_err(|e| map_image_error(e, format, Some((width, height))))?;
    if decoder.total_bytes() > budget {
        return Err(MediaError::TooManyPixels { width, height });
    }

    // A broken EXIF block must not make a good photo unusable: show it as stored.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut image =
        DynamicImage::from_decoder(decoder).map_err(|e| map_image_error(e, format, Some((width, height))))?;
    image.apply_orientation(orientation);
    Ok((image, format))
}

/// The format from the magic bytes; never from a name or a content type.
fn detect(input: &[u8]) -> Result<Format, MediaError> {
    let guessed = ImageReader::new(Cursor::new(input))
        .with_guessed_format()
        .map_err(|e| MediaError::Corrupt(e.to_string()))?
        .format();
    match guessed {
        Some(format) => Format::from_image(format)
            .ok_or_else(|| MediaError::UnsupportedFormat { detected: Some(image_format_name(format)) }),
        None => Err(MediaError::UnsupportedFormat { detected: sniff_other(input).map(str::to_owned) }),
    }
}

/// Display name of a format the image crate recognized but we refuse.
fn image_format_name(format: image::ImageFormat) -> String {
    match format {
        image::ImageFormat::OpenExr => "OpenEXR".to_owned(),
        image::ImageFormat::Farbfeld => "farbfeld".to_owned(),
        other => format!("{other:?}").to_uppercase(),
    }
}

/// A few formats people commonly try to upload that the image crate's magic
/// table does not know, so the error can say what to convert.
fn sniff_other(input: &[u8]) -> Option<&'static str> {
    if input.len() >= 12 && &input[4..8] == b"ftyp" {
        return match &input[8..12] {
            b"heic" | b"heix" | b"hevc" | b"hevx" | b"heim" | b"heis" | b"mif1" | b"msf1" => Some("HEIC"),
            b"avif" | b"avis" => Some("AVIF"),
            _ => Some("ISO media (video?)"),
        };
    }
    if input.starts_with(b"%PDF") {
        return Some("PDF");
    }
    if input.starts_with(b"RIFF") {
        return Some("RIFF (not WebP)");
    }
    None
}

fn map_image_error(e: ImageError, format: Format, dimensions: Option<(u32, u32)>) -> MediaError {
    match (e, dimensions) {
        (ImageError::Limits(_), Some((width, height))) => MediaError::TooManyPixels { width, height },
        (ImageError::Unsupported(u), _) => {
            MediaError::UnsupportedFormat { detected: Some(format!("{format} ({u})")) }
        }
        (e, _) => MediaError::Corrupt(format!("{format}: {e}")),
    }
}

/// Check that a JPEG's marker structure reaches its EOI marker (0xFFD9).
///
/// Walks the segments from SOI, skips each scan's entropy-coded data (where a
/// 0xFF byte is always followed by 0x00 or a restart marker), and succeeds at
/// the first EOI. Bytes after EOI (camera trailers, padding) are ignored. A
/// search for 0xFFD9 alone is not enough: an embedded EXIF thumbnail ends
/// with one too, long before the truncation point.
pub(crate) fn jpeg_complete(data: &[u8]) -> Result<(), String> {
    const TRUNCATED: &str = "JPEG is truncated (no end-of-image marker)";
    if !data.starts_with(&[0xFF, 0xD8]) {
        return Err("JPEG does not start with SOI".to_owned());
    }
    let mut i = 2;
    loop {
        // At a marker: one or more 0xFF fill bytes, then the marker code.
        // Stray bytes before a marker are skipped, as libjpeg does (with a
        // warning); they occur in real-world files and do not hide truncation.
        if data.get(i) != Some(&0xFF) {
            match data[i.min(data.len())..].iter().position(|&b| b == 0xFF) {
                Some(offset) => i += offset,
                None => return Err(TRUNCATED.to_owned()),
            }
        }
        while data.get(i) == Some(&0xFF) {
            i += 1;
        }
        let Some(&marker) = data.get(i) else {
            return Err(TRUNCATED.to_owned());
        };
        i += 1;
        match marker {
            0xD9 => return Ok(()),
            0xD8 => return Err(format!("JPEG: unexpected second SOI at byte {}", i - 2)),
            // Markers without a length field.
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let (Some(&hi), Some(&lo)) = (data.get(i), data.get(i + 1)) else {
            return Err(TRUNCATED.to_owned());
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len < 2 {
            return Err(format!("JPEG: segment length {len} at byte {i}"));
        }
        i += len;
        if i > data.len() {
            return Err(TRUNCATED.to_owned());
        }
        if marker == 0xDA {
            // Start of scan: skip entropy-coded data up to the next real marker.
            loop {
                let Some(offset) = data[i..].iter().position(|&b| b == 0xFF) else {
                    return Err(TRUNCATED.to_owned());
                };
                i += offset;
                match data.get(i + 1) {
                    None => return Err(TRUNCATED.to_owned()),
                    // Stuffed zero or restart marker: still entropy-coded data.
                    Some(0x00 | 0xD0..=0xD7) => i += 2,
                    // Fill byte before a marker.
                    Some(0xFF) => i += 1,
                    Some(_) => break,
                }
            }
        }
    }
}

/// Convert to one of L8, La8, Rgb8, Rgba8, dropping an alpha channel that is
/// fully opaque everywhere (it carries no information and would force PNG).
pub(crate) fn to_8bit(image: DynamicImage) -> DynamicImage {
    let color = image.color();
    match (color.has_color(), color.has_alpha()) {
        (false, false) => match image {
            DynamicImage::ImageLuma8(_) => image,
            other => DynamicImage::ImageLuma8(other.to_luma8()),
        },
        (true, false) => match image {
            DynamicImage::ImageRgb8(_) => image,
            other => DynamicImage::ImageRgb8(other.to_rgb8()),
        },
        (false, true) => {
            let la = match image {
                DynamicImage::ImageLumaA8(la) => la,
                other => other.to_luma_alpha8(),
            };
            if la.pixels().all(|p| p.0[1] == u8::MAX) {
                DynamicImage::ImageLuma8(DynamicImage::ImageLumaA8(la).to_luma8())
            } else {
                DynamicImage::ImageLumaA8(la)
            }
        }
        (true, true) => {
            let rgba = match image {
                DynamicImage::ImageRgba8(rgba) => rgba,
                other => other.to_rgba8(),
            };
            if rgba.pixels().all(|p| p.0[3] == u8::MAX) {
                DynamicImage::ImageRgb8(DynamicImage::ImageRgba8(rgba).to_rgb8())
            } else {
                DynamicImage::ImageRgba8(rgba)
            }
        }
    }
}

/// Encode an 8-bit image (see [`to_8bit`]): PNG if it has an alpha channel,
/// JPEG at `jpeg_quality` otherwise. Neither encoder writes metadata.
pub(crate) fn encode(image: &DynamicImage, jpeg_quality: u8) -> Result<(Vec<u8>, Format), MediaError> {
    let (width, height) = (image.width(), image.height());
    let color = image.color();
    let mut out = Vec::new();
    let format = if color.has_alpha() {
        PngEncoder::new(&mut out)
            .write_image(image.as_bytes(), width, height, color.into())
            .map_err(|e| MediaError::Encode(format!("PNG: {e}")))?;
        Format::Png
    } else {
        JpegEncoder::new_with_quality(&mut out, jpeg_quality)
            .write_image(image.as_bytes(), width, height, color.into())
            .map_err(|e| MediaError::Encode(format!("JPEG: {e}")))?;
        Format::Jpeg
    };
    Ok((out, format))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg_scanner_handles_stuffing_restart_and_fill() {
        // SOI, APP0 (len 4: 2 payload bytes), SOS (len 3: 1 payload byte),
        // entropy data with FF00, RST0, fill FF FF, then EOI.
        let ok = [
            0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0xAA, 0xBB, 0xFF, 0xDA, 0x00, 0x03, 0x01, 0x12, 0xFF, 0x00,
            0x34, 0xFF, 0xD0, 0x56, 0xFF, 0xFF, 0xD9, 0x00, 0x00,
        ];
        assert_eq!(jpeg_complete(&ok), Ok(()));
        for cut in 0..ok.len() - 3 {
            assert!(jpeg_complete(&ok[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn jpeg_scanner_ignores_eoi_inside_segments() {
        // An APP1 payload holding FF D9 (like an EXIF thumbnail's end) must
        // not count as the end of the image.
        let truncated = [0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x04, 0xFF, 0xD9, 0xFF, 0xDA, 0x00, 0x03, 0x01, 0x12];
        assert!(jpeg_complete(&truncated).is_err());
    }

    #[test]
    fn jpeg_scanner_skips_stray_bytes_between_segments() {
        let ok = [0xFF, 0xD8, 0x00, 0x17, 0xFF, 0xE0, 0x00, 0x02, 0x42, 0xFF, 0xD9];
        assert_eq!(jpeg_complete(&ok), Ok(()));
        assert!(jpeg_complete(&ok[..9]).is_err());
    }
}

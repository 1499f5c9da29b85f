//! Thumbnails of a normalized photo.

use fast_image_resize::images::{TypedImage, TypedImageRef};
use fast_image_resize::pixels::{U8x3, U8x4};
use fast_image_resize::{FilterType, PixelTrait, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, RgbImage, RgbaImage};

use crate::normalize::{decode, encode, to_8bit};
use crate::{Format, Limits, MediaError};

/// Long side, in pixels, of each thumbnail [`thumbnails`] makes: feed
/// avatars/grids, feed cards, full-screen view.
pub const THUMB_SIZES: [u32; 3] = [160, 640, 1280];

/// JPEG quality of a thumbnail.
const THUMB_JPEG_QUALITY: u8 = 85;

/// One thumbnail of a photo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbnail {
    /// The entry of [`THUMB_SIZES`] this thumbnail was made for, so callers can
    /// name it (the image itself is smaller when the photo is smaller).
    pub size: u32,
    /// Encoded thumbnail: JPEG quality 85, or PNG if the photo has transparency.
    pub bytes: Vec<u8>,
    /// Format of `bytes`.
    pub format: Format,
    /// Actual width in pixels, for `<img width>` so pages do not reflow.
    pub width: u32,
    /// Actual height in pixels, for `<img height>`.
    pub height: u32,
}

/// Make one thumbnail per entry of [`THUMB_SIZES`], in that order, from a
/// normalized photo (the `bytes` of a [`crate::Normalized`]), decoding it
/// once, with the default [`Limits`].
///
/// Each thumbnail keeps the aspect ratio, with its long side equal to the
/// size; a photo smaller than a size is never upscaled: that thumbnail has the
/// photo's own dimensions. The output is deterministic: the same input gives
/// the same bytes on every run.
pub fn thumbnails(normalized: &[u8]) -> Result<Vec<Thumbnail>, MediaError> {
    thumbnails_with_limits(normalized, &Limits::default())
}

/// [`thumbnails`] for photos normalized with non-default [`Limits`].
pub fn thumbnails_with_limits(normalized: &[u8], limits: &Limits) -> Result<Vec<Thumbnail>, MediaError> {
    let (image, _) = decode(normalized, limits)?;
    let image = to_8bit(image);
    let (width, height) = (image.width(), image.height());
    let gray = !image.color().has_color();
    // Resize only RGB8 and RGBA8: every pixel type the resizer handles is a
    // separate copy of its convolution code compiled into this crate.
    let source = if image.color().has_alpha() {
        DynamicImage::ImageRgba8(image.to_rgba8())
    } else {
        DynamicImage::ImageRgb8(image.to_rgb8())
    };
    drop(image);
    let mut resizer = Resizer::new();

    let mut out = Vec::with_capacity(THUMB_SIZES.len());
    for size in THUMB_SIZES {
        let (w, h) = fit_within(width, height, size);
        let resized = match &source {
            DynamicImage::ImageRgba8(rgba) => DynamicImage::ImageRgba8(
                RgbaImage::from_raw(
                    w,
                    h,
                    resize::<U8x4>(&mut resizer, rgba.as_raw(), (width, height), (w, h))?,
                )
                .ok_or_else(wrong_size)?,
            ),
            DynamicImage::ImageRgb8(rgb) => DynamicImage::ImageRgb8(
                RgbImage::from_raw(
                    w,
                    h,
                    resize::<U8x3>(&mut resizer, rgb.as_raw(), (width, height), (w, h))?,
                )
                .ok_or_else(wrong_size)?,
            ),
            _ => return Err(wrong_size()),
        };
        let resized = match (gray, resized) {
            (true, DynamicImage::ImageRgba8(rgba)) => {
                DynamicImage::ImageLumaA8(DynamicImage::ImageRgba8(rgba).to_luma_alpha8())
            }
            (true, DynamicImage::ImageRgb8(rgb)) => {
                DynamicImage::ImageLuma8(DynamicImage::ImageRgb8(rgb).to_luma8())
            }
            (_, color) => color,
        };
        let (bytes, format) = encode(&resized, THUMB_JPEG_QUALITY)?;
        out.push(Thumbnail { size, bytes, format, width: w, height: h });
    }
    Ok(out)
}

fn wrong_size() -> MediaError {
    MediaError::Encode("resizer buffer has the wrong size".to_owned())
}

/// Resize packed 8-bit pixels of type `P` with Lanczos3 (alpha-aware for RGBA).
fn resize<P: PixelTrait>(
    resizer: &mut Resizer,
    source: &[u8],
    (width, height): (u32, u32),
    (w, h): (u32, u32),
) -> Result<Vec<u8>, MediaError> {
    let source = TypedImageRef::<P>::from_buffer(width, height, source)
        .map_err(|e| MediaError::Encode(format!("resizer source: {e}")))?;
    let mut buf = vec![0u8; w as usize * h as usize * P::size()];
    let mut target = TypedImage::<P>::from_buffer(w, h, &mut buf)
        .map_err(|e| MediaError::Encode(format!("resizer target: {e}")))?;
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3));
    resizer
        .resize_typed(&source, &mut target, &options)
        .map_err(|e| MediaError::Encode(format!("resize to {w}x{h}: {e}")))?;
    drop(target);
    Ok(buf)
}

/// Dimensions with the long side at most `size`, aspect kept, the short side
/// rounded to nearest and at least 1; never larger than the original.
pub(crate) fn fit_within(width: u32, height: u32, size: u32) -> (u32, u32) {
    let long = width.max(height);
    if long <= size {
        return (width, height);
    }
    let scale = |short: u32| -> u32 {
        let scaled = (u64::from(short) * u64::from(size) * 2 + u64::from(long)) / (2 * u64::from(long));
        // scaled <= size because short <= long.
        u32::try_from(scaled).unwrap_or(size).max(1)
    };
    if width >= height { (size, scale(height)) } else { (scale(width), size) }
}

#[cfg(test)]
mod tests {
    use super::fit_within;

    #[test]
    fn fit_keeps_aspect_and_never_upscales() {
        assert_eq!(fit_within(4000, 3000, 1280), (1280, 960));
        assert_eq!(fit_within(3000, 4000, 160), (120, 160));
        assert_eq!(fit_within(100, 50, 160), (100, 50));
        assert_eq!(fit_within(160, 90, 160), (160, 90));
        assert_eq!(fit_within(20_000, 1, 160), (160, 1));
        assert_eq!(fit_within(1, 20_000, 640), (1, 640));
        // 1000x333 → 160x53.28 rounds to 53; 1000x335 → 53.6 rounds to 54.
        assert_eq!(fit_within(1000, 333, 160), (160, 53));
        assert_eq!(fit_within(1000, 335, 160), (160, 54));
    }
}

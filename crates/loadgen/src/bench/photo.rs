//! The photos of photo posts: small JPEGs, each with content of its own.

/// Size of the generated photos: an 8 × 8 grid of 24 × 16 px blocks, each dark
/// or light by one bit of a number unique to the post, so that every photo (and
/// its normalized copy) has its own content hash.
const PHOTO_WIDTH: u32 = 192;
/// Height of the generated photos (see [`PHOTO_WIDTH`]).
const PHOTO_HEIGHT: u32 = 128;

/// A small JPEG whose pixels encode `bits` (see [`PHOTO_WIDTH`]).
pub(super) fn photo_jpeg(bits: u64) -> Vec<u8> {
    let img = image::RgbImage::from_fn(PHOTO_WIDTH, PHOTO_HEIGHT, |x, y| {
        let bit = (y / 16) * 8 + x / 24;
        let v = if (bits >> bit) & 1 == 1 { 230 } else { 25 };
        image::Rgb([v, v / 2 + 60, 255 - v])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).expect("encoding a JPEG in memory");
    out.into_inner()
}

#[cfg(test)]
mod tests {
    use super::photo_jpeg;

    #[test]
    fn generated_photos_differ_and_are_jpegs() {
        let a = photo_jpeg(1);
        let b = photo_jpeg(2);
        assert!(a.starts_with(&[0xff, 0xd8]) && b.starts_with(&[0xff, 0xd8]));
        assert_ne!(a, b);
        assert_eq!(a, photo_jpeg(1));
    }
}

//! normalize() and thumbnails() on images generated here (no binary fixtures).

use std::io::Cursor;
use std::time::Instant;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::codecs::webp::WebPEncoder;
use image::{DynamicImage, GenericImageView, ImageEncoder, ImageReader, Rgb, RgbImage, Rgba, RgbaImage};
use media::{Format, Limits, MediaError, THUMB_SIZES, normalize, thumbnails};

/// A photo-like RGB image: gradients plus deterministic noise, so JPEGs are
/// realistically sized and the resizer has detail to work on.
fn photo(width: u32, height: u32) -> RgbImage {
    let mut state: u32 = 0x1234_5678;
    RgbImage::from_fn(width, height, |x, y| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let noise = (state & 0x1F) as u8;
        Rgb([
            ((x * 255 / width) as u8).wrapping_add(noise),
            ((y * 255 / height) as u8).wrapping_add(noise / 2),
            (((x + y) * 127 / (width + height)) as u8).wrapping_add(noise),
        ])
    })
}

fn jpeg(image: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, quality)
        .write_image(image.as_raw(), image.width(), image.height(), image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

fn png(image: &DynamicImage) -> Vec<u8> {
    let mut out = Vec::new();
    PngEncoder::new(&mut out)
        .write_image(image.as_bytes(), image.width(), image.height(), image.color().into())
        .unwrap();
    out
}

fn webp(image: &DynamicImage) -> Vec<u8> {
    let mut out = Vec::new();
    WebPEncoder::new_lossless(&mut out)
        .write_image(image.as_bytes(), image.width(), image.height(), image.color().into())
        .unwrap();
    out
}

fn decode(bytes: &[u8]) -> DynamicImage {
    ImageReader::new(Cursor::new(bytes)).with_guessed_format().unwrap().decode().unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A PNG-spec CRC-32 (IEEE, reflected), bit by bit: tests only.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A valid PNG whose IHDR claims `width`x`height` (CRC fixed up), while the
/// data holds a single pixel.
fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = png(&DynamicImage::ImageRgb8(RgbImage::new(1, 1)));
    // 8-byte signature, then IHDR: length(4) "IHDR"(4) width(4) height(4) ...
    assert_eq!(&bytes[12..16], b"IHDR");
    bytes[16..20].copy_from_slice(&width.to_be_bytes());
    bytes[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

/// An EXIF APP1 segment holding one IFD0 entry: Orientation (0x0112) = `value`.
fn exif_orientation_segment(value: u16) -> Vec<u8> {
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"II*\0"); // little-endian TIFF header
    tiff.extend_from_slice(&8u32.to_le_bytes()); // IFD0 right after the header
    tiff.extend_from_slice(&1u16.to_le_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_le_bytes()); // tag: Orientation
    tiff.extend_from_slice(&3u16.to_le_bytes()); // type: SHORT
    tiff.extend_from_slice(&1u32.to_le_bytes()); // count
    tiff.extend_from_slice(&u32::from(value).to_le_bytes()); // value, left-aligned
    tiff.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend_from_slice(&tiff);
    let mut segment = vec![0xFF, 0xE1];
    segment.extend_from_slice(&u16::try_from(payload.len() + 2).unwrap().to_be_bytes());
    segment.extend_from_slice(&payload);
    segment
}

fn assert_thumbnail_dims(normalized: &[u8], expected: [(u32, u32); 3]) -> Vec<media::Thumbnail> {
    let thumbs = thumbnails(normalized).unwrap();
    assert_eq!(thumbs.len(), THUMB_SIZES.len());
    for ((thumb, size), (w, h)) in thumbs.iter().zip(THUMB_SIZES).zip(expected) {
        assert_eq!(thumb.size, size);
        assert_eq!((thumb.width, thumb.height), (w, h), "size {size}");
        assert_eq!(decode(&thumb.bytes).dimensions(), (w, h), "size {size}");
    }
    thumbs
}

#[test]
fn twelve_megapixel_jpeg_normalizes_and_thumbnails() {
    let original = jpeg(&photo(4000, 3000), 92);
    let started = Instant::now();
    let normalized = normalize(&original, &Limits::default()).unwrap();
    let normalize_time = started.elapsed();
    assert_eq!(normalized.source_format, Format::Jpeg);
    assert_eq!(normalized.format, Format::Jpeg);
    assert_eq!((normalized.width, normalized.height), (4000, 3000));
    assert_eq!(decode(&normalized.bytes).dimensions(), (4000, 3000));

    let started = Instant::now();
    let thumbs = assert_thumbnail_dims(&normalized.bytes, [(160, 120), (640, 480), (1280, 960)]);
    let thumbs_time = started.elapsed();
    for thumb in &thumbs {
        assert_eq!(thumb.format, Format::Jpeg);
        assert!(thumb.bytes.starts_with(&[0xFF, 0xD8, 0xFF]));
    }
    assert!(thumbs[0].bytes.len() < thumbs[1].bytes.len());
    assert!(thumbs[1].bytes.len() < thumbs[2].bytes.len());
    eprintln!("12 MP: normalize {normalize_time:?}, thumbnails {thumbs_time:?}");
}

#[test]
fn thumbnails_are_deterministic() {
    let normalized = normalize(&jpeg(&photo(1600, 900), 90), &Limits::default()).unwrap();
    let first = thumbnails(&normalized.bytes).unwrap();
    let second = thumbnails(&normalized.bytes).unwrap();
    assert_eq!(first, second);
    // normalize is deterministic too.
    let again = normalize(&jpeg(&photo(1600, 900), 90), &Limits::default()).unwrap();
    assert_eq!(normalized, again);
    assert_eq!(
        [(first[0].width, first[0].height), (first[2].width, first[2].height)],
        [(160, 90), (1280, 720)]
    );
}

#[test]
fn small_png_is_never_upscaled() {
    let small = DynamicImage::ImageRgb8(photo(100, 50));
    let normalized = normalize(&png(&small), &Limits::default()).unwrap();
    assert_eq!(normalized.source_format, Format::Png);
    // Opaque: re-encoded as JPEG.
    assert_eq!(normalized.format, Format::Jpeg);
    assert_eq!((normalized.width, normalized.height), (100, 50));
    assert_thumbnail_dims(&normalized.bytes, [(100, 50); 3]);

    // Between sizes: only the larger thumbnails keep the original size.
    let mid = normalize(&jpeg(&photo(300, 900), 90), &Limits::default()).unwrap();
    assert_thumbnail_dims(&mid.bytes, [(53, 160), (213, 640), (300, 900)]);
}

#[test]
fn png_with_alpha_stays_png() {
    let rgba = RgbaImage::from_fn(700, 300, |x, y| {
        Rgba([(x % 256) as u8, (y % 256) as u8, 80, ((x + y) % 256) as u8])
    });
    let normalized = normalize(&png(&DynamicImage::ImageRgba8(rgba)), &Limits::default()).unwrap();
    assert_eq!(normalized.format, Format::Png);
    assert!(decode(&normalized.bytes).color().has_alpha());
    let thumbs = assert_thumbnail_dims(&normalized.bytes, [(160, 69), (640, 274), (700, 300)]);
    for thumb in thumbs {
        assert_eq!(thumb.format, Format::Png);
        assert!(decode(&thumb.bytes).color().has_alpha());
    }
}

#[test]
fn fully_opaque_alpha_channel_becomes_jpeg() {
    let rgba = RgbaImage::from_fn(64, 32, |x, y| Rgba([x as u8, y as u8, 7, 255]));
    let normalized = normalize(&png(&DynamicImage::ImageRgba8(rgba)), &Limits::default()).unwrap();
    assert_eq!(normalized.format, Format::Jpeg);
}

#[test]
fn exif_orientation_is_applied_and_metadata_stripped() {
    // Top half red, bottom half blue, stored 40 wide x 20 high.
    let stored = RgbImage::from_fn(40, 20, |_, y| if y < 10 { Rgb([255, 0, 0]) } else { Rgb([0, 0, 255]) });
    let plain = jpeg(&stored, 95);
    let mut with_exif = plain[..2].to_vec();
    with_exif.extend_from_slice(&exif_orientation_segment(6));
    with_exif.extend_from_slice(&plain[2..]);
    assert!(contains(&with_exif, b"Exif\0\0"));

    let normalized = normalize(&with_exif, &Limits::default()).unwrap();
    assert_eq!((normalized.width, normalized.height), (20, 40));
    assert!(!contains(&normalized.bytes, b"Exif"), "EXIF survived");
    assert!(!contains(&normalized.bytes, b"ICC_PROFILE"));

    // Orientation 6 = rotate 90° clockwise to display: the stored top (red)
    // ends up on the right.
    let shown = decode(&normalized.bytes).to_rgb8();
    assert_eq!(shown.dimensions(), (20, 40));
    let right = shown.get_pixel(15, 20);
    let left = shown.get_pixel(4, 20);
    assert!(right[0] > 200 && right[2] < 60, "right side is {right:?}");
    assert!(left[2] > 200 && left[0] < 60, "left side is {left:?}");
}

#[test]
fn webp_is_accepted() {
    let opaque = normalize(&webp(&DynamicImage::ImageRgb8(photo(120, 80))), &Limits::default()).unwrap();
    assert_eq!(opaque.source_format, Format::WebP);
    assert_eq!(opaque.format, Format::Jpeg);
    assert_eq!((opaque.width, opaque.height), (120, 80));

    let translucent = RgbaImage::from_fn(30, 40, |x, _| Rgba([9, 9, 9, (x * 8) as u8]));
    let translucent = normalize(&webp(&DynamicImage::ImageRgba8(translucent)), &Limits::default()).unwrap();
    assert_eq!(translucent.source_format, Format::WebP);
    assert_eq!(translucent.format, Format::Png);
}

#[test]
fn grayscale_stays_grayscale() {
    let gray =
        DynamicImage::ImageLuma8(image::GrayImage::from_fn(90, 60, |x, y| image::Luma([(x + y) as u8])));
    let normalized = normalize(&png(&gray), &Limits::default()).unwrap();
    assert_eq!(normalized.format, Format::Jpeg);
    assert!(!decode(&normalized.bytes).color().has_color());
    let thumbs = thumbnails(&normalized.bytes).unwrap();
    assert!(!decode(&thumbs[0].bytes).color().has_color());
}

#[test]
fn sixteen_bit_png_is_accepted() {
    let deep = DynamicImage::ImageRgb16(image::ImageBuffer::from_fn(50, 40, |x, y| {
        image::Rgb([(x * 1000) as u16, (y * 1000) as u16, 60_000])
    }));
    let normalized = normalize(&png(&deep), &Limits::default()).unwrap();
    assert_eq!(normalized.format, Format::Jpeg);
    assert_eq!((normalized.width, normalized.height), (50, 40));
}

#[test]
fn non_images_are_unsupported_whatever_their_name() {
    let unsupported =
        |detected: Option<&str>| MediaError::UnsupportedFormat { detected: detected.map(str::to_owned) };
    let cases: [(&[u8], Option<&str>); 7] = [
        (b"hello, this is a text file named cat.jpg\n", None),
        (b"<!DOCTYPE html><html><script>alert(1)</script></html>", None),
        (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!", Some("GIF")),
        (b"GIF87a\x01\x00\x01\x00\x00\x00\x00", Some("GIF")),
        (b"BM\x3a\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00", Some("BMP")),
        (b"II*\x00\x08\x00\x00\x00\x00\x00", Some("TIFF")),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", Some("HEIC")),
    ];
    for (bytes, detected) in cases {
        assert_eq!(
            normalize(bytes, &Limits::default()),
            Err(unsupported(detected)),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    // The message names what was found.
    let err = normalize(b"GIF89a\x01\x00\x01\x00", &Limits::default()).unwrap_err();
    assert_eq!(err.to_string(), "unsupported image format: GIF");
}

#[test]
fn truncated_images_are_corrupt() {
    let full_jpeg = jpeg(&photo(640, 480), 90);
    assert!(normalize(&full_jpeg, &Limits::default()).is_ok());
    let half = &full_jpeg[..full_jpeg.len() / 2];
    assert!(
        matches!(normalize(half, &Limits::default()), Err(MediaError::Corrupt(_))),
        "{:?}",
        normalize(half, &Limits::default())
    );
    // Cut just before the EOI marker.
    let no_eoi = &full_jpeg[..full_jpeg.len() - 2];
    assert!(matches!(normalize(no_eoi, &Limits::default()), Err(MediaError::Corrupt(_))));
    // Trailing bytes after EOI (camera trailers, padding) are fine.
    let mut padded = full_jpeg.clone();
    padded.extend_from_slice(&[0; 64]);
    assert!(normalize(&padded, &Limits::default()).is_ok());

    let full_png = png(&DynamicImage::ImageRgb8(photo(640, 480)));
    let half = &full_png[..full_png.len() / 2];
    assert!(
        matches!(normalize(half, &Limits::default()), Err(MediaError::Corrupt(_))),
        "{:?}",
        normalize(half, &Limits::default())
    );

    let full_webp = webp(&DynamicImage::ImageRgb8(photo(640, 480)));
    let half = &full_webp[..full_webp.len() / 2];
    assert!(
        matches!(normalize(half, &Limits::default()), Err(MediaError::Corrupt(_))),
        "{:?}",
        normalize(half, &Limits::default())
    );

    // Only a header.
    assert!(matches!(normalize(b"\x89PNG\r\n\x1a\n", &Limits::default()), Err(MediaError::Corrupt(_))));
    assert!(matches!(normalize(&[0xFF, 0xD8, 0xFF], &Limits::default()), Err(MediaError::Corrupt(_))));
}

#[test]
fn empty_and_oversized_uploads_are_refused() {
    assert_eq!(normalize(&[], &Limits::default()), Err(MediaError::Empty));

    let bytes = jpeg(&photo(200, 200), 90);
    let limits = Limits { max_bytes: 1000, ..Limits::default() };
    assert_eq!(normalize(&bytes, &limits), Err(MediaError::TooLarge { size: bytes.len(), max: 1000 }));
    // The default limit is 10 MiB, checked before looking inside.
    let huge = vec![0u8; 10 * 1024 * 1024 + 1];
    assert!(matches!(normalize(&huge, &Limits::default()), Err(MediaError::TooLarge { .. })));
}

#[test]
fn decompression_bomb_is_refused_from_the_header() {
    let bomb = png_declaring(100_000, 100_000);
    assert!(bomb.len() < 100);
    assert_eq!(
        normalize(&bomb, &Limits::default()),
        Err(MediaError::TooManyPixels { width: 100_000, height: 100_000 })
    );
    // Under the side limit but over the pixel limit.
    assert_eq!(
        normalize(&png_declaring(19_000, 19_000), &Limits::default()),
        Err(MediaError::TooManyPixels { width: 19_000, height: 19_000 })
    );
    // Over the side limit but under the pixel limit: a strip.
    assert_eq!(
        normalize(&png_declaring(30_000, 10), &Limits::default()),
        Err(MediaError::TooManyPixels { width: 30_000, height: 10 })
    );

    // A JPEG whose frame header claims 60000x60000.
    let mut jpeg_bomb = jpeg(&photo(16, 16), 90);
    let sof = jpeg_bomb.windows(2).position(|w| w == [0xFF, 0xC0]).expect("baseline SOF0");
    // FFC0, length(2), precision(1), height(2), width(2)
    jpeg_bomb[sof + 5..sof + 7].copy_from_slice(&60_000u16.to_be_bytes());
    jpeg_bomb[sof + 7..sof + 9].copy_from_slice(&60_000u16.to_be_bytes());
    assert_eq!(
        normalize(&jpeg_bomb, &Limits::default()),
        Err(MediaError::TooManyPixels { width: 60_000, height: 60_000 })
    );
}

#[test]
fn custom_limits_apply() {
    let bytes = png(&DynamicImage::ImageRgb8(photo(100, 50)));
    let strict = Limits { max_side: 80, ..Limits::default() };
    assert_eq!(normalize(&bytes, &strict), Err(MediaError::TooManyPixels { width: 100, height: 50 }));
    let few_pixels = Limits { max_pixels: 4999, ..Limits::default() };
    assert!(matches!(normalize(&bytes, &few_pixels), Err(MediaError::TooManyPixels { .. })));
    let exact = Limits { max_pixels: 5000, max_side: 100, ..Limits::default() };
    assert!(normalize(&bytes, &exact).is_ok());
}

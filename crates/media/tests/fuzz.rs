//! Property-based fuzzing of the upload validator, [`media::normalize`], for every
//! format it accepts (JPEG, PNG, WebP), and of object keys (docs/SECURITY.md).
//!
//! Inputs: arbitrary bytes, bytes behind each format's magic, and valid images
//! generated here (every color type each encoder writes) then mutated: bytes
//! changed, inserted or cut, and a 32-bit field overwritten with a random value
//! (where the header's width and height are, a decompression bomb). Whatever the
//! input, `normalize` returns an image within the limits, which decodes to what it
//! says, or an error that says why; a valid image is accepted with its
//! dimensions. Decoding is the expensive part, so these run a quarter of
//! `PROPTEST_CASES` each (64 by default; `make fuzz` runs many more).

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::codecs::webp::WebPEncoder;
use image::{ExtendedColorType, ImageEncoder, ImageReader};
use media::{Format, Limits, MediaError, ObjectKey, content_key, normalize, thumbnails_with_limits};
use proptest::prelude::*;
use proptest::sample::Index;

/// Small limits, so that a mutated header declaring a large image is refused or
/// decodes quickly; the checks are the same as with the defaults.
const LIMITS: Limits = Limits { max_bytes: 256 * 1024, max_pixels: 128 * 128, max_side: 512 };

/// A valid image: its encoded bytes, format and dimensions.
#[derive(Debug, Clone)]
struct Valid {
    bytes: Vec<u8>,
    format: Format,
    width: u32,
    height: u32,
}

/// `width` × `height` pixels of `bytes_per_pixel` bytes, in a pattern with some
/// noise so that encoders have something to encode.
fn pixels(width: u32, height: u32, bytes_per_pixel: usize, seed: u8) -> Vec<u8> {
    let n = width as usize * height as usize * bytes_per_pixel;
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i / 7) as u8)).collect()
}

fn valid() -> impl Strategy<Value = Valid> {
    let format = prop::sample::select(vec![Format::Jpeg, Format::Png, Format::WebP]);
    (format, 1u32..48, 1u32..48, any::<u8>(), any::<Index>()).prop_map(
        |(format, width, height, seed, kind)| {
            let mut bytes = Vec::new();
            match format {
                Format::Jpeg => {
                    let color = [ExtendedColorType::L8, ExtendedColorType::Rgb8][kind.index(2)];
                    let data = pixels(width, height, color.bits_per_pixel() as usize / 8, seed);
                    JpegEncoder::new_with_quality(&mut bytes, 80).write_image(&data, width, height, color)
                }
                Format::Png => {
                    let colors = [
                        ExtendedColorType::L8,
                        ExtendedColorType::La8,
                        ExtendedColorType::Rgb8,
                        ExtendedColorType::Rgba8,
                        ExtendedColorType::L16,
                        ExtendedColorType::Rgb16,
                        ExtendedColorType::Rgba16,
                    ];
                    let color = colors[kind.index(colors.len())];
                    let data = pixels(width, height, color.bits_per_pixel() as usize / 8, seed);
                    PngEncoder::new(&mut bytes).write_image(&data, width, height, color)
                }
                Format::WebP => {
                    let color = [ExtendedColorType::Rgb8, ExtendedColorType::Rgba8][kind.index(2)];
                    let data = pixels(width, height, color.bits_per_pixel() as usize / 8, seed);
                    WebPEncoder::new_lossless(&mut bytes).write_image(&data, width, height, color)
                }
            }
            .expect("the encoder takes its own color types");
            Valid { bytes, format, width, height }
        },
    )
}

/// One change to a file's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    /// A byte replaced.
    Byte(Index, u8),
    /// Bytes inserted.
    Insert(Index, Vec<u8>),
    /// A range removed.
    Remove(Index, usize),
    /// The file cut short.
    Truncate(Index),
    /// A 32-bit field overwritten, big- or little-endian (width and height are
    /// 32-bit big-endian in PNG, 14-bit little-endian in WebP lossless, 16-bit
    /// big-endian in JPEG: these land on them often enough in small files).
    Field(Index, u32, bool),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Byte(i, b)),
        1 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<Index>(), 1usize..64).prop_map(|(i, n)| Mutation::Remove(i, n)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        2 => (any::<Index>(), any::<u32>(), any::<bool>()).prop_map(|(i, v, be)| Mutation::Field(i, v, be)),
    ]
}

impl Mutation {
    fn apply(&self, bytes: &mut Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        match self {
            Mutation::Byte(i, b) => {
                let k = i.index(bytes.len());
                bytes[k] = *b;
            }
            Mutation::Insert(i, more) => {
                let k = i.index(bytes.len() + 1);
                bytes.splice(k..k, more.iter().copied());
            }
            Mutation::Remove(i, n) => {
                let k = i.index(bytes.len());
                bytes.drain(k..(k + n).min(bytes.len()));
            }
            Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len())),
            Mutation::Field(i, v, big_endian) => {
                let k = i.index(bytes.len());
                let field = if *big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
                for (j, b) in field.into_iter().enumerate() {
                    if let Some(slot) = bytes.get_mut(k + j) {
                        *slot = b;
                    }
                }
            }
        }
    }
}

/// Check what `normalize` made of `input`: an image within the limits that
/// decodes to what it says, or an error with a message.
fn judged(input: &[u8]) -> Result<(), TestCaseError> {
    match normalize(input, &LIMITS) {
        Ok(n) => {
            prop_assert!(n.width >= 1 && n.height >= 1);
            prop_assert!(n.width <= LIMITS.max_side && n.height <= LIMITS.max_side);
            prop_assert!(u64::from(n.width) * u64::from(n.height) <= LIMITS.max_pixels);
            prop_assert!(matches!(n.format, Format::Jpeg | Format::Png), "never WebP out");
            let back = ImageReader::with_format(
                Cursor::new(&n.bytes),
                image::ImageFormat::from_extension(n.format.extension()).unwrap(),
            )
            .decode()
            .map_err(|e| TestCaseError::fail(format!("the normalized image does not decode: {e}")))?;
            prop_assert_eq!((back.width(), back.height()), (n.width, n.height));
            // The worker's step after it takes what this one gave.
            let thumbs = thumbnails_with_limits(&n.bytes, &LIMITS)
                .map_err(|e| TestCaseError::fail(format!("no thumbnails: {e}")))?;
            prop_assert_eq!(thumbs.len(), media::THUMB_SIZES.len());
        }
        Err(e) => {
            prop_assert!(!e.to_string().trim().is_empty());
            prop_assert!(
                !matches!(e, MediaError::Encode(_)),
                "a refused upload is the uploader's fault: {}",
                e
            );
            if input.is_empty() {
                prop_assert_eq!(e, MediaError::Empty);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(settings::fuzz::config(0.25))]

    #[test]
    fn a_valid_image_is_accepted_with_its_dimensions(image in valid()) {
        let n = normalize(&image.bytes, &LIMITS).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!((n.width, n.height, n.source_format), (image.width, image.height, image.format));
        judged(&image.bytes)?;
    }

    #[test]
    fn a_mutated_image_is_accepted_within_the_limits_or_refused(
        image in valid(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let mut bytes = image.bytes;
        for m in &mutations {
            m.apply(&mut bytes);
        }
        judged(&bytes)?;
    }

    #[test]
    fn arbitrary_bytes_are_refused_with_a_reason(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..512),
            // Behind a magic number, so the decoders themselves see them.
            (
                prop::sample::select(vec![
                    &b"\xFF\xD8\xFF"[..],
                    b"\x89PNG\r\n\x1a\n",
                    b"RIFF\x00\x01\x00\x00WEBPVP8L",
                    b"RIFF\x00\x01\x00\x00WEBPVP8 ",
                    b"RIFF\x00\x01\x00\x00WEBPVP8X",
                    b"GIF89a",
                    b"\x00\x00\x00\x18ftypheic",
                ]),
                prop::collection::vec(any::<u8>(), 0..512),
            )
                .prop_map(|(magic, rest)| [magic, &rest[..]].concat()),
        ],
    ) {
        judged(&bytes)?;
    }
}

proptest! {
    #![proptest_config(settings::fuzz::config(1.0))]

    #[test]
    fn object_keys_are_exactly_a_hash_and_a_known_extension(s in prop_oneof![
        any::<String>(),
        "[0-9a-fA-F]{62,66}\\.(jpg|png|webp|gif|JPG|jpg/\\.\\.|)",
        "[0-9a-f]{64}[./][a-z]{0,5}",
    ]) {
        match ObjectKey::parse(&s) {
            Ok(key) => {
                prop_assert_eq!(key.as_str(), &s);
                let (hash, ext) = s.split_once('.').unwrap();
                prop_assert!(hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
                prop_assert_eq!(key.format().extension(), ext);
                prop_assert!(!s.contains('/'));
            }
            Err(e) => prop_assert!(!e.reason.is_empty()),
        }
    }

    #[test]
    fn a_content_key_parses_back_to_itself(
        bytes in prop::collection::vec(any::<u8>(), 0..64),
        format in prop::sample::select(vec![Format::Jpeg, Format::Png, Format::WebP]),
    ) {
        let key = content_key(&bytes, format);
        prop_assert_eq!(ObjectKey::parse(key.as_str()), Ok(key.clone()));
        prop_assert_eq!(key.format(), format);
    }
}

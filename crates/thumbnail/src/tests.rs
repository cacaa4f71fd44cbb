//! Unit tests. Every input image is generated here; there are no fixtures.

use std::io::Cursor;
use std::path::PathBuf;

use image::{ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use serde_json::json;

use super::*;

fn params(width: Option<u32>, height: Option<u32>, fit: Fit, format: Format) -> Params {
    Params {
        width,
        height,
        fit,
        format,
        quality: DEFAULT_QUALITY,
    }
}

/// A smooth RGB gradient (compresses and resizes predictably).
fn gradient(w: u32, h: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
        Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 128])
    }))
}

fn encode_as(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut buf = Cursor::new(Vec::new());
    img.write_to(&mut buf, format).expect("encode test image");
    buf.into_inner()
}

struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new() -> Case {
        Case {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).expect("write input");
        p
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn run(&self, input: &Path, p: &Params) -> Result<(Thumb, Vec<u8>), ThumbError> {
        self.run_with(input, p, &Limits::default())
    }

    fn run_with(
        &self,
        input: &Path,
        p: &Params,
        limits: &Limits,
    ) -> Result<(Thumb, Vec<u8>), ThumbError> {
        let out = self.out();
        let thumb = make_thumbnail(input, &out, p, limits)?;
        let bytes = std::fs::read(&out).expect("read output");
        assert_eq!(
            thumb.bytes,
            bytes.len() as u64,
            "Thumb::bytes is the file size"
        );
        Ok((thumb, bytes))
    }
}

fn decode_output(bytes: &[u8]) -> (ImageFormat, DynamicImage) {
    let format = image::guess_format(bytes).expect("output has a known signature");
    let img = image::load_from_memory(bytes).expect("output decodes");
    (format, img)
}

#[test]
fn every_input_format_to_every_output_format_has_requested_size_and_signature() {
    let case = Case::new();
    let src = gradient(640, 480);
    for (in_fmt, name) in [
        (ImageFormat::Jpeg, "in.jpg"),
        (ImageFormat::Png, "in.png"),
        (ImageFormat::WebP, "in.webp"),
        (ImageFormat::Gif, "in.gif"),
    ] {
        let input = case.file(name, &encode_as(&src, in_fmt));
        for (out_fmt, magic, expect_fmt) in [
            (Format::Jpeg, &b"\xFF\xD8\xFF"[..], ImageFormat::Jpeg),
            (Format::Png, &b"\x89PNG\r\n\x1a\n"[..], ImageFormat::Png),
            (Format::Webp, &b"RIFF"[..], ImageFormat::WebP),
        ] {
            let p = params(Some(160), None, Fit::Contain, out_fmt);
            let (thumb, bytes) = case.run(&input, &p).expect("thumbnail");
            assert_eq!(
                (thumb.width, thumb.height, thumb.format),
                (160, 120, out_fmt)
            );
            assert!(
                bytes.starts_with(magic),
                "{name} -> {out_fmt}: bad signature"
            );
            let (got_fmt, img) = decode_output(&bytes);
            assert_eq!(got_fmt, expect_fmt);
            assert_eq!(
                (img.width(), img.height()),
                (160, 120),
                "{name} -> {out_fmt}"
            );
        }
    }
}

#[test]
fn gif_uses_the_first_frame() {
    use image::codecs::gif::GifEncoder;
    use image::{Delay, Frame};

    let case = Case::new();
    let red = RgbaImage::from_pixel(40, 40, Rgba([255, 0, 0, 255]));
    let blue = RgbaImage::from_pixel(40, 40, Rgba([0, 0, 255, 255]));
    let mut buf = Vec::new();
    {
        let mut enc = GifEncoder::new(&mut buf);
        for img in [red, blue] {
            enc.encode_frame(Frame::from_parts(
                img,
                0,
                0,
                Delay::from_numer_denom_ms(100, 1),
            ))
            .expect("gif frame");
        }
    }
    let input = case.file("anim.gif", &buf);
    let (_, bytes) = case
        .run(&input, &params(Some(20), None, Fit::Contain, Format::Png))
        .expect("thumbnail");
    let img = decode_output(&bytes).1.into_rgb8();
    let Rgb([r, _, b]) = *img.get_pixel(10, 10);
    assert!(r > 200 && b < 50, "first frame is red, got r={r} b={b}");
}

#[test]
fn contain_keeps_aspect_ratio_within_one_pixel() {
    let case = Case::new();
    let input = case.file("in.png", &encode_as(&gradient(1000, 333), ImageFormat::Png));
    for (w, h, expect) in [
        (Some(300), None, (300, 100)),
        (None, Some(50), (150, 50)),
        (Some(200), Some(200), (200, 67)),
        (Some(999), Some(10), (30, 10)),
    ] {
        let (t, _) = case
            .run(&input, &params(w, h, Fit::Contain, Format::Png))
            .expect("thumbnail");
        assert!(
            t.width.abs_diff(expect.0) <= 1 && t.height.abs_diff(expect.1) <= 1,
            "{w:?}x{h:?}: got {}x{}, want about {expect:?}",
            t.width,
            t.height
        );
        // The aspect ratio is within a pixel of the source's.
        let implied_h = f64::from(t.width) * 333.0 / 1000.0;
        assert!((implied_h - f64::from(t.height)).abs() <= 1.0);
    }
}

#[test]
fn contain_never_upscales() {
    let case = Case::new();
    let input = case.file("in.png", &encode_as(&gradient(50, 40), ImageFormat::Png));
    let (t, _) = case
        .run(
            &input,
            &params(Some(500), Some(500), Fit::Contain, Format::Png),
        )
        .expect("thumbnail");
    assert_eq!((t.width, t.height), (50, 40));
}

#[test]
fn cover_fills_the_box_exactly_and_crops_the_centre() {
    let case = Case::new();
    // Three vertical bands: red | green | blue. A square cover crop keeps green.
    let src = RgbImage::from_fn(300, 100, |x, _| match x / 100 {
        0 => Rgb([255, 0, 0]),
        1 => Rgb([0, 255, 0]),
        _ => Rgb([0, 0, 255]),
    });
    let input = case.file(
        "bands.png",
        &encode_as(&DynamicImage::ImageRgb8(src), ImageFormat::Png),
    );
    let (t, bytes) = case
        .run(&input, &params(Some(64), Some(64), Fit::Cover, Format::Png))
        .expect("thumbnail");
    assert_eq!((t.width, t.height), (64, 64));
    let img = decode_output(&bytes).1.into_rgb8();
    for x in [2, 32, 61] {
        let Rgb([r, g, b]) = *img.get_pixel(x, 32);
        assert!(
            g > 200 && r < 60 && b < 60,
            "x={x}: {r},{g},{b} is not green"
        );
    }
}

#[test]
fn fill_stretches_to_exact_size() {
    let case = Case::new();
    let input = case.file("in.jpg", &encode_as(&gradient(640, 480), ImageFormat::Jpeg));
    let (t, bytes) = case
        .run(
            &input,
            &params(Some(300), Some(50), Fit::Fill, Format::Jpeg),
        )
        .expect("thumbnail");
    assert_eq!((t.width, t.height), (300, 50));
    let img = decode_output(&bytes).1;
    assert_eq!((img.width(), img.height()), (300, 50));
}

#[test]
fn cover_and_fill_with_one_side_behave_like_contain() {
    let case = Case::new();
    let input = case.file("in.png", &encode_as(&gradient(400, 200), ImageFormat::Png));
    for fit in [Fit::Cover, Fit::Fill] {
        let (t, _) = case
            .run(&input, &params(Some(100), None, fit, Format::Png))
            .expect("thumbnail");
        assert_eq!((t.width, t.height), (100, 50), "{fit}");
    }
}

/// Splices an APP1 Exif segment with the given orientation right after SOI.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    assert_eq!(&jpeg[..2], b"\xFF\xD8", "starts with SOI");
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"MM\x00\x2a"); // big-endian TIFF header
    tiff.extend_from_slice(&8u32.to_be_bytes()); // offset of IFD0
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // tag: Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // type: SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // count
    tiff.extend_from_slice(&orientation.to_be_bytes()); // value, left-justified
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let mut payload = b"Exif\x00\x00".to_vec();
    payload.extend_from_slice(&tiff);
    let len = u16::try_from(payload.len() + 2).expect("small segment");

    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(b"\xFF\xE1");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[test]
fn exif_orientation_6_turns_a_landscape_jpeg_portrait() {
    let case = Case::new();
    // Stored pixels are landscape: left half red, right half blue.
    let stored = RgbImage::from_fn(200, 100, |x, _| {
        if x < 100 {
            Rgb([255, 0, 0])
        } else {
            Rgb([0, 0, 255])
        }
    });
    let jpeg = encode_as(&DynamicImage::ImageRgb8(stored), ImageFormat::Jpeg);
    let input = case.file("rotated.jpg", &with_exif_orientation(&jpeg, 6));

    let (t, bytes) = case
        .run(
            &input,
            &params(Some(50), Some(50), Fit::Contain, Format::Png),
        )
        .expect("thumbnail");
    assert_eq!((t.width, t.height), (25, 50), "portrait after orientation");
    // Orientation 6 = rotate 90° clockwise to display: the stored left (red)
    // ends up on top.
    let img = decode_output(&bytes).1.into_rgb8();
    let Rgb([r, _, b]) = *img.get_pixel(12, 5);
    assert!(r > 180 && b < 80, "top is red, got r={r} b={b}");
    let Rgb([r, _, b]) = *img.get_pixel(12, 45);
    assert!(b > 180 && r < 80, "bottom is blue, got r={r} b={b}");
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&u32::try_from(data.len()).expect("len").to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
}

/// A well-formed PNG header claiming `w`×`h` RGBA pixels, with a token IDAT.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]); // 8-bit RGBA, deflate, no interlace
    png_chunk(&mut png, b"IHDR", &ihdr);
    png_chunk(
        &mut png,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    png_chunk(&mut png, b"IEND", &[]);
    png
}

#[test]
fn decompression_bomb_is_refused_before_decoding() {
    let case = Case::new();
    let input = case.file("bomb.png", &png_claiming(100_000, 100_000));
    let e = case
        .run(&input, &params(Some(100), None, Fit::Contain, Format::Jpeg))
        .expect_err("bomb refused");
    assert!(
        matches!(
            e,
            ThumbError::TooLarge {
                width: 100_000,
                height: 100_000,
                ..
            }
        ),
        "{e}"
    );
    let msg = e.to_string();
    assert!(msg.contains("100000x100000"), "{msg}");
    assert!(msg.contains("limit is 20000 pixels per side"), "{msg}");
    assert!(!case.out().exists(), "no output written");
}

#[test]
fn pixel_count_limit_is_enforced_even_when_each_side_fits() {
    let case = Case::new();
    let input = case.file("wide.png", &png_claiming(15_000, 15_000));
    let e = case
        .run(&input, &params(Some(100), None, Fit::Contain, Format::Jpeg))
        .expect_err("too many pixels");
    assert!(e.to_string().contains("100000000 pixels in total"), "{e}");
}

#[test]
fn custom_side_limit_is_enforced_on_a_real_image() {
    let case = Case::new();
    let input = case.file("in.png", &encode_as(&gradient(300, 10), ImageFormat::Png));
    let limits = Limits {
        max_side: 200,
        ..Limits::default()
    };
    let e = case
        .run_with(
            &input,
            &params(Some(10), None, Fit::Contain, Format::Png),
            &limits,
        )
        .expect_err("too wide");
    assert!(e.to_string().contains("300x10"), "{e}");
}

#[test]
fn input_larger_than_the_byte_limit_is_refused() {
    let case = Case::new();
    let input = case.file("in.png", &encode_as(&gradient(64, 64), ImageFormat::Png));
    let limits = Limits {
        max_input_bytes: 100,
        ..Limits::default()
    };
    let e = case
        .run_with(
            &input,
            &params(Some(10), None, Fit::Contain, Format::Png),
            &limits,
        )
        .expect_err("too big");
    assert!(
        matches!(e, ThumbError::InputTooLarge { limit: 100, .. }),
        "{e}"
    );
}

#[test]
fn garbage_bytes_are_refused_as_not_an_image() {
    let case = Case::new();
    let p = params(Some(10), None, Fit::Contain, Format::Jpeg);
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for (name, bytes) in [
        ("garbage.jpg", garbage.as_slice()),
        ("empty.png", &b""[..]),
        ("text.gif", &b"hello, world\n"[..]),
    ] {
        let input = case.file(name, bytes);
        let e = case.run(&input, &p).expect_err("garbage refused");
        assert!(matches!(e, ThumbError::Decode { .. }), "{name}: {e}");
        assert!(
            e.to_string()
                .starts_with("not a supported image (JPEG, PNG, WebP, GIF): "),
            "{name}: {e}"
        );
    }
}

#[test]
fn a_jpeg_with_bytes_after_its_end_is_read_and_a_cut_one_is_named_truncated() {
    let case = Case::new();
    let p = params(Some(10), None, Fit::Contain, Format::Jpeg);
    // Phones append data (a motion photo's video) after the end marker.
    let mut data = encode_as(&gradient(64, 48), ImageFormat::Jpeg);
    let whole = data.len();
    data.extend_from_slice(b"\xFF\xD8appended video bytes\xFF");
    let input = case.file("trailer.jpg", &data);
    case.run(&input, &p).expect("a whole JPEG with a trailer");
    let input = case.file("cut.jpg", &data[..whole - 100]);
    let e = case.run(&input, &p).expect_err("truncated");
    assert!(e.to_string().contains("JPEG is truncated"), "{e}");
}

#[test]
fn truncated_and_corrupt_images_are_refused_without_panicking() {
    let case = Case::new();
    let p = params(Some(10), None, Fit::Contain, Format::Jpeg);
    for (name, fmt) in [
        ("t.jpg", ImageFormat::Jpeg),
        ("t.png", ImageFormat::Png),
        ("t.webp", ImageFormat::WebP),
        ("t.gif", ImageFormat::Gif),
    ] {
        let full = encode_as(&gradient(64, 64), fmt);
        for cut in [8, 20, full.len() / 2, full.len() - 2] {
            let input = case.file(name, &full[..cut]);
            // Some decoders fill a truncated tail rather than fail; either
            // way no panic, and a JPEG (checked whole first) always fails.
            match case.run(&input, &p) {
                Err(e) => assert!(
                    matches!(e, ThumbError::Decode { .. }),
                    "{name}[..{cut}]: {e}"
                ),
                Ok(_) => assert!(fmt != ImageFormat::Jpeg, "{name}[..{cut}] gave a thumbnail"),
            }
        }
        // Flip bytes in the middle.
        let mut bad = full.clone();
        let mid = bad.len() / 2;
        for b in &mut bad[mid..(mid + 16).min(full.len())] {
            *b ^= 0xA5;
        }
        let input = case.file(name, &bad);
        let _ = case.run(&input, &p);
    }
}

#[test]
fn other_image_formats_are_refused_by_name() {
    let case = Case::new();
    // A BMP signature: recognised, but not accepted.
    let mut bmp = b"BM".to_vec();
    bmp.resize(64, 0);
    let input = case.file("x.bmp", &bmp);
    let e = case
        .run(&input, &params(Some(10), None, Fit::Contain, Format::Png))
        .expect_err("bmp refused");
    assert!(e.to_string().contains("Bmp input is not accepted"), "{e}");
}

#[test]
fn missing_input_and_directories_are_clear_errors() {
    let case = Case::new();
    let p = params(Some(10), None, Fit::Contain, Format::Png);
    let e = case
        .run(&case.dir.path().join("nope.png"), &p)
        .expect_err("missing");
    assert!(matches!(e, ThumbError::ReadInput { .. }), "{e}");
    assert!(e.to_string().contains("nope.png"), "{e}");
    let e = case.run(case.dir.path(), &p).expect_err("dir");
    assert!(matches!(e, ThumbError::NotAFile { .. }), "{e}");
}

#[test]
fn unwritable_output_is_a_write_error() {
    let case = Case::new();
    let input = case.file("in.png", &encode_as(&gradient(20, 20), ImageFormat::Png));
    let out = case.dir.path().join("no-such-dir").join("out.png");
    let e = make_thumbnail(
        &input,
        &out,
        &params(Some(10), None, Fit::Contain, Format::Png),
        &Limits::default(),
    )
    .expect_err("no dir");
    assert!(matches!(e, ThumbError::WriteOutput { .. }), "{e}");
}

#[test]
fn invalid_hand_built_params_are_refused() {
    let case = Case::new();
    let input = case.file("in.png", &encode_as(&gradient(20, 20), ImageFormat::Png));
    let e = case
        .run(&input, &params(None, None, Fit::Contain, Format::Png))
        .expect_err("no size");
    assert!(
        matches!(e, ThumbError::Params(ParamError::MissingSize { .. })),
        "{e}"
    );
}

#[test]
fn transparent_png_to_jpeg_is_flattened_onto_white_and_alpha_kept_for_png() {
    let case = Case::new();
    let src = DynamicImage::ImageRgba8(RgbaImage::from_pixel(32, 32, Rgba([0, 0, 0, 0])));
    let input = case.file("clear.png", &encode_as(&src, ImageFormat::Png));

    let (_, bytes) = case
        .run(&input, &params(Some(16), None, Fit::Contain, Format::Jpeg))
        .expect("jpeg");
    let Rgb([r, g, b]) = *decode_output(&bytes).1.into_rgb8().get_pixel(8, 8);
    assert!(r > 245 && g > 245 && b > 245, "white, got {r},{g},{b}");

    for format in [Format::Png, Format::Webp] {
        let (_, bytes) = case
            .run(&input, &params(Some(16), None, Fit::Contain, format))
            .expect("alpha format");
        let img = decode_output(&bytes).1;
        assert!(img.color().has_alpha(), "{format} keeps alpha");
        assert_eq!(
            img.into_rgba8().get_pixel(8, 8).0[3],
            0,
            "{format} stays transparent"
        );
    }
}

#[test]
fn jpeg_quality_changes_the_output_size() {
    let case = Case::new();
    let input = case.file("in.png", &encode_as(&gradient(400, 400), ImageFormat::Png));
    let mut p = params(Some(400), None, Fit::Contain, Format::Jpeg);
    p.quality = 10;
    let (low, _) = case.run(&input, &p).expect("q10");
    p.quality = 100;
    let (high, _) = case.run(&input, &p).expect("q100");
    assert!(low.bytes < high.bytes, "{} < {}", low.bytes, high.bytes);
}

#[test]
fn thumb_serialises_to_the_documented_shape() {
    let t = Thumb {
        width: 10,
        height: 20,
        format: Format::Jpeg,
        bytes: 1234,
    };
    assert_eq!(
        serde_json::to_value(t).expect("ser"),
        json!({"width": 10, "height": 20, "format": "jpeg", "bytes": 1234})
    );
}

#[test]
fn the_memory_estimate_reads_the_header_and_covers_the_widest_decode() {
    let case = Case::new();
    let p = params(Some(10), None, Fit::Contain, Format::Jpeg);
    let data = encode_as(&gradient(640, 480), ImageFormat::Png);
    let input = case.file("a.png", &data);
    let est = memory_estimate(&input, &p).expect("a PNG header");
    // 16-bit RGBA decode + 8-bit copy per pixel, a 10 × 8 output, the file.
    assert_eq!(est, 640 * 480 * 12 + 10 * 8 * 4 + data.len() as u64);
    // A header claiming 20000 × 20000 is priced as such, from a few bytes.
    let mut bomb = data.clone();
    bomb[16..20].copy_from_slice(&20_000u32.to_be_bytes());
    bomb[20..24].copy_from_slice(&20_000u32.to_be_bytes());
    let input = case.file("bomb.png", &bomb);
    let est = memory_estimate(&input, &p).expect("a PNG header");
    assert!(est >= 20_000 * 20_000 * 12, "{est}");
    let garbage = case.file("g.png", b"not an image");
    assert_eq!(memory_estimate(&garbage, &p), None);
}

//! Image thumbnails for jobmesh: a pure, synchronous library.
//!
//! [`make_thumbnail`] reads one image file (JPEG, PNG, WebP, or the first frame
//! of a GIF), honours its EXIF orientation, resizes it with SIMD
//! (`fast_image_resize`, Lanczos3) and writes JPEG, PNG or WebP.
//!
//! Everything in the input file is untrusted. The file size is checked before
//! reading, and the dimensions in the header are checked against [`Limits`]
//! before any pixel is decoded (decompression bombs are refused with the
//! dimensions and the limit in the message); the decoder's own allocation
//! limits are set as a second guard. No input makes this crate panic.
//!
//! It blocks (file I/O and CPU): the daemon calls it inside `spawn_blocking`.
//!
//! Geometry, with `W`×`H` the requested box and the source measured *after*
//! EXIF orientation:
//! * [`Fit::Contain`]: the largest size inside `W`×`H` with the source's aspect
//!   ratio; a missing side follows the aspect ratio. It never upscales: a source
//!   already inside the box keeps its size.
//! * [`Fit::Cover`]: exactly `W`×`H`, scaled to cover the box and cropped
//!   around the centre (upscales if it must, since an exact size was asked for).
//! * [`Fit::Fill`]: exactly `W`×`H`, stretched.
//!
//! `Cover` and `Fill` need both sides; with only one they behave like `Contain`.

mod params;

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Cursor, Read, Seek};
use std::path::{Path, PathBuf};

use fast_image_resize::{ResizeOptions, Resizer};
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::codecs::webp::WebPEncoder;
use image::{
    DynamicImage, ExtendedColorType, ImageDecoder, ImageEncoder, ImageError, ImageFormat,
    ImageReader, RgbImage, RgbaImage,
};
use serde::{Deserialize, Serialize};

pub use params::{Fit, Format, ParamError, Params, ALLOWED_KEYS, DEFAULT_QUALITY, MAX_SIDE};

/// Default [`Limits::max_pixels`]: 100 megapixels.
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;
/// Default [`Limits::max_side`]: 20 000 pixels.
pub const DEFAULT_MAX_SIDE: u32 = 20_000;
/// Default [`Limits::max_input_bytes`]: 256 MiB.
pub const DEFAULT_MAX_INPUT_BYTES: u64 = 256 * 1024 * 1024;

/// The formats accepted as input, for error messages.
const SUPPORTED_INPUTS: &str = "JPEG, PNG, WebP, GIF";

/// Bounds on the *input* image, checked before decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest `width × height` of the source image.
    pub max_pixels: u64,
    /// Largest width or height of the source image.
    pub max_side: u32,
    /// Largest input file, in bytes.
    pub max_input_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pixels: DEFAULT_MAX_PIXELS,
            max_side: DEFAULT_MAX_SIDE,
            max_input_bytes: DEFAULT_MAX_INPUT_BYTES,
        }
    }
}

/// The thumbnail that was written. Serialises as
/// `{"width":…,"height":…,"format":"jpeg","bytes":…}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thumb {
    /// Output width in pixels.
    pub width: u32,
    /// Output height in pixels.
    pub height: u32,
    /// Output encoding.
    pub format: Format,
    /// Size of the output file in bytes.
    pub bytes: u64,
}

/// Why a thumbnail could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ThumbError {
    /// The parameters broke an invariant (see [`Params::validate`]).
    #[error(transparent)]
    Params(#[from] ParamError),
    /// The input file could not be opened or read.
    #[error("cannot read input {}: {source}", path.display())]
    ReadInput {
        /// The input path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The input is not a regular file.
    #[error("input {} is not a regular file", path.display())]
    NotAFile {
        /// The input path.
        path: PathBuf,
    },
    /// The input file is larger than [`Limits::max_input_bytes`].
    #[error("input is {size} bytes; the limit is {limit} bytes")]
    InputTooLarge {
        /// The file size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The image's dimensions exceed [`Limits`] (refused before decoding).
    #[error(
        "image is {width}x{height} pixels; the limit is {max_side} pixels per side \
         and {max_pixels} pixels in total"
    )]
    TooLarge {
        /// Width from the header.
        width: u32,
        /// Height from the header.
        height: u32,
        /// [`Limits::max_side`].
        max_side: u32,
        /// [`Limits::max_pixels`].
        max_pixels: u64,
    },
    /// The input is not an image this crate can read, or is corrupt.
    #[error("not a supported image ({SUPPORTED_INPUTS}): {reason}")]
    Decode {
        /// What the decoder said.
        reason: String,
    },
    /// Resizing failed (an internal error, not the input's fault).
    #[error("resize failed: {reason}")]
    Resize {
        /// What the resizer said.
        reason: String,
    },
    /// Encoding the output failed.
    #[error("cannot encode {format} output: {reason}")]
    Encode {
        /// The requested output format.
        format: Format,
        /// What the encoder said.
        reason: String,
    },
    /// The output file could not be written.
    #[error("cannot write output {}: {source}", path.display())]
    WriteOutput {
        /// The output path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Reads `input`, makes a thumbnail as `params` asks and writes it to `output`
/// (created or truncated; on error nothing is left there).
///
/// Blocking; call it from `spawn_blocking`.
pub fn make_thumbnail(
    input: &Path,
    output: &Path,
    params: &Params,
    limits: &Limits,
) -> Result<Thumb, ThumbError> {
    params.validate()?;
    let img = decode(input, limits)?;
    let resized = resize(img, params)?;
    let encoded = encode(resized, params)?;
    let bytes = encoded.data.len() as u64;
    if let Err(source) = fs::write(output, &encoded.data) {
        // Best effort: do not leave a truncated file behind.
        let _ = fs::remove_file(output);
        return Err(ThumbError::WriteOutput {
            path: output.to_path_buf(),
            source,
        });
    }
    Ok(Thumb {
        width: encoded.width,
        height: encoded.height,
        format: params.format,
        bytes,
    })
}

/// The most memory [`make_thumbnail`] may take for this input, from its
/// header alone: the decoded pixels at the widest sample size (16-bit
/// RGBA, 8 bytes a pixel), their 8-bit copy for the resize (4), the output
/// (4 a pixel) and, for a JPEG, the file read whole. `None` when the header
/// cannot be read (the decode will say why; a caller budgeting memory
/// should assume the worst).
pub fn memory_estimate(input: &Path, params: &Params) -> Option<u64> {
    let size = imagesize::size(input).ok()?;
    let (w, h) = (
        u32::try_from(size.width).ok()?,
        u32::try_from(size.height).ok()?,
    );
    let (out_w, out_h, _) = target_size(w.max(1), h.max(1), params);
    let file = fs::metadata(input).ok()?.len();
    let pixels = u64::from(w) * u64::from(h);
    Some(
        pixels
            .saturating_mul(12)
            .saturating_add(u64::from(out_w) * u64::from(out_h) * 4)
            .saturating_add(file),
    )
}

/// Opens, checks and decodes the input, with EXIF orientation applied.
fn decode(input: &Path, limits: &Limits) -> Result<DynamicImage, ThumbError> {
    let read_err = |source| ThumbError::ReadInput {
        path: input.to_path_buf(),
        source,
    };
    let file = File::open(input).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(ThumbError::NotAFile {
            path: input.to_path_buf(),
        });
    }
    if meta.len() > limits.max_input_bytes {
        return Err(ThumbError::InputTooLarge {
            size: meta.len(),
            limit: limits.max_input_bytes,
        });
    }

    // Format by content only: the file name is as untrusted as the bytes.
    let reader = ImageReader::new(BufReader::new(file))
        .with_guessed_format()
        .map_err(read_err)?;
    match reader.format() {
        // The JPEG decoder reads the whole file anyway; it is read here
        // first to check that it is whole: the decoder paints the missing
        // rows of a truncated JPEG grey and reports no error.
        Some(ImageFormat::Jpeg) => {
            let mut data = Vec::with_capacity(meta.len() as usize);
            reader
                .into_inner()
                .read_to_end(&mut data)
                .map_err(read_err)?;
            jpeg_whole(&data).map_err(|reason| ThumbError::Decode {
                reason: format!("JPEG {reason}"),
            })?;
            let reader = ImageReader::with_format(Cursor::new(data), ImageFormat::Jpeg);
            decode_checked(reader, limits)
        }
        Some(ImageFormat::Png | ImageFormat::WebP | ImageFormat::Gif) => {
            decode_checked(reader, limits)
        }
        Some(other) => Err(ThumbError::Decode {
            reason: format!("{other:?} input is not accepted"),
        }),
        None => Err(ThumbError::Decode {
            reason: "unrecognised file signature".to_owned(),
        }),
    }
}

/// Decodes an image of an accepted format, its dimensions checked first.
fn decode_checked(
    mut reader: ImageReader<impl BufRead + Seek>,
    limits: &Limits,
) -> Result<DynamicImage, ThumbError> {
    // The worst decoded buffer for our formats is 16-bit RGBA: 8 bytes a pixel.
    let max_alloc = limits.max_pixels.saturating_mul(8);
    // First pass reads only the header. Width/height limits are left off here
    // so that a bomb is reported by our own check below, with its dimensions.
    let mut header_limits = image::Limits::default();
    header_limits.max_alloc = Some(max_alloc);
    reader.limits(header_limits);
    let mut decoder = reader.into_decoder().map_err(decode_err)?;

    let (width, height) = decoder.dimensions();
    let too_large = || ThumbError::TooLarge {
        width,
        height,
        max_side: limits.max_side,
        max_pixels: limits.max_pixels,
    };
    // The decoder's own limit errors are the same refusal, reported the same way.
    let limit_or_decode = |e: ImageError| match e {
        ImageError::Limits(_) => too_large(),
        other => decode_err(other),
    };
    if width > limits.max_side
        || height > limits.max_side
        || u64::from(width) * u64::from(height) > limits.max_pixels
    {
        return Err(too_large());
    }
    if width == 0 || height == 0 {
        return Err(ThumbError::Decode {
            reason: format!("image is {width}x{height} pixels"),
        });
    }
    // Second guard: the decoder's own limits, and the buffer it will ask for.
    let mut strict = image::Limits::default();
    strict.max_image_width = Some(limits.max_side);
    strict.max_image_height = Some(limits.max_side);
    strict.max_alloc = Some(max_alloc);
    if decoder.total_bytes() > max_alloc {
        return Err(too_large());
    }
    decoder.set_limits(strict).map_err(limit_or_decode)?;

    // A broken EXIF block is not worth refusing the image for.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(limit_or_decode)?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// Checks that a JPEG's marker structure runs from its start-of-image to
/// its end-of-image marker (bytes after it, such as a phone's appended
/// video, are allowed); says what is wrong otherwise.
fn jpeg_whole(data: &[u8]) -> Result<(), &'static str> {
    const TRUNCATED: &str = "is truncated: it ends before its end-of-image marker";
    if !data.starts_with(&[0xFF, 0xD8]) {
        return Err("has no start-of-image marker");
    }
    let mut i = 2;
    loop {
        // The next marker: 0xFF (and any fill bytes), then its code.
        i += data[i..].iter().position(|&b| b == 0xFF).ok_or(TRUNCATED)?;
        i += data[i..].iter().position(|&b| b != 0xFF).ok_or(TRUNCATED)?;
        let code = data[i];
        i += 1;
        match code {
            0xD9 => return Ok(()),
            // Markers without a segment: restart markers, TEM, a stuffed 0.
            0x00 | 0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let len = data.get(i..i + 2).ok_or(TRUNCATED)?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if len < 2 {
            return Err("has a segment of impossible length");
        }
        i += len;
        if i > data.len() {
            return Err(TRUNCATED);
        }
        if code == 0xDA {
            // Entropy-coded data follows its start-of-scan header, up to
            // the next marker that is not a stuffed 0xFF00 or a restart.
            loop {
                i += data[i..].iter().position(|&b| b == 0xFF).ok_or(TRUNCATED)?;
                match data.get(i + 1).ok_or(TRUNCATED)? {
                    0x00 | 0xD0..=0xD7 => i += 2,
                    _ => break,
                }
            }
        }
    }
}

fn decode_err(e: ImageError) -> ThumbError {
    ThumbError::Decode {
        reason: e.to_string(),
    }
}

/// The output size and whether the source is cropped to the output's aspect.
fn target_size(src_w: u32, src_h: u32, params: &Params) -> (u32, u32, bool) {
    match (params.fit, params.width, params.height) {
        (Fit::Cover, Some(w), Some(h)) => (w, h, true),
        (Fit::Fill, Some(w), Some(h)) => (w, h, false),
        (_, w, h) => {
            let (sw, sh) = (f64::from(src_w), f64::from(src_h));
            let scale_w = w.map_or(f64::INFINITY, |w| f64::from(w) / sw);
            let scale_h = h.map_or(f64::INFINITY, |h| f64::from(h) / sh);
            // Never upscale; `validate` guarantees at least one side is finite.
            let scale = scale_w.min(scale_h).min(1.0);
            // Each side is at most the source side (scale <= 1), so fits u32.
            let side = |s: f64| (s * scale).round().max(1.0) as u32;
            (side(sw), side(sh), false)
        }
    }
}

fn resize(img: DynamicImage, params: &Params) -> Result<DynamicImage, ThumbError> {
    // Work in 8-bit RGB or RGBA: every output format takes them, and
    // fast_image_resize handles both with SIMD (RGBA with alpha premultiplied).
    let src = if img.color().has_alpha() {
        DynamicImage::ImageRgba8(img.into_rgba8())
    } else {
        DynamicImage::ImageRgb8(img.into_rgb8())
    };
    let (w, h, crop) = target_size(src.width(), src.height(), params);
    if (w, h) == (src.width(), src.height()) {
        return Ok(src);
    }
    let mut dst = if src.color().has_alpha() {
        DynamicImage::ImageRgba8(RgbaImage::new(w, h))
    } else {
        DynamicImage::ImageRgb8(RgbImage::new(w, h))
    };
    let mut options = ResizeOptions::new();
    if crop {
        options = options.fit_into_destination(Some((0.5, 0.5)));
    }
    Resizer::new()
        .resize(&src, &mut dst, &options)
        .map_err(|e| ThumbError::Resize {
            reason: e.to_string(),
        })?;
    Ok(dst)
}

struct Encoded {
    data: Vec<u8>,
    width: u32,
    height: u32,
}

fn encode(img: DynamicImage, params: &Params) -> Result<Encoded, ThumbError> {
    let (width, height) = (img.width(), img.height());
    let mut data = Cursor::new(Vec::new());
    let result = match params.format {
        Format::Jpeg => {
            let rgb = flatten_onto_white(img);
            JpegEncoder::new_with_quality(&mut data, params.quality).write_image(
                rgb.as_raw(),
                width,
                height,
                ExtendedColorType::Rgb8,
            )
        }
        Format::Png => {
            let (buf, color) = raw(&img);
            PngEncoder::new(&mut data).write_image(buf, width, height, color)
        }
        Format::Webp => {
            let (buf, color) = raw(&img);
            WebPEncoder::new_lossless(&mut data).write_image(buf, width, height, color)
        }
    };
    result.map_err(|e| ThumbError::Encode {
        format: params.format,
        reason: e.to_string(),
    })?;
    Ok(Encoded {
        data: data.into_inner(),
        width,
        height,
    })
}

/// Raw bytes and colour type of an image that `resize` produced (RGB8/RGBA8).
fn raw(img: &DynamicImage) -> (&[u8], ExtendedColorType) {
    let color = if img.color().has_alpha() {
        ExtendedColorType::Rgba8
    } else {
        ExtendedColorType::Rgb8
    };
    (img.as_bytes(), color)
}

/// JPEG has no alpha: composite onto white so transparent areas are not black.
fn flatten_onto_white(img: DynamicImage) -> RgbImage {
    match img {
        DynamicImage::ImageRgba8(rgba) => {
            let (w, h) = rgba.dimensions();
            let mut out = RgbImage::new(w, h);
            for (dst, src) in out.pixels_mut().zip(rgba.pixels()) {
                let a = u32::from(src.0[3]);
                for c in 0..3 {
                    let v = u32::from(src.0[c]) * a + 255 * (255 - a);
                    // (v + 127) / 255 <= 255 since v <= 255 * 255.
                    dst.0[c] = ((v + 127) / 255) as u8;
                }
            }
            out
        }
        other => other.into_rgb8(),
    }
}

#[cfg(test)]
mod tests;

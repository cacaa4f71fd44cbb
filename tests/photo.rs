//! A test photo, for the thumbnail tests.

/// Writes a 1200×800 photo-like JPEG (a gradient with some structure) to `path`.
pub(crate) fn write_photo(path: &std::path::Path) {
    let img = image::RgbImage::from_fn(1200, 800, |x, y| {
        image::Rgb([(x / 5) as u8, (y / 4) as u8, ((x ^ y) & 0xff) as u8])
    });
    img.save_with_format(path, image::ImageFormat::Jpeg)
        .expect("write jpeg");
}

//! Job parameters: parsed from untrusted JSON, validated once.

use std::fmt;

use jobmesh_wire::param::{self, json_type, InvalidValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Largest `width` or `height` a caller may ask for, in pixels.
///
/// Bounds the output buffer (8192 × 8192 RGBA is 256 MiB), whatever the input.
pub const MAX_SIDE: u32 = 8192;

/// JPEG quality used when the parameters do not name one.
pub const DEFAULT_QUALITY: u8 = 85;

/// The keys [`Params::from_json`] accepts; any other key is refused.
pub const ALLOWED_KEYS: [&str; 5] = ["width", "height", "fit", "format", "quality"];

/// How the source is fitted into the requested box.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fit {
    /// Fit inside `width`×`height`, keeping the aspect ratio. Never upscales.
    #[default]
    Contain,
    /// Fill exactly `width`×`height`, keeping the aspect ratio by cropping the
    /// centre. Needs both sides; with only one it behaves like [`Fit::Contain`].
    Cover,
    /// Stretch to exactly `width`×`height`, ignoring the aspect ratio. Needs both
    /// sides; with only one it behaves like [`Fit::Contain`].
    Fill,
}

impl Fit {
    /// The lowercase name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Fit::Contain => "contain",
            Fit::Cover => "cover",
            Fit::Fill => "fill",
        }
    }
}

impl fmt::Display for Fit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Output encoding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Baseline JPEG at [`Params::quality`]; alpha is flattened onto white.
    #[default]
    Jpeg,
    /// PNG, lossless; alpha kept.
    Png,
    /// WebP, lossless (the `image` crate's encoder has no lossy mode, so
    /// `quality` is ignored); alpha kept.
    Webp,
}

impl Format {
    /// The lowercase name used on the wire (`"jpeg"`, `"png"`, `"webp"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Jpeg => "jpeg",
            Format::Png => "png",
            Format::Webp => "webp",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What thumbnail to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Requested width in pixels, `1..=MAX_SIDE`.
    pub width: Option<u32>,
    /// Requested height in pixels, `1..=MAX_SIDE`.
    pub height: Option<u32>,
    /// How the source is fitted into the box.
    pub fit: Fit,
    /// Output encoding.
    pub format: Format,
    /// JPEG quality, `1..=100`; ignored for PNG and WebP.
    pub quality: u8,
}

/// Why parameters were refused. Messages say what was wrong and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParamError {
    /// The parameters were not a JSON object.
    #[error("thumbnail parameters must be a JSON object, got {found}")]
    NotAnObject {
        /// The JSON type that was given instead.
        found: &'static str,
    },
    /// A key outside [`ALLOWED_KEYS`].
    #[error("unknown thumbnail parameter `{key}`; allowed: width, height, fit, format, quality")]
    UnknownKey {
        /// The offending key (truncated).
        key: String,
    },
    /// A value of the wrong type or spelling.
    #[error("thumbnail parameter {0}")]
    InvalidValue(InvalidValue),
    /// A number outside its allowed range.
    #[error("thumbnail parameter `{key}` is {value}; allowed {min}..={max}")]
    OutOfRange {
        /// The parameter name.
        key: &'static str,
        /// The value given.
        value: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// Neither `width` nor `height` was given.
    #[error("thumbnail parameters need at least one of `width` and `height` (1..={max})")]
    MissingSize {
        /// The largest allowed side, [`MAX_SIDE`].
        max: u32,
    },
}

impl Params {
    /// Parses and validates parameters from a job's JSON.
    ///
    /// Accepts `width`, `height` and `quality` as JSON integers or decimal
    /// strings (the CLI passes `k=v` pairs as strings), `fit` as `"contain"`,
    /// `"cover"` or `"fill"` and `format` as `"jpeg"` (or `"jpg"`), `"png"` or
    /// `"webp"` (ASCII case ignored). `null` counts as absent. Any other key is
    /// refused.
    pub fn from_json(v: &Value) -> Result<Params, ParamError> {
        let obj = v.as_object().ok_or(ParamError::NotAnObject {
            found: json_type(v),
        })?;
        if let Some(key) = obj.keys().find(|k| !ALLOWED_KEYS.contains(&k.as_str())) {
            return Err(ParamError::UnknownKey {
                key: param::truncate(key),
            });
        }
        let get = |key: &str| obj.get(key).filter(|v| !v.is_null());

        let width = get("width")
            .map(|v| uint(v, "width", 1, u64::from(MAX_SIDE)))
            .transpose()?;
        let height = get("height")
            .map(|v| uint(v, "height", 1, u64::from(MAX_SIDE)))
            .transpose()?;
        let quality = get("quality")
            .map(|v| uint(v, "quality", 1, 100))
            .transpose()?;
        let fit = get("fit")
            .map(|v| {
                let s = string(v, "fit", "one of \"contain\", \"cover\", \"fill\"")?;
                match s.to_ascii_lowercase().as_str() {
                    "contain" => Ok(Fit::Contain),
                    "cover" => Ok(Fit::Cover),
                    "fill" => Ok(Fit::Fill),
                    _ => Err(ParamError::InvalidValue(InvalidValue::new(
                        v,
                        "fit",
                        "one of \"contain\", \"cover\", \"fill\"",
                    ))),
                }
            })
            .transpose()?;
        let format = get("format")
            .map(|v| {
                let expected = "one of \"jpeg\", \"png\", \"webp\"";
                let s = string(v, "format", expected)?;
                match s.to_ascii_lowercase().as_str() {
                    "jpeg" | "jpg" => Ok(Format::Jpeg),
                    "png" => Ok(Format::Png),
                    "webp" => Ok(Format::Webp),
                    _ => Err(ParamError::InvalidValue(InvalidValue::new(
                        v, "format", expected,
                    ))),
                }
            })
            .transpose()?;

        let params = Params {
            // The range checks above bound these to u32 / u8.
            width: width.map(|w| w as u32),
            height: height.map(|h| h as u32),
            fit: fit.unwrap_or_default(),
            format: format.unwrap_or_default(),
            quality: quality.map_or(DEFAULT_QUALITY, |q| q as u8),
        };
        params.validate()?;
        Ok(params)
    }

    /// Checks the invariants [`Params::from_json`] guarantees, for parameters
    /// built by hand: at least one side, each side `1..=MAX_SIDE`, quality
    /// `1..=100`.
    pub fn validate(&self) -> Result<(), ParamError> {
        if self.width.is_none() && self.height.is_none() {
            return Err(ParamError::MissingSize { max: MAX_SIDE });
        }
        for (key, side) in [("width", self.width), ("height", self.height)] {
            if let Some(side) = side {
                check_range(key, u64::from(side), 1, u64::from(MAX_SIDE))?;
            }
        }
        check_range("quality", u64::from(self.quality), 1, 100).map(drop)
    }
}

fn check_range(key: &'static str, value: u64, min: u64, max: u64) -> Result<u64, ParamError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ParamError::OutOfRange {
            key,
            value,
            min,
            max,
        })
    }
}

/// A whole number given as a JSON integer or a decimal string.
fn uint(v: &Value, key: &'static str, min: u64, max: u64) -> Result<u64, ParamError> {
    const EXPECTED: &str = "a whole number (or a string of digits)";
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    match n {
        Some(n) => check_range(key, n, min, max),
        // A negative number is out of range rather than the wrong type.
        None if v.as_i64().is_some_and(|n| n < 0) => Err(ParamError::InvalidValue(
            InvalidValue::new(v, key, "a positive number"),
        )),
        None => Err(ParamError::InvalidValue(InvalidValue::new(
            v, key, EXPECTED,
        ))),
    }
}

fn string<'a>(
    v: &'a Value,
    key: &'static str,
    expected: &'static str,
) -> Result<&'a str, ParamError> {
    v.as_str()
        .ok_or_else(|| ParamError::InvalidValue(InvalidValue::new(v, key, expected)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_and_numeric_strings_are_accepted() {
        let p = Params::from_json(&json!({"width": 200, "height": "150", "quality": "90"}))
            .expect("valid");
        assert_eq!(p.width, Some(200));
        assert_eq!(p.height, Some(150));
        assert_eq!(p.quality, 90);
        assert_eq!(p.fit, Fit::Contain);
        assert_eq!(p.format, Format::Jpeg);
    }

    #[test]
    fn defaults_apply_when_only_one_side_is_given() {
        let p = Params::from_json(&json!({"height": 64})).expect("valid");
        assert_eq!(p.width, None);
        assert_eq!(p.height, Some(64));
        assert_eq!(p.quality, DEFAULT_QUALITY);
    }

    #[test]
    fn fit_and_format_strings_are_parsed_case_insensitively() {
        let p = Params::from_json(&json!({"width": 10, "fit": "Cover", "format": "WEBP"}))
            .expect("valid");
        assert_eq!(p.fit, Fit::Cover);
        assert_eq!(p.format, Format::Webp);
        let p = Params::from_json(&json!({"width": 10, "fit": "fill", "format": "jpg"}))
            .expect("valid");
        assert_eq!(p.fit, Fit::Fill);
        assert_eq!(p.format, Format::Jpeg);
    }

    #[test]
    fn missing_size_is_refused() {
        let e = Params::from_json(&json!({"format": "png"})).expect_err("no size");
        assert_eq!(e, ParamError::MissingSize { max: MAX_SIDE });
        assert!(e
            .to_string()
            .contains("at least one of `width` and `height`"));
    }

    #[test]
    fn unknown_keys_are_refused_with_the_allowed_list() {
        let e = Params::from_json(&json!({"width": 10, "colour": "red"})).expect_err("unknown");
        let msg = e.to_string();
        assert!(msg.contains("`colour`"), "{msg}");
        assert!(
            msg.contains("allowed: width, height, fit, format, quality"),
            "{msg}"
        );
    }

    #[test]
    fn out_of_range_values_name_the_range() {
        let e = Params::from_json(&json!({"width": 0})).expect_err("zero");
        assert!(e.to_string().contains("allowed 1..=8192"), "{e}");
        let e = Params::from_json(&json!({"width": 10, "height": "9000"})).expect_err("big");
        assert!(matches!(
            e,
            ParamError::OutOfRange {
                key: "height",
                value: 9000,
                ..
            }
        ));
        let e = Params::from_json(&json!({"width": 10, "quality": 101})).expect_err("q");
        assert!(e.to_string().contains("allowed 1..=100"), "{e}");
        // Larger than u32/u64 still reports cleanly.
        let e = Params::from_json(&json!({"width": "99999999999999999999999"})).expect_err("huge");
        assert!(
            matches!(
                e,
                ParamError::InvalidValue(InvalidValue { key: "width", .. })
            ),
            "{e}"
        );
    }

    #[test]
    fn wrong_types_and_spellings_are_refused() {
        for bad in [
            json!({"width": 1.5}),
            json!({"width": -3}),
            json!({"width": "ten"}),
            json!({"width": true}),
            json!({"width": 10, "fit": "stretch"}),
            json!({"width": 10, "fit": 3}),
            json!({"width": 10, "format": "gif"}),
        ] {
            let e = Params::from_json(&bad).expect_err("invalid");
            assert!(matches!(e, ParamError::InvalidValue(_)), "{bad}: {e}");
        }
        let e = Params::from_json(&json!({"width": 10, "format": "gif"})).expect_err("gif");
        assert!(e.to_string().contains("\"jpeg\", \"png\", \"webp\""), "{e}");
    }

    #[test]
    fn non_object_is_refused() {
        let e = Params::from_json(&json!([1, 2])).expect_err("array");
        assert_eq!(
            e.to_string(),
            "thumbnail parameters must be a JSON object, got an array"
        );
    }

    #[test]
    fn validate_catches_hand_built_params() {
        let p = Params {
            width: Some(0),
            height: None,
            fit: Fit::Contain,
            format: Format::Png,
            quality: 85,
        };
        assert!(p.validate().is_err());
        let p = Params {
            width: Some(5),
            quality: 0,
            ..p
        };
        assert!(p.validate().is_err());
    }

    #[test]
    fn format_serialises_lowercase() {
        assert_eq!(
            serde_json::to_value(Format::Webp).expect("ser"),
            json!("webp")
        );
        assert_eq!(
            serde_json::to_value(Fit::Cover).expect("ser"),
            json!("cover")
        );
    }
}

//! OCR options: parsed from untrusted JSON, validated once.

use jobmesh_wire::param::{self, json_type, InvalidValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Language used when the options do not name one.
pub const DEFAULT_LANG: &str = "eng";

/// Longest accepted `lang` value.
pub const MAX_LANG_LEN: usize = 64;

/// The keys [`Options::from_json`] accepts; any other key is refused.
pub const ALLOWED_KEYS: [&str; 2] = ["lang", "words"];

const LANG_RULE: &str = "1 to 64 characters of A-Z, a-z, 0-9, '_' or '+', \
                         with no empty part between '+' (e.g. \"eng\" or \"eng+deu\")";

/// What to recognise and what to report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options {
    /// Tesseract language(s), e.g. `"eng"` or `"eng+deu"`.
    pub lang: String,
    /// Also report every word with its confidence and bounding box.
    pub words: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            lang: DEFAULT_LANG.to_owned(),
            words: false,
        }
    }
}

/// Why options were refused. Messages say what was wrong and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParamError {
    /// The options were not a JSON object.
    #[error("ocr parameters must be a JSON object, got {found}")]
    NotAnObject {
        /// The JSON type that was given instead.
        found: &'static str,
    },
    /// A key outside [`ALLOWED_KEYS`].
    #[error("unknown ocr parameter `{key}`; allowed: lang, words")]
    UnknownKey {
        /// The offending key (truncated).
        key: String,
    },
    /// A value of the wrong type or spelling.
    #[error("ocr parameter {0}")]
    InvalidValue(InvalidValue),
    /// A `lang` that tesseract could not be safely asked for.
    #[error("ocr parameter `lang` is {found:?}; expected {LANG_RULE}")]
    InvalidLang {
        /// The value given (truncated).
        found: String,
    },
}

impl Options {
    /// Parses and validates options from a job's JSON.
    ///
    /// `lang` is a string (default `"eng"`); `words` is a boolean or the
    /// string `"true"`/`"false"` (default `false`). `null` counts as absent.
    /// Any other key is refused.
    pub fn from_json(v: &Value) -> Result<Options, ParamError> {
        let obj = v.as_object().ok_or(ParamError::NotAnObject {
            found: json_type(v),
        })?;
        if let Some(key) = obj.keys().find(|k| !ALLOWED_KEYS.contains(&k.as_str())) {
            return Err(ParamError::UnknownKey {
                key: param::truncate(key),
            });
        }
        let get = |key: &str| obj.get(key).filter(|v| !v.is_null());
        let lang = match get("lang") {
            None => DEFAULT_LANG.to_owned(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(ParamError::InvalidValue(InvalidValue::new(
                    other,
                    "lang",
                    "a string such as \"eng\"",
                )))
            }
        };
        let words = match get("words") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => true,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => false,
            Some(other) => {
                return Err(ParamError::InvalidValue(InvalidValue::new(
                    other,
                    "words",
                    "true or false",
                )))
            }
        };
        let opts = Options { lang, words };
        opts.validate()?;
        Ok(opts)
    }

    /// Checks the invariants [`Options::from_json`] guarantees, for options
    /// built by hand.
    pub fn validate(&self) -> Result<(), ParamError> {
        validate_lang(&self.lang)
    }
}

/// `lang` becomes a command-line argument and part of a package name, so it is
/// held to `[A-Za-z0-9_+]{1,64}` with no empty `+` part.
pub(crate) fn validate_lang(lang: &str) -> Result<(), ParamError> {
    let ok = !lang.is_empty()
        && lang.len() <= MAX_LANG_LEN
        && lang
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'+')
        && lang.split('+').all(|part| !part.is_empty());
    if ok {
        Ok(())
    } else {
        Err(ParamError::InvalidLang {
            found: param::truncate(lang),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_when_empty() {
        assert_eq!(
            Options::from_json(&json!({})).expect("valid"),
            Options::default()
        );
        assert_eq!(Options::default().lang, "eng");
    }

    #[test]
    fn lang_and_words_in_both_spellings() {
        let o = Options::from_json(&json!({"lang": "eng+deu", "words": true})).expect("valid");
        assert_eq!((o.lang.as_str(), o.words), ("eng+deu", true));
        let o = Options::from_json(&json!({"lang": "chi_sim", "words": "true"})).expect("valid");
        assert_eq!((o.lang.as_str(), o.words), ("chi_sim", true));
        let o = Options::from_json(&json!({"words": "false"})).expect("valid");
        assert!(!o.words);
    }

    #[test]
    fn bad_lang_is_refused_with_the_rule() {
        for bad in [
            "", "en g", "eng;rm", "-l", "../x", "eng+", "+eng", "eng++deu",
        ] {
            let e = Options::from_json(&json!({ "lang": bad })).expect_err(bad);
            assert!(matches!(e, ParamError::InvalidLang { .. }), "{bad}: {e}");
            assert!(e.to_string().contains("A-Z, a-z, 0-9, '_' or '+'"), "{e}");
        }
        let long = "a".repeat(65);
        assert!(Options::from_json(&json!({ "lang": long })).is_err());
        assert!(Options::from_json(&json!({ "lang": "a".repeat(64) })).is_ok());
    }

    #[test]
    fn wrong_types_and_unknown_keys_are_refused() {
        let e = Options::from_json(&json!({"lang": 3})).expect_err("type");
        assert!(e.to_string().contains("expected a string"), "{e}");
        let e = Options::from_json(&json!({"words": "yes"})).expect_err("type");
        assert!(e.to_string().contains("expected true or false"), "{e}");
        let e = Options::from_json(&json!({"psm": 6})).expect_err("unknown");
        assert_eq!(
            e.to_string(),
            "unknown ocr parameter `psm`; allowed: lang, words"
        );
        let e = Options::from_json(&json!("eng")).expect_err("not object");
        assert!(
            e.to_string()
                .contains("must be a JSON object, got a string"),
            "{e}"
        );
    }
}

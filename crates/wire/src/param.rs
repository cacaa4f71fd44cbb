//! What the built-in handlers' parameter errors share: a job's parameters
//! arrive as untrusted JSON, and a refusal names the JSON type or echoes the
//! value, cut to a readable length.
//!
//! Each handler crate keeps its own error enum (its prefix and its own
//! variants); the pieces here are the ones they word the same way.

use std::fmt;

use serde_json::Value;

/// Longest untrusted text echoed in a parameter error, in characters.
pub const MAX_ECHO_CHARS: usize = 64;

/// Cuts untrusted text echoed in an error to at most [`MAX_ECHO_CHARS`]
/// characters, marking a cut with `…`.
///
/// Counts characters, where [`crate::truncate`] counts bytes: a value of 64
/// non-ASCII characters is echoed whole.
pub fn truncate(s: &str) -> String {
    let end = s
        .char_indices()
        .nth(MAX_ECHO_CHARS)
        .map_or(s.len(), |(i, _)| i);
    crate::cut_at(s, end)
}

/// The JSON type of `v` as a message names it: `"null"`, `"a boolean"`,
/// `"a number"`, `"a string"`, `"an array"` or `"an object"`.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A parameter value of the wrong type or spelling. Displays as
/// ``"`key` is found; expected expected"``; a handler's error puts its own
/// prefix in front (`thumbnail parameter …`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidValue {
    /// The parameter name.
    pub key: &'static str,
    /// The value given (JSON, truncated).
    pub found: String,
    /// What would have been accepted.
    pub expected: &'static str,
}

impl InvalidValue {
    /// `v`, given for `key`, is not `expected`.
    pub fn new(v: &Value, key: &'static str, expected: &'static str) -> Self {
        InvalidValue {
            key,
            found: truncate(&v.to_string()),
            expected,
        }
    }
}

impl fmt::Display for InvalidValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let InvalidValue {
            key,
            found,
            expected,
        } = self;
        write!(f, "`{key}` is {found}; expected {expected}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn truncate_counts_characters_not_bytes() {
        assert_eq!(truncate("abc"), "abc");
        let exact = "é".repeat(MAX_ECHO_CHARS);
        assert_eq!(truncate(&exact), exact);
        let long = "é".repeat(MAX_ECHO_CHARS + 1);
        assert_eq!(truncate(&long), format!("{exact}…"));
        // The byte-counting one cuts the same text much shorter.
        assert_eq!(crate::truncate(&exact, MAX_ECHO_CHARS).chars().count(), 33);
    }

    #[test]
    fn json_types_are_named_with_their_article() {
        let names: Vec<_> = [
            json!(null),
            json!(true),
            json!(1.5),
            json!("x"),
            json!([]),
            json!({}),
        ]
        .iter()
        .map(json_type)
        .collect();
        assert_eq!(
            names,
            [
                "null",
                "a boolean",
                "a number",
                "a string",
                "an array",
                "an object"
            ]
        );
    }

    #[test]
    fn invalid_value_echoes_the_json_cut_short() {
        let e = InvalidValue::new(&json!("x".repeat(100)), "fit", "one of \"contain\"");
        let quoted = format!("\"{}…", "x".repeat(MAX_ECHO_CHARS - 1));
        assert_eq!(e.found, quoted);
        assert_eq!(
            e.to_string(),
            format!("`fit` is {quoted}; expected one of \"contain\"")
        );
    }
}

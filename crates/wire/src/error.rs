/// Why bytes from the network were refused. The `Display` text is sent back to
/// the sender in an error message, so it names the problem and the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The message is bigger than the wire allows.
    #[error("message too large: {size} bytes, the limit is {max} bytes")]
    TooLarge {
        /// Size received.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not valid JSON.
    #[error("invalid JSON: {0}")]
    BadJson(String),
    /// A JSON value without a string `"type"` field.
    #[error("message has no string \"type\" field")]
    MissingType,
    /// A `"type"` this version does not know.
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    /// Known type, but a field is missing or has the wrong shape.
    #[error("malformed message: {0}")]
    BadField(String),
    /// A hello with a protocol version other than ours.
    #[error("unsupported protocol version {got}, this side speaks version {want}")]
    WrongVersion {
        /// Version received.
        got: u32,
        /// Version spoken here.
        want: u32,
    },
    /// A field value that is out of range or otherwise invalid.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A binary frame where text JSON was expected.
    #[error("binary frames are not part of this protocol; send JSON text")]
    Binary,
}

//! Parse errors. None of them carries message content: they name segments (by 0-based
//! position in the message), fields and byte offsets.

use thiserror::Error;

/// Why bytes could not be read as an HL7 v2 message or batch.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Nothing but a byte-order mark and whitespace.
    #[error("empty input: no HL7 segments")]
    Empty,
    /// The first segment is not MSH (for a batch: no FHS, BHS or MSH).
    #[error("the message does not start with an MSH segment")]
    NoMsh,
    /// MSH-1/MSH-2 are missing, repeated, alphanumeric, whitespace or control bytes.
    #[error("invalid encoding characters in MSH-1/MSH-2: {0}")]
    BadEncodingCharacters(&'static str),
    /// MSH-18 names a character set this crate does not decode. The value is a
    /// table-0211 code, reduced to at most 32 printable characters.
    #[error("unsupported character set in MSH-18: {0:?}")]
    UnsupportedCharset(String),
    /// A segment whose id is not three ASCII letters or digits followed by the field
    /// separator (often a line break inside a field value).
    #[error("segment {segment} (0-based) does not start with a valid segment id")]
    BadSegmentId { segment: usize },
    /// Offsets are kept as u32.
    #[error("input of {len} bytes is larger than the 4 GiB limit")]
    TooLarge { len: usize },
    /// Batch wrappers out of place (e.g. a segment other than FHS/BHS/MSH before the first
    /// message, or content after FTS).
    #[error("batch structure: segment {segment} (0-based): {reason}")]
    BatchStructure {
        segment: usize,
        reason: &'static str,
    },
}

/// A code such as an MSH-18 value, kept short and printable so it can go into an error
/// message and a log line.
pub(crate) fn printable_code(v: &[u8]) -> String {
    v.iter()
        .take(32)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            }
        })
        .collect()
}

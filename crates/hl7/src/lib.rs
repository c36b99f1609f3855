#![forbid(unsafe_code)]
//! HL7 v2 for Rapport: a zero-copy parser, escapes, batch files, MLLP framing, ACKs and a
//! small writer for the messages Rapport sends. It knows nothing of patients.
//!
//! ```
//! let msg = hl7::Message::parse(b"MSH|^~\\&|EHR|CLINIC|RAPPORT|RAPPORT|20240102030405||SIU^S12|42|P|2.5\rSCH|12345^EHR|36996\r").unwrap();
//! assert_eq!(msg.get("MSH-9.2").as_deref(), Some("S12"));
//! assert_eq!(msg.get("SCH-1.1").as_deref(), Some("12345"));
//! assert_eq!(msg.segment("SCH").unwrap().field(2).text(), "36996");
//! ```
//!
//! * [`Message::parse`] indexes segment and field offsets in one pass (memchr) and copies no
//!   message text; repetitions, components and subcomponents are split when asked for.
//! * Text comes back decoded per MSH-18 ([`Charset`]) and unescaped ([`unescape`]).
//! * Errors never carry message content (it may be PHI): they name segments, fields and
//!   positions instead.

pub mod ack;
pub mod batch;
pub mod build;
mod error;
mod escape;
pub mod fuzzing;
mod message;
pub mod mllp;
mod path;

pub use error::ParseError;
pub use escape::{decode, escape, unescape};
pub use message::{Component, Field, Message, Repetition, Scratch, Segment, Subcomponent};

/// The five delimiters declared by MSH-1 and MSH-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Separators {
    pub field: u8,
    pub component: u8,
    pub repetition: u8,
    pub escape: u8,
    pub subcomponent: u8,
}

impl Separators {
    /// `|^~\&`.
    pub const STANDARD: Separators = Separators {
        field: b'|',
        component: b'^',
        repetition: b'~',
        escape: b'\\',
        subcomponent: b'&',
    };

    /// MSH-2 as written: component, repetition, escape, subcomponent.
    pub fn encoding_characters(&self) -> [u8; 4] {
        [
            self.component,
            self.repetition,
            self.escape,
            self.subcomponent,
        ]
    }

    /// Whether `b` is one of the five delimiters.
    pub fn is_delimiter(&self, b: u8) -> bool {
        b == self.field
            || b == self.component
            || b == self.repetition
            || b == self.escape
            || b == self.subcomponent
    }
}

impl Default for Separators {
    fn default() -> Self {
        Separators::STANDARD
    }
}

/// The character set a message declares in MSH-18 (first repetition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Charset {
    /// Empty MSH-18, `ASCII` or `ISO IR6`. Bytes above 0x7F are read as UTF-8 when they are
    /// valid UTF-8 and as Latin-1 otherwise (senders often leave MSH-18 empty and send
    /// either); `\Xhh\` escapes are read as Latin-1.
    #[default]
    Ascii,
    /// `UNICODE UTF-8`, `UTF-8`, or the older `UNICODE`. Invalid UTF-8 becomes U+FFFD.
    Utf8,
    /// `8859/1` (ISO IR100): every byte is one character.
    Latin1,
}

impl Charset {
    /// Reads an MSH-18 value (case-insensitive, surrounding spaces ignored).
    pub fn from_msh18(value: &[u8]) -> Result<Charset, ParseError> {
        let v = value.trim_ascii();
        let is = |name: &str| v.eq_ignore_ascii_case(name.as_bytes());
        if v.is_empty() || is("ASCII") || is("ISO IR6") || is("US-ASCII") {
            Ok(Charset::Ascii)
        } else if is("UNICODE UTF-8") || is("UTF-8") || is("UTF8") || is("UNICODE") {
            Ok(Charset::Utf8)
        } else if is("8859/1") || is("ISO IR100") || is("ISO-8859-1") || is("LATIN1") {
            Ok(Charset::Latin1)
        } else {
            Err(ParseError::UnsupportedCharset(error::printable_code(v)))
        }
    }

    /// The MSH-18 value to write for this charset.
    pub fn msh18(&self) -> &'static str {
        match self {
            Charset::Ascii => "ASCII",
            Charset::Utf8 => "UNICODE UTF-8",
            Charset::Latin1 => "8859/1",
        }
    }
}

/// Skips a UTF-8 byte-order mark and any leading ASCII whitespace; returns the offset of
/// the first byte of content.
pub(crate) fn content_start(bytes: &[u8]) -> usize {
    let mut i = if bytes.starts_with(b"\xEF\xBB\xBF") {
        3
    } else {
        0
    };
    while i < bytes.len() && bytes[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

//! Character decoding and HL7 escape sequences (FACTS §4.5).

use std::borrow::Cow;

use memchr::memchr;

use crate::{Charset, Separators};

/// Decodes raw bytes per `charset`, without unescaping. Borrowed whenever the bytes are
/// already valid UTF-8 text in that charset.
pub fn decode(raw: &[u8], charset: Charset) -> Cow<'_, str> {
    match charset {
        Charset::Utf8 => String::from_utf8_lossy(raw),
        Charset::Ascii => match std::str::from_utf8(raw) {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => Cow::Owned(latin1(raw)),
        },
        Charset::Latin1 => {
            if raw.is_ascii() {
                match std::str::from_utf8(raw) {
                    Ok(s) => Cow::Borrowed(s),
                    Err(_) => Cow::Owned(latin1(raw)),
                }
            } else {
                Cow::Owned(latin1(raw))
            }
        }
    }
}

fn latin1(raw: &[u8]) -> String {
    raw.iter().map(|&b| b as char).collect()
}

/// What one escape sequence (the text between two escape characters) stands for.
enum Sequence {
    /// One delimiter.
    Byte(u8),
    /// `\Xhh..\`: the bytes, as hex digits (an even number, at least two).
    Hex,
    /// Recognised but kept as written: `\H\`, `\N\`, `\Z..\`, `\C..\`, `\M..\`, `\.br\`...
    Keep,
}

fn classify(body: &[u8], seps: &Separators) -> Option<Sequence> {
    match body {
        b"F" => Some(Sequence::Byte(seps.field)),
        b"S" => Some(Sequence::Byte(seps.component)),
        b"T" => Some(Sequence::Byte(seps.subcomponent)),
        b"R" => Some(Sequence::Byte(seps.repetition)),
        b"E" => Some(Sequence::Byte(seps.escape)),
        b"H" | b"N" => Some(Sequence::Keep),
        [b'X', hex @ ..] => {
            (!hex.is_empty() && hex.len() % 2 == 0 && hex.iter().all(u8::is_ascii_hexdigit))
                .then_some(Sequence::Hex)
        }
        [b'Z', ..] => Some(Sequence::Keep),
        [b'C' | b'M', rest @ ..] => (!rest.is_empty()
            && rest.iter().all(u8::is_ascii_alphanumeric))
        .then_some(Sequence::Keep),
        [b'.', rest @ ..] => (!rest.is_empty() && rest.iter().all(|b| b.is_ascii_graphic()))
            .then_some(Sequence::Keep),
        _ => None,
    }
}

fn hex_value(d: u8) -> u8 {
    match d {
        b'0'..=b'9' => d - b'0',
        b'a'..=b'f' => d - b'a' + 10,
        _ => d - b'A' + 10,
    }
}

/// Where the unescaped text goes: bytes for UTF-8 (so that `\XC3\\XA9\` can form one
/// character), characters otherwise.
enum Out {
    Utf8(Vec<u8>),
    Text(String, Charset),
}

impl Out {
    fn literal(&mut self, raw: &[u8]) {
        match self {
            Out::Utf8(v) => v.extend_from_slice(raw),
            Out::Text(s, cs) => s.push_str(&decode(raw, *cs)),
        }
    }
    fn byte(&mut self, b: u8) {
        match self {
            Out::Utf8(v) => v.push(b),
            // Delimiters are ASCII; hex bytes are Latin-1 here.
            Out::Text(s, _) => s.push(b as char),
        }
    }
    fn finish(self) -> String {
        match self {
            Out::Utf8(v) => match String::from_utf8(v) {
                Ok(s) => s,
                Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
            },
            Out::Text(s, _) => s,
        }
    }
}

/// Decodes and unescapes a raw value: `\F\ \S\ \T\ \R\ \E\` become the delimiters,
/// `\Xhh..\` the bytes it spells (per `charset`; Latin-1 for ASCII and Latin-1);
/// `\H\ \N\ \Z..\ \C..\ \M..\ \.br\` and a lone or unterminated escape character are left
/// as written. Borrowed when there is nothing to change.
pub fn unescape<'a>(raw: &'a [u8], seps: &Separators, charset: Charset) -> Cow<'a, str> {
    let esc = seps.escape;
    let Some(mut open) = memchr(esc, raw) else {
        return decode(raw, charset);
    };
    let mut out = match charset {
        Charset::Utf8 => Out::Utf8(Vec::with_capacity(raw.len())),
        cs => Out::Text(String::with_capacity(raw.len()), cs),
    };
    // raw[done..open] is literal text not yet written.
    let mut done = 0;
    while let Some(len) = memchr(esc, &raw[open + 1..]) {
        let close = open + 1 + len;
        match classify(&raw[open + 1..close], seps) {
            Some(Sequence::Byte(b)) => {
                out.literal(&raw[done..open]);
                out.byte(b);
                done = close + 1;
            }
            Some(Sequence::Hex) => {
                out.literal(&raw[done..open]);
                for pair in raw[open + 2..close].chunks_exact(2) {
                    out.byte(hex_value(pair[0]) << 4 | hex_value(pair[1]));
                }
                done = close + 1;
            }
            Some(Sequence::Keep) => {}
            None => {
                // Not a sequence: this escape character is literal and the closing one
                // may open the next sequence.
                open = close;
                continue;
            }
        }
        match memchr(esc, &raw[close + 1..]) {
            Some(next) => open = close + 1 + next,
            None => break,
        }
    }
    if done == 0 {
        // Only kept sequences and literal escape characters: nothing changed.
        return decode(raw, charset);
    }
    out.literal(&raw[done..]);
    Cow::Owned(out.finish())
}

/// Escapes text for a field of a message we write: the five delimiters become
/// `\F\ \S\ \T\ \R\ \E\`, CR and LF become `\X0D\` and `\X0A\` (so a value can never end a
/// segment). Other characters, non-ASCII included, are kept as they are: messages we
/// write declare UTF-8. Borrowed when there is nothing to escape.
pub fn escape<'t>(text: &'t str, seps: &Separators) -> Cow<'t, str> {
    let special = |b: u8| seps.is_delimiter(b) || b == b'\r' || b == b'\n';
    let Some(first) = text.bytes().position(special) else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len() + 8);
    out.push_str(&text[..first]);
    for c in text[first..].chars() {
        let code = match c {
            '\r' => Some("X0D"),
            '\n' => Some("X0A"),
            _ if !c.is_ascii() => None,
            _ => {
                let b = c as u8;
                if b == seps.escape {
                    Some("E")
                } else if b == seps.field {
                    Some("F")
                } else if b == seps.component {
                    Some("S")
                } else if b == seps.subcomponent {
                    Some("T")
                } else if b == seps.repetition {
                    Some("R")
                } else {
                    None
                }
            }
        };
        match code {
            Some(code) => {
                out.push(seps.escape as char);
                out.push_str(code);
                out.push(seps.escape as char);
            }
            None => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn un(s: &str) -> String {
        unescape(s.as_bytes(), &Separators::STANDARD, Charset::Ascii).into_owned()
    }

    // FACTS §4.5 vectors (rust-hl7 src/escape_sequence.rs and python-hl7 tests/test_parse.py).
    #[test]
    fn delimiter_escapes() {
        assert_eq!(un(r"Escape this \F\ please"), "Escape this | please");
        assert_eq!(un(r"\R\"), "~");
        assert_eq!(un(r"\S\"), "^");
        assert_eq!(
            un(r"Obstetrician \T\ Gynaecologist"),
            "Obstetrician & Gynaecologist"
        );
        assert_eq!(
            un(r"Escape this \E\ pretty \F\ please"),
            r"Escape this \ pretty | please"
        );
    }

    #[test]
    fn left_as_is() {
        for s in [
            r"Escape this \F please",
            r"here\there.",
            r"\H\highlighted text\N\",
            r"\Z1234\",
            r"\C2842\",
            r"\M2442\",
            r"line\.br\next",
            r"trailing\",
            r"\",
            r"\\",
            r"\XZZ\",
            r"\X1\",
        ] {
            assert_eq!(un(s), s, "{s}");
            assert!(matches!(
                unescape(s.as_bytes(), &Separators::STANDARD, Charset::Ascii),
                Cow::Borrowed(_)
            ));
        }
    }

    #[test]
    fn borrowed_when_nothing_to_change() {
        assert!(matches!(
            unescape(b"plain", &Separators::STANDARD, Charset::Utf8),
            Cow::Borrowed("plain")
        ));
        assert!(matches!(
            unescape(b"plain", &Separators::STANDARD, Charset::Latin1),
            Cow::Borrowed("plain")
        ));
    }

    #[test]
    fn custom_delimiters() {
        // MSH^!@#$: field ^, component !, repetition @, escape #, subcomponent $.
        let seps = Separators {
            field: b'^',
            component: b'!',
            repetition: b'@',
            escape: b'#',
            subcomponent: b'$',
        };
        assert_eq!(
            unescape(b"Escape this #F# please", &seps, Charset::Ascii),
            "Escape this ^ please"
        );
        assert_eq!(unescape(b"#S##T##R##E#", &seps, Charset::Ascii), "!$@#");
        assert_eq!(escape("a^b!c$d@e#f", &seps), "a#F#b#S#c#T#d#R#e#E#f");
    }

    #[test]
    fn hex() {
        assert_eq!(un(r"\X20202020\"), "    ");
        // Hex bytes are Latin-1 in an ASCII or 8859/1 message.
        assert_eq!(un(r"\Xe1\\Xe9\\Xed\\Xf3\\Xfa\"), "áéíóú");
        assert_eq!(
            unescape(br"\Xe1\", &Separators::STANDARD, Charset::Latin1),
            "á"
        );
        // ... and UTF-8 in a UTF-8 message, across consecutive sequences.
        assert_eq!(
            unescape(br"caf\XC3\\XA9\!", &Separators::STANDARD, Charset::Utf8),
            "café!"
        );
        assert_eq!(
            unescape(br"\XC3A9\", &Separators::STANDARD, Charset::Utf8),
            "é"
        );
        // A lone Latin-1 byte in a UTF-8 message is replaced, not a panic.
        assert_eq!(
            unescape(br"\Xe1\", &Separators::STANDARD, Charset::Utf8),
            "\u{FFFD}"
        );
        assert_eq!(un(r"a\X0D\b"), "a\rb");
    }

    #[test]
    fn bad_sequence_then_good_one() {
        assert_eq!(un(r"a\b c\F\d"), r"a\b c|d");
        assert_eq!(un(r"\\F\"), r"\|");
        assert_eq!(un(r"\H\x\F\"), r"\H\x|");
    }

    #[test]
    fn decoding() {
        assert_eq!(decode(b"caf\xE9", Charset::Latin1), "café");
        assert_eq!(decode(b"caf\xE9", Charset::Ascii), "café");
        assert_eq!(decode("café".as_bytes(), Charset::Ascii), "café");
        assert_eq!(decode(b"caf\xE9", Charset::Utf8), "caf\u{FFFD}");
        // Latin-1 bytes that happen to be valid UTF-8 stay Latin-1.
        assert_eq!(decode("é".as_bytes(), Charset::Latin1), "Ã©");
        assert_eq!(
            unescape(b"caf\xE9 \\F\\", &Separators::STANDARD, Charset::Latin1),
            "café |"
        );
        assert_eq!(
            unescape(b"caf\xE9 \\F\\", &Separators::STANDARD, Charset::Utf8),
            "caf\u{FFFD} |"
        );
    }

    #[test]
    fn escape_writes_sequences() {
        let s = Separators::STANDARD;
        assert!(matches!(escape("plain text", &s), Cow::Borrowed(_)));
        assert_eq!(escape(r"a|b^c&d~e\f", &s), r"a\F\b\S\c\T\d\R\e\E\f");
        assert_eq!(escape("two\r\nlines", &s), r"two\X0D\\X0A\lines");
        assert_eq!(escape("äsdf|", &s), r"äsdf\F\");
    }

    #[test]
    fn escape_round_trips() {
        let s = Separators::STANDARD;
        for text in [r"a|b^c&d~e\f", "\\H\\", r"\X41\", "x\r\ny", "é|ü", "", r"\"] {
            let escaped = escape(text, &s);
            assert_eq!(
                unescape(escaped.as_bytes(), &s, Charset::Utf8),
                text,
                "{text:?}"
            );
        }
    }
}

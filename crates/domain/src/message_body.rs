//! SMS bodies: the length limit a provider accepts, and how many segments a body costs.
//! Segments follow GSM 03.38 and Twilio's counting, because carriers bill and pace per segment.

use crate::FieldError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Twilio refuses longer bodies (error 21617); counted in Unicode scalar values.
pub const MAX_BODY_CHARS: usize = 1600;

/// A body that is not blank and that Twilio will accept, trimmed of surrounding whitespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MessageBody(String);

/// Why a body was refused. Never repeats the text: it may be PHI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the message is empty")]
    Empty,
    #[error("the message has {chars} characters; the limit is {MAX_BODY_CHARS}")]
    TooLong { chars: usize },
}

impl BodyError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => "empty_body",
            Self::TooLong { .. } => "body_too_long",
        }
    }

    pub fn at(self, field: &str) -> FieldError {
        FieldError::new(field, self.code(), self.to_string())
    }
}

impl MessageBody {
    pub fn parse(text: &str) -> Result<Self, BodyError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(BodyError::Empty);
        }
        let chars = text.chars().count();
        if chars > MAX_BODY_CHARS {
            return Err(BodyError::TooLong { chars });
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    pub fn segments(&self) -> SegmentCount {
        segments(&self.0)
    }
}

impl fmt::Display for MessageBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for MessageBody {
    type Error = BodyError;
    fn try_from(s: String) -> Result<Self, BodyError> {
        Self::parse(&s)
    }
}

impl From<MessageBody> for String {
    fn from(b: MessageBody) -> String {
        b.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// GSM 03.38 default alphabet, 7 bits a character.
    Gsm7,
    /// UTF-16 on the wire (carriers say UCS-2), needed as soon as one character is not GSM-7.
    Ucs2,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gsm7 => "gsm7",
            Self::Ucs2 => "ucs2",
        }
    }

    /// Units that fit one message on its own.
    pub fn single_limit(self) -> usize {
        match self {
            Self::Gsm7 => 160,
            Self::Ucs2 => 70,
        }
    }

    /// Units per part of a concatenated message (the rest carries the 6-octet header).
    pub fn concatenated_limit(self) -> usize {
        match self {
            Self::Gsm7 => 153,
            Self::Ucs2 => 67,
        }
    }
}

/// What a body costs: the encoding, its length in septets (GSM-7) or UTF-16 code units
/// (UCS-2), and the number of segments carriers bill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentCount {
    pub encoding: Encoding,
    pub units: usize,
    pub segments: usize,
}

/// The GSM 03.38 basic table, in code-point order (0x1B, the escape, is left out).
const GSM7_BASIC: &str = concat!(
    "@£$¥èéùìòÇ\nØø\rÅå",
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ",
    " !\"#¤%&'()*+,-./",
    "0123456789:;<=>?",
    "¡ABCDEFGHIJKLMNO",
    "PQRSTUVWXYZÄÖÑÜ§",
    "¿abcdefghijklmno",
    "pqrstuvwxyzäöñüà",
);

/// The extension table: each is sent as ESC + character, two septets.
const GSM7_EXTENSION: &str = "\u{0C}^{}\\[~]|€";

fn is_gsm7_basic(c: char) -> bool {
    GSM7_BASIC.contains(c)
}

fn is_gsm7_extension(c: char) -> bool {
    GSM7_EXTENSION.contains(c)
}

/// GSM-7 when every character is in the basic or extension table, else UCS-2.
pub fn encoding(text: &str) -> Encoding {
    if text
        .chars()
        .all(|c| is_gsm7_basic(c) || is_gsm7_extension(c))
    {
        Encoding::Gsm7
    } else {
        Encoding::Ucs2
    }
}

/// Units and segments for `text`, as Twilio's segment calculator counts them.
///
/// A character never straddles two segments: an ESC pair, or a UTF-16 surrogate pair, that
/// would not fit in the rest of a segment starts the next one (the phone could not rejoin it).
/// An empty text is zero segments.
pub fn segments(text: &str) -> SegmentCount {
    let encoding = encoding(text);
    let width = |c: char| match encoding {
        Encoding::Gsm7 if is_gsm7_extension(c) => 2,
        Encoding::Gsm7 => 1,
        Encoding::Ucs2 => c.len_utf16(),
    };
    let units: usize = text.chars().map(width).sum();
    let segments = if units == 0 {
        0
    } else if units <= encoding.single_limit() {
        1
    } else {
        let cap = encoding.concatenated_limit();
        let (mut segments, mut used) = (1, 0);
        for w in text.chars().map(width) {
            if used + w > cap {
                segments += 1;
                used = 0;
            }
            used += w;
        }
        segments
    };
    SegmentCount {
        encoding,
        units,
        segments,
    }
}

/// Replaces typographic look-alikes (smart quotes, dashes, ellipsis, Unicode spaces,
/// bullets) with their GSM-7 equivalents, as Twilio's Smart Encoding does, so that one
/// pasted quote does not turn a 1-segment reminder into a 3-segment one.
///
/// Letters are left alone: `á` stays `á` (turning it into `a` changes a patient's words).
pub fn replace_lookalikes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' | '\u{2032}' | '\u{02BC}'
            | '\u{02B9}' | '\u{FF07}' | '\u{00B4}' | '`' | '\u{2039}' | '\u{203A}' => {
                out.push('\'')
            }
            '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' | '\u{2033}' | '\u{00AB}'
            | '\u{00BB}' | '\u{FF02}' => out.push('"'),
            '\u{2010}' | '\u{2011}' | '\u{2012}' | '\u{2013}' | '\u{2014}' | '\u{2015}'
            | '\u{2212}' | '\u{FE58}' | '\u{FE63}' | '\u{FF0D}' => out.push('-'),
            '\u{2026}' => out.push_str("..."),
            '\u{00A0}' | '\u{2000}'..='\u{200A}' | '\u{202F}' | '\u{205F}' | '\u{3000}' | '\t' => {
                out.push(' ')
            }
            '\u{2028}' | '\u{2029}' => out.push('\n'),
            // Invisible characters that only force UCS-2. ZWJ and variation selectors stay:
            // removing them would break emoji the author chose on purpose.
            '\u{200B}' | '\u{2060}' | '\u{FEFF}' | '\u{00AD}' => {}
            '\u{2022}' | '\u{2023}' | '\u{2043}' | '\u{25E6}' | '\u{2219}' => out.push('*'),
            '\u{2044}' | '\u{2215}' => out.push('/'),
            '\u{FF0C}' => out.push(','),
            '\u{FF1A}' => out.push(':'),
            '\u{FF1B}' => out.push(';'),
            '\u{FF01}' => out.push('!'),
            '\u{FF1F}' => out.push('?'),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(text: &str) -> (Encoding, usize, usize) {
        let s = segments(text);
        (s.encoding, s.units, s.segments)
    }

    fn digits(n: usize) -> String {
        "1234567890".chars().cycle().take(n).collect()
    }

    #[test]
    fn blank_and_overlong_bodies_are_refused_with_the_limit_named() {
        assert_eq!(MessageBody::parse("  \n\t "), Err(BodyError::Empty));
        let long = "é".repeat(1601);
        let err = MessageBody::parse(&long).unwrap_err();
        assert_eq!(err, BodyError::TooLong { chars: 1601 });
        assert!(err.to_string().contains("1600"), "{err}");
        assert_eq!(err.at("body").code, "body_too_long");
    }

    #[test]
    fn the_limit_counts_characters_not_bytes() {
        // 1,600 two-byte letters are 3,200 bytes and still within Twilio's limit.
        assert!(MessageBody::parse(&"ñ".repeat(1600)).is_ok());
        assert!(MessageBody::parse(&"😀".repeat(1600)).is_ok());
        assert!(MessageBody::parse(&"😀".repeat(1601)).is_err());
    }

    #[test]
    fn a_body_keeps_its_words_and_loses_its_surrounding_whitespace() {
        let body = MessageBody::parse("  See you Tuesday at 9:00.\n").unwrap();
        assert_eq!(body.as_str(), "See you Tuesday at 9:00.");
        let json = serde_json::to_string(&body).unwrap();
        assert_eq!(json, "\"See you Tuesday at 9:00.\"");
        assert!(serde_json::from_str::<MessageBody>("\"   \"").is_err());
    }

    #[test]
    fn every_character_of_the_gsm_basic_table_is_one_septet() {
        assert_eq!(GSM7_BASIC.chars().count(), 127);
        assert_eq!(count(GSM7_BASIC), (Encoding::Gsm7, 127, 1));
        for c in "éÉüñàÄÖÑÜØøÅåÆæßΔΦΓΛΩΠΨΣΘΞ¡¿§¤£¥Ç".chars() {
            assert_eq!(encoding(&c.to_string()), Encoding::Gsm7, "{c}");
        }
    }

    #[test]
    fn spanish_accents_outside_gsm_force_ucs2() {
        for c in "ÁÚúçíÍóÓáâ`".chars() {
            assert_eq!(encoding(&c.to_string()), Encoding::Ucs2, "{c}");
        }
    }

    #[test]
    fn plain_gsm_text_splits_at_160_then_153() {
        assert_eq!(count(&"a".repeat(160)), (Encoding::Gsm7, 160, 1));
        assert_eq!(count(&"a".repeat(161)), (Encoding::Gsm7, 161, 2));
        assert_eq!(count(&"a".repeat(306)), (Encoding::Gsm7, 306, 2));
        assert_eq!(count(&"a".repeat(307)), (Encoding::Gsm7, 307, 3));
    }

    #[test]
    fn extension_characters_cost_two_septets() {
        for c in ['|', '^', '€', '{', '}', '[', ']', '~', '\\'] {
            let fits = format!("{c}{}", digits(158));
            assert_eq!(count(&fits), (Encoding::Gsm7, 160, 1), "{c} + 158");
            let over = format!("{c}{}", digits(159));
            assert_eq!(count(&over), (Encoding::Gsm7, 161, 2), "{c} + 159");
        }
        assert_eq!(count("\u{0C}"), (Encoding::Gsm7, 2, 1));
    }

    #[test]
    fn an_escape_pair_never_straddles_a_segment_boundary() {
        // 152 septets, then `€` would need septets 153 and 154: it opens segment two.
        let text = format!("{}€{}", "a".repeat(152), "a".repeat(152));
        assert_eq!(count(&text), (Encoding::Gsm7, 306, 3));
        // One septet earlier it fits, and 306 septets are two segments.
        let text = format!("{}€{}", "a".repeat(151), "a".repeat(153));
        assert_eq!(count(&text), (Encoding::Gsm7, 306, 2));
    }

    #[test]
    fn emoji_count_in_utf16_units() {
        assert_eq!(count(&format!("😜{}", digits(68))), (Encoding::Ucs2, 70, 1));
        assert_eq!(count(&format!("😜{}", digits(69))), (Encoding::Ucs2, 71, 2));
        assert_eq!(
            count(&format!("😜{}", digits(133))),
            (Encoding::Ucs2, 135, 3)
        );
    }

    #[test]
    fn flags_and_zwj_sequences_count_every_code_unit() {
        assert_eq!(count(&format!("🇮🇹{}", digits(66))), (Encoding::Ucs2, 70, 1));
        assert_eq!(count(&format!("🇮🇹{}", digits(67))), (Encoding::Ucs2, 71, 2));
        let rainbow = "\u{1F3F3}\u{FE0F}\u{200D}\u{1F308}";
        assert_eq!(count(rainbow), (Encoding::Ucs2, 6, 1));
        assert_eq!(
            count(&format!("{rainbow}{}", digits(64))),
            (Encoding::Ucs2, 70, 1)
        );
        assert_eq!(
            count(&format!("{rainbow}{}", digits(65))),
            (Encoding::Ucs2, 71, 2)
        );
    }

    #[test]
    fn in_ucs2_extension_characters_count_one() {
        // Twilio's calculator (issue #18): `😀` is two units, so 68 brackets make 70 units.
        // FACTS §2.2 writes "+69 → 1, +70 → 2"; the calculator's own strings hold 68 and 69.
        assert_eq!(
            count(&format!("😀{}", "]".repeat(68))),
            (Encoding::Ucs2, 70, 1)
        );
        assert_eq!(
            count(&format!("😀{}", "]".repeat(69))),
            (Encoding::Ucs2, 71, 2)
        );
        assert_eq!(count(&format!("😀{}", "]".repeat(70))).2, 2);
    }

    #[test]
    fn accented_capitals_outside_gsm_split_at_70() {
        assert_eq!(count(&"Á".repeat(70)), (Encoding::Ucs2, 70, 1));
        assert_eq!(count(&"Á".repeat(71)), (Encoding::Ucs2, 71, 2));
    }

    #[test]
    fn combining_accents_count_per_code_point() {
        let e = "e\u{301}\u{301}\u{301}";
        assert_eq!(
            count(&format!("{e}{}", "a".repeat(66))),
            (Encoding::Ucs2, 70, 1)
        );
        assert_eq!(
            count(&format!("{e}{}", "a".repeat(67))),
            (Encoding::Ucs2, 71, 2)
        );
    }

    #[test]
    fn a_surrogate_pair_never_straddles_a_segment_boundary() {
        // 66 units, then an emoji needing units 67 and 68: it opens segment two.
        let text = format!("{}😀{}", "Á".repeat(66), "Á".repeat(66));
        assert_eq!(count(&text), (Encoding::Ucs2, 134, 3));
        let text = format!("{}😀{}", "Á".repeat(65), "Á".repeat(67));
        assert_eq!(count(&text), (Encoding::Ucs2, 134, 2));
    }

    #[test]
    fn an_empty_text_costs_nothing() {
        assert_eq!(count(""), (Encoding::Gsm7, 0, 0));
    }

    #[test]
    fn smart_quotes_no_longer_double_the_cost_of_a_reminder() {
        let pasted = "Valley Clinic: your visit is Tue 3/10 at 9:00 AM. Bring your \u{201C}insurance card\u{201D} \u{2013} it\u{2019}s needed\u{2026} Reply STOP to opt out";
        let before = segments(pasted);
        assert_eq!((before.encoding, before.segments), (Encoding::Ucs2, 2));

        let cleaned = replace_lookalikes(pasted);
        assert_eq!(
            cleaned,
            "Valley Clinic: your visit is Tue 3/10 at 9:00 AM. Bring your \"insurance card\" - it's needed... Reply STOP to opt out"
        );
        let after = segments(&cleaned);
        assert_eq!((after.encoding, after.segments), (Encoding::Gsm7, 1));
    }

    #[test]
    fn lookalike_spaces_dashes_and_bullets_become_gsm() {
        let text =
            "9:00\u{00A0}AM\u{2009}\u{2014}\u{2009}bring:\n\u{2022} ID\n\u{2022} list\u{200B}";
        let cleaned = replace_lookalikes(text);
        assert_eq!(cleaned, "9:00 AM - bring:\n* ID\n* list");
        assert_eq!(encoding(&cleaned), Encoding::Gsm7);
    }

    #[test]
    fn lookalike_replacement_leaves_letters_and_emoji_alone() {
        let text = "Recuerde su cita en la clínica \u{1F3F3}\u{FE0F}\u{200D}\u{1F308}";
        assert_eq!(replace_lookalikes(text), text);
    }
}

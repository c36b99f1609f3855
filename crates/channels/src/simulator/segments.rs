//! How many SMS segments a body costs: GSM-7 fits 160 septets in one segment and 153 per
//! part once split; anything outside GSM-7 makes the whole body UCS-2, 70 and 67 UTF-16 units.

const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// Sent as ESC + a character, so each costs two septets.
const GSM7_EXTENSION: &str = "^{}\\[~]|€\u{000C}";

/// Segments `body` is billed as (an empty body, as in a media-only message, counts as one).
pub fn count_segments(body: &str) -> u32 {
    let gsm_widths: Option<Vec<usize>> = body.chars().map(gsm7_septets).collect();
    match gsm_widths {
        Some(widths) => pack(widths.into_iter(), 160, 153),
        None => pack(body.chars().map(char::len_utf16), 70, 67),
    }
}

fn gsm7_septets(c: char) -> Option<usize> {
    if GSM7_BASIC.contains(c) {
        Some(1)
    } else if GSM7_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// Fills segments in order; a character (an escape pair, a surrogate pair) never straddles two.
fn pack(widths: impl Iterator<Item = usize> + Clone, single: usize, part: usize) -> u32 {
    if widths.clone().sum::<usize>() <= single {
        return 1;
    }
    let (mut segments, mut used) = (1, 0);
    for width in widths {
        if used + width > part {
            segments += 1;
            used = 0;
        }
        used += width;
    }
    segments
}

#[cfg(test)]
mod tests {
    use super::count_segments;

    fn digits(n: usize) -> String {
        "1".repeat(n)
    }

    #[test]
    fn gsm7_bodies_split_at_160_then_153() {
        assert_eq!(count_segments(""), 1);
        assert_eq!(count_segments(&"a".repeat(160)), 1);
        assert_eq!(count_segments(&"a".repeat(161)), 2);
        assert_eq!(count_segments(&"a".repeat(306)), 2);
        assert_eq!(count_segments(&"a".repeat(307)), 3);
    }

    #[test]
    fn extension_characters_cost_two_septets() {
        for c in ["|", "^", "€", "{", "}", "[", "]", "~", "\\"] {
            assert_eq!(count_segments(&format!("{c}{}", digits(158))), 1, "{c}");
            assert_eq!(count_segments(&format!("{c}{}", digits(159))), 2, "{c}");
        }
    }

    #[test]
    fn anything_outside_gsm7_makes_the_body_ucs2() {
        assert_eq!(count_segments(&format!("😜{}", digits(68))), 1);
        assert_eq!(count_segments(&format!("😜{}", digits(69))), 2);
        assert_eq!(count_segments(&format!("😜{}", digits(133))), 3);
        assert_eq!(count_segments(&format!("🇮🇹{}", digits(66))), 1);
        assert_eq!(count_segments(&format!("🇮🇹{}", digits(67))), 2);
        assert_eq!(count_segments(&format!("🏳️‍🌈{}", digits(64))), 1);
        assert_eq!(count_segments(&format!("🏳️‍🌈{}", digits(65))), 2);
        assert_eq!(count_segments(&format!("😀{}", "]".repeat(68))), 1);
        assert_eq!(count_segments(&format!("😀{}", "]".repeat(69))), 2);
        assert_eq!(count_segments(&"Á".repeat(70)), 1);
        assert_eq!(count_segments(&"Á".repeat(71)), 2);
        assert_eq!(
            count_segments(&format!("é\u{301}\u{301}{}", "a".repeat(67))),
            1
        );
        assert_eq!(
            count_segments(&format!("e\u{301}\u{301}\u{301}{}", "a".repeat(66))),
            1
        );
        assert_eq!(
            count_segments(&format!("e\u{301}\u{301}\u{301}{}", "a".repeat(67))),
            2
        );
    }

    #[test]
    fn accented_latin_letters_in_gsm7_stay_gsm7() {
        assert_eq!(count_segments(&"é".repeat(160)), 1);
        assert_eq!(count_segments(&"ñ".repeat(161)), 2);
    }
}

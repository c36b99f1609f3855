//! FACTS §4.6 quirks and the shape of the API.

use super::*;

const SIMPLE: &str = "MSH|^~\\&|GHH LAB|ELAB-3|GHH OE|BLDG4|200202150930||ORU^R01|CNTRL-3456|P|2.4\r\
PID|Field1|Component1^Component2|Component1^Sub-Component1&Sub-Component2^Component3|Repeat1~Repeat2\r";

fn parse(s: &str) -> Message<'_> {
    Message::parse(s.as_bytes()).unwrap()
}

#[test]
fn msh_numbering() {
    let m = parse(SIMPLE);
    let msh = m.msh();
    assert_eq!(msh.id(), "MSH");
    assert_eq!(msh.index(), 0);
    assert_eq!(msh.field(1).raw(), b"|");
    assert_eq!(msh.field(1).text(), "|");
    assert_eq!(msh.field(2).raw(), b"^~\\&");
    assert_eq!(msh.field(3).text(), "GHH LAB");
    assert_eq!(msh.field(9).component(2).text(), "R01");
    assert_eq!(msh.field(12).text(), "2.4");
    assert_eq!(msh.field_count(), 12);
    assert_eq!(msh.field(0).text(), "MSH");
    assert_eq!(m.get("MSH-1").as_deref(), Some("|"));
    assert_eq!(m.get("MSH-9.2").as_deref(), Some("R01"));
    assert_eq!(m.get("MSH.10").as_deref(), Some("CNTRL-3456"));
}

#[test]
fn msh2_is_not_split_or_unescaped() {
    let m = parse(SIMPLE);
    let f = m.msh().field(2);
    assert_eq!(f.text(), "^~\\&");
    assert_eq!(f.repetitions().count(), 1);
    assert_eq!(f.repetition(1).raw(), b"^~\\&");
    assert_eq!(f.repetition(2).raw(), b"");
    assert_eq!(f.component(1).raw(), b"^~\\&");
    assert_eq!(f.component(2).raw(), b"");
    assert_eq!(f.component(1).subcomponent(1).raw(), b"^~\\&");
    assert_eq!(m.get("MSH-2").as_deref(), Some("^~\\&"));
    assert_eq!(m.get("MSH-2.2"), None);
}

#[test]
fn repetitions_components_subcomponents() {
    let m = parse(SIMPLE);
    let pid = m.segment("PID").unwrap();
    assert_eq!(pid.index(), 1);
    assert_eq!(pid.field_count(), 4);
    assert_eq!(pid.field(1).text(), "Field1");
    assert_eq!(pid.field(2).component(2).text(), "Component2");
    let f3 = pid.field(3);
    assert_eq!(f3.component(2).subcomponent(2).text(), "Sub-Component2");
    let subs: Vec<_> = f3
        .component(2)
        .subcomponents()
        .map(|s| s.text().into_owned())
        .collect();
    assert_eq!(subs, ["Sub-Component1", "Sub-Component2"]);
    let comps: Vec<_> = f3
        .repetition(1)
        .components()
        .map(|c| c.raw().to_vec())
        .collect();
    assert_eq!(comps.len(), 3);
    let reps: Vec<_> = pid
        .field(4)
        .repetitions()
        .map(|r| r.text().into_owned())
        .collect();
    assert_eq!(reps, ["Repeat1", "Repeat2"]);
    assert_eq!(pid.field(4).text(), "Repeat1");
    assert_eq!(pid.field(4).repetition(2).text(), "Repeat2");
    assert_eq!(m.get("PID-4[2]").as_deref(), Some("Repeat2"));
    assert_eq!(m.get("PID-3.2.1").as_deref(), Some("Sub-Component1"));
    // Text of a whole value keeps the (unescaped) separators.
    assert_eq!(
        f3.text(),
        "Component1^Sub-Component1&Sub-Component2^Component3"
    );
}

#[test]
fn absent_things_are_empty() {
    let m = parse(SIMPLE);
    let pid = m.segment("PID").unwrap();
    assert!(pid.field(99).is_empty());
    assert_eq!(pid.field(99).raw(), b"");
    assert_eq!(pid.field(99).text(), "");
    assert_eq!(pid.field(99).repetitions().count(), 0);
    assert!(pid.field(4).repetition(3).is_empty());
    assert!(pid.field(4).repetition(0).is_empty());
    assert!(pid.field(1).component(0).is_empty());
    assert!(pid.field(1).component(2).is_empty());
    assert!(pid.field(1).component(1).subcomponent(5).is_empty());
    assert_eq!(pid.field(1).component(9).components_len(), 0);
    assert_eq!(m.segment("OBX").map(|s| s.index()), None);
    assert_eq!(m.get("OBX-5"), None);
    assert_eq!(m.get("PID-99"), None);
    assert_eq!(m.get("PID-1.5"), None);
    assert_eq!(m.get("PID[2]-1"), None);
    assert_eq!(m.get("not a path"), None);
    assert!(m.segment_at(2).is_none());
    assert_eq!(m.segment_at(1).unwrap().id(), "PID");
}

impl Component<'_> {
    fn components_len(&self) -> usize {
        self.subcomponents().count()
    }
}

#[test]
fn explicit_null() {
    let m = parse("MSH|^~\\&|A\rPID|1|\"\"||\"\"^x\r");
    let pid = m.segment("PID").unwrap();
    assert!(pid.field(2).is_null());
    assert!(!pid.field(2).is_empty());
    assert_eq!(pid.field(2).text(), "\"\"");
    assert!(!pid.field(3).is_null());
    assert!(pid.field(3).is_empty());
    assert!(!pid.field(4).is_null());
    assert!(pid.field(4).component(1).is_null());
    assert_eq!(m.get("PID-2").as_deref(), Some("\"\""));
}

#[test]
fn bom_and_leading_whitespace() {
    let text = format!("\u{FEFF}\r\n  {SIMPLE}");
    let m = Message::parse(text.as_bytes()).unwrap();
    assert_eq!(m.segment_count(), 2);
    assert_eq!(m.get("PID-1").as_deref(), Some("Field1"));
    assert_eq!(m.bytes(), text.as_bytes());
    assert_eq!(m.msh().raw()[..3], *b"MSH");
}

#[test]
fn lf_crlf_mixed_and_trailing_blank_lines() {
    for sep in ["\n", "\r\n", "\n\r"] {
        let text = SIMPLE.replace('\r', sep) + "\n\n  \r\n";
        let m = Message::parse(text.as_bytes()).unwrap();
        assert_eq!(m.segment_count(), 2, "{sep:?}");
        assert_eq!(m.get("PID-4[2]").as_deref(), Some("Repeat2"));
        assert_eq!(m.segment("PID").unwrap().raw().last(), Some(&b'2'));
    }
    let mixed = "MSH|^~\\&|A\nEVN|1\r\nPID|2\rPV1|3";
    let m = parse(mixed);
    let ids: Vec<_> = m.segments().map(|s| s.id()).collect();
    assert_eq!(ids, ["MSH", "EVN", "PID", "PV1"]);
    assert_eq!(m.get("PV1-1").as_deref(), Some("3"));
}

#[test]
fn missing_final_terminator() {
    let m = parse("MSH|^~\\&|A\rPID|1|2");
    assert_eq!(m.get("PID-2").as_deref(), Some("2"));
    let m = parse("MSH|^~\\&");
    assert_eq!(m.segment_count(), 1);
    assert_eq!(m.msh().field_count(), 2);
    assert_eq!(m.get("MSH-3"), None);
    let m = parse("MSH|^~\\&|");
    assert_eq!(m.msh().field_count(), 3);
}

#[test]
fn custom_delimiters() {
    let m = parse("MSH^!@#$^APP^FAC^^^^^ADT!A04^1^P^2.5\rPID^1^^a!b$c@d#F#e\r");
    let s = m.separators();
    assert_eq!(
        (s.field, s.component, s.repetition, s.escape, s.subcomponent),
        (b'^', b'!', b'@', b'#', b'$')
    );
    assert_eq!(m.get("MSH-1").as_deref(), Some("^"));
    assert_eq!(m.get("MSH-2").as_deref(), Some("!@#$"));
    assert_eq!(m.get("MSH-9.2").as_deref(), Some("A04"));
    assert_eq!(m.get("PID-3.2.2").as_deref(), Some("c"));
    assert_eq!(m.get("PID-3[2]").as_deref(), Some("d^e"));
}

#[test]
fn escapes_in_values() {
    let m = parse("MSH|^~\\&|A\rNTE|1||Obstetrician \\T\\ Gynaecologist \\F\\ \\Xe1\\\r");
    assert_eq!(
        m.get("NTE-3").as_deref(),
        Some("Obstetrician & Gynaecologist | á")
    );
    let nte = m.segment("NTE").unwrap();
    // The escaped & is not a subcomponent separator.
    assert_eq!(nte.field(3).component(1).subcomponents().count(), 1);
}

#[test]
fn charsets() {
    let latin = b"MSH|^~\\&|A|||||||||2.5||||||8859/1\rPID|1||||Ren\xE9\r";
    let m = Message::parse(latin).unwrap();
    assert_eq!(m.charset(), Charset::Latin1);
    assert_eq!(m.get("PID-5").as_deref(), Some("René"));
    assert_eq!(m.get("MSH-18").as_deref(), Some("8859/1"));

    let utf8 = b"MSH|^~\\&|A|||||||||2.5||||||UNICODE UTF-8\rPID|1||||Ren\xE9 \xC3\xA9\r";
    let m = Message::parse(utf8).unwrap();
    assert_eq!(m.charset(), Charset::Utf8);
    assert_eq!(m.get("PID-5").as_deref(), Some("Ren\u{FFFD} é"));

    for (value, cs) in [
        ("", Charset::Ascii),
        ("ASCII", Charset::Ascii),
        ("UTF-8", Charset::Utf8),
        ("unicode utf-8", Charset::Utf8),
        ("UNICODE", Charset::Utf8),
        (" 8859/1 ", Charset::Latin1),
        ("UNICODE UTF-8~8859/1", Charset::Utf8),
    ] {
        let text = format!("MSH|^~\\&|A|||||||||2.5||||||{value}\r");
        assert_eq!(parse(&text).charset(), cs, "{value:?}");
    }
    let err = Message::parse(b"MSH|^~\\&|A|||||||||2.5||||||ISO IR87\r").unwrap_err();
    assert_eq!(err, ParseError::UnsupportedCharset("ISO IR87".into()));
    // ASCII (or empty) MSH-18: UTF-8 when valid, else Latin-1.
    let m = Message::parse(b"MSH|^~\\&|A\rPID|caf\xE9|caf\xC3\xA9\r").unwrap();
    assert_eq!(m.get("PID-1").as_deref(), Some("café"));
    assert_eq!(m.get("PID-2").as_deref(), Some("café"));
}

#[test]
fn errors() {
    assert_eq!(Message::parse(b"").unwrap_err(), ParseError::Empty);
    assert_eq!(
        Message::parse(b"\xEF\xBB\xBF \r\n").unwrap_err(),
        ParseError::Empty
    );
    assert_eq!(Message::parse(b"PID|1").unwrap_err(), ParseError::NoMsh);
    assert_eq!(
        Message::parse(b"BHS|^~\\&\rMSH|^~\\&").unwrap_err(),
        ParseError::NoMsh
    );
    assert_eq!(Message::parse(b"MSHA|").unwrap_err(), ParseError::NoMsh);
    for bad in [
        &b"MSH"[..],
        b"MSH|",
        b"MSH|^~\\",
        b"MSH|^~\\&#!",
        b"MSH|^~\\^",
        b"MSH|^|\\&",
        b"MSH|^~ &",
        b"MSH|^~a&",
        b"MSH ^~\\&",
        b"MSH|^~\\&\x01",
    ] {
        assert!(
            matches!(
                Message::parse(bad),
                Err(ParseError::BadEncodingCharacters(_))
            ),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(
        Message::parse(b"MSH|^~\\&|A\rPID|1\rcontinued text\r").unwrap_err(),
        ParseError::BadSegmentId { segment: 2 }
    );
    assert_eq!(
        Message::parse(b"MSH|^~\\&|A\rPIDX|1\r").unwrap_err(),
        ParseError::BadSegmentId { segment: 1 }
    );
    // Error messages carry no content.
    let e = Message::parse(b"MSH|^~\\&|A\rSECRET NAME\r").unwrap_err();
    assert!(!e.to_string().contains("SECRET"));
}

#[test]
fn truncation_character() {
    let m = parse("MSH|^~\\&#|A\rPID|a#b\r");
    assert_eq!(m.truncation_character(), Some(b'#'));
    assert_eq!(m.get("MSH-2").as_deref(), Some("^~\\&#"));
    assert_eq!(m.get("PID-1").as_deref(), Some("a#b"));
    assert_eq!(parse(SIMPLE).truncation_character(), None);
}

#[test]
fn segment_only_id_and_occurrences() {
    let m = parse("MSH|^~\\&|A\rPID|1||A1\rMRG|X\rPID|2||A2\rMRG|Y\rPD1\r");
    let pids: Vec<_> = m
        .segments_named("PID")
        .map(|s| s.field(3).text().into_owned())
        .collect();
    assert_eq!(pids, ["A1", "A2"]);
    assert_eq!(m.get("PID[2]-3").as_deref(), Some("A2"));
    assert_eq!(m.get("MRG[2]-1").as_deref(), Some("Y"));
    let pd1 = m.segment("PD1").unwrap();
    assert_eq!(pd1.field_count(), 0);
    assert!(pd1.field(1).is_empty());
    assert_eq!(pd1.raw(), b"PD1");
}

#[test]
fn scratch_reuse() {
    let mut scratch = Scratch::default();
    for _ in 0..3 {
        let m = Message::parse_with(SIMPLE.as_bytes(), scratch).unwrap();
        assert_eq!(m.get("PID-4[2]").as_deref(), Some("Repeat2"));
        scratch = m.into_scratch();
    }
    let owned = String::from("MSH|^~\\&|B");
    let m = Message::parse_with(owned.as_bytes(), scratch).unwrap();
    assert_eq!(m.get("MSH-3").as_deref(), Some("B"));
}

#[test]
fn debug_shows_no_content() {
    let m = parse("MSH|^~\\&|A\rPID|1||SECRET\r");
    let d = format!(
        "{m:?} {:?} {:?}",
        m.segment("PID").unwrap(),
        m.segment("PID").unwrap().field(3)
    );
    assert!(!d.contains("SECRET"), "{d}");
    assert!(d.contains("PID"));
}

#[test]
fn text_lives_as_long_as_the_input() {
    let bytes = SIMPLE.as_bytes().to_vec();
    let value = {
        let m = Message::parse(&bytes).unwrap();
        m.get("PID-1").unwrap()
    };
    assert_eq!(value, "Field1");
    assert!(matches!(value, Cow::Borrowed(_)));
}

//! Acknowledgments (FACTS §4.3): building the reply to a message, and reading a reply.

use std::fmt;
use std::str::FromStr;

use crate::build::MessageWriter;
use crate::{Message, Separators};

/// MSA-1. `AA`/`AE`/`AR` are application acknowledgments (original mode, MSH-15 empty);
/// `CA`/`CE`/`CR` accept (commit) acknowledgments (enhanced mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(clippy::upper_case_acronyms)]
pub enum AckCode {
    /// Application accept.
    AA,
    /// Application error: the sender should fix the message and send it again.
    AE,
    /// Application reject: unsupported type/event/processing id/version, or a problem
    /// unrelated to content; send again later unchanged.
    AR,
    /// Commit accept.
    CA,
    /// Commit error.
    CE,
    /// Commit reject.
    CR,
}

impl AckCode {
    /// The MSA-1 code.
    pub fn as_str(&self) -> &'static str {
        match self {
            AckCode::AA => "AA",
            AckCode::AE => "AE",
            AckCode::AR => "AR",
            AckCode::CA => "CA",
            AckCode::CE => "CE",
            AckCode::CR => "CR",
        }
    }

    /// `AA` or `CA`.
    pub fn is_accept(&self) -> bool {
        matches!(self, AckCode::AA | AckCode::CA)
    }

    /// `CA`, `CE` or `CR` (enhanced-mode accept acknowledgment).
    pub fn is_commit(&self) -> bool {
        matches!(self, AckCode::CA | AckCode::CE | AckCode::CR)
    }

    /// The short MSA-3 text used when no error gives one.
    pub fn short_text(&self) -> &'static str {
        match self {
            AckCode::AA => "Message accepted",
            AckCode::AE => "Application error",
            AckCode::AR => "Application reject",
            AckCode::CA => "Commit accept",
            AckCode::CE => "Commit error",
            AckCode::CR => "Commit reject",
        }
    }
}

impl fmt::Display for AckCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AckCode {
    type Err = ();
    /// Case-insensitive, surrounding spaces ignored.
    fn from_str(s: &str) -> Result<AckCode, ()> {
        let s = s.trim();
        [
            AckCode::AA,
            AckCode::AE,
            AckCode::AR,
            AckCode::CA,
            AckCode::CE,
            AckCode::CR,
        ]
        .into_iter()
        .find(|c| c.as_str().eq_ignore_ascii_case(s))
        .ok_or(())
    }
}

/// One error to report in an ERR segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckError {
    /// Segment id, e.g. `PID` (empty for a message-level problem).
    pub segment: String,
    /// Which occurrence of that segment, 1-based.
    pub sequence: usize,
    /// Field position, when one field is at fault.
    pub field: Option<usize>,
    /// Component position within that field.
    pub component: Option<usize>,
    /// HL7 table 0357: 100 segment sequence error, 101 required field missing, 102 data
    /// type error, 103 table value not found, 200 unsupported message type, 201
    /// unsupported event, 202 unsupported processing id, 203 unsupported version, 204
    /// unknown key, 205 duplicate key, 206 record locked, 207 application internal error.
    pub code: u16,
    /// `E` error, `W` warning, `I` information (`F` fatal in v2.7+).
    pub severity: char,
    /// A sentence for a person. Never PHI: name the field, not its value.
    pub message: String,
}

impl AckError {
    /// An error (`E`) about one field.
    pub fn field(segment: &str, sequence: usize, field: usize, code: u16, message: &str) -> Self {
        AckError {
            segment: segment.to_owned(),
            sequence,
            field: Some(field),
            component: None,
            code,
            severity: 'E',
            message: message.to_owned(),
        }
    }

    /// An error (`E`) about the whole message.
    pub fn message(code: u16, message: &str) -> Self {
        AckError {
            segment: String::new(),
            sequence: 0,
            field: None,
            component: None,
            code,
            severity: 'E',
            message: message.to_owned(),
        }
    }
}

/// The table-0357 text of an error code.
pub fn error_code_text(code: u16) -> &'static str {
    match code {
        0 => "Message accepted",
        100 => "Segment sequence error",
        101 => "Required field missing",
        102 => "Data type error",
        103 => "Table value not found",
        200 => "Unsupported message type",
        201 => "Unsupported event code",
        202 => "Unsupported processing id",
        203 => "Unsupported version id",
        204 => "Unknown key identifier",
        205 => "Duplicate key identifier",
        206 => "Application record locked",
        207 => "Application internal error",
        _ => "Error",
    }
}

/// Which ERR layout a version calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrStyle {
    /// v2.5+: ERR-2 location, ERR-3 code, ERR-4 severity, ERR-8 message.
    Modern,
    /// before v2.5: ERR-1 (ELD).
    Legacy,
    /// Unknown version: both.
    Both,
}

fn err_style(version: &str) -> ErrStyle {
    let mut parts = version.trim().split('.');
    let major = parts.next().and_then(|p| p.parse::<u32>().ok());
    let minor = parts.next().and_then(|p| p.parse::<u32>().ok()).or(Some(0));
    match (major, minor) {
        (Some(major), Some(minor)) if (major, minor) >= (2, 5) => ErrStyle::Modern,
        (Some(_), Some(_)) => ErrStyle::Legacy,
        _ => ErrStyle::Both,
    }
}

fn msa_text(code: AckCode, errors: &[AckError]) -> Option<String> {
    if code == AckCode::AA || code == AckCode::CA {
        return None;
    }
    let text = errors
        .iter()
        .map(|e| e.message.trim())
        .find(|m| !m.is_empty())
        .unwrap_or(code.short_text());
    // MSA-3 is 80 characters at most.
    Some(text.chars().take(80).collect())
}

fn write_errors(w: &mut MessageWriter, errors: &[AckError], style: ErrStyle) {
    for e in errors {
        w.segment("ERR");
        let seq = if e.segment.is_empty() {
            String::new()
        } else {
            e.sequence.max(1).to_string()
        };
        let field = e.field.map(|f| f.to_string()).unwrap_or_default();
        let code = e.code.to_string();
        let code_text = error_code_text(e.code);
        if style != ErrStyle::Modern {
            // ELD: segment^sequence^field^code&text&HL70357&&message (as in the NIST sample).
            w.field_with_subcomponents(
                1,
                &[
                    &[&e.segment],
                    &[&seq],
                    &[&field],
                    &[&code, code_text, "HL70357", "", &e.message],
                ],
            );
        }
        if style != ErrStyle::Legacy {
            let rep = if e.field.is_some() { "1" } else { "" };
            let component = e.component.map(|c| c.to_string()).unwrap_or_default();
            w.field(2, &[&e.segment, &seq, &field, rep, &component]);
            w.field(3, &[&code, code_text, "HL70357"]);
            w.field(4, &[&e.severity.to_string()]);
            w.field(8, &[&e.message]);
        }
    }
}

fn raw_str<'a>(raw: &'a [u8]) -> std::borrow::Cow<'a, str> {
    String::from_utf8_lossy(raw)
}

/// Builds the reply to `original` (FACTS §4.3), in the original's separators: MSH-3/4
/// and MSH-5/6 swapped, MSH-7 = `timestamp`, MSH-9 = `ACK^<trigger>^ACK`, MSH-10 =
/// `control_id`, MSH-11/12 (and MSH-18 when present) copied; MSA-1 = `code`, MSA-2 =
/// the original MSH-10, MSA-3 = a short text unless accepted; then one ERR per error,
/// in the v2.5+ layout (ERR-2/3/4/8) or the older ERR-1 one depending on MSH-12 (both
/// when MSH-12 is unreadable). Every segment is terminated by CR.
pub fn build(
    original: &Message,
    code: AckCode,
    control_id: &str,
    timestamp: &str,
    errors: &[AckError],
) -> String {
    let seps = *original.separators();
    let msh = original.msh();
    let raw = |n: usize| raw_str(msh.field(n).raw());
    let mut w = MessageWriter::with_separators(seps);
    w.segment("MSH")
        .field_raw(3, &raw(5))
        .field_raw(4, &raw(6))
        .field_raw(5, &raw(3))
        .field_raw(6, &raw(4))
        .text(7, timestamp);
    let trigger = raw_str(msh.field(9).component(2).raw());
    if trigger.is_empty() {
        w.text(9, "ACK");
    } else {
        let c = seps.component as char;
        w.field_raw(9, &format!("ACK{c}{trigger}{c}ACK"));
    }
    w.text(10, control_id)
        .field_raw(11, &raw(11))
        .field_raw(12, &raw(12))
        .field_raw(18, &raw(18));
    w.segment("MSA")
        .text(1, code.as_str())
        .field_raw(2, &raw(10));
    if let Some(text) = msa_text(code, errors) {
        w.text(3, &text);
    }
    let version = msh.field(12).component(1).text();
    write_errors(&mut w, errors, err_style(&version));
    w.finish()
}

/// The reply to input that is not a message at all (no MSH): standard separators,
/// empty MSH-3..6, MSH-9 = `ACK`, MSH-11 = `P`, MSH-12 = `2.5`, an empty MSA-2, and an
/// ERR in both layouts (the sender's version is unknown).
pub fn build_for_unparseable(
    code: AckCode,
    control_id: &str,
    timestamp: &str,
    error: &AckError,
) -> String {
    let mut w = MessageWriter::with_separators(Separators::STANDARD);
    w.segment("MSH")
        .text(7, timestamp)
        .text(9, "ACK")
        .text(10, control_id)
        .text(11, "P")
        .text(12, "2.5");
    w.segment("MSA").text(1, code.as_str());
    if let Some(text) = msa_text(code, std::slice::from_ref(error)) {
        w.text(3, &text);
    }
    write_errors(&mut w, std::slice::from_ref(error), ErrStyle::Both);
    w.finish()
}

/// One error read from an ERR segment of a reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplyError {
    /// Table-0357 code (ERR-3.1, or the code inside ERR-1).
    pub code: Option<u16>,
    /// ERR-4.
    pub severity: Option<char>,
    /// Where: `segment^sequence^field...` as sent (ERR-2, or ERR-1 components 1-3).
    pub location: Option<String>,
    /// The best text: ERR-8, else ERR-7, else ERR-3.2; for ERR-1 its alternate text,
    /// else its text.
    pub text: Option<String>,
}

/// What a reply says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckReply {
    /// MSA-1.
    pub code: AckCode,
    /// MSA-2: the MSH-10 of the message acknowledged.
    pub control_id: String,
    /// MSA-3.
    pub text: Option<String>,
    /// One per ERR segment (or per ERR-1 repetition in the older layout).
    pub errors: Vec<ReplyError>,
}

impl AckReply {
    /// The error texts joined with `; ` (MSA-3 when there is no ERR text).
    pub fn error_text(&self) -> Option<String> {
        let texts: Vec<&str> = self
            .errors
            .iter()
            .filter_map(|e| e.text.as_deref())
            .collect();
        if texts.is_empty() {
            self.text.clone()
        } else {
            Some(texts.join("; "))
        }
    }
}

fn non_empty(s: std::borrow::Cow<'_, str>) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// Reads a reply: `None` when it has no MSA or MSA-1 is not an acknowledgment code.
pub fn read(reply: &Message) -> Option<AckReply> {
    let msa = reply.segment("MSA")?;
    let code: AckCode = msa.field(1).text().parse().ok()?;
    let mut errors = Vec::new();
    for err in reply.segments_named("ERR") {
        let code3 = err.field(3);
        if !code3.is_empty() || !err.field(8).is_empty() || !err.field(2).is_empty() {
            let text = non_empty(err.field(8).text())
                .or_else(|| non_empty(err.field(7).text()))
                .or_else(|| non_empty(code3.component(2).text()));
            errors.push(ReplyError {
                code: code3.component(1).text().trim().parse().ok(),
                severity: err.field(4).text().trim().chars().next(),
                location: non_empty(err.field(2).text()),
                text,
            });
        } else {
            for eld in err.field(1).repetitions() {
                let ce = eld.component(4);
                let location: Vec<_> = (1..=3).map(|n| eld.component(n).text()).collect();
                let c = reply.separators().component as char;
                let location = location.join(&c.to_string());
                errors.push(ReplyError {
                    code: ce.subcomponent(1).text().trim().parse().ok(),
                    severity: None,
                    location: non_empty(location.trim_end_matches(c).into()),
                    text: non_empty(ce.subcomponent(5).text())
                        .or_else(|| non_empty(ce.subcomponent(2).text())),
                });
            }
        }
    }
    Some(AckReply {
        code,
        control_id: msa.field(2).text().into_owned(),
        text: non_empty(msa.field(3).text()),
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const V25: &[u8] = b"MSH|^~\\&|EHR|GOOD HEALTH^1.2.3^ISO|RAPPORT|RAPPORT-FAC|20240102030405||SIU^S12^SIU_S12|MSG-1|P|2.5||||||UNICODE UTF-8\rSCH|1\r";
    const V231: &[u8] =
        b"MSH|^~\\&|NIST_SENDER|NIST|NIST_RECEIVER|NIST|20130809104959||ADT^A01|NIST-101|P|2.3.1\rPID|1\r";

    fn dup_error() -> AckError {
        AckError {
            segment: "PID".into(),
            sequence: 1,
            field: Some(3),
            component: Some(1),
            code: 205,
            severity: 'E',
            message: "Patient id is duplicated | twice".into(),
        }
    }

    #[test]
    fn aa_v25() {
        let orig = Message::parse(V25).unwrap();
        let ack = build(&orig, AckCode::AA, "ACK-1", "20240102030406+0000", &[]);
        assert_eq!(
            ack,
            "MSH|^~\\&|RAPPORT|RAPPORT-FAC|EHR|GOOD HEALTH^1.2.3^ISO|20240102030406+0000||ACK^S12^ACK|ACK-1|P|2.5||||||UNICODE UTF-8\rMSA|AA|MSG-1\r"
        );
        let parsed = Message::parse(ack.as_bytes()).unwrap();
        assert_eq!(parsed.get("MSH-3").as_deref(), Some("RAPPORT"));
        assert_eq!(parsed.get("MSH-6.2").as_deref(), Some("1.2.3"));
        assert_eq!(parsed.get("MSH-9.2").as_deref(), Some("S12"));
        let reply = read(&parsed).unwrap();
        assert_eq!(reply.code, AckCode::AA);
        assert_eq!(reply.control_id, "MSG-1");
        assert_eq!(reply.error_text(), None);
    }

    #[test]
    fn ae_v25_has_err_2_3_4_8() {
        let orig = Message::parse(V25).unwrap();
        let ack = build(
            &orig,
            AckCode::AE,
            "ACK-2",
            "20240102030406",
            &[dup_error()],
        );
        let m = Message::parse(ack.as_bytes()).unwrap();
        assert_eq!(m.get("MSA-1").as_deref(), Some("AE"));
        assert_eq!(m.get("MSA-2").as_deref(), Some("MSG-1"));
        assert_eq!(
            m.get("MSA-3").as_deref(),
            Some("Patient id is duplicated | twice")
        );
        assert_eq!(m.get("ERR-1"), None);
        assert_eq!(m.segment("ERR").unwrap().field(2).raw(), b"PID^1^3^1^1");
        assert_eq!(
            m.segment("ERR").unwrap().field(3).raw(),
            b"205^Duplicate key identifier^HL70357"
        );
        assert_eq!(m.get("ERR-4").as_deref(), Some("E"));
        assert_eq!(
            m.get("ERR-8").as_deref(),
            Some("Patient id is duplicated | twice")
        );
        let reply = read(&m).unwrap();
        assert_eq!(reply.code, AckCode::AE);
        assert_eq!(reply.errors.len(), 1);
        assert_eq!(reply.errors[0].code, Some(205));
        assert_eq!(reply.errors[0].severity, Some('E'));
        assert_eq!(reply.errors[0].location.as_deref(), Some("PID^1^3^1^1"));
        assert_eq!(
            reply.error_text().as_deref(),
            Some("Patient id is duplicated | twice")
        );
    }

    #[test]
    fn ae_v231_has_err_1() {
        let orig = Message::parse(V231).unwrap();
        let mut e = dup_error();
        e.component = None;
        let ack = build(&orig, AckCode::AE, "ACK-3", "20240102030406", &[e]);
        assert!(ack.contains("\rERR|PID^1^3^205&Duplicate key identifier&HL70357&&Patient id is duplicated \\F\\ twice\r"), "{ack}");
        let m = Message::parse(ack.as_bytes()).unwrap();
        assert_eq!(m.get("MSH-9").as_deref(), Some("ACK^A01^ACK"));
        assert_eq!(m.get("MSH-12").as_deref(), Some("2.3.1"));
        assert_eq!(m.get("ERR-2"), None);
        let reply = read(&m).unwrap();
        assert_eq!(reply.control_id, "NIST-101");
        assert_eq!(reply.errors[0].code, Some(205));
        assert_eq!(reply.errors[0].location.as_deref(), Some("PID^1^3"));
        assert_eq!(
            reply.error_text().as_deref(),
            Some("Patient id is duplicated | twice")
        );
    }

    #[test]
    fn unknown_version_gets_both_layouts_and_message_level_errors() {
        let orig = Message::parse(b"MSH|^~\\&|A|B|C|D|1||ZZZ|X1|P\r").unwrap();
        let ack = build(
            &orig,
            AckCode::AR,
            "Y",
            "2",
            &[AckError::message(200, "Unsupported message type")],
        );
        assert_eq!(
            ack,
            "MSH|^~\\&|C|D|A|B|2||ACK|Y|P\rMSA|AR|X1|Unsupported message type\r\
             ERR|^^^200&Unsupported message type&HL70357&&Unsupported message type||\
             200^Unsupported message type^HL70357|E||||Unsupported message type\r"
        );
    }

    #[test]
    fn custom_separators_are_kept() {
        let orig = Message::parse(b"MSH^!@#$^A^B^C^D^1^^ADT!A04^X9^P^2.5\r").unwrap();
        let ack = build(
            &orig,
            AckCode::CE,
            "c^1",
            "2",
            &[AckError::field("PID", 2, 7, 102, "bad date")],
        );
        let m = Message::parse(ack.as_bytes()).unwrap();
        assert_eq!(m.separators(), orig.separators());
        assert_eq!(m.get("MSH-9.2").as_deref(), Some("A04"));
        assert_eq!(m.get("MSH-10").as_deref(), Some("c^1"));
        assert_eq!(m.get("ERR-2.2").as_deref(), Some("2"));
        assert_eq!(read(&m).unwrap().code, AckCode::CE);
    }

    #[test]
    fn unparseable() {
        let ack = build_for_unparseable(
            AckCode::AR,
            "R-1",
            "20240102030406",
            &AckError::message(100, "no MSH segment"),
        );
        let m = Message::parse(ack.as_bytes()).unwrap();
        assert_eq!(m.get("MSH-9").as_deref(), Some("ACK"));
        assert_eq!(m.get("MSH-10").as_deref(), Some("R-1"));
        assert_eq!(m.get("MSA-2"), None);
        let reply = read(&m).unwrap();
        assert_eq!(reply.code, AckCode::AR);
        assert_eq!(reply.errors[0].code, Some(100));
        assert_eq!(reply.error_text().as_deref(), Some("no MSH segment"));
    }

    #[test]
    fn codes() {
        assert_eq!("ae".parse::<AckCode>(), Ok(AckCode::AE));
        assert_eq!("XX".parse::<AckCode>(), Err(()));
        assert!(AckCode::CA.is_commit() && AckCode::CA.is_accept());
        assert_eq!(err_style("2.5.1"), ErrStyle::Modern);
        assert_eq!(err_style("2.10"), ErrStyle::Modern);
        assert_eq!(err_style("2.4"), ErrStyle::Legacy);
        assert_eq!(err_style("2"), ErrStyle::Legacy);
        assert_eq!(err_style(""), ErrStyle::Both);
        assert_eq!(err_style("v2"), ErrStyle::Both);
    }

    #[test]
    fn no_msa_reads_none() {
        let m = Message::parse(V25).unwrap();
        assert_eq!(read(&m), None);
    }
}

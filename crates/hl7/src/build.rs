//! A small writer for the messages Rapport sends (SIU^S14/S15 back to an EHR, ACKs).
//!
//! ```
//! use hl7::build::MessageWriter;
//! let text = MessageWriter::new()
//!     .segment("MSH")
//!     .field(3, &["RAPPORT"])
//!     .field(9, &["SIU", "S15", "SIU_S12"])
//!     .segment("SCH")
//!     .field(1, &["12345", "EHR"])
//!     .field(25, &["Cancelled"])
//!     .finish();
//! assert_eq!(text, "MSH|^~\\&|RAPPORT||||||SIU^S15^SIU_S12\rSCH|12345^EHR||||||||||||||||||||||||Cancelled\r");
//! ```

use crate::{Separators, escape};

#[derive(Debug, Clone)]
struct SegmentBuf {
    /// Encoded fields by HL7 number minus one (for MSH: index 0 and 1 are MSH-1/MSH-2,
    /// written by the writer itself).
    fields: Vec<String>,
    header: bool,
}

/// Writes segments of fields, escaping values. Fields may be set in any order; unset
/// ones are empty, trailing empty components and fields are not written. Each segment
/// is terminated by CR. MSH (and BHS/FHS) get MSH-1/MSH-2 from the writer's separators
/// and use HL7 numbering (the first field you set is MSH-3).
#[derive(Debug, Clone)]
pub struct MessageWriter {
    seps: Separators,
    out: String,
    current: Option<(String, SegmentBuf)>,
}

impl Default for MessageWriter {
    fn default() -> Self {
        MessageWriter::new()
    }
}

fn trim_trailing_empty<T: AsRef<str>>(parts: &[T]) -> &[T] {
    let keep = parts
        .iter()
        .rposition(|p| !p.as_ref().is_empty())
        .map_or(0, |i| i + 1);
    &parts[..keep]
}

impl MessageWriter {
    /// A writer with the standard separators `|^~\&`.
    pub fn new() -> MessageWriter {
        MessageWriter::with_separators(Separators::STANDARD)
    }

    /// A writer with other separators (ACKs answer in the sender's).
    pub fn with_separators(seps: Separators) -> MessageWriter {
        MessageWriter {
            seps,
            out: String::new(),
            current: None,
        }
    }

    /// The separators in use.
    pub fn separators(&self) -> &Separators {
        &self.seps
    }

    /// Starts a segment.
    ///
    /// # Panics
    /// When `id` is not three ASCII letters or digits (a programming error).
    pub fn segment(&mut self, id: &str) -> &mut Self {
        assert!(
            id.len() == 3 && id.bytes().all(|b| b.is_ascii_alphanumeric()),
            "segment id must be three ASCII letters or digits"
        );
        self.flush();
        self.current = Some((
            id.to_owned(),
            SegmentBuf {
                fields: Vec::new(),
                header: matches!(id, "MSH" | "BHS" | "FHS"),
            },
        ));
        self
    }

    fn put(&mut self, n: usize, encoded: String) {
        let (_, seg) = self
            .current
            .as_mut()
            .expect("MessageWriter: call segment() before field()");
        if n == 0 || (seg.header && n <= 2) {
            // The id, MSH-1 and MSH-2 are written by the writer.
            return;
        }
        if seg.fields.len() < n {
            seg.fields.resize(n, String::new());
        }
        seg.fields[n - 1] = encoded;
    }

    fn join_components(&self, components: &[&str], out: &mut String) {
        for (i, c) in trim_trailing_empty(components).iter().enumerate() {
            if i > 0 {
                out.push(self.seps.component as char);
            }
            out.push_str(&escape(c, &self.seps));
        }
    }

    /// Sets field `n` (1-based, HL7 numbering) to one value made of components; each is
    /// escaped.
    pub fn field(&mut self, n: usize, components: &[&str]) -> &mut Self {
        let mut s = String::new();
        self.join_components(components, &mut s);
        self.put(n, s);
        self
    }

    /// Sets field `n` to a single escaped text value.
    pub fn text(&mut self, n: usize, value: &str) -> &mut Self {
        self.field(n, &[value])
    }

    /// Sets field `n` to several repetitions, each made of components.
    pub fn field_repeated(&mut self, n: usize, repetitions: &[&[&str]]) -> &mut Self {
        let mut s = String::new();
        let reps = trim_trailing_empty_reps(repetitions);
        for (i, rep) in reps.iter().enumerate() {
            if i > 0 {
                s.push(self.seps.repetition as char);
            }
            self.join_components(rep, &mut s);
        }
        self.put(n, s);
        self
    }

    /// Sets field `n` to one value whose components have subcomponents.
    pub fn field_with_subcomponents(&mut self, n: usize, components: &[&[&str]]) -> &mut Self {
        let mut comps: Vec<String> = Vec::with_capacity(components.len());
        for subs in components {
            let mut c = String::new();
            for (i, sub) in trim_trailing_empty(subs).iter().enumerate() {
                if i > 0 {
                    c.push(self.seps.subcomponent as char);
                }
                c.push_str(&escape(sub, &self.seps));
            }
            comps.push(c);
        }
        let s = trim_trailing_empty(&comps).join(&(self.seps.component as char).to_string());
        self.put(n, s);
        self
    }

    /// Sets field `n` to text already encoded with this writer's separators (copied from
    /// a message that uses them). CR and LF are escaped all the same.
    pub fn field_raw(&mut self, n: usize, encoded: &str) -> &mut Self {
        let s = if encoded.contains(['\r', '\n']) {
            encoded.replace('\r', "\\X0D\\").replace('\n', "\\X0A\\")
        } else {
            encoded.to_owned()
        };
        self.put(n, s);
        self
    }

    fn flush(&mut self) {
        let Some((id, seg)) = self.current.take() else {
            return;
        };
        self.out.push_str(&id);
        let fs = self.seps.field as char;
        if seg.header {
            self.out.push(fs);
            for b in self.seps.encoding_characters() {
                self.out.push(b as char);
            }
        }
        let skip = if seg.header { 2 } else { 0 };
        let fields = trim_trailing_empty(&seg.fields[skip.min(seg.fields.len())..]);
        for f in fields {
            self.out.push(fs);
            self.out.push_str(f);
        }
        self.out.push('\r');
    }

    /// The message so far, each segment terminated by CR; the writer is left empty.
    pub fn finish(&mut self) -> String {
        self.flush();
        std::mem::take(&mut self.out)
    }
}

fn trim_trailing_empty_reps<'r>(reps: &'r [&'r [&'r str]]) -> &'r [&'r [&'r str]] {
    let keep = reps
        .iter()
        .rposition(|r| !trim_trailing_empty(r).is_empty())
        .map_or(0, |i| i + 1);
    &reps[..keep]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;

    #[test]
    fn writes_and_parses_back() {
        let text = MessageWriter::new()
            .segment("MSH")
            .field(3, &["RAPPORT"])
            .field(4, &["CLINIC"])
            .field(7, &["20240102030405+0000"])
            .field(9, &["SIU", "S14", "SIU_S12"])
            .field(10, &["ctl|1"])
            .field(11, &["P"])
            .field(12, &["2.5"])
            .field(18, &["UNICODE UTF-8"])
            .segment("SCH")
            .field(25, &["Booked"])
            .field(1, &["12345", "EHR", "", ""])
            .field_repeated(2, &[&["a^b"], &["c", "d"], &[""]])
            .field_with_subcomponents(3, &[&["x", "y&z"], &["w"]])
            .segment("NTE")
            .text(3, "line one\nline two ~ é")
            .finish();
        assert!(text.starts_with("MSH|^~\\&|RAPPORT|CLINIC|||20240102030405+0000||SIU^S14^SIU_S12|ctl\\F\\1|P|2.5||||||UNICODE UTF-8\r"));
        assert!(text.contains("\rSCH|12345^EHR|a\\S\\b~c^d|x&y\\T\\z^w|"));
        assert!(text.ends_with("|Booked\rNTE|||line one\\X0A\\line two \\R\\ é\r"));
        let m = Message::parse(text.as_bytes()).unwrap();
        assert_eq!(m.get("MSH-10").as_deref(), Some("ctl|1"));
        assert_eq!(m.get("SCH-1.2").as_deref(), Some("EHR"));
        assert_eq!(m.get("SCH-2[1]").as_deref(), Some("a^b"));
        assert_eq!(m.get("SCH-2[2].2").as_deref(), Some("d"));
        assert_eq!(m.get("SCH-3.1.2").as_deref(), Some("y&z"));
        assert_eq!(m.get("SCH-25").as_deref(), Some("Booked"));
        assert_eq!(m.get("NTE-3").as_deref(), Some("line one\nline two ~ é"));
        assert_eq!(m.charset(), crate::Charset::Utf8);
    }

    #[test]
    fn empty_segment_and_reuse() {
        let mut w = MessageWriter::new();
        assert_eq!(w.segment("MSH").segment("PID").finish(), "MSH|^~\\&\rPID\r");
        assert_eq!(w.finish(), "");
        assert_eq!(w.segment("EVN").field(0, &["x"]).finish(), "EVN\r");
        assert_eq!(
            w.segment("MSH").field(1, &["x"]).field(2, &["y"]).finish(),
            "MSH|^~\\&\r"
        );
        assert_eq!(
            w.segment("OBX").field_raw(2, "a^b\rc").finish(),
            "OBX||a^b\\X0D\\c\r"
        );
    }

    #[test]
    #[should_panic(expected = "three ASCII")]
    fn bad_segment_id() {
        MessageWriter::new().segment("PIDX");
    }
}

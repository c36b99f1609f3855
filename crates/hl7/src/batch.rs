//! HL7 batch protocol: `[FHS] { [BHS] { MSH ... }* [BTS] }* [FTS]`, and a bare sequence
//! of messages (each starting with MSH).

use memchr::{memchr_iter, memchr2_iter};

use crate::error::ParseError;
use crate::message::read_encoding_characters;
use crate::{Charset, Separators, content_start, unescape};

/// The pieces of a batch file. Message slices start at their MSH and end at the end of
/// their last segment (without its terminator); each one can go to
/// [`crate::Message::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch<'a> {
    /// The FHS segment, when there is one.
    pub file_header: Option<&'a [u8]>,
    /// The first BHS segment, when there is one.
    pub batch_header: Option<&'a [u8]>,
    /// The messages, in order.
    pub messages: Vec<&'a [u8]>,
    /// BTS-1 (batch message count), summed over the batches that state it; `None` when
    /// no BTS states one.
    pub declared_count: Option<usize>,
    /// FHS-11, file control id.
    pub file_control_id: Option<String>,
    /// BHS-11 of the first batch, batch control id.
    pub batch_control_id: Option<String>,
    /// The last BTS segment.
    pub batch_trailer: Option<&'a [u8]>,
    /// The FTS segment.
    pub file_trailer: Option<&'a [u8]>,
    /// FTS-1 (file batch count).
    pub file_batch_count: Option<usize>,
    /// Number of BHS segments seen.
    pub batch_count: usize,
    /// Every stated count matches what was found: each BTS-1 the messages of its batch,
    /// FTS-1 the number of batches (or of messages, when there is no BHS).
    pub counts_match: bool,
    /// Delimiters of the header (FHS, else BHS, else the first MSH).
    pub separators: Separators,
}

/// Whether the input starts (after a BOM and whitespace) with FHS or BHS.
pub fn is_batch(bytes: &[u8]) -> bool {
    let b = &bytes[content_start(bytes)..];
    (b.starts_with(b"FHS") || b.starts_with(b"BHS"))
        && b.get(3).is_some_and(|c| !c.is_ascii_alphanumeric())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Fhs,
    Fts,
    Bhs,
    Bts,
    Msh,
    Other,
}

fn kind(line: &[u8]) -> Kind {
    if line.len() > 3 && line[3].is_ascii_alphanumeric() {
        return Kind::Other;
    }
    match line.get(..3) {
        Some(b"FHS") => Kind::Fhs,
        Some(b"FTS") => Kind::Fts,
        Some(b"BHS") => Kind::Bhs,
        Some(b"BTS") => Kind::Bts,
        Some(b"MSH") => Kind::Msh,
        _ => Kind::Other,
    }
}

/// The raw value after the `k`-th field separator of a segment.
fn element(line: &[u8], fs: u8, k: usize) -> &[u8] {
    let mut positions = memchr_iter(fs, line).skip(k - 1);
    let Some(start) = positions.next() else {
        return b"";
    };
    let end = positions.next().unwrap_or(line.len());
    &line[start + 1..end]
}

fn count(line: &[u8], fs: u8) -> Option<usize> {
    std::str::from_utf8(element(line, fs, 1).trim_ascii())
        .ok()?
        .parse()
        .ok()
}

fn control_id(line: &[u8], seps: &Separators) -> Option<String> {
    // FHS-11/BHS-11: header numbering (FHS-1 is the separator), so the 10th separator.
    let raw = element(line, seps.field, 10);
    let first = raw.split(|&b| b == seps.component).next().unwrap_or(b"");
    let text = unescape(first, seps, Charset::Ascii);
    (!text.is_empty()).then(|| text.into_owned())
}

/// Splits FHS/BHS ... BTS/FTS wrappers, or a bare sequence of MSH messages, into message
/// slices. Tolerates a BHS without any MSH, a BOM, CR/LF/CRLF terminators, blank lines,
/// and missing trailers. A plain single message comes back as a batch of one.
pub fn split(bytes: &[u8]) -> Result<Batch<'_>, ParseError> {
    let start = content_start(bytes);
    if start == bytes.len() {
        return Err(ParseError::Empty);
    }
    let mut batch = Batch {
        file_header: None,
        batch_header: None,
        messages: Vec::new(),
        declared_count: None,
        file_control_id: None,
        batch_control_id: None,
        batch_trailer: None,
        file_trailer: None,
        file_batch_count: None,
        batch_count: 0,
        counts_match: true,
        separators: Separators::STANDARD,
    };
    let mut seps: Option<Separators> = None;
    // The message being collected: start of its MSH, end of its last segment so far.
    let mut open: Option<(usize, usize)> = None;
    let mut in_this_batch = 0usize;
    let mut after_fts = false;
    let mut segment = 0usize;

    let ends = memchr2_iter(b'\r', b'\n', &bytes[start..])
        .map(|i| start + i)
        .chain(std::iter::once(bytes.len()));
    let mut line_start = start;
    for line_end in ends {
        let line = &bytes[line_start..line_end];
        let here = line_start;
        line_start = line_end + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let index = segment;
        segment += 1;
        let structure = |reason| ParseError::BatchStructure {
            segment: index,
            reason,
        };
        if after_fts {
            return Err(structure("content after FTS"));
        }
        let k = kind(line);
        if k != Kind::Other
            && let Some((s, e)) = open.take()
        {
            batch.messages.push(&bytes[s..e]);
        }
        match k {
            Kind::Fhs => {
                if index != 0 {
                    return Err(structure("FHS is not the first segment"));
                }
                let (s, _) = read_encoding_characters(line)?;
                seps = Some(s);
                batch.file_header = Some(line);
                batch.file_control_id = control_id(line, &s);
            }
            Kind::Bhs => {
                let (s, _) = read_encoding_characters(line)?;
                let s = *seps.get_or_insert(s);
                batch.batch_count += 1;
                in_this_batch = 0;
                if batch.batch_header.is_none() {
                    batch.batch_header = Some(line);
                    batch.batch_control_id = control_id(line, &s);
                }
            }
            Kind::Msh => {
                if seps.is_none() {
                    seps = Some(read_encoding_characters(line)?.0);
                }
                in_this_batch += 1;
                open = Some((here, line_end));
            }
            Kind::Bts => {
                let fs = seps.map_or(b'|', |s| s.field);
                if let Some(n) = count(line, fs) {
                    *batch.declared_count.get_or_insert(0) += n;
                    if n != in_this_batch {
                        batch.counts_match = false;
                    }
                }
                batch.batch_trailer = Some(line);
            }
            Kind::Fts => {
                let fs = seps.map_or(b'|', |s| s.field);
                batch.file_batch_count = count(line, fs);
                batch.file_trailer = Some(line);
                after_fts = true;
            }
            Kind::Other => match open.as_mut() {
                Some((_, end)) => *end = line_end,
                None if index == 0 => return Err(ParseError::NoMsh),
                None => return Err(structure("segment outside a message")),
            },
        }
    }
    if let Some((s, e)) = open.take() {
        batch.messages.push(&bytes[s..e]);
    }
    if let Some(n) = batch.file_batch_count {
        let found = if batch.batch_count > 0 {
            batch.batch_count
        } else {
            batch.messages.len()
        };
        if n != found {
            batch.counts_match = false;
        }
    }
    batch.separators = seps.unwrap_or_default();
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;

    const TWO: &str = "FHS|^~\\&|APP|FAC|||20240101||||F-1\r\
BHS|^~\\&|APP|FAC|||20240101||||B-1\r\
MSH|^~\\&|APP|FAC|R|R|20240101||ADT^A04|1|P|2.5\r\
PID|1||42\r\
MSH|^~\\&|APP|FAC|R|R|20240101||ADT^A04|2|P|2.5\r\
PID|1||43\r\
BTS|2\r\
FTS|1\r";

    #[test]
    fn file_with_one_batch() {
        let b = split(TWO.as_bytes()).unwrap();
        assert_eq!(b.messages.len(), 2);
        assert_eq!(b.file_control_id.as_deref(), Some("F-1"));
        assert_eq!(b.batch_control_id.as_deref(), Some("B-1"));
        assert_eq!(b.declared_count, Some(2));
        assert_eq!(b.file_batch_count, Some(1));
        assert_eq!(b.batch_count, 1);
        assert!(b.counts_match);
        assert!(b.file_header.unwrap().starts_with(b"FHS|"));
        assert!(b.batch_trailer.unwrap().starts_with(b"BTS|"));
        assert!(b.file_trailer.unwrap().starts_with(b"FTS|"));
        assert_eq!(
            b.messages[1],
            b"MSH|^~\\&|APP|FAC|R|R|20240101||ADT^A04|2|P|2.5\rPID|1||43"
        );
        for m in &b.messages {
            let m = Message::parse(m).unwrap();
            assert_eq!(m.segment_count(), 2);
        }
        assert!(is_batch(TWO.as_bytes()));
    }

    #[test]
    fn lf_bom_and_count_mismatch() {
        let text = format!(
            "\u{FEFF}{}",
            TWO.replace('\r', "\r\n").replace("BTS|2", "BTS|3")
        );
        let b = split(text.as_bytes()).unwrap();
        assert_eq!(b.messages.len(), 2);
        assert_eq!(b.declared_count, Some(3));
        assert!(!b.counts_match);
        assert!(is_batch(text.as_bytes()));
    }

    #[test]
    fn bhs_without_messages() {
        let b = split(b"BHS|^~\\&|APP\nBTS|0\n").unwrap();
        assert!(b.messages.is_empty());
        assert_eq!(b.declared_count, Some(0));
        assert!(b.counts_match);
        let b = split(b"BHS|^~\\&|APP").unwrap();
        assert!(b.messages.is_empty());
        assert_eq!(b.declared_count, None);
    }

    #[test]
    fn bare_messages() {
        let b = split(b"MSH|^~\\&|A\rPID|1\rMSH|^~\\&|B\rMSH|^~\\&|C\r\r").unwrap();
        assert_eq!(
            b.messages,
            vec![&b"MSH|^~\\&|A\rPID|1"[..], b"MSH|^~\\&|B", b"MSH|^~\\&|C"]
        );
        assert!(!is_batch(b"MSH|^~\\&|A"));
        assert_eq!(b.declared_count, None);
        assert!(b.counts_match);
    }

    #[test]
    fn structure_errors() {
        assert_eq!(split(b" \r\n"), Err(ParseError::Empty));
        assert_eq!(split(b"PID|1\rMSH|^~\\&|A"), Err(ParseError::NoMsh));
        assert!(matches!(
            split(b"BHS|^~\\&|A\rPID|1\r"),
            Err(ParseError::BatchStructure { segment: 1, .. })
        ));
        assert!(matches!(
            split(b"MSH|^~\\&|A\rFTS|1\rMSH|^~\\&|B"),
            Err(ParseError::BatchStructure { segment: 2, .. })
        ));
        assert!(matches!(
            split(b"BHS|^~\\&|A\rFHS|^~\\&|A\r"),
            Err(ParseError::BatchStructure { segment: 1, .. })
        ));
        assert!(matches!(
            split(b"BHS|AB\r"),
            Err(ParseError::BadEncodingCharacters(_))
        ));
    }

    #[test]
    fn fts_counts_messages_without_bhs() {
        let b = split(b"FHS|^~\\&\rMSH|^~\\&|A\rMSH|^~\\&|B\rFTS|2").unwrap();
        assert!(b.counts_match);
        let b = split(b"FHS|^~\\&\rMSH|^~\\&|A\rFTS|2").unwrap();
        assert!(!b.counts_match);
    }
}

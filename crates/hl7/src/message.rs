//! The message index and the borrowed views over it.

use std::borrow::Cow;
use std::fmt;

use memchr::{memchr, memchr_iter, memchr2_iter};

use crate::error::ParseError;
use crate::escape::{decode, unescape};
use crate::path::Path;
use crate::{Charset, Separators, content_start};

/// One segment in the index: byte range in the input, and its field separators'
/// positions as `fields[first..first + count]`.
#[derive(Debug, Clone, Copy)]
struct SegEntry {
    start: u32,
    end: u32,
    first: u32,
    count: u32,
}

/// Reusable storage for [`Message::parse_with`]: parsing many messages in a loop
/// without allocating.
#[derive(Debug, Default, Clone)]
pub struct Scratch {
    segs: Vec<SegEntry>,
    fields: Vec<u32>,
}

/// A parsed HL7 v2 message. It borrows the input bytes and holds only an index of
/// segment and field-separator offsets: components, repetitions and subcomponents are
/// found when asked for, and text is decoded and unescaped on access.
#[derive(Clone)]
pub struct Message<'a> {
    bytes: &'a [u8],
    seps: Separators,
    truncation: Option<u8>,
    charset: Charset,
    segs: Vec<SegEntry>,
    fields: Vec<u32>,
}

impl fmt::Debug for Message<'_> {
    /// Shape only, never content.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.segments().map(|s| s.id()).collect();
        f.debug_struct("Message")
            .field("len", &self.bytes.len())
            .field("separators", &self.seps)
            .field("charset", &self.charset)
            .field("segments", &ids)
            .finish()
    }
}

/// Whether `id` names a header segment whose first field is the field separator itself.
fn is_header_id(id: &[u8]) -> bool {
    matches!(id, b"MSH" | b"BHS" | b"FHS")
}

/// Reads MSH-1 and MSH-2 (or BHS/FHS) at the start of `seg`: the separators and an
/// optional fifth (truncation) character.
pub(crate) fn read_encoding_characters(seg: &[u8]) -> Result<(Separators, Option<u8>), ParseError> {
    let bad = ParseError::BadEncodingCharacters;
    let Some(&field) = seg.get(3) else {
        return Err(bad("MSH-1 (field separator) is missing"));
    };
    let usable = |b: u8| b.is_ascii_graphic() && !b.is_ascii_alphanumeric();
    if !usable(field) {
        return Err(bad("MSH-1 is not a printable non-alphanumeric character"));
    }
    let rest = &seg[4..];
    let enc = &rest[..memchr(field, rest).unwrap_or(rest.len())];
    if enc.len() < 4 {
        return Err(bad("MSH-2 has fewer than four encoding characters"));
    }
    if enc.len() > 5 {
        return Err(bad("MSH-2 has more than five encoding characters"));
    }
    if !enc.iter().all(|&b| usable(b)) {
        return Err(bad(
            "MSH-2 holds a letter, digit, space or control character",
        ));
    }
    for (i, &b) in enc.iter().enumerate() {
        if b == field || enc[i + 1..].contains(&b) {
            return Err(bad("MSH-1/MSH-2 characters are not all different"));
        }
    }
    let seps = Separators {
        field,
        component: enc[0],
        repetition: enc[1],
        escape: enc[2],
        subcomponent: enc[3],
    };
    Ok((seps, enc.get(4).copied()))
}

fn valid_segment_id(seg: &[u8], field: u8) -> bool {
    seg.len() >= 3
        && seg[..3].iter().all(u8::is_ascii_alphanumeric)
        && (seg.len() == 3 || seg[3] == field)
}

impl<'a> Message<'a> {
    /// Parses a message. Tolerates a leading UTF-8 BOM and whitespace, CR, LF or CRLF
    /// segment terminators (mixed too), blank lines and a missing final terminator. The
    /// first segment must be MSH. Errors: [`ParseError::Empty`], [`ParseError::NoMsh`],
    /// [`ParseError::BadEncodingCharacters`], [`ParseError::UnsupportedCharset`],
    /// [`ParseError::BadSegmentId`], [`ParseError::TooLarge`].
    pub fn parse(bytes: &'a [u8]) -> Result<Message<'a>, ParseError> {
        let scratch = Scratch {
            segs: Vec::with_capacity(bytes.len() / 128 + 4),
            fields: Vec::with_capacity(bytes.len() / 8 + 16),
        };
        Message::parse_with(bytes, scratch)
    }

    /// Like [`Message::parse`], reusing the allocations of `scratch` (get them back with
    /// [`Message::into_scratch`]).
    pub fn parse_with(bytes: &'a [u8], scratch: Scratch) -> Result<Message<'a>, ParseError> {
        let Scratch {
            mut segs,
            mut fields,
        } = scratch;
        segs.clear();
        fields.clear();
        if bytes.len() >= u32::MAX as usize {
            return Err(ParseError::TooLarge { len: bytes.len() });
        }
        let start = content_start(bytes);
        if start == bytes.len() {
            return Err(ParseError::Empty);
        }
        let body = &bytes[start..];
        if !(body.starts_with(b"MSH") && body.get(3).is_none_or(|b| !b.is_ascii_alphanumeric())) {
            return Err(ParseError::NoMsh);
        }
        let msh_end = memchr::memchr2(b'\r', b'\n', body).unwrap_or(body.len());
        let (seps, truncation) = read_encoding_characters(&body[..msh_end])?;
        let fs = seps.field;

        let mut seg_start = start;
        let mut index_segment = |seg_start: usize, seg_end: usize| -> Result<(), ParseError> {
            if seg_start == seg_end {
                return Ok(());
            }
            let seg = &bytes[seg_start..seg_end];
            let first = fields.len();
            fields.extend(memchr_iter(fs, seg).map(|i| (seg_start + i) as u32));
            let count = fields.len() - first;
            if !valid_segment_id(seg, fs) {
                if count == 0 && seg.iter().all(u8::is_ascii_whitespace) {
                    return Ok(()); // a blank line
                }
                return Err(ParseError::BadSegmentId {
                    segment: segs.len(),
                });
            }
            segs.push(SegEntry {
                start: seg_start as u32,
                end: seg_end as u32,
                first: first as u32,
                count: count as u32,
            });
            Ok(())
        };
        for i in memchr2_iter(b'\r', b'\n', body) {
            let i = start + i;
            index_segment(seg_start, i)?;
            seg_start = i + 1;
        }
        index_segment(seg_start, bytes.len())?;

        let mut msg = Message {
            bytes,
            seps,
            truncation,
            charset: Charset::Ascii,
            segs,
            fields,
        };
        let msh18 = msg.msh().field(18).component(1).raw();
        msg.charset = Charset::from_msh18(msh18)?;
        Ok(msg)
    }

    /// Gives back the index storage for the next [`Message::parse_with`].
    pub fn into_scratch(self) -> Scratch {
        Scratch {
            segs: self.segs,
            fields: self.fields,
        }
    }

    /// The delimiters from MSH-1 and MSH-2.
    pub fn separators(&self) -> &Separators {
        &self.seps
    }

    /// The fifth MSH-2 character (v2.7+ truncation character), when present.
    pub fn truncation_character(&self) -> Option<u8> {
        self.truncation
    }

    /// The character set declared in MSH-18.
    pub fn charset(&self) -> Charset {
        self.charset
    }

    /// The input, exactly as given to `parse`.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Number of segments (blank lines are not segments).
    pub fn segment_count(&self) -> usize {
        self.segs.len()
    }

    /// All segments in order.
    pub fn segments(&self) -> impl Iterator<Item = Segment<'_, 'a>> + '_ {
        (0..self.segs.len()).map(|index| Segment { msg: self, index })
    }

    /// The segment at a 0-based position, if there is one.
    pub fn segment_at(&self, index: usize) -> Option<Segment<'_, 'a>> {
        (index < self.segs.len()).then_some(Segment { msg: self, index })
    }

    /// The MSH segment (always the first).
    pub fn msh(&self) -> Segment<'_, 'a> {
        Segment {
            msg: self,
            index: 0,
        }
    }

    /// The first segment with that id.
    pub fn segment(&self, id: &str) -> Option<Segment<'_, 'a>> {
        self.segments_named(id).next()
    }

    /// Every segment with that id, in order.
    pub fn segments_named(&self, id: &str) -> impl Iterator<Item = Segment<'_, 'a>> + use<'_, 'a> {
        // Ids are three bytes; any other `id` matches nothing.
        let want: Option<[u8; 3]> = id.as_bytes().try_into().ok();
        self.segments()
            .filter(move |s| want.is_some_and(|w| s.id_bytes() == w))
    }

    /// The decoded, unescaped value at a path, or `None` when the path is absent, empty or
    /// malformed. Paths: `PID-5` (first repetition of the field), `PID-5.1` (component),
    /// `PID-5.1.2` (subcomponent), `PID-3[2].4` (1-based repetition), `PID[2]-3` (second
    /// PID segment); `.` may stand for `-`. MSH-1 is the field separator, MSH-2 the
    /// encoding characters. The explicit null `""` comes back as `""`: use
    /// [`Field::is_null`] to tell it apart.
    pub fn get(&self, path: &str) -> Option<Cow<'a, str>> {
        let p = Path::parse(path)?;
        let seg = self
            .segments()
            .filter(|s| s.id_bytes() == p.segment)
            .nth(p.occurrence - 1)?;
        let field = seg.field(p.field);
        let rep = field.repetition(p.repetition);
        let text = match (p.component, p.subcomponent) {
            (None, _) => rep.text(),
            (Some(c), None) => rep.component(c).text(),
            (Some(c), Some(s)) => rep.component(c).subcomponent(s).text(),
        };
        (!text.is_empty()).then_some(text)
    }
}

/// One segment of a [`Message`].
#[derive(Clone, Copy)]
pub struct Segment<'m, 'a> {
    msg: &'m Message<'a>,
    index: usize,
}

impl fmt::Debug for Segment<'_, '_> {
    /// Id and position only, never content.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segment")
            .field("id", &self.id())
            .field("index", &self.index)
            .field("fields", &self.field_count())
            .finish()
    }
}

impl<'m, 'a> Segment<'m, 'a> {
    fn entry(&self) -> SegEntry {
        self.msg.segs[self.index]
    }

    fn id_bytes(&self) -> &'a [u8] {
        let e = self.entry();
        &self.msg.bytes[e.start as usize..e.start as usize + 3]
    }

    /// The segment id, e.g. `PID` (always three ASCII letters or digits).
    pub fn id(&self) -> &'a str {
        std::str::from_utf8(self.id_bytes()).unwrap_or("")
    }

    /// Position in the message, 0-based (MSH is 0).
    pub fn index(&self) -> usize {
        self.index
    }

    /// The segment's bytes, without its terminator.
    pub fn raw(&self) -> &'a [u8] {
        let e = self.entry();
        &self.msg.bytes[e.start as usize..e.end as usize]
    }

    fn is_header(&self) -> bool {
        is_header_id(self.id_bytes())
    }

    /// Number of fields present, counting HL7's way: for MSH, MSH-1 (the separator) is
    /// field 1, so `MSH|^~\&|A` has 3.
    pub fn field_count(&self) -> usize {
        let n = self.entry().count as usize;
        if self.is_header() { n + 1 } else { n }
    }

    /// Field `n` (1-based, HL7 numbering; MSH-1 is the field separator and MSH-2 the
    /// encoding characters, neither split nor unescaped). Field 0 is the segment id. An
    /// absent field is empty.
    pub fn field(&self, n: usize) -> Field<'a> {
        let e = self.entry();
        let bytes = self.msg.bytes;
        let offs = &self.msg.fields[e.first as usize..(e.first + e.count) as usize];
        let ctx = Ctx {
            seps: self.msg.seps,
            charset: self.msg.charset,
            literal: false,
        };
        let literal = Ctx {
            literal: true,
            ..ctx
        };
        // `k` is the position after the k-th field separator.
        let k = if self.is_header() {
            match n {
                0 => return Field::new(self.id_bytes(), literal),
                1 => {
                    let sep = offs.first().map_or(&b""[..], |&p| {
                        let p = p as usize;
                        &bytes[p..p + 1]
                    });
                    return Field::new(sep, literal);
                }
                2 => {
                    let field = self.element(offs, 1, e);
                    return Field::new(field, literal);
                }
                _ => n - 1,
            }
        } else {
            if n == 0 {
                return Field::new(self.id_bytes(), literal);
            }
            n
        };
        Field::new(self.element(offs, k, e), ctx)
    }

    /// The bytes after the k-th (1-based) field separator up to the next one.
    fn element(&self, offs: &[u32], k: usize, e: SegEntry) -> &'a [u8] {
        if k == 0 || k > offs.len() {
            return b"";
        }
        let start = offs[k - 1] as usize + 1;
        let end = offs.get(k).map_or(e.end as usize, |&o| o as usize);
        &self.msg.bytes[start..end]
    }

    /// The fields in order, from field 1.
    pub fn fields(&self) -> impl Iterator<Item = Field<'a>> + '_ {
        (1..=self.field_count()).map(|n| self.field(n))
    }
}

/// What a value needs to be split and decoded.
#[derive(Debug, Clone, Copy)]
struct Ctx {
    seps: Separators,
    charset: Charset,
    /// MSH-1/MSH-2 and segment ids: never split nor unescaped.
    literal: bool,
}

impl Ctx {
    fn text<'a>(&self, raw: &'a [u8]) -> Cow<'a, str> {
        if self.literal {
            decode(raw, self.charset)
        } else {
            unescape(raw, &self.seps, self.charset)
        }
    }

    /// The n-th (1-based) piece of `raw` split on `sep`; empty when absent.
    fn nth<'a>(&self, raw: &'a [u8], sep: u8, n: usize) -> &'a [u8] {
        if self.literal {
            return if n == 1 { raw } else { b"" };
        }
        if n == 0 {
            return b"";
        }
        raw.split(|&b| b == sep).nth(n - 1).unwrap_or(b"")
    }

    /// The pieces of `raw` split on `sep`; none for an empty value.
    fn pieces<'a>(&self, raw: &'a [u8], sep: u8) -> impl Iterator<Item = &'a [u8]> + use<'a> {
        let literal = self.literal;
        let mut rest = (!raw.is_empty()).then_some(raw);
        std::iter::from_fn(move || {
            let r = rest?;
            if literal {
                rest = None;
                return Some(r);
            }
            match memchr(sep, r) {
                Some(i) => {
                    rest = Some(&r[i + 1..]);
                    Some(&r[..i])
                }
                None => {
                    rest = None;
                    Some(r)
                }
            }
        })
    }
}

macro_rules! value_common {
    ($t:ident) => {
        impl<'a> $t<'a> {
            fn new(raw: &'a [u8], ctx: Ctx) -> Self {
                $t { raw, ctx }
            }

            /// The bytes as they are in the message (escaped, not decoded).
            pub fn raw(&self) -> &'a [u8] {
                self.raw
            }

            /// Absent or empty.
            pub fn is_empty(&self) -> bool {
                self.raw.is_empty()
            }

            /// Exactly `""`: the sender's explicit null ("delete this value").
            pub fn is_null(&self) -> bool {
                self.raw == b"\"\""
            }
        }

        impl fmt::Debug for $t<'_> {
            /// Length only, never content.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($t))
                    .field("len", &self.raw.len())
                    .finish()
            }
        }
    };
}

/// A field (all its repetitions).
#[derive(Clone, Copy)]
pub struct Field<'a> {
    raw: &'a [u8],
    ctx: Ctx,
}
value_common!(Field);

impl<'a> Field<'a> {
    /// The repetitions (none when the field is empty).
    pub fn repetitions(&self) -> impl Iterator<Item = Repetition<'a>> + use<'a> {
        let ctx = self.ctx;
        ctx.pieces(self.raw, ctx.seps.repetition)
            .map(move |raw| Repetition::new(raw, ctx))
    }

    /// Repetition `i` (1-based); empty when absent.
    pub fn repetition(&self, i: usize) -> Repetition<'a> {
        Repetition::new(
            self.ctx.nth(self.raw, self.ctx.seps.repetition, i),
            self.ctx,
        )
    }

    /// Component `n` (1-based) of the first repetition.
    pub fn component(&self, n: usize) -> Component<'a> {
        self.repetition(1).component(n)
    }

    /// The first repetition, decoded and unescaped (component and subcomponent
    /// separators included as they are).
    pub fn text(&self) -> Cow<'a, str> {
        self.repetition(1).text()
    }
}

/// One repetition of a field.
#[derive(Clone, Copy)]
pub struct Repetition<'a> {
    raw: &'a [u8],
    ctx: Ctx,
}
value_common!(Repetition);

impl<'a> Repetition<'a> {
    /// Component `n` (1-based); empty when absent.
    pub fn component(&self, n: usize) -> Component<'a> {
        Component::new(self.ctx.nth(self.raw, self.ctx.seps.component, n), self.ctx)
    }

    /// The components (none when the repetition is empty).
    pub fn components(&self) -> impl Iterator<Item = Component<'a>> + use<'a> {
        let ctx = self.ctx;
        ctx.pieces(self.raw, ctx.seps.component)
            .map(move |raw| Component::new(raw, ctx))
    }

    /// Decoded and unescaped.
    pub fn text(&self) -> Cow<'a, str> {
        self.ctx.text(self.raw)
    }
}

/// One component.
#[derive(Clone, Copy)]
pub struct Component<'a> {
    raw: &'a [u8],
    ctx: Ctx,
}
value_common!(Component);

impl<'a> Component<'a> {
    /// Subcomponent `n` (1-based); empty when absent.
    pub fn subcomponent(&self, n: usize) -> Subcomponent<'a> {
        Subcomponent::new(
            self.ctx.nth(self.raw, self.ctx.seps.subcomponent, n),
            self.ctx,
        )
    }

    /// The subcomponents (none when the component is empty).
    pub fn subcomponents(&self) -> impl Iterator<Item = Subcomponent<'a>> + use<'a> {
        let ctx = self.ctx;
        ctx.pieces(self.raw, ctx.seps.subcomponent)
            .map(move |raw| Subcomponent::new(raw, ctx))
    }

    /// Decoded and unescaped.
    pub fn text(&self) -> Cow<'a, str> {
        self.ctx.text(self.raw)
    }
}

/// One subcomponent.
#[derive(Clone, Copy)]
pub struct Subcomponent<'a> {
    raw: &'a [u8],
    ctx: Ctx,
}
value_common!(Subcomponent);

impl<'a> Subcomponent<'a> {
    /// Decoded and unescaped.
    pub fn text(&self) -> Cow<'a, str> {
        self.ctx.text(self.raw)
    }
}

#[cfg(test)]
mod tests;

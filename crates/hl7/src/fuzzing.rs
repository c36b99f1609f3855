//! Fuzz target bodies, kept in the library so that the cargo-fuzz targets (nightly,
//! `crates/hl7/fuzz`) and a stable test (`tests/fuzz_corpus.rs`) run the same code.
//! Each function panics when an invariant breaks.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::ack::{self, AckCode, AckError};
use crate::mllp::{self, MllpCodec};
use crate::{Charset, Message, Separators, batch, escape, unescape};

const PATHS: &[&str] = &[
    "MSH-1",
    "MSH-2",
    "MSH-9.1",
    "MSH-9.2",
    "MSH-10",
    "MSH-12",
    "MSH-18",
    "PID-3[2].4",
    "PID-5.1.2",
    "PID[2]-3",
    "SCH-1",
    "SCH-25",
    "ERR-1.4.5",
    "MSA-2",
    "ZZZ-999[9].9.9",
];

fn walk(msg: &Message<'_>) {
    let len = msg.bytes().len();
    for seg in msg.segments() {
        assert_eq!(seg.id().len(), 3);
        assert!(seg.raw().len() <= len);
        let n = seg.field_count();
        for f in 0..=n + 1 {
            let field = seg.field(f);
            let _ = (field.text(), field.is_null(), field.is_empty());
            for i in 0..3 {
                let _ = field.repetition(i).text();
                let _ = field.component(i).subcomponent(i).text();
            }
            for rep in field.repetitions() {
                let _ = rep.text();
                for comp in rep.components() {
                    let _ = comp.text();
                    for sub in comp.subcomponents() {
                        let _ = (sub.text(), sub.is_null());
                    }
                }
            }
        }
    }
}

fn check_escape_round_trip(text: &str, seps: &Separators) {
    let escaped = escape(text, seps);
    assert!(!escaped.contains(['\r', '\n']));
    let back = unescape(escaped.as_bytes(), seps, Charset::Utf8);
    assert_eq!(back, text, "escape/unescape round trip");
}

/// Parses `data` as a message and as a batch, walks every field, repetition,
/// component and subcomponent, builds ACKs and reads them back, and checks that
/// `escape` then `unescape` gives back the text.
pub fn parse_input(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    check_escape_round_trip(&text, &Separators::STANDARD);
    for cs in [Charset::Ascii, Charset::Utf8, Charset::Latin1] {
        let _ = unescape(data, &Separators::STANDARD, cs);
    }

    if let Ok(msg) = Message::parse(data) {
        walk(&msg);
        for p in PATHS {
            let _ = msg.get(p);
        }
        if let Ok(p) = std::str::from_utf8(&data[..data.len().min(16)]) {
            let _ = msg.get(p);
        }
        check_escape_round_trip(&text, msg.separators());
        let _ = format!("{msg:?}");

        let error = AckError::field("PID", 1, 3, 101, "Required field missing");
        for code in [AckCode::AA, AckCode::AE, AckCode::CR] {
            let errors = if code == AckCode::AA {
                &[][..]
            } else {
                std::slice::from_ref(&error)
            };
            let reply = ack::build(&msg, code, "ACK-1", "20240102030405+0000", errors);
            let parsed = Message::parse(reply.as_bytes()).expect("an ACK we build parses");
            let read = ack::read(&parsed).expect("an ACK we build reads back");
            assert_eq!(read.code, code);
            assert_eq!(read.errors.len(), errors.len());
            let id = msg.msh().field(10);
            if std::str::from_utf8(id.raw()).is_ok() {
                assert_eq!(read.control_id, id.text(), "MSA-2 echoes MSH-10");
            }
        }
    }

    if let Ok(b) = batch::split(data) {
        for m in &b.messages {
            if let Ok(msg) = Message::parse(m) {
                walk(&msg);
            }
        }
    }
}

/// A tiny deterministic generator for chunk sizes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Decodes `input` fed in chunks drawn from `rng`; returns the frames and whether an
/// error was seen.
fn decode_chunked(codec: &mut MllpCodec, input: &[u8], rng: &mut Rng) -> (Vec<Vec<u8>>, bool) {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut errored = false;
    let mut rest = input;
    while !rest.is_empty() {
        let n = (1 + rng.next() % 64).min(rest.len() as u64) as usize;
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(f)) => frames.push(f.to_vec()),
                Ok(None) => break,
                Err(_) => errored = true,
            }
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(f)) => frames.push(f.to_vec()),
            Ok(None) => break,
            Err(_) => {
                errored = true;
                break;
            }
        }
    }
    (frames, errored)
}

/// Feeds `data` to [`MllpCodec`] in arbitrary chunkings (frames never hold VT or FS, and
/// never more than the limit), then frames the VT/FS-free pieces of `data` with the
/// encoder and checks that they decode back unchanged.
pub fn mllp_input(data: &[u8]) {
    let seed = data.iter().take(8).fold(0x9E37_79B9_7F4A_7C15u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01B3)
    });
    let mut rng = Rng(seed | 1);
    let max_frame = 16 + (seed % 512) as usize;

    let mut codec = MllpCodec::with_max_frame(max_frame);
    let (frames, _) = decode_chunked(&mut codec, data, &mut rng);
    let ends = data.iter().filter(|&&b| b == mllp::END).count();
    assert!(frames.len() <= ends);
    for f in &frames {
        assert!(f.len() <= max_frame);
        assert!(!f.contains(&mllp::START) && !f.contains(&mllp::END));
    }

    let pieces: Vec<&[u8]> = data
        .split(|&b| b == mllp::START || b == mllp::END)
        .collect();
    let mut encoder = MllpCodec::new();
    let mut wire = BytesMut::new();
    for p in &pieces {
        encoder.encode(p, &mut wire).expect("pieces hold no VT/FS");
    }
    let mut framed = Vec::new();
    for p in &pieces {
        mllp::frame(p, &mut framed);
    }
    assert_eq!(&wire[..], &framed[..]);
    let mut codec = MllpCodec::new();
    let (frames, errored) = decode_chunked(&mut codec, &wire, &mut rng);
    assert!(!errored);
    assert_eq!(frames.len(), pieces.len());
    for (f, p) in frames.iter().zip(&pieces) {
        assert_eq!(&f[..], *p);
    }
    assert_eq!(codec.skipped_bytes(), 0);
    assert_eq!(codec.frames_without_cr(), 0);
}

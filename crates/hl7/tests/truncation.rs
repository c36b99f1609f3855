//! Property-ish: generated messages (random delimiters, terminators, escapes, BOM,
//! nulls, repetitions...) never make the parser panic, whole or cut at any byte, and
//! what the writer produces reads back value for value.

use hl7::build::MessageWriter;
use hl7::{Message, Separators, batch};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const WORDS: &[&str] = &[
    "SMITH",
    "12345",
    "",
    "\"\"",
    "\\F\\",
    "\\S\\x",
    "\\T\\",
    "\\E\\",
    "\\Xe9\\",
    "\\X\\",
    "\\",
    "\\H\\bold\\N\\",
    "é",
    "\u{FFFD}",
    "20240101120000+0215",
    "a b",
    "\\Z12\\",
    "\\.br\\",
];

fn separators(rng: &mut Rng) -> Separators {
    if rng.below(3) > 0 {
        return Separators::STANDARD;
    }
    // Any five distinct punctuation characters.
    let mut pool: Vec<u8> = b"|^~\\&!@#$%*:;?".to_vec();
    let mut take = || pool.remove(rng.below(pool.len() as u64) as usize);
    Separators {
        field: take(),
        component: take(),
        repetition: take(),
        escape: take(),
        subcomponent: take(),
    }
}

fn value(rng: &mut Rng, s: &Separators) -> Vec<u8> {
    let mut out = Vec::new();
    let reps = 1 + rng.below(2);
    for r in 0..reps {
        if r > 0 {
            out.push(s.repetition);
        }
        for c in 0..1 + rng.below(3) {
            if c > 0 {
                out.push(s.component);
            }
            for sc in 0..1 + rng.below(2) {
                if sc > 0 {
                    out.push(s.subcomponent);
                }
                let w = rng.pick(WORDS).as_bytes();
                out.extend(w.iter().map(|&b| if b == b'\\' { s.escape } else { b }));
            }
        }
    }
    out
}

fn message(rng: &mut Rng) -> Vec<u8> {
    let s = separators(rng);
    let terms: [&[u8]; 3] = [b"\r", b"\n", b"\r\n"];
    let term = *rng.pick(&terms);
    let mut out = Vec::new();
    if rng.below(4) == 0 {
        out.extend_from_slice(b"\xEF\xBB\xBF");
    }
    out.extend_from_slice(b"MSH");
    out.push(s.field);
    out.extend_from_slice(&s.encoding_characters());
    let charset = *rng.pick(&["", "UNICODE UTF-8", "8859/1", "ASCII"]);
    for n in 3..=18 {
        out.push(s.field);
        match n {
            9 => out.extend_from_slice(&[b'S', b'I', b'U', s.component, b'S', b'1', b'2']),
            18 => out.extend_from_slice(charset.as_bytes()),
            _ => out.extend(value(rng, &s)),
        }
    }
    for _ in 0..rng.below(6) {
        out.extend_from_slice(term);
        let ids: [&[u8]; 5] = [b"PID", b"SCH", b"NTE", b"ZX1", b"OBX"];
        let id = *rng.pick(&ids);
        out.extend_from_slice(id);
        for _ in 0..rng.below(8) {
            out.push(s.field);
            out.extend(value(rng, &s));
        }
    }
    if rng.below(2) == 0 {
        out.extend_from_slice(term);
    }
    if rng.below(4) == 0 {
        out.extend_from_slice(term);
        out.extend_from_slice(term);
    }
    out
}

fn walk(m: &Message<'_>) -> usize {
    let mut n = 0;
    for seg in m.segments() {
        for f in 0..=seg.field_count() + 1 {
            let field = seg.field(f);
            n += field.text().len();
            for rep in field.repetitions() {
                for comp in rep.components() {
                    for sub in comp.subcomponents() {
                        n += sub.text().len();
                    }
                }
            }
        }
    }
    n
}

#[test]
fn generated_messages_parse_and_never_panic_when_cut() {
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    for i in 0..120 {
        let msg = message(&mut rng);
        let m = Message::parse(&msg).unwrap_or_else(|e| panic!("message {i}: {e}"));
        assert_eq!(m.get("MSH-9.2").as_deref(), Some("S12"), "message {i}");
        walk(&m);
        assert_eq!(batch::split(&msg).unwrap().messages.len(), 1);
        for cut in 0..=msg.len() {
            let part = &msg[..cut];
            if let Ok(m) = Message::parse(part) {
                walk(&m);
            }
            let _ = batch::split(part);
        }
        hl7::fuzzing::parse_input(&msg);
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0xBAD_C0FFEE);
    let alphabet = b"MSH|^~\\&\r\nPIDXF\"\xEF\xBB\xBF\x0b\x1c 0123";
    for _ in 0..3000 {
        let len = rng.below(80) as usize;
        let mut data: Vec<u8> = (0..len).map(|_| *rng.pick(alphabet)).collect();
        if rng.below(2) == 0 {
            let prefix = b"MSH|^~\\&|";
            data.splice(0..0, prefix.iter().copied());
        }
        hl7::fuzzing::parse_input(&data);
        hl7::fuzzing::mllp_input(&data);
    }
}

#[test]
fn written_values_read_back() {
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    let texts = [
        "plain",
        "a|b",
        "x^y&z~w",
        "back\\slash",
        "two\r\nlines",
        "é ü",
        "\"\"",
        "\\F\\",
    ];
    for _ in 0..200 {
        let values: Vec<&str> = (0..5).map(|_| *rng.pick(&texts)).collect();
        let text = MessageWriter::new()
            .segment("MSH")
            .field(9, &["SIU", "S14"])
            .field(18, &["UNICODE UTF-8"])
            .segment("NTE")
            .field(1, &values[..2])
            .field_repeated(2, &[&values[2..3], &values[3..5]])
            .finish();
        let m = Message::parse(text.as_bytes()).unwrap();
        let get = |p: &str| m.get(p).map(|c| c.into_owned()).unwrap_or_default();
        assert_eq!(get("NTE-1.1"), values[0]);
        assert_eq!(get("NTE-1.2"), values[1]);
        assert_eq!(get("NTE-2[1]"), values[2]);
        assert_eq!(get("NTE-2[2].1"), values[3]);
        assert_eq!(get("NTE-2[2].2"), values[4]);
    }
}

//! Parse throughput on the 3.5 KB SIU^S12 sample (LF terminators turned into CR), in one
//! run: (a) `Message::parse`, (a') `Message::parse_with` reusing its storage, (b) parse +
//! reading 20 typical fields, (c) a bare memchr split of segments and fields (the
//! floor), (d) the `hl7-parser` crate. Each is timed for HL7_BENCH_SECS seconds per run
//! (default 0.6) over HL7_BENCH_RUNS runs (default 5); the median run is reported.
//!
//!   cargo bench -p rapport-hl7 --bench parse
//!
//! The sample is read from `$RAPPORT_CONFORMANCE_DIR/hl7/` (default `../shared/testdata`
//! beside the workspace). The last line, `RESULT ...`, is for bench/hl7-parse.sh.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hl7::{Message, Scratch};

const SAMPLE: &str = "msfhirconverter__SIU-S12-01.hl7";

const FIELDS: [&str; 20] = [
    "MSH-3",
    "MSH-4.1",
    "MSH-9.1",
    "MSH-9.2",
    "MSH-10",
    "MSH-12",
    "SCH-1",
    "SCH-2",
    "SCH-25",
    "SCH-11.4",
    "SCH-11.5",
    "PID-3.1",
    "PID-3[2].1",
    "PID-5.1.1",
    "PID-5.2",
    "PID-7",
    "PID-8",
    "PID-13.1",
    "AIL-3.2",
    "AIP-3.2",
];

fn sample_path() -> PathBuf {
    let dir = std::env::var_os("RAPPORT_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata")
        });
    dir.join("hl7").join(SAMPLE)
}

struct Stat {
    per_sec: f64,
}

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Median of `runs` runs of about `secs` seconds each, after a short warm-up.
fn measure(name: &str, len: usize, mut f: impl FnMut() -> usize) -> Stat {
    let secs = env_f64("HL7_BENCH_SECS", 0.6);
    let runs = env_f64("HL7_BENCH_RUNS", 5.0).max(1.0) as usize;
    let run = |f: &mut dyn FnMut() -> usize, d: Duration| {
        let start = Instant::now();
        let mut iters = 0u64;
        let mut sink = 0usize;
        loop {
            for _ in 0..64 {
                sink = sink.wrapping_add(f());
            }
            iters += 64;
            let elapsed = start.elapsed();
            if elapsed >= d {
                black_box(sink);
                return iters as f64 / elapsed.as_secs_f64();
            }
        }
    };
    run(&mut f, Duration::from_secs_f64(secs / 3.0));
    let mut rates: Vec<f64> = (0..runs)
        .map(|_| run(&mut f, Duration::from_secs_f64(secs)))
        .collect();
    rates.sort_by(f64::total_cmp);
    let per_sec = rates[rates.len() / 2];
    let (lo, hi) = (rates[0], rates[rates.len() - 1]);
    println!(
        "{name:<44} {:>11.0} /s  {:>8.1} MB/s  {:>7.2} µs  (runs {:.0}..{:.0})",
        per_sec,
        per_sec * len as f64 / 1e6,
        1e6 / per_sec,
        lo,
        hi
    );
    Stat { per_sec }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this too: keep that quick.
    if std::env::args().any(|a| a == "--test") || cfg!(debug_assertions) {
        println!("parse bench: skipped (run it with cargo bench)");
        return;
    }
    let path = sample_path();
    let raw = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            println!(
                "parse bench: skipped, {} is unreadable ({e}); set RAPPORT_CONFORMANCE_DIR",
                path.display()
            );
            return;
        }
    };
    let bytes: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'\n' { b'\r' } else { b })
        .collect();
    let text = std::str::from_utf8(&bytes).expect("the sample is ASCII");
    let len = bytes.len();

    // Sanity: every implementation sees the same structure.
    let ours = Message::parse(&bytes).unwrap();
    let theirs = hl7_parser::Message::parse(text).unwrap();
    let fields_ours: usize = ours.segments().map(|s| s.field_count()).sum();
    assert_eq!(ours.segment_count(), theirs.segments().count());
    assert_eq!(ours.get("SCH-25").as_deref(), Some("Booked"));
    for p in FIELDS {
        assert!(ours.get(p).is_some(), "{p}");
    }
    println!(
        "sample: {SAMPLE}, {len} bytes, {} segments, {fields_ours} fields; {} CPUs, load {}",
        ours.segment_count(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split(' ')
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    drop(ours);

    let a = measure("(a)  hl7::Message::parse", len, || {
        let m = Message::parse(black_box(&bytes)).unwrap();
        m.segment_count()
    });
    let mut scratch = Some(Scratch::default());
    let a2 = measure(
        "(a') hl7::Message::parse_with (reused Scratch)",
        len,
        || {
            let m = Message::parse_with(black_box(&bytes), scratch.take().unwrap()).unwrap();
            let n = m.segment_count();
            scratch = Some(m.into_scratch());
            n
        },
    );
    let b = measure("(b)  hl7 parse + 20 fields via get()", len, || {
        let m = Message::parse(black_box(&bytes)).unwrap();
        FIELDS.iter().map(|p| m.get(p).map_or(0, |v| v.len())).sum()
    });
    let c = measure("(c)  bare memchr split (segments, fields)", len, || {
        let b = black_box(&bytes[..]);
        let mut acc = 0usize;
        let mut start = 0;
        for end in memchr::memchr_iter(b'\r', b).chain(std::iter::once(b.len())) {
            for i in memchr::memchr_iter(b'|', &b[start..end]) {
                acc = acc.wrapping_add(i);
            }
            start = end + 1;
        }
        acc
    });
    let d = measure("(d)  hl7-parser 0.3 Message::parse", len, || {
        let m = hl7_parser::Message::parse(black_box(text)).unwrap();
        m.segments().count()
    });

    println!();
    println!("ours/memchr     (a/c): {:.2}", a.per_sec / c.per_sec);
    println!("ours/hl7-parser (a/d): {:.1}x", a.per_sec / d.per_sec);
    println!(
        "target 300,000 parses/s: {}",
        if a.per_sec >= 300_000.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    println!(
        "RESULT bytes={len} parse_per_s={:.0} parse_reuse_per_s={:.0} parse_20_fields_per_s={:.0} memchr_per_s={:.0} hl7_parser_per_s={:.0}",
        a.per_sec, a2.per_sec, b.per_sec, c.per_sec, d.per_sec
    );
}

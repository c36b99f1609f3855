//! Replays the fuzz seeds (`fuzz/seeds/`, written for this crate) and the shared HL7
//! samples (`$RAPPORT_CONFORMANCE_DIR/hl7`, when set) through the fuzz target bodies, on
//! stable, with a few mutations of each.

use std::path::{Path, PathBuf};

use hl7::fuzzing::{mllp_input, parse_input};

fn files_in(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

fn replay(name: &str, data: &[u8]) {
    parse_input(data);
    mllp_input(data);
    // Framed, as it would arrive over MLLP.
    let mut framed = Vec::new();
    hl7::mllp::frame(data, &mut framed);
    mllp_input(&framed);
    // Every terminator style.
    for (from, to) in [(b'\r', b'\n'), (b'\n', b'\r')] {
        let swapped: Vec<u8> = data
            .iter()
            .map(|&b| if b == from { to } else { b })
            .collect();
        parse_input(&swapped);
    }
    // Some truncations and single-byte flips.
    let step = (data.len() / 64).max(1);
    for cut in (0..data.len()).step_by(step) {
        parse_input(&data[..cut]);
        let mut flipped = data.to_vec();
        for b in [b'|', b'^', b'~', b'\\', b'&', b'\r', 0xFF, b'"'] {
            flipped[cut] = b;
            parse_input(&flipped);
        }
    }
    eprintln!("replayed {name} ({} bytes)", data.len());
}

#[test]
fn seeds() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let files = files_in(&dir);
    assert!(files.len() >= 5, "seed corpus missing in {}", dir.display());
    for (name, data) in files {
        replay(&name, &data);
    }
}

#[test]
fn conformance_samples() {
    let Some(dir) = std::env::var_os("RAPPORT_CONFORMANCE_DIR") else {
        eprintln!("RAPPORT_CONFORMANCE_DIR is not set: skipping the HL7 samples replay");
        return;
    };
    let files = files_in(&PathBuf::from(dir).join("hl7"));
    assert!(!files.is_empty());
    for (name, data) in files {
        replay(&name, &data);
    }
}

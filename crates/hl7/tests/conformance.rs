//! The real sample messages, read at run time from `$RAPPORT_CONFORMANCE_DIR/hl7/`
//! (`../shared/testdata` in CI); skipped with a note when the variable is unset.

use std::path::PathBuf;

use hl7::ack::{self, AckCode, AckError};
use hl7::{Charset, Message, ParseError, batch};

fn sample(name: &str) -> Option<Vec<u8>> {
    let Some(dir) = std::env::var_os("RAPPORT_CONFORMANCE_DIR") else {
        eprintln!("RAPPORT_CONFORMANCE_DIR is not set: skipping the HL7 sample test for {name}");
        return None;
    };
    let path = PathBuf::from(dir).join("hl7").join(name);
    Some(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn all_samples() -> Option<Vec<(String, Vec<u8>)>> {
    let dir = PathBuf::from(std::env::var_os("RAPPORT_CONFORMANCE_DIR").or_else(|| {
        eprintln!("RAPPORT_CONFORMANCE_DIR is not set: skipping the HL7 sample sweep");
        None
    })?)
    .join("hl7");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "hl7") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            out.push((name, std::fs::read(&path).unwrap()));
        }
    }
    out.sort();
    assert!(
        out.len() >= 11,
        "expected the 11 HL7 samples in {}",
        dir.display()
    );
    Some(out)
}

fn get(m: &Message<'_>, path: &str) -> String {
    m.get(path).map(|c| c.into_owned()).unwrap_or_default()
}

#[test]
fn siu_s12() {
    let Some(bytes) = sample("msfhirconverter__SIU-S12-01.hl7") else {
        return;
    };
    // LF terminators, as saved.
    assert!(bytes.contains(&b'\n'));
    let m = Message::parse(&bytes).unwrap();
    let ids: Vec<&str> = m.segments().map(|s| s.id()).collect();
    assert_eq!(
        ids,
        [
            "MSH", "SCH", "TQ1", "NTE", "PID", "PV1", "PV2", "OBX", "DG1", "RGS", "AIS", "NTE",
            "NTE", "AIG", "NTE", "AIL", "NTE", "AIP"
        ]
    );
    assert_eq!(m.charset(), Charset::Ascii);
    assert_eq!(get(&m, "MSH-9.1"), "SIU");
    assert_eq!(get(&m, "MSH-9.2"), "S12");
    assert_eq!(get(&m, "MSH-10"), "MSG00012");
    assert_eq!(get(&m, "MSH-12"), "2.8");
    assert_eq!(get(&m, "MSH-4.2"), "2.16.840.1.122848.1.30");
    assert_eq!(get(&m, "SCH-1"), "12345");
    assert_eq!(get(&m, "SCH-2"), "36996");
    assert_eq!(get(&m, "SCH-25"), "Booked");
    assert_eq!(get(&m, "SCH-11.4"), "202010011126+0215");
    assert_eq!(get(&m, "SCH-11.5"), "202010091126+0215");
    assert_eq!(get(&m, "SCH-13.1"), "(608)271-9000");
    assert_eq!(get(&m, "SCH-12.2.2"), "Mr.");
    assert_eq!(get(&m, "TQ1-7"), "20210924093000+0215");
    assert_eq!(get(&m, "PID-3[2].1"), "123456789");
    assert_eq!(get(&m, "PID-3[2].4"), "USSSA");
    assert_eq!(get(&m, "PID-3.4.2"), "2.16.1");
    assert_eq!(get(&m, "PID-5.1.1"), "EVERYMAN");
    assert_eq!(get(&m, "PID-5.1.5"), "Aniston");
    assert_eq!(get(&m, "PID-5.2"), "ADAM");
    assert_eq!(get(&m, "PID-5[2].1.1"), "Josh");
    assert_eq!(get(&m, "PID-7"), "198808181126+0215");
    assert_eq!(get(&m, "PID-11.3"), "Ann Arbor ");
    assert_eq!(get(&m, "PID-13.3"), "CP");
    assert_eq!(get(&m, "PID-13[2].1"), "12121212");
    assert_eq!(get(&m, "AIS-3.2"), "Biopsy of colon (procedure)");
    assert_eq!(get(&m, "AIS-4"), "20210924093000+0215");
    assert_eq!(get(&m, "AIS-10"), "Booked");
    assert_eq!(get(&m, "AIL-3.2"), "Room01");
    assert_eq!(get(&m, "AIP-3.2"), "GE");
    assert_eq!(
        get(&m, "NTE[2]-3"),
        "Nursing staff instructions - Patient bowel preparation for the procedure"
    );
    let pid = m.segment("PID").unwrap();
    assert_eq!(pid.index(), 4);
    assert_eq!(pid.field(3).repetitions().count(), 2);
    assert_eq!(get(&m, "PID-40.2"), "WPN");
    assert!(pid.field(41).is_empty());
}

#[test]
fn siu_s13_and_s14() {
    if let Some(bytes) = sample("msfhirconverter__SIU-S13-01.hl7") {
        let m = Message::parse(&bytes).unwrap();
        assert_eq!(get(&m, "MSH-9.2"), "S13");
        // Non-standard structure in MSH-9.3 (FACTS §4.1).
        assert_eq!(get(&m, "MSH-9.3"), "SIU_S13");
        assert_eq!(get(&m, "SCH-25"), "Booked");
        assert_eq!(get(&m, "AIL-3.2"), "Room01");
    }
    if let Some(bytes) = sample("msfhirconverter__SIU-S14-01.hl7") {
        let m = Message::parse(&bytes).unwrap();
        assert_eq!(get(&m, "MSH-9.2"), "S14");
        assert_eq!(get(&m, "AIL-3.2"), "Room02");
    }
}

#[test]
fn adt_a04_and_a08() {
    let Some(bytes) = sample("msfhirconverter__ADT-A04-02.hl7") else {
        return;
    };
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(get(&m, "MSH-9"), "ADT^A04^ADT_A04");
    assert_eq!(get(&m, "MSH-9.2"), "A04");
    // EVN trigger disagrees with MSH-9 (FACTS §4.6).
    assert_eq!(get(&m, "EVN-1"), "A01");
    assert_eq!(get(&m, "MSH-7"), "198908181126+0215");
    // \T\ inside PV1-14.
    assert_eq!(
        get(&m, "PV1-14"),
        "NHS Provider-General (inc.A&E-this Hosp)"
    );
    assert_eq!(get(&m, "PID-13.7"), "1111");

    let Some(bytes) = sample("msfhirconverter__ADT-A08-02.hl7") else {
        return;
    };
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(get(&m, "MSH-9.2"), "A08");
    assert_eq!(get(&m, "EVN-1"), "A01");
}

#[test]
fn adt_a40_two_pid_mrg_pairs() {
    let Some(bytes) = sample("msfhirconverter__ADT-A40-02.hl7") else {
        return;
    };
    let m = Message::parse(&bytes).unwrap();
    let ids: Vec<&str> = m.segments().map(|s| s.id()).collect();
    assert_eq!(ids, ["MSH", "EVN", "PID", "MRG", "PID", "MRG"]);
    assert_eq!(get(&m, "MSH-9.2"), "A40");
    assert_eq!(get(&m, "MSH-15"), "NE");
    let pairs: Vec<(String, String)> = m
        .segments_named("PID")
        .zip(m.segments_named("MRG"))
        .map(|(p, r)| {
            (
                p.field(3).component(1).text().into_owned(),
                r.field(1).component(1).text().into_owned(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [
            ("12345".into(), "56789".into()),
            ("145".into(), "569".into())
        ]
    );
    assert_eq!(get(&m, "PID[2]-3.4"), "BCBS");
    assert_eq!(get(&m, "MRG[2]-1.1"), "569");
    assert_eq!(get(&m, "PID-13.1"), "(111)111-1111");
    assert_eq!(get(&m, "PID-13.6"), "111");
    assert_eq!(get(&m, "PID-13.7"), "1111111");
}

#[test]
fn oru_with_malformed_dob() {
    let Some(bytes) = sample("pythonhl7__ORU_R01__malformed_DOB.hl7") else {
        return;
    };
    let m = Message::parse(&bytes).unwrap();
    let pid = m.segment("PID").unwrap();
    assert_eq!(pid.field(7).raw(), b"196203520");
    assert_eq!(get(&m, "PID-5.2"), "EVE");
    assert_eq!(get(&m, "MSH-9"), "ORU^R01");
    assert_eq!(get(&m, "MSH-12"), "2.4");
    assert_eq!(m.segments_named("OBX").count(), 2);
    assert_eq!(get(&m, "OBX[2]-3.1"), "1553-5");
    assert_eq!(get(&m, "OBX-5.2"), "182");
}

#[test]
fn repetition_component_subcomponent() {
    let Some(bytes) = sample("pythonhl7__repetition_component_subcomponent.hl7") else {
        return;
    };
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(get(&m, "PID-1"), "Field1");
    assert_eq!(get(&m, "PID-2.2"), "Component2");
    assert_eq!(get(&m, "PID-3.2.2"), "Sub-Component2");
    assert_eq!(get(&m, "PID-3.3"), "Component3");
    assert_eq!(get(&m, "PID-4[2]"), "Repeat2");
}

#[test]
fn bhs_batch_splits_into_two() {
    let Some(bytes) = sample("pythonhl7__BHS_batch_2x_ADT_A04.hl7") else {
        return;
    };
    assert!(batch::is_batch(&bytes));
    assert_eq!(Message::parse(&bytes).unwrap_err(), ParseError::NoMsh);
    let b = batch::split(&bytes).unwrap();
    assert_eq!(b.messages.len(), 2);
    assert!(b.file_header.is_none());
    assert!(b.batch_header.unwrap().starts_with(b"BHS|"));
    assert_eq!(b.batch_control_id.as_deref(), Some("abchs20070101123401-1"));
    assert_eq!(b.declared_count, Some(2));
    assert!(b.counts_match);
    let ids: Vec<String> = b
        .messages
        .iter()
        .map(|raw| {
            let m = Message::parse(raw).unwrap();
            assert_eq!(get(&m, "MSH-9"), "ADT^A04^ADT_A01");
            assert_eq!(get(&m, "MSH-12"), "2.5");
            assert_eq!(m.charset(), Charset::Ascii);
            assert_eq!(get(&m, "MSH-18"), "ASCII");
            assert_eq!(m.segments().last().unwrap().id(), "PV1");
            get(&m, "MSH-10")
        })
        .collect();
    assert_eq!(ids, ["12334456778890", "12334456778891"]);
}

#[test]
fn ack_samples_read_back() {
    if let Some(bytes) = sample("nist_via_kancloud__ACK_AA_for_NIST-101101160641914.hl7") {
        let m = Message::parse(&bytes).unwrap();
        // MSH-18 "UNICODE" (table 0211's older code) reads as UTF-8.
        assert_eq!(m.charset(), Charset::Utf8);
        let reply = ack::read(&m).unwrap();
        assert_eq!(reply.code, AckCode::AA);
        assert_eq!(reply.control_id, "NIST-101101160641914");
        assert!(reply.errors.is_empty());
        assert_eq!(reply.error_text(), None);
    }
    if let Some(bytes) = sample("nist_via_kancloud__ACK_AE_ERR_for_NIST-101101160641914.hl7") {
        let m = Message::parse(&bytes).unwrap();
        let reply = ack::read(&m).unwrap();
        assert_eq!(reply.code, AckCode::AE);
        assert_eq!(reply.control_id, "NIST-101101160641914");
        assert_eq!(reply.errors.len(), 1);
        assert_eq!(reply.errors[0].code, Some(205));
        assert_eq!(
            reply.errors[0].text.as_deref(),
            Some("Patient's Id is duplicated")
        );
        assert_eq!(
            reply.error_text().as_deref(),
            Some("Patient's Id is duplicated")
        );
    }
}

/// Every sample: parses (or splits), every value is reachable, and an ACK built for it
/// parses back with MSH-3..6 swapped and MSA-2 echoing MSH-10.
#[test]
fn every_sample_parses_and_acks() {
    let Some(samples) = all_samples() else {
        return;
    };
    for (name, bytes) in samples {
        let split = batch::split(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!split.messages.is_empty(), "{name}");
        for raw in split.messages {
            let m = Message::parse(raw).unwrap_or_else(|e| panic!("{name}: {e}"));
            hl7::fuzzing::parse_input(raw);
            let version = get(&m, "MSH-12");
            let err = AckError::field("PID", 1, 7, 102, "PID-7 is not a valid date");
            let reply = ack::build(&m, AckCode::AE, "RAPPORT-1", "20240102030405+0000", &[err]);
            let a = Message::parse(reply.as_bytes()).unwrap();
            assert_eq!(get(&a, "MSH-3"), get(&m, "MSH-5"), "{name}");
            assert_eq!(get(&a, "MSH-4"), get(&m, "MSH-6"), "{name}");
            assert_eq!(get(&a, "MSH-5"), get(&m, "MSH-3"), "{name}");
            assert_eq!(get(&a, "MSH-6"), get(&m, "MSH-4"), "{name}");
            assert_eq!(get(&a, "MSH-10"), "RAPPORT-1");
            assert_eq!(get(&a, "MSH-11"), get(&m, "MSH-11"));
            assert_eq!(get(&a, "MSH-12"), version);
            assert_eq!(get(&a, "MSA-2"), get(&m, "MSH-10"), "{name}");
            let trigger = get(&m, "MSH-9.2");
            assert_eq!(get(&a, "MSH-9"), format!("ACK^{trigger}^ACK"), "{name}");
            let modern = version.as_str() >= "2.5";
            assert_eq!(a.get("ERR-2").is_some(), modern, "{name} {version}");
            assert_eq!(a.get("ERR-1").is_some(), !modern, "{name} {version}");
            let r = ack::read(&a).unwrap();
            assert_eq!(r.errors[0].code, Some(102));
            assert_eq!(r.error_text().as_deref(), Some("PID-7 is not a valid date"));
        }
    }
}

//! Arbitrary bytes fed in arbitrary chunkings to the MLLP codec, and an encode/decode
//! round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hl7::fuzzing::mllp_input(data);
});

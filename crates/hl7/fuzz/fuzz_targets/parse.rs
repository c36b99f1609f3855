//! Message::parse + a walk of every field/repetition/component/subcomponent and its
//! text, batch::split, ack::build (and reading the ACK back) when parsing succeeds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hl7::fuzzing::parse_input(data);
});

#![forbid(unsafe_code)]
//! Rapport's messaging benchmarks, shared parts. The binaries:
//!
//! - `dispatch`: N queued `staff_message`s dispatched by the engine over HTTP to the Twilio
//!   simulator with pacing off, against the same N requests POSTed straight to the simulator
//!   (no database) at the same concurrency;
//! - `pacing`: per-sender pacing, achieved against configured, in the steady state;
//! - `webhooks`: signed inbound webhooks into the real app, closed- and open-loop, against
//!   a bare axum server answering 200 to the same requests.
//!
//! `bench/messaging.sh` and `bench/webhooks.sh` run them in release mode.

pub mod cpu;
pub mod db;
pub mod load;
pub mod report;
pub mod stats;
pub mod world;

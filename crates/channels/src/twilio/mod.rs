//! Twilio Programmable Messaging: webhook signatures, and (with their modules) the REST adapter.

pub mod media;
pub mod rest;
pub mod signature;

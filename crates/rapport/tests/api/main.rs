//! The integration suite: the real app on port 0, over HTTP, against SQLite always and
//! PostgreSQL when RAPPORT_TEST_POSTGRES_URL is set. Each test runs once per backend.

mod harness;

mod bad_input;
mod cli;
mod ehr;
mod email;
mod messaging;
mod records;
mod security;

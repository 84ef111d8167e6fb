//! shareaudit holds 快手小店's privacy policy (section 4: whom personal data
//! is shared with, for what, on what basis, and how little) to its word, one
//! outbound data-sharing event at a time.
//!
//! # Layout
//!
//! Read it in the order an event travels:
//!
//! | module | what it does |
//! |---|---|
//! | [`model`] | the contract (`event-model.md`): `DataSharingEvent`, `ConsentState`, `Violation`, their vocabularies and validation with field paths |
//! | [`codec`] | bytes <-> model: JSON lines (simd-json's tape walked into the model; serde_json decides and explains whatever that path doubts) and Avro (`schemas/*.avsc`) |
//! | [`policy`] | the policy file people edit (YAML): parse, validate with line and column, compile to bit sets; the embedded default |
//! | [`detect`] | content detectors: ID numbers, phones, bank cards, e-mail, passports, USCC, IMEI, MAC, GPS in free text |
//! | [`consent`] | the consent table: each user's recent states, looked up as of the event's time |
//! | [`audit`] | the engine: policy + event + consent state -> violations, one small function per rule |
//! | [`policytest`] | policy test cases as data (`shareaudit policy test`, like `opa test`) |
//! | [`generate`] | seeded synthetic traffic that knows which rules it should trip |
//! | `cli`, `commands` (the binary) | the command line and the commands behind it: all file and terminal I/O, `anyhow` errors |
//!
//! # Why it is built this way
//!
//! - `model`, `codec`, `policy`, `detect`, `consent` and `audit` do no I/O and
//!   read no clock: the offline `audit` command and the coming Kafka daemon
//!   run the same engine, byte for byte, and every rule is tested alone.
//! - Rules are data. Allow-lists, limits, severities and modes live in the
//!   policy file; the code holds only the logic of each rule, beside a quote
//!   of its clause.
//! - Categories are dense ids and sets of them bit masks, so minimisation
//!   is a handful of AND operations per event.
//! - Nothing personal leaves: violations name categories and field names,
//!   never values; the subject is an HMAC of the user id.

pub mod audit;
pub mod codec;
pub mod config;
pub mod consent;
pub mod daemon;
pub mod demo;
mod detect;
pub mod kafka;
pub mod model;
pub mod policy;
pub mod policytest;
pub mod telemetry;

#[cfg(test)]
mod layers;

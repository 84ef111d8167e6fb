//! shareaudit holds 快手小店's privacy policy (section 4: whom personal data
//! is shared with, for what, on what basis, and how little) to its word, one
//! outbound data-sharing event at a time.
//!
//! # Layout
//!
//! Read it in the order an event travels, bottom layer first; a module
//! uses only those above it in this table (`layers.rs` tests it):
//!
//! | module | what it does |
//! |---|---|
//! | [`model`] | the contract (`event-model.md`): `DataSharingEvent`, `ConsentState`, `Violation`, their vocabularies, validation with field paths; `hex` |
//! | [`policy`] | the policy file people edit (YAML): parse, validate with line and column, compile to bit sets; the embedded default |
//! | `detect` | content detectors: ID numbers, phones, bank cards, e-mail, passports, USCC, IMEI, MAC, GPS in free text (used by the engine only) |
//! | [`config`] | the daemon's settings, raw then validated; the policy file read |
//! | [`consent`] | the consent table: each user's recent states, looked up as of the event's time |
//! | [`codec`] | bytes <-> model: JSON lines (read in one pass straight into the model; serde_json decides and explains whatever that path doubts; violations written as serde_json writes them), Avro (`schemas/*.avsc`), the wire framings, the schema-registry client |
//! | [`audit`] | the engine: policy + event + consent state -> violations, one small function per rule |
//! | [`telemetry`] | the metrics, and `/metrics` `/healthz` `/readyz` on hyper |
//! | [`policytest`] | policy test cases as data (`shareaudit policy test`, like `opa test`) |
//! | [`kafka`] | everything librdkafka: the group member, the producer and its delivery reports, the commit watermark, the consent reader |
//! | [`daemon`] | the daemon on tokio: the event stage and the rate stage on one stage loop, the consent and reload tasks, one cancellation token |
//! | [`fuzzing`] | the fuzz targets: one function per decoder of untrusted bytes (`fuzz/` runs them under AFL++; the tests replay their corpus) |
//! | [`demo`] | the demo (embedded cluster, generator, daemon) and the generated traffic the tests use |
//! | `cli`, `commands` (the binary) | the command line and the commands behind it: all file and terminal I/O, `anyhow` errors |
//!
//! # Why it is built this way
//!
//! - `model`, `policy`, `detect`, `consent` and `audit` do no I/O and read
//!   no clock: the offline `audit` command and the daemon run the same
//!   engine, byte for byte, and every rule is tested alone.
//! - Rules are data. Allow-lists, limits, severities and modes live in the
//!   policy file; the code holds only the logic of each rule, beside a quote
//!   of its clause.
//! - Categories are dense ids and sets of them bit masks, so minimisation
//!   is a handful of AND operations per event.
//! - The daemon is tasks on one tokio runtime, stopped by one token and all
//!   joined, in the shape of mini-redis; the engine stays synchronous and
//!   is called from the stages. Kafka is spoken of only in `kafka`: the
//!   daemon deals in records, outputs and acknowledgements, and commits
//!   only the prefix of records whose outputs the broker acknowledged.
//! - Nothing personal leaves: violations name categories and field names,
//!   never values; the subject is an HMAC of the user id.

pub mod audit;
pub mod codec;
pub mod config;
pub mod consent;
pub mod daemon;
pub mod demo;
mod detect;
pub mod fuzzing;
pub mod kafka;
pub mod model;
pub mod policy;
pub mod policytest;
pub mod report;
pub mod telemetry;

#[cfg(test)]
mod layers;
#[cfg(test)]
mod testalloc;

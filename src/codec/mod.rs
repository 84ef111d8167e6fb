//! Bytes <-> model: the JSON form and the Avro wire form. Pure: no I/O
//! beyond the reader handed in.

pub mod avro;
pub mod container;
pub mod datum;
mod fast;
pub mod json;
pub mod registry;
pub mod wire;

use crate::config::OutputFormat;
use crate::model::{Problems, Violation, redact};
use thiserror::Error;

/// A violation as the alert topic takes it: JSON, or Avro framed as the
/// settings say.
pub fn encode_violation(format: &OutputFormat, v: &Violation) -> Vec<u8> {
    match format {
        OutputFormat::Json => violation_json(v),
        OutputFormat::Avro { schema_id } => match (avro::encode_violation(v), avro::schemas()) {
            (Ok(datum), Ok(s)) => match schema_id {
                Some(id) => wire::confluent(*id, &datum),
                None => wire::single_object(&s.violation, &datum),
            },
            // The schemas are compiled in and tested; JSON is the fallback of last resort.
            _ => violation_json(v),
        },
    }
}

fn violation_json(v: &Violation) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    json::write_violation(&mut out, v);
    out
}

/// A `volume.recipient_rate` candidate as the internal rate topic carries it: the violation, JSON.
pub fn encode_candidate(v: &Violation) -> Vec<u8> {
    violation_json(v)
}

/// Why a record could not become a model value. Each variant says what
/// failed and where, for the dead-letter headers and the audit report;
/// its text never quotes the record's values (`model::redact`).
#[derive(Debug, Error)]
pub enum DecodeError {
    /// Not JSON at all.
    #[error(
        "JSON syntax error at line {line}, column {column}: {}",
        redact(message)
    )]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// JSON, but fields are missing, of the wrong type or outside a vocabulary.
    #[error("malformed record: {}", redact(&.0.to_string()))]
    Malformed(Problems),
    /// Decoded, but its values are not acceptable (negative counts, year 9999...).
    #[error("invalid record: {}", redact(&.0.to_string()))]
    Invalid(Problems),
    /// The Avro bytes do not decode with the schema.
    #[error("Avro decode error: {}", redact(.0))]
    Avro(String),
    /// A schema itself is broken.
    #[error("schema error: {}", redact(.0))]
    Schema(String),
    /// The bytes are in no framing shareaudit reads.
    #[error("framing error: {}", redact(.0))]
    Framing(String),
    /// The record names a writer schema nobody knows.
    #[error("unknown writer schema: {0}")]
    UnknownSchema(String),
    /// The registry's schema of this id is recursive, or one our reader
    /// schemas cannot resolve: refused once, for good.
    #[error("writer schema {0} refused: recursive, or not readable as our event or consent")]
    ForeignSchema(u32),
    /// The writer schema of this id is not known yet: the registry must be
    /// asked first (`registry::Registry::fetch`); the record waits, it is
    /// not a dead letter.
    #[error("writer schema {0} not fetched yet")]
    Pending(u32),
}

impl DecodeError {
    /// A short, bounded name for metrics labels and dead-letter headers.
    pub fn class(&self) -> &'static str {
        match self {
            DecodeError::Syntax { .. } => "json_syntax",
            DecodeError::Malformed(_) => "malformed",
            DecodeError::Invalid(_) => "invalid",
            DecodeError::Avro(_) => "avro",
            DecodeError::Schema(_) => "schema",
            DecodeError::Framing(_) => "framing",
            DecodeError::UnknownSchema(_) => "unknown_schema",
            DecodeError::Pending(_) => "registry",
            DecodeError::ForeignSchema(_) => "foreign_schema",
        }
    }
}

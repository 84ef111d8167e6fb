//! Bytes <-> model: the JSON form and the Avro wire form. Pure: no I/O
//! beyond the reader handed in.

pub mod avro;
mod fast;
pub mod json;
pub mod registry;
pub mod wire;

use crate::model::Problems;
use thiserror::Error;

/// Why a record could not become a model value. Each variant says what
/// failed and where, for the dead-letter headers and the audit report.
#[derive(Debug, Error)]
pub enum DecodeError {
    /// Not JSON at all.
    #[error("JSON syntax error at line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// JSON, but fields are missing, of the wrong type or outside a vocabulary.
    #[error("malformed record: {0}")]
    Malformed(Problems),
    /// Decoded, but its values are not acceptable (negative counts, year 9999...).
    #[error("invalid record: {0}")]
    Invalid(Problems),
    /// The Avro bytes do not decode with the schema.
    #[error("Avro decode error: {0}")]
    Avro(String),
    /// A schema itself is broken.
    #[error("schema error: {0}")]
    Schema(String),
    /// The bytes are in no framing shareaudit reads.
    #[error("framing error: {0}")]
    Framing(String),
    /// The record names a writer schema nobody knows.
    #[error("unknown writer schema: {0}")]
    UnknownSchema(String),
    /// The schema registry could not be asked: transient, the record is retried, not dead-lettered.
    #[error("schema registry unavailable: {0}")]
    Registry(String),
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
            DecodeError::Registry(_) => "registry",
        }
    }
}

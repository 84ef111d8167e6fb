//! The contract with the services around shareaudit (`event-model.md`): the
//! event read, the consent state kept, the violation written. Serde types
//! with the fixed JSON form, plus validation that names every problem with
//! its field path. No I/O here.

pub mod consent;
pub mod enums;
pub mod event;
pub mod time;
pub mod violation;

pub use consent::{ConsentState, SeparateConsent};
pub use enums::*;
pub use event::{DataItem, DataSharingEvent, LegalDocument, Order, Recipient, Subject, Transport};
pub use time::{Date, DayCache, Timestamp};
pub use violation::{PolicyVersion, Source, Violation};

use std::fmt;

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = vec![0u8; bytes.len() * 2];
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 15)];
    }
    String::from_utf8(out).unwrap_or_default() // ASCII digits: always UTF-8
}

/// A message about a record, made safe to log, count or put in a header:
/// quoted values (`` `x` `` and `"x"`, as serde and apache-avro quote what
/// they found) become `…`, so do runs of six digits or more (an unquoted
/// phone, ID or card number), and control characters are escaped. Field
/// paths, types and short numbers stay.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '`' | '"' => {
                let mut escaped = false;
                let mut closed = false;
                for d in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if d == '\\' {
                        escaped = true;
                    } else if d == c {
                        closed = true;
                        break;
                    }
                }
                out.push(c);
                out.push('…');
                if closed {
                    out.push(c);
                }
            }
            '0'..='9' => {
                let mut run = String::from(c);
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    run.push(d);
                    chars.next();
                }
                if run.len() >= 6 {
                    out.push('…');
                } else {
                    out.push_str(&run);
                }
            }
            c if c.is_control() => out.push_str(&c.escape_default().to_string()),
            c => out.push(c),
        }
    }
    out
}

/// One thing wrong with a record, at a field path such as `data[2].category`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

/// Every problem found in one record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem::new(path, message));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_result(self) -> Result<(), Problems> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

#[cfg(test)]
mod redact_tests {
    use super::redact;

    #[test]
    fn messages_keep_paths_and_types_and_lose_values() {
        assert_eq!(
            redact("data[0].value: invalid type: integer `13800138000`, expected a string"),
            "data[0].value: invalid type: integer `…`, expected a string"
        );
        assert_eq!(
            redact(r#"invalid value: string "110105199003071234", expected an RFC 3339 instant"#),
            "invalid value: string \"…\", expected an RFC 3339 instant"
        );
        assert_eq!(
            redact("Value Long(6217000000000000004) does not match"),
            "Value Long(…) does not match"
        );
        assert_eq!(
            redact(r#"a "quote \" inside" and after"#),
            "a \"…\" and after"
        );
        assert_eq!(
            redact("record_count: must be at least 1, got -5"),
            "record_count: must be at least 1, got -5"
        );
        assert_eq!(redact("bell\u{7}\nnext"), "bell\\u{7}\\nnext");
        assert_eq!(redact("unterminated `1380013"), "unterminated `…");
    }
}

//! A candidate of `volume.recipient_rate` as the rate stage reads and
//! holds it (see [`super`]).

use crate::audit::volume;
use crate::model::{RecipientCategory, Timestamp, Violation};
use serde::Deserialize;
use std::borrow::Cow;

/// A candidate as the stage holds it: what counting it takes, and the
/// record itself, read as the whole violation only when it fires. Most
/// never do: a violation's twenty-odd strings are not built for them, and
/// the entry the stage's map moves about is about 100 bytes, not 432 (the
/// record's bytes sit behind one pointer). BENCHMARKS.md: the read is 22
/// to 41% cheaper; serde_json still scans what it skips.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub event_id: String,
    /// Its event's time (ms), by which candidates are judged in order.
    pub occurred_at: i64,
    /// Its event's log time (ms): the candidate's own detection time.
    pub detected_at: i64,
    pub recipient_id: String,
    pub recipient_category: RecipientCategory,
    /// Its subject in the windows (`volume::subject_key` of `subject_ref`).
    pub subject: u64,
    /// The record as read: the violation in JSON (`codec::encode_candidate`).
    pub payload: Vec<u8>,
}

/// The keys of a candidate record; every other field is skipped (checked as JSON, not built).
#[derive(Deserialize)]
struct Keys<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    occurred_at: Timestamp,
    detected_at: Timestamp,
    #[serde(borrow)]
    recipient_id: Cow<'a, str>,
    recipient_category: RecipientCategory,
    #[serde(borrow)]
    subject_ref: Cow<'a, str>,
}

impl Candidate {
    /// A candidate record's keys, or `None` when it is not one. The rest
    /// of the record is read when it fires (`violation`).
    pub fn read(payload: Vec<u8>) -> Option<Candidate> {
        let keys: Keys = serde_json::from_slice(&payload).ok()?;
        Some(Candidate {
            event_id: keys.event_id.into_owned(),
            occurred_at: keys.occurred_at.millis(),
            detected_at: keys.detected_at.millis(),
            recipient_id: keys.recipient_id.into_owned(),
            recipient_category: keys.recipient_category,
            subject: volume::subject_key(&keys.subject_ref),
            payload,
        })
    }

    /// The candidate's violation, for the alert it fires.
    pub fn violation(&self) -> Result<Violation, serde_json::Error> {
        serde_json::from_slice(&self.payload)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::candidate;
    use super::super::{Item, read_item};
    use super::*;

    /// A candidate is held as its keys and its record; when it fires, the
    /// record is read as the whole violation it was written from, whichever
    /// writer wrote it (ours, or serde_json's as the first releases did).
    #[test]
    fn a_candidate_is_held_as_its_keys_and_fires_as_the_violation_written() {
        let mut v = candidate("e-1", 1_764_547_200_123);
        v.alert_id = "a".repeat(64);
        v.detected_at = Timestamp(1_764_547_201_456);
        v.subject_ref = "b".repeat(64);
        v.categories = vec!["phone".into(), "address".into()];
        v.fields = vec!["buyer.phone".into(), "收货地址".into()];
        v.recipient_id = "partner-\"crm\"".into();
        v.source = Some(crate::model::Source {
            topic: "events".into(),
            partition: 3,
            offset: 99,
        });
        for payload in [
            crate::codec::encode_candidate(&v),
            serde_json::to_vec(&v).unwrap(),
        ] {
            let Item::Candidate(c) = read_item(&[], Some(payload.clone())) else {
                panic!("not read as a candidate");
            };
            assert_eq!(c.event_id, "e-1");
            assert_eq!(c.occurred_at, 1_764_547_200_123);
            assert_eq!(c.detected_at, 1_764_547_201_456);
            assert_eq!(c.recipient_id, "partner-\"crm\"");
            assert_eq!(c.recipient_category, RecipientCategory::AuthorizedPartner);
            assert_eq!(c.subject, volume::subject_key(&v.subject_ref));
            assert_eq!(c.payload, payload);
            assert_eq!(c.violation().unwrap(), v);
        }
    }

    /// Not a candidate: not JSON, a key missing or of the wrong type. A record
    /// with the keys whose rest is not a violation is counted (only a stranger
    /// writes one), and refuses to become an alert when it fires.
    #[test]
    fn a_record_without_a_candidates_keys_is_unreadable() {
        let v = candidate("e-1", 5_000);
        let mut whole: serde_json::Value = serde_json::to_value(&v).unwrap();
        let unreadable = |b: Vec<u8>| matches!(read_item(&[], Some(b)), Item::Unreadable);
        assert!(unreadable(b"not json".to_vec()));
        assert!(unreadable(b"{}".to_vec()));
        for key in [
            "event_id",
            "occurred_at",
            "detected_at",
            "recipient_id",
            "recipient_category",
            "subject_ref",
        ] {
            let mut missing = whole.clone();
            missing.as_object_mut().unwrap().remove(key);
            assert!(
                unreadable(serde_json::to_vec(&missing).unwrap()),
                "{key} missing"
            );
            let mut wrong = whole.clone();
            wrong[key] = serde_json::json!([1]);
            assert!(
                unreadable(serde_json::to_vec(&wrong).unwrap()),
                "{key} an array"
            );
        }
        assert!(
            matches!(read_item(&[], None), Item::Unreadable),
            "a tombstone"
        );
        whole["severity"] = serde_json::json!("dire");
        let Item::Candidate(c) = read_item(&[], Some(serde_json::to_vec(&whole).unwrap())) else {
            panic!("its keys are there");
        };
        assert!(c.violation().is_err());
    }
}

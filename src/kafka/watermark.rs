//! The commit watermark of one partition: the offset up to which every
//! record's outputs (violations, dead letter) have been acknowledged by the
//! broker, contiguously.
//!
//! The pitfalls it exists for (vector issues 24215 and 24543; arroyo):
//! committing past a failed record because a later one succeeded, and
//! treating "enqueued" as "produced". A record is `begin`-ed when read, with
//! how many outputs it will produce. Each output is `ack`-ed or `fail`-ed
//! when its delivery report arrives. A failure holds the watermark at that
//! record until a retried output is acked; nothing behind it is committed.
//! `commit_offset` is the next offset to read (Kafka's commit convention),
//! so librdkafka's `commit` can take it as is.

use std::collections::VecDeque;

/// Why the watermark refused an input: the pipeline has a bug, not the data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatermarkError {
    #[error("offset {offset} begun after {last}: offsets of a partition must increase")]
    OutOfOrder { offset: i64, last: i64 },
    #[error("offset {0} is not in flight")]
    Unknown(i64),
    #[error("offset {0} has no output outstanding")]
    Overacked(i64),
    #[error("offset {0} is not held")]
    NotHeld(i64),
}

#[derive(Debug)]
struct InFlight {
    offset: i64,
    /// Outputs not yet acknowledged.
    pending: u32,
    /// Outputs whose delivery failed and that await a retry.
    failed: u32,
    /// Read, but its outputs are not decided yet (`begin_held`).
    held: bool,
    /// The event time of the record, when it has one.
    time: Option<i64>,
}

#[derive(Debug, Default)]
pub struct Watermark {
    /// Records read and not yet committable, in offset order.
    in_flight: VecDeque<InFlight>,
    /// The next offset to commit (one past the last fully acknowledged record).
    committable: Option<i64>,
    last_begun: Option<i64>,
    /// The latest event time among the records behind the watermark.
    done_time: Option<i64>,
}

impl Watermark {
    /// A record was read at `offset` and will produce `outputs` outputs
    /// (0 for a clean event: it is done as soon as everything before it is).
    pub fn begin(&mut self, offset: i64, outputs: u32) -> Result<(), WatermarkError> {
        self.begin_timed(offset, outputs, None)
    }

    /// `begin`, for a record with an event time: `done_time` follows it.
    pub fn begin_timed(
        &mut self,
        offset: i64,
        outputs: u32,
        time: Option<i64>,
    ) -> Result<(), WatermarkError> {
        if let Some(last) = self.last_begun
            && offset <= last
        {
            return Err(WatermarkError::OutOfOrder { offset, last });
        }
        self.last_begun = Some(offset);
        self.in_flight.push_back(InFlight {
            offset,
            pending: outputs,
            failed: 0,
            held: false,
            time,
        });
        self.advance();
        Ok(())
    }

    /// A record was read at `offset` whose outputs are decided later
    /// (`release`): the watermark stops before it until then. Used by the
    /// recipient-rate stage, which judges in event-time order.
    pub fn begin_held(&mut self, offset: i64) -> Result<(), WatermarkError> {
        self.begin(offset, 1)?;
        if let Some(r) = self.in_flight.back_mut() {
            r.held = true;
        }
        Ok(())
    }

    /// The held record at `offset` was decided: it produces `outputs` outputs.
    pub fn release(&mut self, offset: i64, outputs: u32) -> Result<(), WatermarkError> {
        let r = self.find(offset)?;
        if !r.held {
            return Err(WatermarkError::NotHeld(offset));
        }
        r.held = false;
        r.pending = outputs;
        self.advance();
        Ok(())
    }

    fn find(&mut self, offset: i64) -> Result<&mut InFlight, WatermarkError> {
        let i = self
            .in_flight
            .binary_search_by_key(&offset, |r| r.offset)
            .map_err(|_| WatermarkError::Unknown(offset))?;
        Ok(&mut self.in_flight[i])
    }

    /// One output of the record at `offset` was acknowledged by the broker.
    pub fn ack(&mut self, offset: i64) -> Result<(), WatermarkError> {
        let r = self.find(offset)?;
        if r.pending == 0 || r.held {
            return Err(WatermarkError::Overacked(offset));
        }
        r.pending -= 1;
        self.advance();
        Ok(())
    }

    /// One output of the record at `offset` failed; it will be retried. The
    /// watermark does not pass this record until a retry is acked.
    pub fn fail(&mut self, offset: i64) -> Result<(), WatermarkError> {
        let r = self.find(offset)?;
        if r.pending == 0 || r.held {
            return Err(WatermarkError::Overacked(offset));
        }
        r.failed += 1;
        Ok(())
    }

    /// A failed output of the record at `offset` is being sent again.
    pub fn retrying(&mut self, offset: i64) -> Result<(), WatermarkError> {
        let r = self.find(offset)?;
        r.failed = r.failed.saturating_sub(1);
        Ok(())
    }

    fn advance(&mut self) {
        while let Some(front) = self.in_flight.front() {
            if front.pending > 0 {
                break;
            }
            self.committable = Some(front.offset + 1);
            if let Some(t) = front.time {
                self.done_time = Some(self.done_time.map_or(t, |d| d.max(t)));
            }
            self.in_flight.pop_front();
        }
    }

    /// The offset to commit (the next to read), if anything new is committable.
    pub fn commit_offset(&self) -> Option<i64> {
        self.committable
    }

    /// The last offset begun, if any.
    pub fn last_begun(&self) -> Option<i64> {
        self.last_begun
    }

    /// The latest event time of the records whose outputs are all
    /// acknowledged, contiguously (what the recipient-rate watermark reports).
    pub fn done_time(&self) -> Option<i64> {
        self.done_time
    }

    /// Records read whose outputs are not all acknowledged (backpressure counts these).
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Outputs that failed and wait for a retry.
    pub fn failed(&self) -> u32 {
        self.in_flight.iter().map(|r| r.failed).sum()
    }

    /// Every output sent is acknowledged (a drain is complete). Held
    /// records do not count: nothing of theirs was sent, and the next owner
    /// of the partition reads them again from the commit.
    pub fn is_drained(&self) -> bool {
        self.in_flight.iter().all(|r| r.held || r.pending == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_records_stop_the_watermark_until_released_in_any_order() {
        let mut w = Watermark::default();
        w.begin_held(1).unwrap();
        w.begin_held(2).unwrap();
        w.begin(3, 0).unwrap();
        assert_eq!(w.commit_offset(), None);
        assert!(w.is_drained(), "nothing sent, nothing to wait for");
        assert_eq!(w.ack(1), Err(WatermarkError::Overacked(1)));
        // Released out of offset order (event-time order): 2 first, with an output.
        w.release(2, 1).unwrap();
        assert!(!w.is_drained());
        w.release(1, 0).unwrap();
        assert_eq!(w.commit_offset(), Some(2));
        w.ack(2).unwrap();
        assert_eq!(w.commit_offset(), Some(4));
        assert_eq!(w.release(2, 0), Err(WatermarkError::Unknown(2)));
        w.begin(5, 1).unwrap();
        assert_eq!(w.release(5, 0), Err(WatermarkError::NotHeld(5)));
    }

    #[test]
    fn done_time_is_the_latest_event_time_behind_the_watermark() {
        let mut w = Watermark::default();
        w.begin_timed(1, 1, Some(100)).unwrap();
        w.begin_timed(2, 0, Some(300)).unwrap();
        w.begin(3, 0).unwrap(); // a dead letter: no event time
        assert_eq!(w.done_time(), None, "record 1 is not acknowledged");
        w.ack(1).unwrap();
        assert_eq!(w.done_time(), Some(300));
        w.begin_timed(4, 0, Some(200)).unwrap();
        assert_eq!(w.done_time(), Some(300), "never goes back");
    }

    #[test]
    fn clean_records_commit_as_they_come() {
        let mut w = Watermark::default();
        assert_eq!(w.commit_offset(), None);
        w.begin(10, 0).unwrap();
        w.begin(11, 0).unwrap();
        assert_eq!(w.commit_offset(), Some(12), "the next offset to read");
        assert!(w.is_drained());
    }

    #[test]
    fn a_later_ack_does_not_pass_an_earlier_unacknowledged_record() {
        let mut w = Watermark::default();
        w.begin(0, 2).unwrap(); // two violations
        w.begin(1, 0).unwrap(); // clean
        w.begin(2, 1).unwrap(); // one violation
        w.ack(2).unwrap();
        assert_eq!(
            w.commit_offset(),
            None,
            "offset 0 still waits for both its outputs"
        );
        w.ack(0).unwrap();
        assert_eq!(w.commit_offset(), None);
        w.ack(0).unwrap();
        assert_eq!(w.commit_offset(), Some(3), "0, 1 and 2 are all done");
    }

    #[test]
    fn a_failure_holds_the_watermark_until_the_retry_is_acked() {
        let mut w = Watermark::default();
        w.begin(5, 1).unwrap();
        w.begin(6, 1).unwrap();
        w.ack(6).unwrap();
        w.fail(5).unwrap();
        assert_eq!(w.failed(), 1);
        assert_eq!(w.commit_offset(), None, "never past the failed record");
        w.begin(7, 0).unwrap();
        assert_eq!(w.commit_offset(), None);
        w.retrying(5).unwrap();
        w.ack(5).unwrap();
        assert_eq!(w.commit_offset(), Some(8));
        assert_eq!(w.failed(), 0);
    }

    #[test]
    fn misuse_is_an_error_not_a_silent_skip() {
        let mut w = Watermark::default();
        w.begin(3, 1).unwrap();
        assert_eq!(
            w.begin(3, 0),
            Err(WatermarkError::OutOfOrder { offset: 3, last: 3 })
        );
        assert_eq!(w.ack(4), Err(WatermarkError::Unknown(4)));
        w.ack(3).unwrap();
        assert_eq!(
            w.ack(3),
            Err(WatermarkError::Unknown(3)),
            "already committed and gone"
        );
        w.begin(9, 0).unwrap();
        assert_eq!(
            w.commit_offset(),
            Some(10),
            "gaps (compaction, transactions) are fine"
        );
    }

    #[test]
    fn a_random_order_of_acks_commits_exactly_the_contiguous_prefix() {
        // Deterministic shuffle: every prefix committed must be fully acked.
        let n = 200i64;
        let mut w = Watermark::default();
        let outputs: Vec<u32> = (0..n).map(|i| (i % 3) as u32).collect();
        for (i, o) in outputs.iter().enumerate() {
            w.begin(i as i64, *o).unwrap();
        }
        let mut acks: Vec<i64> = (0..n)
            .flat_map(|i| std::iter::repeat_n(i, outputs[i as usize] as usize))
            .collect();
        let mut x = 12345u64;
        for i in (1..acks.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            acks.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut acked = vec![0u32; n as usize];
        for a in acks {
            w.ack(a).unwrap();
            acked[a as usize] += 1;
            if let Some(c) = w.commit_offset() {
                assert!(
                    (0..c).all(|i| acked[i as usize] == outputs[i as usize]),
                    "committed {c} past an unacked record"
                );
            }
        }
        assert_eq!(w.commit_offset(), Some(n));
    }
}

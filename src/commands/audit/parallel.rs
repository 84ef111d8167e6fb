//! `audit --threads N` on JSON lines: one thread cuts the input into large
//! batches of whole lines (of a regular file mapped whole, `mapped`; else
//! read into buffers), `N` workers decode the batches and judge each
//! event by every rule but the windowed one (`Worker`), and the calling
//! thread finishes them in input order (`Judge`: the windowed rule, the
//! counts, the output). What the windowed rule sees, and everything
//! written, is in the order one thread would see it, so the output is the
//! same for any `N` (tested byte for byte).
//!
//! Events are decoded into slots that go back, once judged, to the worker
//! that filled them: as on one thread, a long file allocates little, and
//! what a worker allocated (strings, violations, rate candidates) is freed
//! or grown by that worker alone (a block freed on another thread costs
//! mimalloc a cross-thread free).

use super::mapped::Mapped;
use super::{At, Judge, Judged, Worker};
use anyhow::Result;
use shareaudit::codec::{DecodeError, json};
use shareaudit::model::DataSharingEvent;
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};

/// About this many bytes of whole lines make a batch.
const BATCH_BYTES: usize = 1 << 17;

/// Decoded batches a worker fills at most before the judge gives one back.
/// Unbounded, the workers ran ahead of one that was slow (a descheduled
/// thread, a very long line) and the judge kept all they decoded until
/// that one's batch came: memory without a bound.
const DECODED_PER_WORKER: usize = 4;

/// What `audit --threads` reads: a file mapped whole, or a stream.
pub(super) enum Input {
    Mapped(Mapped),
    Stream(Box<dyn io::BufRead + Send>),
}

/// What the reading thread cuts into batches.
enum Cut<'a> {
    Bytes(&'a [u8]),
    Stream(Box<dyn io::BufRead + Send>),
}

/// Lines of the input, in order.
struct Batch<'a> {
    seq: u64,
    bytes: Chunk<'a>,
}

/// A batch's bytes: part of the mapped file, or a buffer read.
enum Chunk<'a> {
    Mapped(&'a [u8]),
    Read(Vec<u8>),
}

impl Chunk<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Mapped(b) => b,
            Chunk::Read(v) => v,
        }
    }
}

/// One record of a batch, decoded (or not) into its slot's event.
struct Slot {
    /// The line within its batch, from 1.
    line: u64,
    result: Result<(), DecodeError>,
    event: DataSharingEvent,
    judged: Judged,
}

/// A batch decoded: its slots (the first `used` hold this batch's records)
/// and how many lines it had.
#[derive(Default)]
struct Decoded {
    /// The worker that filled it, and gets it back.
    worker: usize,
    seq: u64,
    lines: u64,
    used: usize,
    slots: Vec<Slot>,
}

/// Reads `input` to its end with a thread per worker, decoding and judging;
/// finishes every record in input order with `judge`. `name` names the
/// input in messages.
pub(super) fn judge_json_lines(
    input: Input,
    name: &str,
    workers: Vec<Worker<'_>>,
    judge: &mut Judge<'_>,
) -> Result<()> {
    let threads = workers.len();
    // The workers borrow the mapped file's bytes: it outlives the threads.
    let mapped: Mapped;
    let input = match input {
        Input::Mapped(m) => {
            mapped = m;
            Cut::Bytes(mapped.bytes())
        }
        Input::Stream(r) => Cut::Stream(r),
    };
    let (work_tx, work_rx) = sync_channel::<Batch>(threads * 2);
    let (done_tx, done_rx) = sync_channel::<Decoded>(threads * 2);
    let (spare_tx, spare_rx): (Vec<_>, Vec<_>) = (0..threads).map(|_| channel()).unzip();
    // Read buffers go back to the reader once decoded: fresh ones would
    // cost page faults and zeroing, batch after batch.
    let (free_tx, free_rx) = channel::<Vec<u8>>();
    let work_rx = Mutex::new(work_rx);
    std::thread::scope(|s| {
        let reader = s.spawn(move || match input {
            Cut::Bytes(bytes) => {
                cut_batches(bytes, &work_tx);
                Ok(())
            }
            Cut::Stream(r) => read_batches(r, &work_tx, &free_rx),
        });
        for (id, (mut worker, spare_rx)) in workers.into_iter().zip(spare_rx).enumerate() {
            let (done_tx, free_tx, work_rx) = (done_tx.clone(), free_tx.clone(), &work_rx);
            s.spawn(move || {
                let pools = Pools {
                    spare: spare_rx,
                    done: done_tx,
                    free: free_tx,
                };
                decode_batches(id, work_rx, &pools, &mut worker)
            });
        }
        drop(free_tx);
        drop(done_tx);
        let judged = judge_in_order(&done_rx, &spare_tx, name, judge);
        // On an error here, the workers find the judge gone and drain the
        // reader, so that every thread ends.
        drop(spare_tx);
        drop(done_rx);
        let read = reader
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the reading thread panicked")));
        judged?;
        read.map_err(|e| anyhow::anyhow!("reading {name}: {e}"))
    })
}

fn judge_in_order(
    done: &Receiver<Decoded>,
    spare: &[Sender<Decoded>],
    name: &str,
    judge: &mut Judge<'_>,
) -> Result<()> {
    let mut waiting = BTreeMap::new();
    let (mut next, mut base) = (0u64, 0u64);
    for d in done {
        waiting.insert(d.seq, d);
        while let Some(mut d) = waiting.remove(&next) {
            for slot in &mut d.slots[..d.used] {
                let at = At {
                    name,
                    n: base + slot.line,
                    avro: false,
                };
                judge.finish(&at, &slot.event, &mut slot.judged)?;
            }
            base += d.lines;
            next += 1;
            let _ = spare[d.worker].send(d);
        }
    }
    Ok(())
}

/// Cuts `bytes` into batches that end at a line's end (the last may not),
/// as `read_batches` cuts a stream.
fn cut_batches<'a>(bytes: &'a [u8], work: &SyncSender<Batch<'a>>) {
    let (mut at, mut seq) = (0, 0);
    while at < bytes.len() {
        let window = (at + BATCH_BYTES).min(bytes.len());
        let end = if window == bytes.len() {
            window
        } else {
            match memchr::memrchr(b'\n', &bytes[at..window]) {
                Some(i) => at + i + 1,
                // A line longer than a batch: its batch ends where it does.
                None => {
                    memchr::memchr(b'\n', &bytes[window..]).map_or(bytes.len(), |i| window + i + 1)
                }
            }
        };
        let batch = Batch {
            seq,
            bytes: Chunk::Mapped(&bytes[at..end]),
        };
        if work.send(batch).is_err() {
            return; // the judge stopped
        }
        (at, seq) = (end, seq + 1);
    }
}

/// Cuts the input into batches that end at a line's end (the last may
/// not); a line longer than a batch makes its batch longer.
fn read_batches(
    mut input: Box<dyn io::BufRead + Send>,
    work: &SyncSender<Batch<'_>>,
    free: &Receiver<Vec<u8>>,
) -> io::Result<()> {
    let mut carry: Vec<u8> = Vec::new();
    let mut seq = 0;
    loop {
        let mut bytes = free
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BATCH_BYTES + carry.len()));
        bytes.clear();
        bytes.extend_from_slice(&carry);
        carry.clear();
        let n = (&mut input)
            .take(BATCH_BYTES as u64)
            .read_to_end(&mut bytes)?;
        if n == 0 {
            if !bytes.is_empty() {
                let bytes = Chunk::Read(bytes);
                let _ = work.send(Batch { seq, bytes });
            }
            return Ok(());
        }
        match memchr::memrchr(b'\n', &bytes) {
            Some(end) => {
                carry.extend_from_slice(&bytes[end + 1..]);
                bytes.truncate(end + 1);
                let bytes = Chunk::Read(bytes);
                if work.send(Batch { seq, bytes }).is_err() {
                    return Ok(()); // the judge stopped
                }
                seq += 1;
            }
            None => carry = bytes,
        }
    }
}

/// A worker's channels: its own judged batches back, decoded batches to
/// the judge, read buffers back to the reader.
struct Pools {
    spare: Receiver<Decoded>,
    done: SyncSender<Decoded>,
    free: Sender<Vec<u8>>,
}

fn decode_batches(
    id: usize,
    work: &Mutex<Receiver<Batch<'_>>>,
    pools: &Pools,
    worker: &mut Worker<'_>,
) {
    let (mut judge_gone, mut made) = (false, 0);
    loop {
        // The slots to fill first, then the batch: a worker that waits for
        // its slots holds no batch the judge waits for.
        let slots = if judge_gone {
            None
        } else {
            match pools.spare.try_recv() {
                Ok(d) => Some(d),
                Err(_) if made < DECODED_PER_WORKER => {
                    made += 1;
                    Some(Decoded::default())
                }
                Err(_) => pools.spare.recv().ok(),
            }
        };
        judge_gone |= slots.is_none();
        let batch = match work.lock().map(|w| w.recv()) {
            Ok(Ok(b)) => b,
            _ => return,
        };
        // With the judge gone, the reader is drained so that it ends.
        let Some(mut d) = slots else {
            continue;
        };
        d.worker = id;
        decode(&batch, &mut d, worker);
        if let Chunk::Read(buffer) = batch.bytes {
            let _ = pools.free.send(buffer);
        }
        judge_gone = pools.done.send(d).is_err();
    }
}

/// Decodes a batch's lines into `d`'s slots, reusing their events, and
/// judges each as far as `worker` can.
fn decode(batch: &Batch<'_>, d: &mut Decoded, worker: &mut Worker<'_>) {
    d.seq = batch.seq;
    d.used = 0;
    let bytes = batch.bytes.bytes();
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let mut lines = 0;
    for line in (Lines { rest: Some(body) }) {
        lines += 1;
        let text = line.trim_ascii();
        if text.is_empty() || text.starts_with(b"#") {
            continue;
        }
        if d.used == d.slots.len() {
            d.slots.push(Slot {
                line: 0,
                result: Ok(()),
                event: DataSharingEvent::empty(),
                judged: Judged::default(),
            });
        }
        let slot = &mut d.slots[d.used];
        slot.line = lines;
        slot.result = json::decode_event_into(text, &mut slot.event);
        worker.judge(slot.result.as_ref().map(|()| &slot.event), &mut slot.judged);
        d.used += 1;
    }
    d.lines = lines;
}

/// The lines of a batch (its final newline stripped), as `split` on `\n`
/// gives them, with the line ends found by memchr.
struct Lines<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        match memchr::memchr(b'\n', rest) {
            Some(i) => {
                self.rest = Some(&rest[i + 1..]);
                Some(&rest[..i])
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

//! `audit --threads N` on JSON lines, on `N` threads (the calling one and
//! `N - 1` more), each doing in turn everything there is to do:
//!
//! - take the next batch of whole lines (`Cutter`, under a lock: of a
//!   regular file mapped whole, `mapped`, it only finds the batch's last
//!   line end; of a stream it reads);
//! - decode it and judge each event by every rule but the windowed one
//!   (`Worker`);
//! - hand it in, and finish, in input order, every batch that is ready
//!   (`Judge`: the windowed rule, the counts, the output), unless another
//!   thread is finishing them: that one then finishes this batch too.
//!
//! What the windowed rule sees, and everything written, is in the order
//! one thread would see it, so the output is the same for any `N` (tested
//! byte for byte). No thread only reads or only finishes: on two cores,
//! a reading thread and a finishing thread beside two decoding ones cost
//! thousands of context switches a run and the caches between them.
//!
//! Events are decoded into slots that go back, once finished, to the
//! thread that filled them: as on one thread, a long file allocates
//! little, and what a thread allocated (strings, violations, rate
//! candidates) is freed or grown by that thread alone (a block freed on
//! another thread costs mimalloc a cross-thread free).

use super::mapped::Mapped;
use super::{At, Judge, Judged, Worker};
use anyhow::Result;
use shareaudit::codec::{DecodeError, json};
use shareaudit::model::DataSharingEvent;
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};

/// About this many bytes of whole lines make a batch.
const BATCH_BYTES: usize = 1 << 17;

/// Decoded batches a thread fills at most before one is finished and
/// given back. Unbounded, the threads ran ahead of one that was slow (a
/// descheduled thread, a very long line) and the batches waiting for its
/// batch were all kept: memory without a bound.
const DECODED_PER_WORKER: usize = 4;

/// What `audit --threads` reads: a file mapped whole, or a stream.
pub(super) enum Input {
    Mapped(Mapped),
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
    /// The thread that filled it, and gets it back.
    worker: usize,
    seq: u64,
    lines: u64,
    used: usize,
    slots: Vec<Slot>,
}

/// Reads `input` to its end with a thread per worker, decoding and judging,
/// and finishes every record in input order with `judge`. `name` names
/// the input in messages.
pub(super) fn judge_json_lines(
    input: Input,
    name: &str,
    workers: Vec<Worker<'_>>,
    judge: &mut Judge<'_>,
) -> Result<()> {
    // The batches borrow the mapped file's bytes: it outlives the threads.
    let mapped: Mapped;
    let cutter = match input {
        Input::Mapped(m) => {
            mapped = m;
            Cutter::Bytes {
                bytes: mapped.bytes(),
                at: 0,
                seq: 0,
            }
        }
        Input::Stream(input) => Cutter::Stream {
            input,
            carry: Vec::new(),
            free: Vec::new(),
            seq: 0,
            ended: false,
            error: None,
        },
    };
    let (spare_tx, spare_rx): (Vec<_>, Vec<_>) = (0..workers.len()).map(|_| channel()).unzip();
    let shared = Shared {
        cutter: Mutex::new(cutter),
        order: Mutex::new(Order::default()),
        finisher: Mutex::new(Finisher {
            judge,
            name,
            base: 0,
            error: None,
        }),
        spare: spare_tx,
        failed: AtomicBool::new(false),
    };
    std::thread::scope(|s| {
        let mut mine = None;
        for (id, (worker, spare)) in workers.into_iter().zip(spare_rx).enumerate() {
            if id == 0 {
                mine = Some((worker, spare));
                continue;
            }
            let shared = &shared;
            s.spawn(move || shared.work(id, worker, &spare));
        }
        if let Some((worker, spare)) = mine {
            shared.work(0, worker, &spare);
        }
    });
    let Shared {
        cutter,
        order,
        finisher,
        ..
    } = shared;
    if let Some(e) = finisher
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .error
    {
        return Err(e);
    }
    if let Cutter::Stream { error: Some(e), .. } =
        cutter.into_inner().unwrap_or_else(PoisonError::into_inner)
    {
        return Err(anyhow::anyhow!("reading {name}: {e}"));
    }
    let left = lock(&order).waiting.len();
    anyhow::ensure!(
        left == 0,
        "{left} batches of {name} were decoded and never finished"
    );
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the threads share.
struct Shared<'i, 'j, 'a> {
    cutter: Mutex<Cutter<'i>>,
    order: Mutex<Order>,
    finisher: Mutex<Finisher<'j, 'a>>,
    /// Finished batches back to the thread that filled them.
    spare: Vec<Sender<Decoded>>,
    /// Finishing failed (the output): every thread stops.
    failed: AtomicBool,
}

/// The batches decoded and not finished yet, and the next to finish.
#[derive(Default)]
struct Order {
    waiting: BTreeMap<u64, Decoded>,
    next: u64,
}

/// The in-order half, held by one thread at a time.
struct Finisher<'j, 'a> {
    judge: &'j mut Judge<'a>,
    name: &'j str,
    /// Lines before the next batch.
    base: u64,
    error: Option<anyhow::Error>,
}

impl Shared<'_, '_, '_> {
    /// One thread's work: a batch taken, decoded, handed in, until the
    /// input ends or finishing fails.
    fn work(&self, id: usize, mut worker: Worker<'_>, spare: &Receiver<Decoded>) {
        // A thread that panics (decoding or finishing) must not leave the
        // others waiting for batches that will never come back: the panic
        // then reaches the caller when the scope ends, rather than a hang.
        let _stop_others = FailOnPanic(self);
        let (mut made, mut buffer) = (0, None);
        while !self.failed.load(Ordering::Acquire) {
            // The slots to fill first, then the batch: a thread that waits
            // for its slots holds no batch that the others wait for.
            let mut d = match spare.try_recv() {
                Ok(d) => d,
                Err(_) if made < DECODED_PER_WORKER => {
                    made += 1;
                    Decoded::default()
                }
                // Its batches come back when finished, or when finishing fails.
                Err(_) => match spare.recv() {
                    Ok(d) => d,
                    Err(_) => return,
                },
            };
            if self.failed.load(Ordering::Acquire) {
                return;
            }
            let Some(batch) = lock(&self.cutter).next(buffer.take()) else {
                return;
            };
            d.worker = id;
            decode(&batch, &mut d, &mut worker);
            if let Chunk::Read(b) = batch.bytes {
                buffer = Some(b);
            }
            self.hand_in(d);
        }
    }

    /// `d` waits for its turn; this thread finishes what is ready.
    fn hand_in(&self, d: Decoded) {
        {
            let mut order = lock(&self.order);
            if self.failed.load(Ordering::Acquire) {
                let _ = self.spare[d.worker].send(d);
                return;
            }
            order.waiting.insert(d.seq, d);
        }
        self.finish_ready();
    }

    /// Finishes, in order, every batch that is ready, unless another thread
    /// is at it. A batch handed in while this thread finished, by a thread
    /// that found the finisher taken, is finished here: after letting go,
    /// this thread looks again.
    fn finish_ready(&self) {
        loop {
            let mut f = match self.finisher.try_lock() {
                Ok(f) => f,
                Err(TryLockError::WouldBlock | TryLockError::Poisoned(_)) => return,
            };
            loop {
                let next = {
                    let mut order = lock(&self.order);
                    let n = order.next;
                    let Some(d) = order.waiting.remove(&n) else {
                        break;
                    };
                    order.next += 1;
                    d
                };
                let mut d = next;
                let finished = f.finish(&mut d);
                let _ = self.spare[d.worker].send(d);
                if let Err(e) = finished {
                    f.error = Some(e);
                    self.fail();
                    return;
                }
            }
            drop(f);
            let order = lock(&self.order);
            if !order.waiting.contains_key(&order.next) {
                return;
            }
        }
    }

    /// Finishing failed: every batch waiting goes back to its thread (one
    /// waiting for its slots wakes), and no thread takes another.
    fn fail(&self) {
        let mut order = lock(&self.order);
        self.failed.store(true, Ordering::Release);
        for (_, d) in std::mem::take(&mut order.waiting) {
            let _ = self.spare[d.worker].send(d);
        }
    }
}

struct FailOnPanic<'s, 'i, 'j, 'a>(&'s Shared<'i, 'j, 'a>);

impl Drop for FailOnPanic<'_, '_, '_, '_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.fail();
        }
    }
}

impl Finisher<'_, '_> {
    fn finish(&mut self, d: &mut Decoded) -> Result<()> {
        for slot in &mut d.slots[..d.used] {
            let at = At {
                name: self.name,
                n: self.base + slot.line,
                avro: false,
            };
            self.judge.finish(&at, &slot.event, &mut slot.judged)?;
        }
        self.base += d.lines;
        Ok(())
    }
}

/// Where the next batch comes from.
enum Cutter<'a> {
    /// A mapped file, from `at`.
    Bytes {
        bytes: &'a [u8],
        at: usize,
        seq: u64,
    },
    /// A stream; `carry` is the start of a line the last read cut.
    Stream {
        input: Box<dyn io::BufRead + Send>,
        carry: Vec<u8>,
        /// Read buffers given back once decoded: fresh ones would cost
        /// page faults and zeroing, batch after batch.
        free: Vec<Vec<u8>>,
        seq: u64,
        ended: bool,
        /// Why the stream ended early (reported after the batches before it).
        error: Option<io::Error>,
    },
}

impl<'a> Cutter<'a> {
    /// The next batch: whole lines (the last batch may end without a line
    /// end; a line longer than a batch makes its batch longer). `give_back`
    /// is a read buffer decoded.
    fn next(&mut self, give_back: Option<Vec<u8>>) -> Option<Batch<'a>> {
        match self {
            Cutter::Bytes { bytes, at, seq } => {
                let bytes: &'a [u8] = bytes;
                if *at >= bytes.len() {
                    return None;
                }
                let window = (*at + BATCH_BYTES).min(bytes.len());
                let end = if window == bytes.len() {
                    window
                } else {
                    match memchr::memrchr(b'\n', &bytes[*at..window]) {
                        Some(i) => *at + i + 1,
                        None => memchr::memchr(b'\n', &bytes[window..])
                            .map_or(bytes.len(), |i| window + i + 1),
                    }
                };
                let batch = Batch {
                    seq: *seq,
                    bytes: Chunk::Mapped(&bytes[*at..end]),
                };
                (*at, *seq) = (end, *seq + 1);
                Some(batch)
            }
            Cutter::Stream {
                input,
                carry,
                free,
                seq,
                ended,
                error,
            } => {
                free.extend(give_back);
                while !*ended {
                    let mut bytes = free
                        .pop()
                        .unwrap_or_else(|| Vec::with_capacity(BATCH_BYTES + carry.len()));
                    bytes.clear();
                    bytes.extend_from_slice(carry);
                    carry.clear();
                    let n = match input.take(BATCH_BYTES as u64).read_to_end(&mut bytes) {
                        Ok(n) => n,
                        Err(e) => {
                            (*ended, *error) = (true, Some(e));
                            return None;
                        }
                    };
                    if n == 0 {
                        *ended = true;
                        if bytes.is_empty() {
                            return None;
                        }
                    } else {
                        match memchr::memrchr(b'\n', &bytes) {
                            Some(end) => {
                                carry.extend_from_slice(&bytes[end + 1..]);
                                bytes.truncate(end + 1);
                            }
                            None => {
                                *carry = bytes;
                                continue;
                            }
                        }
                    }
                    let batch = Batch {
                        seq: *seq,
                        bytes: Chunk::Read(bytes),
                    };
                    *seq += 1;
                    return Some(batch);
                }
                None
            }
        }
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

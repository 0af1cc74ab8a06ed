//! Counting identical raw stacks, on a thread of its own.
//!
//! Hashing a stack of thirty addresses and comparing it with the one
//! already stored is about half of the time spent per sample. The reading
//! thread only appends each stack to a batch; a counting thread owns the
//! table, so the two halves of the work run on two cores. Batches travel
//! back to be reused, so steady-state reading allocates nothing.

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flamegraph_perf_folded::seq_table::SeqTable;

/// Raw stacks with their sample count and summed weight.
pub type StackCounts = SeqTable<u64, (u64, u64)>;

/// Distinct stacks counted on the reading thread before a counting thread
/// is worth starting.
const INLINE_STACKS: usize = 4096;
/// Words per batch: half a megabyte, so a batch is still in a shared cache
/// when the counting thread reads it.
const BATCH_WORDS: usize = 1 << 16;
/// Batches queued for the counting thread before the reader waits.
const BATCHES_IN_FLIGHT: usize = 4;

/// Counts stacks: the first few thousand distinct ones here, the rest on a
/// counting thread. Without a thread (none could be started) it counts
/// everything here.
#[derive(Default)]
pub struct StackCounter {
    /// Counted on this thread.
    counts: StackCounts,
    /// `[len, weight, stack…]` records for the worker.
    batch: Vec<u64>,
    worker: Option<Worker>,
    /// A thread could not be started: count here from now on.
    no_worker: bool,
}

struct Worker {
    to_worker: SyncSender<Vec<u64>>,
    recycled: Receiver<Vec<u64>>,
    handle: JoinHandle<StackCounts>,
}

impl Worker {
    /// Starts a worker that goes on counting into `counts`, or gives
    /// `counts` back when no thread can be started.
    fn start(counts: StackCounts) -> Result<Worker, StackCounts> {
        let (to_worker, from_reader) = mpsc::sync_channel::<Vec<u64>>(BATCHES_IN_FLIGHT);
        let (to_reader, recycled) = mpsc::sync_channel::<Vec<u64>>(BATCHES_IN_FLIGHT + 2);
        // Handed over through a slot rather than moved into the closure,
        // which a failed spawn would drop along with the counts.
        let handover = Arc::new(Mutex::new(Some(counts)));
        let theirs = Arc::clone(&handover);
        let spawned = std::thread::Builder::new()
            .name("stack-counter".into())
            .spawn(move || {
                let mut counts = take(&theirs).unwrap_or_default();
                for mut batch in from_reader {
                    count_batch(&mut counts, &batch);
                    batch.clear();
                    let _ = to_reader.try_send(batch);
                }
                counts
            });
        match spawned {
            Ok(handle) => Ok(Worker {
                to_worker,
                recycled,
                handle,
            }),
            Err(_) => Err(take(&handover).unwrap_or_default()),
        }
    }
}

fn take(slot: &Mutex<Option<StackCounts>>) -> Option<StackCounts> {
    slot.lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take()
}

impl StackCounter {
    /// A counter that moves counting to a thread of its own once there is
    /// enough to count, if `use_thread`.
    pub fn new(use_thread: bool) -> StackCounter {
        StackCounter {
            no_worker: !use_thread,
            ..StackCounter::default()
        }
    }

    /// Counts one sample of `stack` with `weight`.
    pub fn add(&mut self, stack: &[u64], weight: u64) {
        if self.worker.is_none() {
            if self.no_worker || self.counts.len() < INLINE_STACKS {
                count(&mut self.counts, stack, weight);
                return;
            }
            // The worker carries on with the stacks counted so far, so
            // there is only ever one table, in first-seen order.
            match Worker::start(std::mem::take(&mut self.counts)) {
                Ok(worker) => self.worker = Some(worker),
                Err(counts) => {
                    self.counts = counts;
                    self.no_worker = true;
                    count(&mut self.counts, stack, weight);
                    return;
                }
            }
            self.batch.reserve(BATCH_WORDS + stack.len() + 2);
        }
        self.batch.push(stack.len() as u64);
        self.batch.push(weight);
        self.batch.extend_from_slice(stack);
        if self.batch.len() >= BATCH_WORDS {
            self.hand_over();
        }
    }

    fn hand_over(&mut self) {
        let Some(worker) = &self.worker else {
            return;
        };
        let mut next = worker.recycled.try_recv().unwrap_or_default();
        if next.capacity() < BATCH_WORDS {
            next.reserve(BATCH_WORDS + 256);
        }
        let batch = std::mem::replace(&mut self.batch, next);
        if let Err(mpsc::SendError(batch)) = worker.to_worker.send(batch) {
            // The worker died (a panic, re-raised by `finish`); count here.
            count_batch(&mut self.counts, &batch);
        }
    }

    /// All stacks counted so far, in the order they were first seen (the
    /// table's insertion order, and its buffer's order), whatever the
    /// thread use.
    pub fn finish(self) -> StackCounts {
        let StackCounter {
            counts: here,
            batch,
            worker,
            ..
        } = self;
        let Some(worker) = worker else {
            return here;
        };
        let _ = worker.to_worker.send(batch);
        drop(worker.to_worker);
        match worker.handle.join() {
            // `here` is empty: the worker took it over.
            Ok(counts) => counts,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

fn count(counts: &mut StackCounts, stack: &[u64], weight: u64) {
    let entry = counts.entry(stack, || (0, 0));
    entry.0 += 1;
    entry.1 += weight;
}

/// Counts a batch of `[len, weight, stack…]` records.
fn count_batch(counts: &mut StackCounts, mut batch: &[u64]) {
    while let [len, weight, rest @ ..] = batch {
        let Some(stack) = usize::try_from(*len).ok().and_then(|len| rest.get(..len)) else {
            return; // only this module writes batches; cannot happen
        };
        count(counts, stack, *weight);
        batch = &rest[stack.len()..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_match_with_and_without_the_worker() {
        // Enough distinct stacks to start the worker, each seen several times.
        let stacks: Vec<Vec<u64>> = (0..3 * INLINE_STACKS as u64)
            .map(|i| (0..(i % 40) + 1).map(|d| i * 1000 + d).collect())
            .collect();
        let mut threaded = StackCounter::default();
        let mut inline = StackCounter {
            no_worker: true,
            ..StackCounter::default()
        };
        for round in 0..5u64 {
            for stack in &stacks {
                threaded.add(stack, round + 1);
                inline.add(stack, round + 1);
            }
        }
        assert!(threaded.worker.is_some(), "the worker started");
        let (threaded, inline) = (threaded.finish(), inline.finish());
        assert_eq!(threaded.len(), stacks.len());
        assert_eq!(inline.len(), stacks.len());
        for stack in &stacks {
            assert_eq!(threaded.get(stack), Some(&(5, 15)));
            assert_eq!(inline.get(stack), Some(&(5, 15)));
        }
        // Both in first-seen order, so later stages see the same sequence
        // whatever the thread count.
        let order = |t: &StackCounts| t.iter().map(|(s, _)| s.to_vec()).collect::<Vec<_>>();
        assert_eq!(order(&threaded), stacks);
        assert_eq!(order(&inline), stacks);
    }
}

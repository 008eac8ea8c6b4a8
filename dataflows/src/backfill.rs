//! The backfill source: telemetry Parquet in any row order through the same graph.
//!
//! Before the graph starts, [`plan`] reads only the `vehicle_id` and `ts` columns to find the
//! input's [`Layout`]:
//! - time-ordered (within the allowed lateness): read as it is, in group 0;
//! - grouped by vehicle: the same, with each vehicle's readings in its own ordering group, so
//!   its windows close when the input moves to the next vehicle (bounded state);
//! - anything else: every reading is loaded and sorted by time first (memory grows with
//!   the input; documented cost of an unordered input).
//!
//! In a backfill the input is complete, so no reading is late; features equal those of the
//! same readings in time order.
//!
//! Row groups are decoded and validated in parallel, one reader thread per worker of this
//! process taking every so many row groups, a row group or two ahead. A reader splits the
//! readings by worker as it decodes them: each goes straight into a slice of up to
//! [`SLICE`] for the worker owning its vehicle ([`pmi_operators::exchange::owner`]). The
//! readers then take turns, in input order, to deal each row group's slices, in the order
//! they filled, to the bounded channels of their workers, so the window operator's
//! exchange passes the slices through untouched; in one process, each worker runs the graph
//! on its own ([`graph_config`]). The workers move through the input together, as far
//! apart as their channels let them, and each one's watermark (largest key it was handed
//! less the disorder [`plan`] measured: exact, 0 for input in strict order) trails the
//! input by a few slices, not by whole row groups: window state stays small. The timely worker never waits on a file. In a cluster every process reads
//! the whole input and keeps its own workers' vehicles (and, for every `processes`-th row
//! group, the rejected rows).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use pmi_core::{
    EventKey, EventTime, Rejected, Sequenced, SourceBatch, SourceFailure, SourceStatus, Telemetry,
    TelemetrySource, Validator, Waker,
};
use pmi_operators::exchange::{owner, worker_for};
use pmi_sources::parquet_in::{ReadError, TelemetryFiles, TimeRange, VehicleInterner};

use crate::layout::{KeyStretch, Layout, LayoutDetector};
use crate::DataflowError;
use crate::WorkerProgress;

/// What [`plan`] found.
pub struct BackfillPlan {
    files: Arc<TelemetryFiles>,
    /// The input's layout.
    pub layout: Layout,
    groups: Arc<HashMap<String, u32>>,
    sorted: Option<Arc<(Vec<Telemetry>, Vec<Rejected>)>>,
    /// How far rows run back in time within their ordering group, in ms (measured).
    pub disorder_ms: i64,
    /// Global indices of this process's workers.
    local: Range<usize>,
    /// Each local worker's channel from the dealing readers and the slot for its source's
    /// waker, started by the first worker.
    channels: OnceLock<Mutex<Vec<Option<Inbox>>>>,
}

/// Rows per slice dealt to a worker.
pub const SLICE: usize = 4096;

/// Slices a worker's channel holds (up to about 10 MB of readings per worker). Deep, so
/// that a worker busy sealing panes does not hold the readers up and the readers'
/// decoding turns do not leave it idle: together with [`MAX_AHEAD_MS`], `pmi bench` ran
/// about 10 % faster with 8 to 32 slices than with 4 (and a 10 s limit).
const CHANNEL_SLICES: usize = 16;

/// How far (ms of event time) a backfill's sources may run ahead of the end of the graph
/// ([`GraphConfig::max_ahead_ms`](crate::GraphConfig::max_ahead_ms), 10 s live). The input
/// is all there, so the limit only trades window state (the open panes' readings, about
/// 120 bytes per reading) for slack between the workers: at 40 s, `pmi bench`'s window
/// state stays within 32 KiB per vehicle at 1 Hz, and it ran about 10 % faster than at 10 s.
pub const MAX_AHEAD_MS: u64 = 40_000;

/// `graph` as a backfill runs it: its sources may run [`MAX_AHEAD_MS`] ahead, and the
/// workers of a process run independently ([`WorkerProgress::Independent`]: the readers
/// deal each reading to the worker owning its vehicle, so none would cross workers). On
/// `pmi bench` this kept both cores busy 93 % of the time instead of 85 % (a worker no
/// longer waits for the other to close a pane) and the backfill took about a tenth less
/// time.
pub fn graph_config(graph: crate::GraphConfig) -> crate::GraphConfig {
    crate::GraphConfig {
        max_ahead_ms: MAX_AHEAD_MS,
        progress: WorkerProgress::Independent,
        ..graph
    }
}

/// Validation clock of a backfill: history is in the past, so "too far in the future" is
/// judged against the wall clock at planning time.
fn now() -> EventTime {
    EventTime::now()
}

/// Reads the key columns of `input` (a path, or an `s3://` URL: see
/// [`pmi_sources::store`]) within `range` and decides how to read it, for this process's
/// workers `local` (global indices; see [`crate::GraphConfig::local_workers`]).
pub fn plan(
    input: &str,
    range: TimeRange,
    lateness_ms: i64,
    local: Range<usize>,
) -> Result<BackfillPlan, DataflowError> {
    let files =
        TelemetryFiles::open_url(input, range).map_err(|e| DataflowError::Input(e.to_string()))?;
    let started = std::time::Instant::now();
    let mut detector = LayoutDetector::new(lateness_ms);
    for stretch in scan_keys(&files)? {
        detector.merge(stretch);
    }
    let verdict = detector.finish();
    tracing::info!(
        layout = ?verdict.layout,
        disorder_ms = verdict.disorder_ms,
        rows = verdict.rows,
        units = files.units().len(),
        took_ms = started.elapsed().as_millis() as u64,
        "backfill plan"
    );
    let mut plan = BackfillPlan {
        files: Arc::new(files),
        layout: verdict.layout,
        groups: Arc::new(verdict.groups),
        sorted: None,
        disorder_ms: verdict.disorder_ms,
        local,
        channels: OnceLock::new(),
    };
    if plan.layout == Layout::Unordered {
        let (mut ok, mut bad) = (Vec::new(), Vec::new());
        let mut interner = VehicleInterner::default();
        let now = now();
        for unit in plan.files.units() {
            plan.files
                .read_unit(
                    unit,
                    &Validator::default(),
                    now,
                    &mut interner,
                    &mut ok,
                    &mut bad,
                )
                .map_err(|e| DataflowError::Input(e.to_string()))?;
        }
        ok.sort_by(|a, b| (a.ts, &a.vehicle_id).cmp(&(b.ts, &b.vehicle_id)));
        plan.sorted = Some(Arc::new((ok, bad)));
    }
    Ok(plan)
}

/// The keys of every row group of `files`, in input order, read by as many threads as the
/// machine runs at once (the plan is on the critical path: nothing runs until it is made).
fn scan_keys(files: &TelemetryFiles) -> Result<Vec<KeyStretch>, DataflowError> {
    let units = files.units();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, units.len().max(1));
    let next = AtomicUsize::new(0);
    let scanned: Vec<Result<Vec<(usize, KeyStretch)>, ReadError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(unit) = units.get(i) else {
                            return Ok(mine);
                        };
                        let mut stretch = KeyStretch::new();
                        let scanned = files.scan_keys(unit, |v, t| {
                            if let (Some(v), Some(t)) = (v, t) {
                                stretch.push(v, t);
                            }
                        });
                        if let Err(e) = scanned {
                            next.store(units.len(), Ordering::Relaxed); // the others stop too
                            return Err(e);
                        }
                        mine.push((i, stretch));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a key scan thread panicked"))
            .collect()
    });
    let mut stretches = Vec::with_capacity(units.len());
    for part in scanned {
        stretches.extend(part.map_err(|e| DataflowError::Input(e.to_string()))?);
    }
    stretches.sort_unstable_by_key(|(i, _)| *i);
    Ok(stretches.into_iter().map(|(_, s)| s).collect())
}

/// A slice of a worker's readings with the newest key among them (found by the reader,
/// which has just written them, not by the worker, for which they are not yet in cache),
/// and rejected rows.
type Chunk = Result<(Vec<Sequenced>, Option<EventKey>, Vec<Rejected>), SourceFailure>;

/// A worker's share of a sorted, in-memory input: the readings of the vehicles it owns.
struct SortedShare {
    data: Arc<(Vec<Telemetry>, Vec<Rejected>)>,
    worker: usize,
    peers: usize,
    /// Where the scan for this worker's readings resumes.
    next: usize,
}

/// Where a worker's source leaves its waker for the readers (set once, when the source's
/// operator is built; a reader that finds it still empty hands on without waking, and the
/// operator's first poll picks the chunk up).
type WakerSlot = Arc<OnceLock<Waker>>;

/// How long a source with nothing in its channel waits before it polls again: it is woken
/// as soon as a reader hands it a chunk, so this is only a safety net.
const IDLE_POLL: Duration = Duration::from_millis(5);

/// A local worker's end of the readers' dealing: its channel and its waker's slot.
type Inbox = (Receiver<Chunk>, WakerSlot);

/// One worker's share of a backfill.
pub struct ParquetSource {
    rx: Option<Receiver<Chunk>>,
    waker: Option<WakerSlot>,
    sorted: Option<SortedShare>,
    disorder_ms: i64,
    /// Largest key handed on so far.
    max_key: Option<EventKey>,
}

/// Rows per chunk handed on from a sorted input (each worker scans `peers` times as many
/// for its own).
const SORTED_CHUNK: usize = 16 * 1024;

impl ParquetSource {
    /// The share of `plan` for `worker` of `peers`.
    pub fn new(plan: &BackfillPlan, worker: usize, peers: usize) -> Self {
        if let Some(sorted) = &plan.sorted {
            let share = SortedShare {
                data: sorted.clone(),
                worker,
                peers,
                next: 0,
            };
            return ParquetSource {
                rx: None,
                waker: None,
                sorted: Some(share),
                disorder_ms: plan.disorder_ms,
                max_key: None,
            };
        }
        let channels = plan
            .channels
            .get_or_init(|| Mutex::new(start_readers(plan, peers)));
        let (rx, waker) = worker
            .checked_sub(plan.local.start)
            .and_then(|i| {
                channels
                    .lock()
                    .expect("backfill channels lock")
                    .get_mut(i)?
                    .take()
            })
            .unzip();
        ParquetSource {
            rx,
            waker,
            sorted: None,
            disorder_ms: plan.disorder_ms,
            max_key: None,
        }
    }
}

/// Whose turn it is to deal, shared by the reader threads.
struct Dealing {
    /// Index (in input order) of the row group to deal next; `None` once a reader failed
    /// or a worker went away.
    turn: Mutex<Option<usize>>,
    changed: Condvar,
}

/// Starts one reader thread per local worker and returns each local worker's channel and
/// waker slot.
fn start_readers(plan: &BackfillPlan, peers: usize) -> Vec<Option<Inbox>> {
    let local = plan.local.clone();
    let (txs, rxs): (Vec<SyncSender<Chunk>>, Vec<_>) = local
        .clone()
        .map(|_| sync_channel::<Chunk>(CHANNEL_SLICES))
        .unzip();
    let wakers: Vec<WakerSlot> = local.clone().map(|_| WakerSlot::default()).collect();
    let dealing = Arc::new(Dealing {
        turn: Mutex::new(Some(0)),
        changed: Condvar::new(),
    });
    let dealer = Dealer {
        txs,
        wakers: wakers.clone(),
        local: local.clone(),
        peers,
    };
    let readers = local.len();
    for reader in 0..readers {
        let files = plan.files.clone();
        let groups = plan.groups.clone();
        let grouped = plan.layout == Layout::GroupedByVehicle;
        let (dealer, dealing) = (dealer.clone(), dealing.clone());
        std::thread::Builder::new()
            .name(format!("pmi-backfill-read-{reader}"))
            .spawn(move || {
                let mut interner = VehicleInterner::default();
                let now = now();
                let units = files
                    .units()
                    .iter()
                    .enumerate()
                    .skip(reader)
                    .step_by(readers);
                for (index, unit) in units {
                    let mut bad = Vec::new();
                    // Split by worker as they are decoded: each reading is written once,
                    // into the slice that goes to its worker.
                    let mut split = Split::new(&dealer, grouped.then_some(&*groups));
                    let result = files
                        .read_unit(
                            unit,
                            &Validator::default(),
                            now,
                            &mut interner,
                            &mut split,
                            &mut bad,
                        )
                        .map_err(|e| SourceFailure {
                            source_name: "parquet".into(),
                            message: e.to_string(),
                            class: e.class(),
                        });
                    let readings = split.into_slices();
                    if !dealer.deal(&dealing, index, result.map(|()| (readings, bad))) {
                        break;
                    }
                }
                // The channels close with the last reader's senders: wake every worker to
                // find out (or to read what is left) without waiting for its timed poll.
                let wakers = dealer.wakers.clone();
                drop(dealer);
                wakers.iter().for_each(wake);
            })
            .expect("spawn backfill reader thread");
    }
    rxs.into_iter().zip(wakers).map(Some).collect()
}

/// Wakes the worker whose waker is in `slot`, if its source has left one.
fn wake(slot: &WakerSlot) {
    if let Some(waker) = slot.get() {
        waker();
    }
}

/// Where the readers send what they read: the local workers' channels.
#[derive(Clone)]
struct Dealer {
    /// Channel of local worker `local.start + i` at `i`.
    txs: Vec<SyncSender<Chunk>>,
    /// Waker slot of local worker `local.start + i` at `i`.
    wakers: Vec<WakerSlot>,
    local: Range<usize>,
    peers: usize,
}

impl Dealer {
    /// Whether this process hands on row group `index`'s rejected rows: one process in
    /// turn, each running as many workers (`local`) of the `peers`.
    fn keeps_rejected(&self, index: usize) -> bool {
        let n = self.local.len().max(1);
        index % (self.peers / n).max(1) == self.local.start / n
    }

    /// Waits for row group `index`'s turn and deals it; false when reading must stop.
    fn deal(&self, dealing: &Dealing, index: usize, unit: Result<Decoded, SourceFailure>) -> bool {
        let mut turn = dealing.turn.lock().expect("dealing lock");
        while turn.is_some_and(|next| next != index) {
            turn = dealing.changed.wait(turn).expect("dealing lock");
        }
        if turn.is_none() {
            return false;
        }
        let ok = match unit {
            Err(failure) => {
                for (tx, waker) in self.txs.iter().zip(&self.wakers) {
                    let _ = tx.send(Err(failure.clone()));
                    wake(waker);
                }
                false
            }
            Ok((readings, rejected)) => self.deal_readings(index, readings, rejected),
        };
        *turn = ok.then_some(index + 1);
        dealing.changed.notify_all();
        ok
    }

    /// Row group `index`'s slices to their workers, in the order they were filled (so
    /// each worker is fed as the input goes, and none waits on another's full channel);
    /// the rejected rows go to the first local worker, in one process only. False when a
    /// worker is gone.
    fn deal_readings(
        &self,
        index: usize,
        slices: Vec<(usize, Slice)>,
        mut rejected: Vec<Rejected>,
    ) -> bool {
        if !self.keeps_rejected(index) {
            rejected.clear();
        }
        let send = |i: usize, (slice, newest): Slice, rejected: Vec<Rejected>| {
            // An error: the worker is gone, the run is over.
            let sent = self.txs[i].send(Ok((slice, newest, rejected))).is_ok();
            wake(&self.wakers[i]);
            sent
        };
        for (i, slice) in slices {
            if !send(i, slice, Vec::new()) {
                return false;
            }
        }
        rejected.is_empty() || send(0, (Vec::new(), None), rejected)
    }
}

/// Readings for a worker with the newest key among them (see [`Chunk`]).
type Slice = (Vec<Sequenced>, Option<EventKey>);

/// A decoded row group: its slices with their local worker, in the order they filled, and
/// its rejected rows.
type Decoded = (Vec<(usize, Slice)>, Vec<Rejected>);

/// A row group's readings as a reader decodes them, each written straight into a slice of
/// up to [`SLICE`] for the local worker owning its vehicle; readings of another process's
/// vehicles are left to that process.
struct Split<'a> {
    /// Each local worker's slice being filled.
    filling: Vec<Slice>,
    /// Full slices with their local worker, in the order they filled up.
    full: Vec<(usize, Slice)>,
    /// Which workers are local, of how many.
    dealer: &'a Dealer,
    /// Each vehicle's ordering group, for input grouped by vehicle.
    groups: Option<&'a HashMap<String, u32>>,
}

impl<'a> Split<'a> {
    fn new(dealer: &'a Dealer, groups: Option<&'a HashMap<String, u32>>) -> Self {
        Split {
            filling: dealer.txs.iter().map(|_| (Vec::new(), None)).collect(),
            full: Vec::new(),
            dealer,
            groups,
        }
    }

    fn push(&mut self, reading: Telemetry) {
        let group = self.groups.map_or(0, |groups| {
            groups
                .get(reading.vehicle_id.as_str())
                .copied()
                .unwrap_or(0)
        });
        let s = Sequenced { group, reading };
        let Some(i) = owner(&s, self.dealer.peers).checked_sub(self.dealer.local.start) else {
            return;
        };
        let Some((slice, newest)) = self.filling.get_mut(i) else {
            return;
        };
        if slice.capacity() == 0 {
            slice.reserve_exact(SLICE);
        }
        *newest = (*newest).max(Some(s.key()));
        slice.push(s);
        if slice.len() == SLICE {
            let full = std::mem::take(&mut self.filling[i]);
            self.full.push((i, full));
        }
    }

    /// Every slice, full ones first, in the order they are to be dealt.
    fn into_slices(mut self) -> Vec<(usize, Slice)> {
        let partial = self.filling.into_iter().enumerate();
        self.full
            .extend(partial.filter(|(_, (slice, _))| !slice.is_empty()));
        self.full
    }
}

impl Extend<Telemetry> for Split<'_> {
    fn extend<I: IntoIterator<Item = Telemetry>>(&mut self, readings: I) {
        readings.into_iter().for_each(|r| self.push(r));
    }
}

impl TelemetrySource for ParquetSource {
    fn name(&self) -> &str {
        "parquet"
    }

    /// Every row still to come, on this worker or another, was dealt after the newest this
    /// worker has handed on, so it is at most the measured disorder older.
    fn watermark(&self) -> Option<EventKey> {
        self.max_key
            .map(|m| EventKey::new(m.group(), EventTime(m.time().0 - self.disorder_ms)))
    }

    /// The readers wake the worker when they hand it a chunk.
    fn set_waker(&mut self, waker: Waker) {
        if let Some(slot) = &self.waker {
            let _ = slot.set(waker);
        }
    }

    fn poll(&mut self, batch: &mut SourceBatch) -> Result<SourceStatus, SourceFailure> {
        if let Some(share) = &mut self.sorted {
            let (ok, bad) = &*share.data;
            // Rejected rows of a sorted input are handed on by worker 0's first poll.
            if share.next == 0 && share.worker == 0 {
                batch.rejected.extend(bad.iter().cloned());
            }
            if share.next >= ok.len() {
                return Ok(SourceStatus::Finished);
            }
            let end = (share.next + share.peers * SORTED_CHUNK).min(ok.len());
            let mine = ok[share.next..end]
                .iter()
                .filter(|r| worker_for(r.vehicle_id.route_hash(), share.peers) == share.worker);
            batch.readings.extend(mine.map(|r| Sequenced {
                group: 0,
                reading: r.clone(),
            }));
            // Sorted by time: the scanned span's last reading is its newest (and no reading
            // of this worker's still to come is older).
            let newest = EventKey::new(0, ok[end - 1].ts);
            self.max_key = self.max_key.max(Some(newest));
            share.next = end;
            return Ok(SourceStatus::Ready);
        }
        let Some(rx) = &self.rx else {
            return Ok(SourceStatus::Finished);
        };
        match rx.try_recv() {
            Ok(Ok((readings, newest, rejected))) => {
                self.max_key = self.max_key.max(newest);
                if batch.readings.is_empty() {
                    batch.readings = readings; // handed on as it came, not copied
                } else {
                    batch.readings.extend(readings);
                }
                batch.rejected.extend(rejected);
                Ok(SourceStatus::Ready)
            }
            Ok(Err(failure)) => Err(failure),
            Err(TryRecvError::Empty) => Ok(SourceStatus::Idle(Some(IDLE_POLL))),
            Err(TryRecvError::Disconnected) => Ok(SourceStatus::Finished),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pmi_core::{SensorValues, SENSOR_COUNT};

    fn dealer(local: Range<usize>, peers: usize) -> Dealer {
        Dealer {
            txs: local.clone().map(|_| sync_channel(1).0).collect(),
            wakers: local.clone().map(|_| WakerSlot::default()).collect(),
            local,
            peers,
        }
    }

    fn reading(vehicle: usize, ts: i64) -> Telemetry {
        Telemetry {
            vehicle_id: pmi_core::VehicleId::parse(&format!("V{vehicle}")).unwrap(),
            ts: EventTime(ts),
            values: SensorValues::new([Some(1.0); SENSOR_COUNT]).unwrap(),
        }
    }

    /// Every reading lands in a slice of its owner, full slices come in the order they
    /// filled and before the partial ones, and each slice knows its newest key; readings of
    /// another process's workers are left out.
    #[test]
    fn split_routes_each_reading_to_its_owner_in_fill_order() {
        let rows: Vec<Telemetry> = (0..3 * SLICE).map(|i| reading(i % 7, i as i64)).collect();
        let both = dealer(0..2, 2);
        let mut split = Split::new(&both, None);
        split.extend(rows.iter().cloned());
        let slices = split.into_slices();
        let total: usize = slices.iter().map(|(_, (s, _))| s.len()).sum();
        assert_eq!(total, rows.len());
        let mut seen_partial = [false; 2];
        let mut last_full_newest = [None; 2];
        for (i, (slice, newest)) in &slices {
            assert!(slice.iter().all(|s| owner(s, 2) == *i));
            assert_eq!(*newest, slice.iter().map(Sequenced::key).max());
            if slice.len() < SLICE {
                assert!(!seen_partial[*i], "one partial slice per worker, last");
                seen_partial[*i] = true;
            } else {
                assert!(!seen_partial[*i], "full slices before the partial one");
                assert!(last_full_newest[*i] < *newest, "full slices in fill order");
                last_full_newest[*i] = *newest;
            }
        }
        // The process with worker 1 of 2 keeps worker 1's readings alone, as its slot 0.
        let second = dealer(1..2, 2);
        let mut split = Split::new(&second, None);
        split.extend(rows.iter().cloned());
        let slices = split.into_slices();
        let kept: usize = slices.iter().map(|(_, (s, _))| s.len()).sum();
        let owned = rows
            .iter()
            .filter(|r| worker_for(r.vehicle_id.route_hash(), 2) == 1)
            .count();
        assert!(owned > 0 && owned < rows.len());
        assert_eq!(kept, owned);
        assert!(slices.iter().all(|(i, _)| *i == 0));
    }
}

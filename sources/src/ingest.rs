//! HTTP ingest as a graph source: a bounded queue that request handlers push readings into
//! and that every timely worker of the process pulls from.
//!
//! - [`IngestQueue::new`] gives an [`IngestProducer`] (cloneable; one per handler) and
//!   [`IngestSources`], which makes one [`IngestSource`] per worker. All workers pull from
//!   the same queue (a `crossbeam-channel`); the window operator routes readings to their
//!   vehicle's worker, so which worker pulls a reading does not matter.
//! - Items are validated readings or [`Rejected`] records: handlers validate so that they
//!   can answer `4xx` at once, and still push the rejection, which the graph writes to its
//!   dead-letter output. Nothing is lost.
//! - [`IngestProducer::try_push`] takes a batch whole or not at all: [`PushError::Full`]
//!   when it does not fit now (answer `429` with `Retry-After`), [`PushError::Closed`] once
//!   the queue is closed or the graph has stopped (`503`), [`PushError::TooLarge`] for a
//!   batch larger than the whole queue (`413`).
//! - [`IngestSource::poll`] never blocks: it takes what is queued (up to a batch) and says
//!   `Idle` with a short delay when nothing is; once the queue is closed (or every producer
//!   dropped) and drained it says `Finished`, so the graph closes its last panes and its
//!   sinks flush.
//!
//! # Watermark
//! Live readings follow the usual rule: the watermark trails the largest event time seen
//! (by any worker of the process) by the allowed lateness, and a reading below it is late.
//! The sources compute that watermark themselves, shared through the queue, so that a
//! worker that happens to pull nothing still advances with the others instead of holding
//! every window back.
//!
//! A source that receives nothing must not stall the windows forever either (the last
//! panes of a fleet that stopped sending would never close): once readings have been seen
//! and none has arrived for `idle_timeout` (default 10 s of wall-clock time) with the queue
//! empty, the watermark follows the wall clock less the allowed lateness. A reading that
//! arrives after that with an older time is late, as it would be at live pace anyway.
//! The clock is injectable ([`IngestOptions::clock`]) so tests need not wait.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};

use pmi_core::{
    EventKey, EventTime, Rejected, Sequenced, SourceBatch, SourceFailure, SourceStatus, Telemetry,
    TelemetrySource,
};

/// One item of the ingest queue.
#[derive(Clone, Debug, PartialEq)]
pub enum IngestItem {
    /// A reading that passed validation.
    Reading(Telemetry),
    /// A reading that did not, with the field and reason (goes to the dead-letter output).
    /// Boxed: rejections are rare and large, readings common and small.
    Rejected(Box<Rejected>),
}

/// Why a batch was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// Not enough room now; retry later (backpressure).
    #[error("ingest queue full ({queued} of {capacity} queued); retry later")]
    Full {
        /// Items queued when the batch was refused.
        queued: usize,
        /// The queue's capacity.
        capacity: usize,
    },
    /// The queue is closed (shutting down) or the graph has stopped.
    #[error("ingest is closed: the graph is stopping or has stopped")]
    Closed,
    /// The batch is larger than the whole queue: it can never fit.
    #[error("a batch of {len} readings is larger than the ingest queue ({capacity})")]
    TooLarge {
        /// Items in the batch.
        len: usize,
        /// The queue's capacity.
        capacity: usize,
    },
}

/// A wall clock: ms since the epoch.
pub type Clock = Arc<dyn Fn() -> EventTime + Send + Sync>;

/// Settings of an ingest queue.
#[derive(Clone)]
pub struct IngestOptions {
    /// Items the queue holds at most (default 100,000).
    pub capacity: usize,
    /// With no reading for this long (wall clock), the watermark follows the wall clock less
    /// the allowed lateness (default 10 s).
    pub idle_timeout: Duration,
    /// Most items one poll takes (default 1024).
    pub poll_batch: usize,
    /// How soon an idle source asks again (default 10 ms).
    pub idle_poll: Duration,
    /// The wall clock (default [`EventTime::now`]).
    pub clock: Clock,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            capacity: 100_000,
            idle_timeout: Duration::from_secs(10),
            poll_batch: 1024,
            idle_poll: Duration::from_millis(10),
            clock: Arc::new(EventTime::now),
        }
    }
}

impl std::fmt::Debug for IngestOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestOptions")
            .field("capacity", &self.capacity)
            .field("idle_timeout", &self.idle_timeout)
            .field("poll_batch", &self.poll_batch)
            .field("idle_poll", &self.idle_poll)
            .finish_non_exhaustive()
    }
}

/// No value yet in an `AtomicI64` of event or wall time.
const UNSET: i64 = i64::MIN;

/// State shared by the producers and the sources of one queue.
struct Shared {
    options: IngestOptions,
    /// Set by [`IngestProducer::close`]; checked under `push` so no push lands after it.
    closed: AtomicBool,
    /// Serialises producers, so that a batch is checked for room and queued as one.
    push: Mutex<()>,
    /// Largest event time of a reading pulled by any source.
    max_seen: AtomicI64,
    /// The sources' common watermark (event ms), monotone.
    watermark: AtomicI64,
    /// Wall-clock ms of the last push or pull of a reading.
    last_activity: AtomicI64,
}

impl Shared {
    fn now(&self) -> i64 {
        (self.options.clock)().0
    }
}

/// An ingest queue: its producer handle and its sources.
pub struct IngestQueue {
    /// Where handlers push (clone it freely).
    pub producer: IngestProducer,
    /// Makes the graph's sources (one per worker).
    pub sources: IngestSources,
}

impl IngestQueue {
    /// A queue of `capacity` items with default settings.
    pub fn new(capacity: usize) -> IngestQueue {
        IngestQueue::with_options(IngestOptions {
            capacity,
            ..IngestOptions::default()
        })
    }

    /// A queue with the given settings (a capacity of 0 is taken as 1).
    pub fn with_options(mut options: IngestOptions) -> IngestQueue {
        options.capacity = options.capacity.max(1);
        options.poll_batch = options.poll_batch.max(1);
        let (tx, rx) = crossbeam_channel::bounded(options.capacity);
        let now = (options.clock)().0;
        let shared = Arc::new(Shared {
            options,
            closed: AtomicBool::new(false),
            push: Mutex::new(()),
            max_seen: AtomicI64::new(UNSET),
            watermark: AtomicI64::new(UNSET),
            last_activity: AtomicI64::new(now),
        });
        IngestQueue {
            producer: IngestProducer {
                tx,
                shared: shared.clone(),
            },
            sources: IngestSources { rx, shared },
        }
    }
}

/// The producer side: handlers push validated readings and rejections.
#[derive(Clone)]
pub struct IngestProducer {
    tx: Sender<IngestItem>,
    shared: Arc<Shared>,
}

impl IngestProducer {
    /// Queues `items` whole, or none of them: the number queued (`items.len()`), or why not.
    pub fn try_push(&self, items: Vec<IngestItem>) -> Result<usize, PushError> {
        let capacity = self.shared.options.capacity;
        let n = items.len();
        if n > capacity {
            return Err(PushError::TooLarge { len: n, capacity });
        }
        // A poisoned lock only means another handler panicked mid-push; the queue is intact.
        let _guard = self
            .shared
            .push
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(PushError::Closed);
        }
        let queued = self.tx.len();
        if queued + n > capacity {
            return Err(PushError::Full { queued, capacity });
        }
        // Only consumers act on the channel meanwhile, and they only make room: every send
        // below finds room.
        let readings = items.iter().any(|i| matches!(i, IngestItem::Reading(_)));
        for item in items {
            match self.tx.try_send(item) {
                Ok(()) => {}
                Err(TrySendError::Disconnected(_)) => return Err(PushError::Closed),
                Err(TrySendError::Full(_)) => {
                    // Unreachable by the reasoning above; report it as backpressure rather
                    // than lose the rest silently.
                    return Err(PushError::Full {
                        queued: self.tx.len(),
                        capacity,
                    });
                }
            }
        }
        if readings {
            self.shared
                .last_activity
                .fetch_max(self.shared.now(), Ordering::Relaxed);
        }
        Ok(n)
    }

    /// Stops accepting: every later push is [`PushError::Closed`]. What is queued stays, and
    /// the sources finish once they have drained it.
    pub fn close(&self) {
        let _guard = self
            .shared
            .push
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.shared.closed.store(true, Ordering::Release);
    }

    /// True once [`IngestProducer::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Items queued now.
    pub fn len(&self) -> usize {
        self.tx.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.tx.is_empty()
    }

    /// Items the queue holds at most.
    pub fn capacity(&self) -> usize {
        self.shared.options.capacity
    }

    /// The sources' current watermark (event time), once readings have been seen.
    pub fn watermark(&self) -> Option<EventTime> {
        let w = self.shared.watermark.load(Ordering::Acquire);
        (w != UNSET).then_some(EventTime(w))
    }
}

/// Makes the graph's sources over one queue; `Send + Sync`, so the graph's source factory
/// can hold it.
#[derive(Clone)]
pub struct IngestSources {
    rx: Receiver<IngestItem>,
    shared: Arc<Shared>,
}

impl IngestSources {
    /// One worker's source. `lateness_ms` is the graph's allowed lateness.
    pub fn source(&self, lateness_ms: i64) -> IngestSource {
        IngestSource {
            rx: self.rx.clone(),
            shared: self.shared.clone(),
            lateness_ms,
        }
    }
}

/// One worker's view of the ingest queue (see the module docs for its watermark).
pub struct IngestSource {
    rx: Receiver<IngestItem>,
    shared: Arc<Shared>,
    lateness_ms: i64,
}

impl IngestSource {
    /// Raises the shared watermark to what is known now and returns it.
    fn advance_watermark(&self, now: i64, queue_empty: bool) -> i64 {
        let s = &self.shared;
        let max_seen = s.max_seen.load(Ordering::Acquire);
        if max_seen == UNSET {
            return s.watermark.load(Ordering::Acquire);
        }
        let mut next = max_seen.saturating_sub(self.lateness_ms);
        let idle_ms = s.options.idle_timeout.as_millis() as i64;
        let last = s.last_activity.load(Ordering::Relaxed);
        if queue_empty && now.saturating_sub(last) >= idle_ms {
            next = next.max(now.saturating_sub(self.lateness_ms));
        }
        let previous = s.watermark.fetch_max(next, Ordering::AcqRel);
        previous.max(next)
    }
}

impl TelemetrySource for IngestSource {
    fn name(&self) -> &str {
        "http"
    }

    fn poll(&mut self, batch: &mut SourceBatch) -> Result<SourceStatus, SourceFailure> {
        // Read `closed` before draining: everything pushed before the close is then in the
        // channel, so an empty channel after a close means drained.
        let closed = self.shared.closed.load(Ordering::Acquire);
        let now = self.shared.now();
        let watermark = self.advance_watermark(now, self.rx.is_empty());
        let (mut taken, mut max_ts) = (0, UNSET);
        let mut ended = false;
        while taken < self.shared.options.poll_batch {
            match self.rx.try_recv() {
                Ok(IngestItem::Reading(reading)) => {
                    let s = Sequenced { group: 0, reading };
                    if s.reading.ts.0 < watermark {
                        batch.late.push(s);
                    } else {
                        max_ts = max_ts.max(s.reading.ts.0);
                        batch.readings.push(s);
                    }
                }
                Ok(IngestItem::Rejected(r)) => batch.rejected.push(*r),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    ended = true;
                    break;
                }
            }
            taken += 1;
        }
        if taken > 0 {
            self.shared.last_activity.fetch_max(now, Ordering::Relaxed);
            if max_ts != UNSET {
                self.shared.max_seen.fetch_max(max_ts, Ordering::AcqRel);
                self.advance_watermark(now, false);
            }
            return Ok(SourceStatus::Ready);
        }
        if closed || ended {
            return Ok(SourceStatus::Finished);
        }
        Ok(SourceStatus::Idle(Some(self.shared.options.idle_poll)))
    }

    fn watermark(&self) -> Option<EventKey> {
        let w = self.shared.watermark.load(Ordering::Acquire);
        (w != UNSET).then(|| EventKey::new(0, EventTime(w)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pmi_core::{RawReading, Validator, SENSOR_COUNT};

    fn reading(vehicle: &str, ts: i64) -> IngestItem {
        let mut values = [None; SENSOR_COUNT];
        values[0] = Some(90.0);
        IngestItem::Reading(
            Validator::default()
                .validate(RawReading::new(vehicle, ts, values), EventTime(ts))
                .unwrap(),
        )
    }

    fn rejected() -> IngestItem {
        let raw = RawReading::new("", 1_000, [None; SENSOR_COUNT]);
        IngestItem::Rejected(Box::new(
            Validator::default()
                .validate(raw, EventTime(1_000))
                .unwrap_err(),
        ))
    }

    /// A queue on a clock the test moves.
    fn queue(capacity: usize) -> (IngestQueue, Arc<AtomicI64>) {
        let now = Arc::new(AtomicI64::new(1_767_225_600_000));
        let n = now.clone();
        let q = IngestQueue::with_options(IngestOptions {
            capacity,
            poll_batch: 4,
            clock: Arc::new(move || EventTime(n.load(Ordering::SeqCst))),
            ..IngestOptions::default()
        });
        (q, now)
    }

    fn drain(source: &mut IngestSource) -> (SourceBatch, SourceStatus) {
        let mut batch = SourceBatch::default();
        loop {
            let status = source.poll(&mut batch).unwrap();
            if status != SourceStatus::Ready {
                return (batch, status);
            }
        }
    }

    fn times(v: &[Sequenced]) -> Vec<(String, i64)> {
        v.iter()
            .map(|s| (s.reading.vehicle_id.to_string(), s.reading.ts.0))
            .collect()
    }

    #[test]
    fn order_is_kept_per_producer_and_rejections_pass_through() {
        let (q, _) = queue(100);
        let (a, b) = (q.producer.clone(), q.producer.clone());
        let pa = std::thread::spawn(move || {
            for t in 0..20 {
                a.try_push(vec![reading("A", 1_000 + t)]).unwrap();
            }
        });
        let pb = std::thread::spawn(move || {
            for t in 0..10 {
                b.try_push(vec![
                    reading("B", 1_000 + 2 * t),
                    reading("B", 1_001 + 2 * t),
                ])
                .unwrap();
            }
            b.try_push(vec![rejected()]).unwrap();
        });
        pa.join().unwrap();
        pb.join().unwrap();
        let mut source = q.sources.source(1_000_000);
        let (batch, status) = drain(&mut source);
        assert_eq!(status, SourceStatus::Idle(Some(Duration::from_millis(10))));
        let got = times(&batch.readings);
        for v in ["A", "B"] {
            let ts: Vec<i64> = got.iter().filter(|(id, _)| id == v).map(|x| x.1).collect();
            assert_eq!(ts, (1_000..1_020).collect::<Vec<_>>(), "vehicle {v}");
        }
        assert_eq!(batch.rejected.len(), 1);
        assert_eq!(batch.rejected[0].field, "vehicle_id");
        assert!(batch.late.is_empty());
    }

    #[test]
    fn full_at_capacity_all_or_nothing() {
        let (q, _) = queue(5);
        let p = &q.producer;
        assert_eq!(p.try_push((0..3).map(|t| reading("A", t)).collect()), Ok(3));
        // Three more do not fit in the two places left: none is queued.
        assert_eq!(
            p.try_push((3..6).map(|t| reading("A", t)).collect()),
            Err(PushError::Full {
                queued: 3,
                capacity: 5
            })
        );
        assert_eq!(p.len(), 3);
        assert_eq!(p.try_push(vec![reading("A", 3), rejected()]), Ok(2));
        assert!(matches!(
            p.try_push(vec![reading("A", 5)]),
            Err(PushError::Full { .. })
        ));
        assert_eq!(
            p.try_push((0..6).map(|t| reading("A", t)).collect()),
            Err(PushError::TooLarge {
                len: 6,
                capacity: 5
            })
        );
        // Pulling makes room again.
        let mut source = q.sources.source(0);
        let mut batch = SourceBatch::default();
        assert_eq!(source.poll(&mut batch).unwrap(), SourceStatus::Ready);
        assert_eq!(batch.len(), 4);
        assert_eq!(p.try_push(vec![reading("A", 9)]), Ok(1));
    }

    #[test]
    fn closed_after_shutdown_then_finished_after_drain() {
        let (q, _) = queue(10);
        let p = q.producer.clone();
        p.try_push(vec![reading("A", 1_000), reading("A", 2_000)])
            .unwrap();
        let mut source = q.sources.source(0);
        let mut other = q.sources.source(0);
        p.close();
        assert!(p.is_closed());
        assert_eq!(
            p.try_push(vec![reading("A", 3_000)]),
            Err(PushError::Closed)
        );
        // What was queued before the close still comes out, then the sources finish.
        let (batch, status) = drain(&mut source);
        assert_eq!(times(&batch.readings).len(), 2);
        assert_eq!(status, SourceStatus::Finished);
        assert_eq!(
            other.poll(&mut SourceBatch::default()).unwrap(),
            SourceStatus::Finished
        );
    }

    #[test]
    fn finished_when_every_producer_is_gone_and_closed_when_the_graph_is() {
        let (q, _) = queue(10);
        let IngestQueue { producer, sources } = q;
        producer.try_push(vec![reading("A", 1_000)]).unwrap();
        let mut source = sources.source(0);
        drop(producer);
        let (batch, status) = drain(&mut source);
        assert_eq!(batch.readings.len(), 1);
        assert_eq!(status, SourceStatus::Finished);

        // The graph gone (every source and the factory dropped): producers see Closed.
        let q = queue(10).0;
        drop(q.sources);
        assert_eq!(
            q.producer.try_push(vec![reading("A", 1)]),
            Err(PushError::Closed)
        );
    }

    #[test]
    fn watermark_trails_max_seen_and_is_shared_by_workers() {
        let (q, _) = queue(100);
        let mut a = q.sources.source(30_000);
        let b = q.sources.source(30_000);
        assert_eq!(a.watermark(), None, "no reading yet: the driver's default");
        q.producer
            .try_push(vec![reading("A", 100_000), reading("A", 90_000)])
            .unwrap();
        let (batch, _) = drain(&mut a);
        assert_eq!(batch.readings.len(), 2);
        let w = EventKey::new(0, EventTime(70_000));
        assert_eq!(a.watermark(), Some(w));
        // A worker that pulled nothing advances all the same.
        assert_eq!(b.watermark(), Some(w));
        // Below the watermark: late, kept in the late output.
        q.producer
            .try_push(vec![reading("A", 69_999), reading("A", 70_000)])
            .unwrap();
        let (batch, _) = drain(&mut a);
        assert_eq!(times(&batch.late), vec![("A".into(), 69_999)]);
        assert_eq!(times(&batch.readings), vec![("A".into(), 70_000)]);
    }

    #[test]
    fn idle_source_follows_the_wall_clock_after_the_timeout() {
        let (q, clock) = queue(100);
        let mut source = q.sources.source(30_000);
        // No reading ever: nothing to close, the watermark stays unset however long.
        clock.fetch_add(60_000, Ordering::SeqCst);
        drain(&mut source);
        assert_eq!(source.watermark(), None);

        let t0 = clock.load(Ordering::SeqCst);
        q.producer
            .try_push(vec![reading("A", t0 - 3_600_000)])
            .unwrap();
        drain(&mut source);
        let at_max_seen = EventKey::new(0, EventTime(t0 - 3_600_000 - 30_000));
        assert_eq!(source.watermark(), Some(at_max_seen));
        // Just under the timeout: unchanged.
        clock.fetch_add(9_999, Ordering::SeqCst);
        drain(&mut source);
        assert_eq!(source.watermark(), Some(at_max_seen));
        // At the timeout: wall clock less the lateness, then following the clock.
        clock.fetch_add(1, Ordering::SeqCst);
        drain(&mut source);
        assert_eq!(
            source.watermark(),
            Some(EventKey::new(0, EventTime(t0 + 10_000 - 30_000)))
        );
        clock.fetch_add(5_000, Ordering::SeqCst);
        drain(&mut source);
        assert_eq!(
            source.watermark(),
            Some(EventKey::new(0, EventTime(t0 + 15_000 - 30_000)))
        );
        // An old reading now is late; a fresh one is on time and resets the idle timer.
        let now = clock.load(Ordering::SeqCst);
        q.producer
            .try_push(vec![reading("A", t0 - 20_000), reading("A", now)])
            .unwrap();
        let (batch, _) = drain(&mut source);
        assert_eq!(times(&batch.late), vec![("A".into(), t0 - 20_000)]);
        assert_eq!(times(&batch.readings), vec![("A".into(), now)]);
        clock.fetch_add(9_000, Ordering::SeqCst);
        drain(&mut source);
        assert_eq!(
            source.watermark(),
            Some(EventKey::new(0, EventTime(now - 30_000)))
        );
    }
}

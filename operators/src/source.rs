//! The timely driver of any [`TelemetrySource`]: polls it without blocking, stamps readings
//! with graph time, and splits on-time, late and rejected readings into three streams.
//!
//! # Time and lateness
//! The driver holds one capability per output at its *watermark*, a key no larger than any
//! on-time reading still to come: the source's own promise when it has one
//! ([`TelemetrySource::watermark`]), else the largest key seen so far minus the allowed
//! lateness. A reading whose key is below the watermark when it arrives is late: it goes to
//! the late stream, not into a window. Every on-time reading is sent at the current
//! watermark, which is at most its own key, so the window operator downstream has it before
//! it seals the reading's pane.
//!
//! # Flow control
//! With a [`Throttle`], the driver stops polling while its watermark is more than a given
//! span of event time ahead of a probe at the end of the graph, so a fast source cannot
//! pile unsealed readings up in the window operator. The end of the graph wakes the held
//! source as soon as it moves on ([`WakeOnProgress`] on the probed streams), instead of
//! the source polling on a timer while it is held (every 1 ms, before: a parked worker woke
//! for it about 100 times in a bench backfill, and the source resumed up to a poll late).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::{Scope, Stream};
use timely::scheduling::Activator;

use pmi_core::{
    EventKey, EventTime, Rejected, Sequenced, SourceBatch, SourceFailure, SourceStatus, Telemetry,
    TelemetrySource,
};

/// Counters a source driver keeps; shared with whoever reports them (`/stats`, the CLI).
#[derive(Debug, Default)]
pub struct SourceCounters {
    /// Readings accepted on time.
    pub accepted: AtomicU64,
    /// Readings rejected by validation.
    pub rejected: AtomicU64,
    /// Readings later than the watermark.
    pub late: AtomicU64,
    /// The first failure of the source, if it failed.
    pub failure: Mutex<Option<SourceFailure>>,
}

impl SourceCounters {
    /// Records the source's first failure (the run then stops and reports it).
    pub fn fail(&self, source: &str, failure: SourceFailure) {
        tracing::error!(source, error = %failure, "source failed");
        self.failure
            .lock()
            .expect("counters lock")
            .get_or_insert(failure);
    }

    /// Total readings read (accepted + rejected + late).
    pub fn read(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
            + self.rejected.load(Ordering::Relaxed)
            + self.late.load(Ordering::Relaxed)
    }
}

/// Holds a source back while it is too far ahead of the rest of the graph.
#[derive(Clone)]
pub struct Throttle {
    /// Probe at the end of the graph.
    pub probe: ProbeHandle<u64>,
    /// How far (ms of event time) the watermark may run ahead of the probe.
    pub max_ahead_ms: u64,
    /// Woken when the probed streams move on: put [`WakeOnProgress::wake_on_progress`] on
    /// the streams the probe watches.
    pub waker: ThrottleWaker,
    /// How often a held source looks again without being woken (a safety net: the waker
    /// is what resumes it).
    pub poll: Duration,
}

/// How the end of the graph wakes a throttled source on the same worker (see [`Throttle`]).
#[derive(Clone, Default)]
pub struct ThrottleWaker(Rc<RefCell<Option<Activator>>>);

impl ThrottleWaker {
    fn set(&self, activator: Activator) {
        *self.0.borrow_mut() = Some(activator);
    }

    /// Schedules the source (if one is attached) to look again.
    fn wake(&self) {
        if let Some(activator) = self.0.borrow().as_ref() {
            activator.activate();
        }
    }
}

/// Extension trait: a stream that wakes a throttled source whenever its frontier moves on.
pub trait WakeOnProgress {
    /// Passes the stream on unchanged (each container as it is, not copied), waking
    /// `waker`'s source whenever the stream's frontier advances.
    fn wake_on_progress(self, waker: &ThrottleWaker) -> Self;
}

impl<'scope, D: Clone + 'static> WakeOnProgress for Stream<'scope, u64, Vec<D>> {
    fn wake_on_progress(self, waker: &ThrottleWaker) -> Self {
        let waker = waker.clone();
        self.unary_frontier::<CapacityContainerBuilder<Vec<D>>, _, _, _>(
            Pipeline,
            "WakeOnProgress",
            move |_cap, _info| {
                let mut seen: Option<u64> = None;
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        output.session(&cap).give_container(data);
                    });
                    let now = frontier.frontier().first().copied();
                    if now != seen {
                        seen = now;
                        waker.wake();
                    }
                }
            },
        )
    }
}

/// Driver settings.
#[derive(Clone)]
pub struct SourceOptions {
    /// Allowed lateness in ms, for sources that do not promise a watermark.
    pub lateness_ms: i64,
    /// Optional flow control.
    pub throttle: Option<Throttle>,
    /// Counters to update.
    pub counters: Arc<SourceCounters>,
    /// Probe whose frontier is the time below which every output is durable; the driver
    /// passes it on to [`TelemetrySource::acknowledge`].
    pub durable: Option<ProbeHandle<u64>>,
}

/// The three streams of a source.
pub struct SourceStreams<'scope> {
    /// On-time readings.
    pub readings: Stream<'scope, u64, Vec<Sequenced>>,
    /// Readings rejected by validation, with field and reason.
    pub rejected: Stream<'scope, u64, Vec<Rejected>>,
    /// Late readings.
    pub late: Stream<'scope, u64, Vec<Telemetry>>,
}

/// Most records handed on per activation, so one source cannot starve the worker.
const MAX_PER_ACTIVATION: usize = 16 * 1024;

/// Runs `source` on this worker (each worker runs its own instance; give each its share).
pub fn telemetry_source<'scope, S: TelemetrySource>(
    scope: Scope<'scope, u64>,
    mut source: S,
    options: SourceOptions,
) -> SourceStreams<'scope> {
    let mut builder = OperatorBuilder::new(format!("Source({})", source.name()), scope);
    let address = builder.operator_info().address;
    // Other threads feeding the source wake this operator (and its parked worker) directly.
    let waker = scope.worker().sync_activator_for(address.to_vec());
    source.set_waker(std::sync::Arc::new(move || {
        // An error: the worker has shut down, and nothing is left to wake.
        let _ = waker.activate();
    }));
    if let Some(throttle) = &options.throttle {
        throttle.waker.set(scope.activator_for(address.clone()));
    }
    let activator = scope.activator_for(address);
    let (readings_out, readings) = builder.new_output();
    let (rejected_out, rejected) = builder.new_output();
    let (late_out, late) = builder.new_output();
    let mut readings_out = OutputBuilder::from(readings_out);
    let mut rejected_out = OutputBuilder::from(rejected_out);
    let mut late_out = OutputBuilder::from(late_out);

    builder.build(move |caps| {
        let mut caps = Some(caps);
        let mut watermark = EventKey(0);
        let mut max_seen: Option<EventKey> = None;
        let mut batch = SourceBatch::default();
        let SourceOptions {
            lateness_ms,
            throttle,
            counters,
            durable,
        } = options;
        let mut acknowledged = 0u64;

        move |_frontiers| {
            let Some(held) = caps.as_mut() else { return };
            if let Some(probe) = &durable {
                let frontier = probe.with_frontier(|f| f.first().copied().unwrap_or(u64::MAX));
                if frontier > acknowledged {
                    acknowledged = frontier;
                    if let Err(failure) = source.acknowledge(EventKey(frontier)) {
                        counters.fail(source.name(), failure);
                        caps = None;
                        return;
                    }
                }
            }
            // Whether the watermark is too far ahead of the end of the graph. Checked
            // between polls too: the rest of the graph does not run while this operator
            // does, and a whole activation's readings (thousands per worker, tens of
            // seconds of a fleet's) would otherwise all go past the limit at once and wait
            // in window state.
            let ahead = |watermark: EventKey| {
                throttle.as_ref().is_some_and(|t| {
                    let limit = watermark.0.saturating_sub(t.max_ahead_ms);
                    t.probe.less_than(&limit)
                })
            };
            if let Some(held_back) = throttle.as_ref().filter(|_| ahead(watermark)) {
                // Woken when the end of the graph moves on (`ThrottleWaker`); the timed
                // poll is only a safety net.
                activator.activate_after(held_back.poll);
                return;
            }
            let started = Instant::now();
            let mut handed = 0;
            let mut status = SourceStatus::Ready;
            while status == SourceStatus::Ready
                && handed < MAX_PER_ACTIVATION
                && started.elapsed() < Duration::from_millis(20)
                && !ahead(watermark)
            {
                status = match source.poll(&mut batch) {
                    Ok(s) => s,
                    Err(failure) => {
                        counters.fail(source.name(), failure);
                        SourceStatus::Finished
                    }
                };
                handed += batch.len();
                let mut out = readings_out.activate();
                let mut session = out.session(&held[0]);
                let mut late_out = late_out.activate();
                let mut late_session = late_out.session(&held[2]);
                let (mut on_time, mut late) = (0u64, batch.late.len() as u64);
                let mut all_on_time = true;
                for s in &batch.readings {
                    let key = s.key();
                    max_seen = Some(max_seen.map_or(key, |m| m.max(key)));
                    all_on_time &= key >= watermark;
                }
                if all_on_time {
                    // The usual case: the batch goes on whole, not copied reading by reading.
                    on_time = batch.readings.len() as u64;
                    if on_time > 0 {
                        session.give_container(&mut batch.readings);
                    }
                    batch.readings.clear();
                } else {
                    for s in batch.readings.drain(..) {
                        if s.key() < watermark {
                            late += 1;
                            late_session.give(s.reading);
                        } else {
                            on_time += 1;
                            session.give(s);
                        }
                    }
                }
                late_session.give_iterator(batch.late.drain(..).map(|s| s.reading));
                drop(session);
                drop(late_session);
                let rejected = batch.rejected.len() as u64;
                if rejected > 0 {
                    let mut out = rejected_out.activate();
                    out.session(&held[1])
                        .give_iterator(batch.rejected.drain(..));
                }
                counters.accepted.fetch_add(on_time, Ordering::Relaxed);
                counters.late.fetch_add(late, Ordering::Relaxed);
                counters.rejected.fetch_add(rejected, Ordering::Relaxed);

                // Advance the watermark: the source's promise, or the largest key seen less
                // the allowed lateness (within the same ordering group).
                let derived =
                    max_seen.map(|m| EventKey::new(m.group(), EventTime(m.time().0 - lateness_ms)));
                if let Some(next) = source.watermark().or(derived) {
                    if next > watermark {
                        watermark = next;
                        for cap in held.iter_mut() {
                            cap.downgrade(&watermark.0);
                        }
                    }
                }
            }
            match status {
                SourceStatus::Finished => caps = None,
                SourceStatus::Ready => activator.activate(),
                SourceStatus::Idle(Some(delay)) => activator.activate_after(delay),
                SourceStatus::Idle(None) => activator.activate_after(Duration::from_millis(10)),
            }
        }
    });

    SourceStreams {
        readings,
        rejected,
        late,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pmi_core::{RawReading, Sensor, Validator, SENSOR_COUNT};
    use timely::dataflow::operators::core::Inspect;
    use timely::dataflow::operators::{Input, Probe};

    /// The readings `source` hands on (no lateness), counted into `counted` as they pass.
    fn counted_readings<'scope, S: TelemetrySource>(
        scope: Scope<'scope, u64>,
        source: S,
        throttle: Option<Throttle>,
        counted: Arc<AtomicU64>,
    ) -> Stream<'scope, u64, Vec<Sequenced>> {
        let options = SourceOptions {
            lateness_ms: 0,
            throttle,
            counters: Arc::new(SourceCounters::default()),
            durable: None,
        };
        telemetry_source(scope, source, options)
            .readings
            .inspect_core(move |event| {
                if let Ok((_, readings)) = event {
                    counted.fetch_add(readings.len() as u64, Ordering::Relaxed);
                }
            })
    }

    /// Has readings until told to stop: one vehicle, one reading a second, five per poll;
    /// its watermark is its newest reading.
    struct Endless {
        next_ms: i64,
        stop: Arc<std::sync::atomic::AtomicBool>,
    }

    impl TelemetrySource for Endless {
        fn name(&self) -> &str {
            "endless"
        }

        fn poll(&mut self, batch: &mut SourceBatch) -> Result<SourceStatus, SourceFailure> {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(SourceStatus::Finished);
            }
            for _ in 0..5 {
                let mut values = [None; SENSOR_COUNT];
                values[Sensor::Rpm.index()] = Some(1500.0);
                let raw = RawReading::new("V1", self.next_ms, values);
                let reading = Validator::default()
                    .validate(raw, EventTime(self.next_ms))
                    .expect("a valid reading");
                batch.readings.push(Sequenced { group: 0, reading });
                self.next_ms += 1000;
            }
            Ok(SourceStatus::Ready)
        }

        fn watermark(&self) -> Option<EventKey> {
            Some(EventKey::new(0, EventTime(self.next_ms - 1000)))
        }
    }

    /// A throttled source stops once its watermark is `max_ahead` past the end of the
    /// graph, in the middle of an activation too (the rest of the graph does not run
    /// meanwhile), and stays stopped while the end of the graph does not move.
    #[test]
    fn a_throttled_source_stops_max_ahead_of_the_end_of_the_graph() {
        let handed = timely::execute_directly(|worker| {
            let probe = ProbeHandle::new();
            let handed = Arc::new(AtomicU64::new(0));
            let counted = handed.clone();
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let source = Endless {
                next_ms: 0,
                stop: stop.clone(),
            };
            // The end of the graph: an input not advanced holds the probe at time 0.
            let stuck = worker.dataflow::<u64, _, _>(|scope| {
                let (input, stream) = scope.new_input::<Vec<()>>();
                stream.probe_with(&probe);
                let throttle = Throttle {
                    probe: probe.clone(),
                    max_ahead_ms: 10_000,
                    waker: ThrottleWaker::default(),
                    poll: Duration::from_millis(1),
                };
                counted_readings(scope, source, Some(throttle), counted);
                input
            });
            for _ in 0..100 {
                worker.step();
            }
            // Let the dataflow finish.
            stop.store(true, Ordering::Relaxed);
            drop(stuck);
            handed.load(Ordering::Relaxed)
        });
        // Polls hand on 0–4 s and 5–9 s (watermark 9 s: not yet 10 s past 0), then 10–14 s,
        // after which the watermark is 14 s: too far ahead. Without the check between
        // polls, the first activation alone handed on thousands.
        assert_eq!(handed, 15);
    }

    /// A held source resumes as soon as the end of the graph moves on, woken by it: its
    /// own timed poll is an hour away.
    #[test]
    fn a_throttled_source_is_woken_when_the_end_of_the_graph_moves_on() {
        let (before, after) = timely::execute_directly(|worker| {
            let probe = ProbeHandle::new();
            let handed = Arc::new(AtomicU64::new(0));
            let counted = handed.clone();
            let source = Endless {
                next_ms: 0,
                stop: Arc::default(),
            };
            let waker = ThrottleWaker::default();
            let dataflow = worker.next_dataflow_index();
            let mut end = worker.dataflow::<u64, _, _>(|scope| {
                let (input, stream) = scope.new_input::<Vec<()>>();
                stream.wake_on_progress(&waker).probe_with(&probe);
                let throttle = Throttle {
                    probe: probe.clone(),
                    max_ahead_ms: 10_000,
                    waker: waker.clone(),
                    poll: Duration::from_secs(3600),
                };
                counted_readings(scope, source, Some(throttle), counted);
                input
            });
            for _ in 0..100 {
                worker.step();
            }
            let before = handed.load(Ordering::Relaxed);
            // The end of the graph moves to 20 s: the source may go on to 30 s.
            end.advance_to(EventKey::new(0, EventTime(20_000)).0);
            for _ in 0..100 {
                worker.step();
            }
            let after = handed.load(Ordering::Relaxed);
            // Torn down, not run to its end: a source nobody wakes would never finish.
            drop(end);
            worker.drop_dataflow(dataflow);
            (before, after)
        });
        assert_eq!(before, 15);
        // 15–19 s, 20–24 s, 25–29 s, 30–34 s: the watermark (34 s) is then too far ahead.
        assert_eq!(after, 35);
    }

    /// Fed by another thread; when empty, asks to be polled again only after an hour.
    struct Fed {
        rx: std::sync::mpsc::Receiver<i64>,
        waker: Arc<Mutex<Option<pmi_core::Waker>>>,
    }

    impl TelemetrySource for Fed {
        fn name(&self) -> &str {
            "fed"
        }

        fn set_waker(&mut self, waker: pmi_core::Waker) {
            *self.waker.lock().unwrap() = Some(waker);
        }

        fn poll(&mut self, batch: &mut SourceBatch) -> Result<SourceStatus, SourceFailure> {
            loop {
                match self.rx.try_recv() {
                    Ok(ms) => {
                        let mut values = [None; SENSOR_COUNT];
                        values[Sensor::Rpm.index()] = Some(1500.0);
                        let reading = Validator::default()
                            .validate(RawReading::new("V1", ms, values), EventTime(ms))
                            .expect("a valid reading");
                        batch.readings.push(Sequenced { group: 0, reading });
                    }
                    Err(std::sync::mpsc::TryRecvError::Empty) if batch.readings.is_empty() => {
                        return Ok(SourceStatus::Idle(Some(Duration::from_secs(3600))))
                    }
                    Err(std::sync::mpsc::TryRecvError::Empty) => return Ok(SourceStatus::Ready),
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        return Ok(SourceStatus::Finished)
                    }
                }
            }
        }
    }

    /// A source fed by another thread wakes its worker with the waker it is handed: a
    /// worker parked until the source's next timed poll (an hour away) resumes as soon as
    /// the feeder hands something over, and the run ends when the feeder does.
    #[test]
    fn a_source_fed_by_another_thread_wakes_its_parked_worker() {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let handed = timely::execute_directly(|worker| {
                let (tx, rx) = std::sync::mpsc::channel();
                let slot: Arc<Mutex<Option<pmi_core::Waker>>> = Arc::default();
                let source = Fed {
                    rx,
                    waker: slot.clone(),
                };
                let counted = Arc::new(AtomicU64::new(0));
                let count = counted.clone();
                let probe = worker.dataflow::<u64, _, _>(|scope| {
                    counted_readings(scope, source, None, count).probe().0
                });
                let waker = slot
                    .lock()
                    .unwrap()
                    .clone()
                    .expect("handed a waker when built");
                let feeder = std::thread::spawn(move || {
                    for i in 0..20 {
                        // After the worker has found the source empty and parked.
                        std::thread::sleep(Duration::from_millis(20));
                        tx.send(i * 1000).unwrap();
                        waker();
                    }
                    drop(tx);
                    waker();
                });
                while !probe.done() {
                    worker.step_or_park(None);
                }
                feeder.join().unwrap();
                counted.load(Ordering::Relaxed)
            });
            let _ = done_tx.send(handed);
        });
        let handed = done_rx
            .recv_timeout(Duration::from_secs(120))
            .expect("the worker woke for every reading, not at the source's hourly poll");
        assert_eq!(handed, 20);
    }
}

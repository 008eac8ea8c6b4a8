//! The event-time pane window operator: per vehicle, at every pane end the watermark passes,
//! the statistics of every window `(b − W, b]` (DESIGN.md, "Feature semantics").
//!
//! Readings are exchanged by vehicle, so each vehicle's state lives on one worker. The
//! operator's input frontier is the watermark: a pane `(b − P, b]` of a vehicle in ordering
//! group `g` is sealed once the frontier has passed `EventKey(g, b)`, and only then are its
//! readings folded, in time order. Sources stamp each reading at a time no later than its
//! own key, so every on-time reading is in before its pane seals; anything arriving for a
//! sealed pane goes to the `late` output (counted and kept, never dropped).
//!
//! ```
//! use std::sync::Arc;
//! use timely::dataflow::operators::{Capture, ToStream};
//! use timely::dataflow::operators::capture::Extract;
//! use timely::dataflow::operators::vec::Map;
//! use pmi_core::{RawReading, Sensor, Sequenced, Validator, WindowConfig, EventTime, SENSOR_COUNT};
//! use pmi_operators::windows::{PaneWindows, WindowSpec};
//!
//! let config = WindowConfig { channels: vec!["rpm".into()], ..Default::default() };
//! let spec = Arc::new(WindowSpec::new(&config).unwrap());
//! let features = timely::example(move |scope| {
//!     let mut values = [None; SENSOR_COUNT];
//!     values[Sensor::Rpm.index()] = Some(1500.0);
//!     let reading = Validator::default()
//!         .validate(RawReading::new("VEH_1", 5_000, values), EventTime(5_000))
//!         .unwrap();
//!     let input = vec![Sequenced { group: 0, reading }].to_stream(scope).container::<Vec<_>>();
//!     // Keep (pane end, rpm_count_60s, rpm_count_900s) of each batch's one row.
//!     let summary = input.pane_windows(spec).features;
//!     summary.map(|b| (b.pane_end().0, b.row(0).values[0] as u64, b.row(0).values[14] as u64)).capture()
//! });
//! let vectors: Vec<_> = features.extract().into_iter().flat_map(|(_, v)| v).collect();
//! // One reading keeps a vehicle active for the 90 pane ends of the 900 s window.
//! assert_eq!(vectors.len(), 90);
//! assert_eq!(vectors[0], (10_000, 1, 1));
//! assert_eq!(vectors[6], (70_000, 0, 1)); // out of the 60 s window, still in 900 s
//! ```

mod extremes;
pub mod oracle;
mod prefetch;
mod state;
mod table;

use std::sync::Arc;

use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use pmi_core::{
    EventKey, FeatureBatch, FeatureBatchBuilder, FeatureVector, RejectReason, Rejected, Sequenced,
    Telemetry, VehicleId,
};

pub use state::{InsertError, Scratch, VehicleWindows, WindowSpec, MAX_READINGS_PER_PANE};

/// The outputs of [`PaneWindows::pane_windows`].
pub struct WindowStreams<'scope> {
    /// The feature vectors of each pane end, one columnar batch per pane end (and ordering
    /// group) on each worker, stamped at `EventKey(group, pane end)`: one row per vehicle
    /// with a reading within the longest window.
    pub features: Stream<'scope, u64, Vec<FeatureBatch>>,
    /// Readings that arrived after their pane was sealed.
    pub late: Stream<'scope, u64, Vec<Telemetry>>,
    /// Readings refused at sealing: duplicates of an earlier `(vehicle, ts)`, or beyond
    /// [`MAX_READINGS_PER_PANE`].
    pub rejected: Stream<'scope, u64, Vec<Rejected>>,
}

/// Extension trait: sliding pane windows over a stream of sequenced readings.
pub trait PaneWindows<'scope> {
    /// Computes window features per vehicle (see the module docs).
    fn pane_windows(self, spec: Arc<WindowSpec>) -> WindowStreams<'scope>;
}

/// Vehicles evaluated per activation at most (whole boundaries: the last boundary begun is
/// finished), before the operator lets the rest of the worker's dataflow run.
const EVALUATIONS_PER_ACTIVATION: usize = 4096;

/// Gauges a worker's window operator publishes (for `/stats`, `pmi bench`).
#[derive(Clone, Debug, Default)]
pub struct WindowGauges {
    /// Vehicles with state.
    pub vehicles: usize,
    /// Bytes of window state over all vehicles.
    pub state_bytes: usize,
}

impl<'scope> PaneWindows<'scope> for Stream<'scope, u64, Vec<Sequenced>> {
    fn pane_windows(self, spec: Arc<WindowSpec>) -> WindowStreams<'scope> {
        pane_windows_with_gauges(self, spec, None)
    }
}

/// [`PaneWindows::pane_windows`], also publishing [`WindowGauges`] into `gauges` whenever
/// the operator runs (sampled every 64 activations: measuring walks every vehicle's state).
pub fn pane_windows_with_gauges<'scope>(
    input: Stream<'scope, u64, Vec<Sequenced>>,
    spec: Arc<WindowSpec>,
    gauges: Option<Arc<std::sync::Mutex<WindowGauges>>>,
) -> WindowStreams<'scope> {
    let mut builder = OperatorBuilder::new("PaneWindows".to_owned(), input.scope());
    let activator = input.scope().activator_for(builder.operator_info().address);
    let mut input = builder.new_input(input, crate::exchange::by_vehicle());
    let (features_out, features) = builder.new_output();
    let (late_out, late) = builder.new_output();
    let (rejected_out, rejected) = builder.new_output();
    let mut features_out = OutputBuilder::from(features_out);
    let mut late_out = OutputBuilder::from(late_out);
    let mut rejected_out = OutputBuilder::from(rejected_out);

    builder.build(move |_initial_caps| {
        // Each vehicle's state and when it is due (see `table`).
        let mut table = table::Table::default();
        // Capabilities for emitting features (port 0) and rejected readings (port 2), held
        // at or below the earliest scheduled evaluation.
        let mut caps: Option<(Capability<u64>, Capability<u64>)> = None;
        let mut scratch = Scratch::default();
        let mut values = Vec::new();
        let mut dups = Vec::new();
        let mut activations: u64 = 0;

        move |frontiers| {
            let mut features_out = features_out.activate();
            let mut late_out = late_out.activate();
            let mut rejected_out = rejected_out.activate();

            input.for_each(|cap, data| {
                let Some(time) = cap.least().copied() else { return };
                if caps.as_ref().is_none_or(|(c, _)| time < *c.time()) {
                    caps = Some((cap.delayed(&time, 0), cap.delayed(&time, 2)));
                }
                let mut late = late_out.session(&cap);
                // Read in place, not drained: a reading's values are copied once, from the
                // container into the vehicle's buffer (a drain moves each reading out first).
                for s in data.iter() {
                    // A reading stamped after its own pane end cannot be evaluated at that
                    // pane end any more: late, whatever the vehicle's state says.
                    let pane_end = EventKey::new(s.group, spec.pane_end(spec.pane_of(s.reading.ts)));
                    if pane_end.0 < time {
                        late.give(s.reading.clone());
                        continue;
                    }
                    let slot = table.slot(s.group, &s.reading.vehicle_id, &spec);
                    let entry = table.get_mut(slot);
                    match entry.windows.insert(&spec, s.reading.ts, s.reading.values) {
                        Ok(()) => {
                            let k = entry.windows.next_boundary(&spec).expect("just inserted");
                            let t = EventKey::new(s.group, spec.pane_end(k)).0;
                            if entry.scheduled.is_none_or(|old| t < old) {
                                table.schedule(slot, t);
                            }
                        }
                        Err(InsertError::Late) => late.give(s.reading.clone()),
                        Err(InsertError::PaneFull) => {
                            let detail = format!(
                                "more than {MAX_READINGS_PER_PANE} readings of one vehicle in one pane"
                            );
                            let raw = (&s.reading).into();
                            let mut session = rejected_out.session(&cap);
                            session.give(Rejected {
                                reading: raw,
                                field: "ts".into(),
                                reason: RejectReason::Malformed { detail },
                            });
                        }
                    }
                }
                data.clear();
            });

            // Evaluate the scheduled boundaries the frontier has passed, a bounded number
            // of vehicles per activation: when the frontier jumps (the end of the input
            // passes every vehicle's remaining panes), the operator yields between
            // batches so that its vectors flow on to the sinks while it computes more.
            let frontier = &frontiers[0];
            let mut evaluated = 0;
            while let Some(t) = table.first_due() {
                if frontier.less_equal(&t) {
                    break;
                }
                if evaluated >= EVALUATIONS_PER_ACTIVATION {
                    activator.activate();
                    break;
                }
                let (t, due) = table.take_due().expect("one is due");
                evaluated += due.len();
                let (fcap, rcap) = caps.as_ref().expect("a capability is held while work is scheduled");
                let fcap = fcap.delayed(&t);
                let rcap = rcap.delayed(&t);
                let key = EventKey(t);
                let k = spec.pane_of(key.time());
                let mut batch = FeatureBatchBuilder::new(
                    spec.pane_end(k),
                    spec.fingerprint(),
                    spec.schema().len(),
                    due.len(),
                );
                for (i, d) in due.iter().enumerate() {
                    // Load the next vehicles' states while this one is evaluated, in steps
                    // that each read only what the step before loaded: the slot three
                    // ahead; two ahead, the deques' headers; next, what `evaluate` reads.
                    if let Some(next) = due.get(i + 3) {
                        table.prefetch(next);
                    }
                    if let Some(next) = due.get(i + 2).and_then(|n| table.get(n)) {
                        next.windows.prefetch_headers();
                    }
                    if let Some(next) = due.get(i + 1).and_then(|n| table.get(n)) {
                        next.windows.prefetch(&spec, k);
                    }
                    let Some(entry) = table.live(d, t) else {
                        continue; // superseded by an earlier reschedule
                    };
                    dups.clear();
                    if entry.windows.evaluate(&spec, k, &mut scratch, &mut values, &mut dups) {
                        batch.push(d.vehicle.clone(), &values);
                    }
                    if !dups.is_empty() {
                        let mut rsession = rejected_out.session(&rcap);
                        for (ts, vals) in dups.drain(..) {
                            let reading = Telemetry { vehicle_id: d.vehicle.clone(), ts, values: vals };
                            rsession.give(Rejected {
                                reading: (&reading).into(),
                                field: "ts".into(),
                                reason: RejectReason::Duplicate,
                            });
                        }
                    }
                    match entry.windows.next_boundary(&spec) {
                        Some(next) => {
                            let group = key.group();
                            table.schedule(d.slot, EventKey::new(group, spec.pane_end(next)).0);
                        }
                        None => table.remove(d.slot),
                    }
                }
                table.recycle(due);
                if let Some(batch) = batch.finish() {
                    features_out.session(&fcap).give(batch);
                }
            }

            // Hold capabilities only as low as the earliest scheduled evaluation.
            match table.first_due() {
                Some(t) => {
                    if let Some((f, r)) = caps.as_mut() {
                        if *f.time() < t {
                            f.downgrade(&t);
                            r.downgrade(&t);
                        }
                    }
                }
                None => caps = None,
            }

            // Sampled: measuring walks every vehicle's state.
            activations += 1;
            if let Some(g) = gauges.as_ref().filter(|_| activations % 64 == 1) {
                let mut g = g.lock().expect("gauges lock");
                g.vehicles = table.len();
                g.state_bytes = table.states().map(VehicleWindows::state_bytes).sum();
            }
        }
    });

    WindowStreams {
        features,
        late,
        rejected,
    }
}

/// The feature vector of one vehicle at the end of the pane holding `at` (default: its
/// latest reading) from a batch of its readings, by the operator's own per-vehicle state
/// machine: what a request/response caller (the prediction API) gets is exactly what the
/// stream would emit at that pane end. Readings after `at`'s pane are ignored; duplicates
/// (same time) keep the first, as in the stream. `None` without a reading within the
/// longest window before that pane end.
pub fn vector_from_readings(
    spec: &WindowSpec,
    vehicle_id: VehicleId,
    readings: &[Telemetry],
    at: Option<pmi_core::EventTime>,
) -> Option<FeatureVector> {
    let last = readings.iter().map(|r| r.ts).max()?;
    let k = spec.pane_of(at.unwrap_or(last));
    let mut windows = VehicleWindows::new(spec);
    for r in readings.iter().filter(|r| spec.pane_of(r.ts) <= k) {
        // A full pane keeps its first readings, like the stream.
        let _ = windows.insert(spec, r.ts, r.values);
    }
    let (mut scratch, mut values, mut dups) = (Scratch::default(), Vec::new(), Vec::new());
    windows
        .evaluate(spec, k, &mut scratch, &mut values, &mut dups)
        .then(|| FeatureVector {
            vehicle_id,
            pane_end: spec.pane_end(k),
            schema: spec.fingerprint(),
            values: values.into(),
        })
}

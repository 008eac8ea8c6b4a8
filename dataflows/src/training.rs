//! The `training-set` graph: labelled feature vectors for training and evaluation, computed
//! by the same graph (the same window operator, the same features) as the live stream, so
//! that training and serving cannot disagree.
//!
//! The simulated fleet is read in bursts before sampled moments ([`FleetSnapshots`]); the
//! graph turns each burst into feature vectors, and the vector at each moment is kept and
//! labelled from the simulator's ground truth ([`pmi_models::dataset::label_at`]). Vectors
//! whose longest window saw no engine running (a parked vehicle's sensors say nothing about
//! its engine, pumps or mounts) are left out and counted: the models are trained and
//! evaluated on vehicles in service.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pmi_core::{
    Channel, EventKey, EventTime, FailureEvent, FeatureSchema, FeatureVector, Prediction,
    RawReading, Sensor, Sequenced, Severity, SourceBatch, SourceFailure, SourceStatus, Stat,
    TelemetrySource, Validator,
};
use pmi_models::dataset::{label_at, Dataset, Event};
use pmi_sinks::{CountingSink, MemorySink};
use pmi_sources::fleet::{snapshot_moments, Fleet, FleetSnapshots, SnapshotPlan};

use crate::graph::{run, GraphConfig, RunReport, ScoreFn, WorkerSinks};
use crate::jobs::FleetSpec;
use crate::DataflowError;

/// Repair follows a failure after this long in the simulator (the label covers it).
pub const REPAIR_MS: i64 = 86_400_000;

/// A simulated training set to compute.
#[derive(Clone, Debug)]
pub struct SimulatedTrainingSet {
    /// The fleet.
    pub fleet: FleetSpec,
    /// How it is sampled.
    pub plan: SnapshotPlan,
    /// Label horizon: positive when a component fails within this, ms.
    pub horizon_ms: i64,
    /// Graph settings (windows, workers).
    pub graph: GraphConfig,
}

/// A computed training set.
pub struct TrainingSet {
    /// The labelled vectors.
    pub dataset: Dataset,
    /// The graph's run.
    pub run: RunReport,
    /// Snapshots taken (vehicles × moments).
    pub snapshots: u64,
    /// Snapshots left out because the engine did not run in the longest window.
    pub parked: u64,
    /// Failures of the simulated fleet.
    pub ground_truth: Vec<FailureEvent>,
}

/// The graph's source: a worker's share of the fleet in bursts.
struct SnapshotSource {
    snaps: FleetSnapshots,
    lateness_ms: i64,
    validator: Validator,
    raw: Vec<RawReading>,
    last_tick: EventTime,
    ticks: Arc<AtomicU64>,
}

impl TelemetrySource for SnapshotSource {
    fn name(&self) -> &str {
        "snapshots"
    }

    fn poll(&mut self, batch: &mut SourceBatch) -> Result<SourceStatus, SourceFailure> {
        for _ in 0..64 {
            self.raw.clear();
            let Some(tick) = self.snaps.tick(&mut self.raw) else {
                return Ok(SourceStatus::Finished);
            };
            self.last_tick = tick;
            for raw in self.raw.drain(..) {
                match self.validator.validate(raw, tick) {
                    Ok(reading) => batch.readings.push(Sequenced { group: 0, reading }),
                    Err(rejected) => batch.rejected.push(rejected),
                }
            }
        }
        self.ticks.fetch_add(64, Ordering::Relaxed);
        Ok(SourceStatus::Ready)
    }

    fn watermark(&self) -> Option<EventKey> {
        // Bursts are in time order and nothing is late; the next burst may start far ahead,
        // which closes the previous burst's windows.
        Some(EventKey::new(
            0,
            EventTime(self.snaps.fleet().next_tick().0 - self.lateness_ms),
        ))
    }
}

/// Index of the "engine ran" test in a schema: the longest window's rpm maximum.
fn engine_ran_feature(schema: &FeatureSchema) -> Option<usize> {
    let longest = *schema.windows_s.last()?;
    schema.index_of(Channel::Sensor(Sensor::Rpm), longest, Stat::Max)
}

/// Computes a simulated training set; `progress(done, total)` is called every few seconds
/// with simulated ticks.
pub fn simulated_training_set(
    job: &SimulatedTrainingSet,
    progress: impl Fn(u64, u64) + Send + 'static,
) -> Result<TrainingSet, DataflowError> {
    let schema = job.graph.window.schema()?;
    let span_ms = job.plan.days as i64 * 86_400_000;
    let config = job
        .fleet
        .simulator_config(Duration::from_millis(span_ms as u64));
    let input = |e: pmi_sources::fleet::SimulatorError| DataflowError::Input(e.to_string());
    let plan = SnapshotPlan {
        window_ms: *job.graph.window.windows_s.last().unwrap_or(&900) as i64 * 1000,
        pane_ms: job.graph.window.pane_s as i64 * 1000,
        ..job.plan.clone()
    };
    let moments = snapshot_moments(&config, &plan).map_err(input)?;
    let whole = Fleet::new(config.clone()).map_err(input)?;
    let ground_truth = whole.ground_truth().to_vec();
    let vehicles: Vec<String> = whole.vehicles().map(|v| v.id.to_string()).collect();
    drop(whole);

    let keep: Arc<HashSet<i64>> = Arc::new(moments.iter().map(|m| m.0).collect());
    let rows = Arc::new(Mutex::new(Vec::<FeatureVector>::new()));
    let ticks = Arc::new(AtomicU64::new(0));
    let total_ticks = moments.len() as u64 * (plan.window_ms / config.interval_ms) as u64;
    let lateness_ms = job.graph.window.lateness_ms();

    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let reporter = {
        let ticks = ticks.clone();
        let workers = job.graph.workers.max(1) as u64;
        std::thread::spawn(move || loop {
            match done_rx.recv_timeout(Duration::from_secs(3)) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    progress(ticks.load(Ordering::Relaxed) / workers, total_ticks)
                }
                _ => return,
            }
        })
    };

    let make_source = {
        let (config, moments, plan, ticks) =
            (config.clone(), moments.clone(), plan.clone(), ticks.clone());
        move |worker: usize, peers: usize| {
            let fleet = Fleet::partition(config.clone(), |id| {
                id.route_hash() as usize % peers == worker
            })
            .map_err(input)?;
            Ok(SnapshotSource {
                snaps: FleetSnapshots::new(fleet, moments.clone(), &plan),
                lateness_ms,
                validator: Validator::default(),
                raw: Vec::new(),
                last_tick: EventTime(0),
                ticks: ticks.clone(),
            })
        }
    };
    let make_sinks = {
        let (rows, keep) = (rows.clone(), keep.clone());
        move |_worker: usize| {
            Ok(WorkerSinks {
                telemetry: None,
                features: Box::new(Snapshots {
                    keep: keep.clone(),
                    inner: MemorySink { rows: rows.clone() },
                }),
                predictions: Box::new(CountingSink::default()),
                alerts: Box::new(CountingSink::default()),
                dead_letter: Box::new(CountingSink::default()),
                late: Box::new(CountingSink::default()),
            })
        }
    };
    let unscored: ScoreFn = Arc::new(|v: &FeatureVector| Prediction {
        vehicle_id: v.vehicle_id.clone(),
        pane_end: v.pane_end,
        risk: 0.0,
        severity: Severity::Normal,
        component: None,
        model: "none".into(),
        explanation: Vec::new(),
    });
    let graph = GraphConfig {
        // Only the snapshot vectors matter; no need to hold the source back for alerts.
        max_ahead_ms: u64::MAX / 4,
        ..job.graph.clone()
    };
    let started = Instant::now();
    let report = run(&graph, make_source, make_sinks, unscored, false);
    let _ = done_tx.send(());
    let _ = reporter.join();
    let report = report?;
    tracing::info!(
        vectors = report.features,
        readings = report.read,
        secs = started.elapsed().as_secs_f64(),
        "training-set graph done"
    );

    let mut vectors = std::mem::take(&mut *rows.lock().expect("rows lock"));
    vectors.sort_by(|a, b| (&a.vehicle_id, a.pane_end).cmp(&(&b.vehicle_id, b.pane_end)));
    let mut failures: HashMap<&str, Vec<FailureEvent>> = HashMap::new();
    for f in &ground_truth {
        failures
            .entry(f.vehicle_id.as_str())
            .or_default()
            .push(f.clone());
    }
    let mut ds = Dataset::for_schema(&schema);
    for v in &vehicles {
        ds.group(v);
    }
    let ran = engine_ran_feature(&schema);
    let mut parked = 0u64;
    let none = Vec::new();
    for v in &vectors {
        if let Some(i) = ran {
            if !(v.values[i] > 0.0) {
                parked += 1;
                continue;
            }
        }
        let f = failures.get(v.vehicle_id.as_str()).unwrap_or(&none);
        let label = label_at(f, v.pane_end.0, job.horizon_ms, REPAIR_MS).map(|c| c.index() as u16);
        let group = ds.group(v.vehicle_id.as_str());
        ds.push_vector(v, group, label)
            .map_err(|e| DataflowError::Input(e.to_string()))?;
    }
    let last_moment = moments.last().map(|m| m.0).unwrap_or(0);
    for f in &ground_truth {
        if f.failure.0 <= last_moment {
            let group = ds.group(f.vehicle_id.as_str());
            ds.events.push(Event {
                group,
                class: f.component.index() as u16,
                failure_ms: f.failure.0,
            });
        }
    }
    Ok(TrainingSet {
        snapshots: vectors.len() as u64,
        parked,
        dataset: ds,
        run: report,
        ground_truth,
    })
}

/// The features sink of the training-set graph: keeps the vectors at snapshot moments.
struct Snapshots {
    keep: Arc<HashSet<i64>>,
    inner: MemorySink<FeatureVector>,
}

impl pmi_sinks::ChunkSink<FeatureVector> for Snapshots {
    fn send(&mut self, mut chunk: Vec<FeatureVector>) -> Result<(), pmi_sinks::SinkError> {
        chunk.retain(|v| self.keep.contains(&v.pane_end.0));
        if chunk.is_empty() {
            return Ok(());
        }
        self.inner.send(chunk)
    }

    fn close(self: Box<Self>) -> Result<pmi_sinks::SinkStats, pmi_sinks::SinkError> {
        Box::new(self.inner).close()
    }
}

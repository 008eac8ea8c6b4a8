//! The `training-set` graph: labelled feature vectors for training and evaluation, computed
//! by the same graph (the same window operator, the same features) as the live stream, so
//! that training and serving cannot disagree.
//!
//! The simulated fleet is read in bursts before sampled moments ([`FleetSnapshots`]); the
//! graph turns each burst into feature vectors, and the vector at each moment (a full
//! window) plus one partial window around it (filling up, or emptying after the burst) are
//! kept and labelled from the simulator's ground truth ([`pmi_models::dataset::label_at`]). The
//! moments cover the whole day, so the models also learn what a parked vehicle looks like
//! (and that its sensors say little about its engine, pumps or mounts). Evaluation reports
//! two populations: vehicles in service (the engine ran in the longest window: the
//! headline figures) and all vectors.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pmi_core::{
    EventKey, EventTime, FailureEvent, FeatureBatch, FeatureSchema, FeatureVector, Prediction,
    RawReading, Sequenced, Severity, SourceBatch, SourceFailure, SourceStatus, TelemetrySource,
    Validator,
};
use pmi_models::dataset::{label_at, split_by_group, Dataset, Event, SplitShares};
use pmi_models::ensemble::Ensemble;
use pmi_models::evaluate::{evaluate, Evaluation};
use pmi_models::registry::Registry;
use pmi_models::train::TrainParams;
use pmi_sinks::{CountingSink, MemorySink};
use pmi_sources::fleet::{snapshot_moments, Fleet, FleetSnapshots, SnapshotPlan};
use serde::Serialize;

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
    /// Snapshots whose longest window saw no engine running.
    pub parked: u64,
    /// Per dataset row: the engine ran in the longest window (true when the schema has no
    /// rpm to tell).
    pub in_service: Vec<bool>,
    /// Failures of the simulated fleet.
    pub ground_truth: Vec<FailureEvent>,
}

/// The graph's source: a worker's share of the fleet in bursts.
struct SnapshotSource {
    snaps: FleetSnapshots,
    lateness_ms: i64,
    validator: Validator,
    raw: Vec<RawReading>,
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

/// The pane ends a simulated training set keeps: each snapshot moment (a full window), and
/// for each moment one more, at random either while the burst is still filling the window
/// (a vehicle that has just started reporting) or after it (a vehicle gone silent, its
/// window emptying). The stream emits such vectors too, and a model that never saw them
/// would read an emptying window as a fault.
fn kept_pane_ends(moments: &[EventTime], plan: &SnapshotPlan, seed: u64) -> HashSet<i64> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x9A27_1A1E_5EED);
    let panes = (plan.window_ms / plan.pane_ms).max(2);
    let mut keep = HashSet::with_capacity(moments.len() * 2);
    for m in moments {
        keep.insert(m.0);
        let offset = rng.gen_range(1..panes) * plan.pane_ms;
        keep.insert(if rng.gen_bool(0.5) {
            m.0 - offset
        } else {
            m.0 + offset
        });
    }
    keep
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

    let keep: Arc<HashSet<i64>> = Arc::new(kept_pane_ends(&moments, &plan, config.seed));
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
                ticks: ticks.clone(),
            })
        }
    };
    let make_sinks = {
        let (rows, keep) = (rows.clone(), keep.clone());
        move |_worker: usize| {
            let keep = keep.clone();
            Ok(collecting_sinks(&rows, move |pane_end| {
                keep.contains(&pane_end.0)
            }))
        }
    };
    let started = Instant::now();
    let report = run(&job.graph, make_source, make_sinks, unscored(), false);
    let _ = done_tx.send(());
    let _ = reporter.join();
    let report = report?;
    tracing::info!(
        vectors = report.features,
        readings = report.read,
        secs = started.elapsed().as_secs_f64(),
        "training-set graph done"
    );

    let vectors = std::mem::take(&mut *rows.lock().expect("rows lock"));
    let last_moment = moments.last().map(|m| m.0).unwrap_or(0);
    labelled(
        &schema,
        vectors,
        &vehicles,
        ground_truth,
        job.horizon_ms,
        last_moment,
        report,
    )
}

/// Labels vectors from ground truth into a training set (rows sorted by vehicle and time).
fn labelled(
    schema: &FeatureSchema,
    mut vectors: Vec<FeatureVector>,
    vehicles: &[String],
    ground_truth: Vec<FailureEvent>,
    horizon_ms: i64,
    last_time: i64,
    report: RunReport,
) -> Result<TrainingSet, DataflowError> {
    vectors.sort_by(|a, b| (&a.vehicle_id, a.pane_end).cmp(&(&b.vehicle_id, b.pane_end)));
    let mut failures: HashMap<&str, Vec<FailureEvent>> = HashMap::new();
    for f in &ground_truth {
        failures
            .entry(f.vehicle_id.as_str())
            .or_default()
            .push(f.clone());
    }
    let mut ds = Dataset::for_schema(schema);
    for v in vehicles {
        ds.group(v);
    }
    let ran = schema.engine_ran();
    let mut parked = 0u64;
    let mut in_service = Vec::with_capacity(vectors.len());
    let none = Vec::new();
    for v in &vectors {
        let running = ran.is_none_or(|i| v.values[i] > 0.0);
        parked += u64::from(!running);
        in_service.push(running);
        let f = failures.get(v.vehicle_id.as_str()).unwrap_or(&none);
        let label = label_at(f, v.pane_end.0, horizon_ms, REPAIR_MS).map(|c| c.index() as u16);
        let group = ds.group(v.vehicle_id.as_str());
        ds.push_vector(v, group, label)
            .map_err(|e| DataflowError::Input(e.to_string()))?;
    }
    for f in &ground_truth {
        if f.failure.0 <= last_time {
            let group = ds.group(f.vehicle_id.as_str());
            ds.events.push(Event {
                group,
                class: f.component.index() as u16,
                failure_ms: f.failure.0,
            });
        }
    }
    Ok(TrainingSet {
        parked,
        in_service,
        dataset: ds,
        run: report,
        ground_truth,
    })
}

/// A training set from recorded telemetry: Parquet through the backfill graph, labelled
/// from a ground-truth table.
#[derive(Clone, Debug)]
pub struct ParquetTrainingSet {
    /// Telemetry Parquet (file or folder), any row order.
    pub telemetry: String,
    /// Ground truth (file or folder, or an `s3://` URL): `vehicle_id`, `component`,
    /// `onset`, `failure`.
    pub ground_truth: String,
    /// Keep one vector per vehicle every this many ms of event time (consecutive vectors
    /// are nearly identical), e.g. 15 minutes.
    pub every_ms: i64,
    /// Label horizon, ms.
    pub horizon_ms: i64,
    /// Graph settings.
    pub graph: GraphConfig,
}

/// Computes a training set from recorded telemetry with the backfill graph.
pub fn parquet_training_set(job: &ParquetTrainingSet) -> Result<TrainingSet, DataflowError> {
    let schema = job.graph.window.schema()?;
    if job.every_ms <= 0 || job.every_ms % job.graph.window.pane_ms() != 0 {
        return Err(DataflowError::Input(format!(
            "the sampling interval must be a positive multiple of the pane ({} ms)",
            job.graph.window.pane_ms()
        )));
    }
    let ground_truth = pmi_sources::table::read_ground_truth(&job.ground_truth)
        .map_err(|e| DataflowError::Input(e.to_string()))?;
    let plan = Arc::new(crate::backfill::plan(
        &job.telemetry,
        Default::default(),
        job.graph.window.lateness_ms(),
        job.graph.local_workers(),
    )?);
    let rows = Arc::new(Mutex::new(Vec::<FeatureVector>::new()));
    let every = job.every_ms;
    let make_sinks = {
        let rows = rows.clone();
        move |_worker: usize| {
            Ok(collecting_sinks(&rows, move |pane_end| {
                pane_end.0.rem_euclid(every) == 0
            }))
        }
    };
    let p = plan.clone();
    let graph = crate::backfill::graph_config(job.graph.clone());
    let report = run(
        &graph,
        move |w, peers| Ok(crate::backfill::ParquetSource::new(&p, w, peers)),
        make_sinks,
        unscored(),
        false,
    )?;
    tracing::info!(
        vectors = report.features,
        readings = report.read,
        rejected = report.rejected,
        "training-set graph over Parquet done"
    );
    let vectors = std::mem::take(&mut *rows.lock().expect("rows lock"));
    let mut vehicles: Vec<String> = vectors.iter().map(|v| v.vehicle_id.to_string()).collect();
    vehicles.sort();
    vehicles.dedup();
    let last = vectors.iter().map(|v| v.pane_end.0).max().unwrap_or(0);
    labelled(
        &schema,
        vectors,
        &vehicles,
        ground_truth,
        job.horizon_ms,
        last,
        report,
    )
}

fn unscored() -> ScoreFn {
    Arc::new(|v: pmi_core::FeatureRow<'_>| Prediction {
        vehicle_id: v.vehicle_id.clone(),
        pane_end: v.pane_end,
        risk: 0.0,
        severity: Severity::Normal,
        component: None,
        model: "none".into(),
        explanation: Vec::new(),
    })
}

/// The outputs of a training-set graph on one worker: the features it keeps go to the
/// shared `rows`, everything else is only counted.
fn collecting_sinks(
    rows: &Arc<Mutex<Vec<FeatureVector>>>,
    keep: impl Fn(EventTime) -> bool + Send + 'static,
) -> WorkerSinks {
    WorkerSinks {
        telemetry: None,
        features: Box::new(Kept {
            keep: Box::new(keep),
            inner: MemorySink { rows: rows.clone() },
            kept: 0,
        }),
        predictions: Box::new(CountingSink::default()),
        alerts: Box::new(CountingSink::default()),
        dead_letter: Box::new(CountingSink::default()),
        late: Box::new(CountingSink::default()),
        resume: Default::default(),
        database: None,
    }
}

/// The features sink of a training-set graph: keeps the vectors of the pane ends `keep`
/// accepts (snapshot moments, a sampling grid), whole batches at a time.
struct Kept {
    keep: Box<dyn Fn(EventTime) -> bool + Send>,
    inner: MemorySink<FeatureVector>,
    kept: u64,
}

impl pmi_sinks::ChunkSink<FeatureBatch> for Kept {
    fn send(&mut self, batches: Vec<FeatureBatch>) -> Result<(), pmi_sinks::SinkError> {
        let chunk: Vec<FeatureVector> = batches
            .iter()
            .filter(|b| (self.keep)(b.pane_end()))
            .flat_map(FeatureBatch::vectors)
            .collect();
        if chunk.is_empty() {
            return Ok(());
        }
        self.kept += chunk.len() as u64;
        self.inner.send(chunk)
    }

    fn close(self: Box<Self>) -> Result<pmi_sinks::SinkStats, pmi_sinks::SinkError> {
        // The memory sink is shared by the workers: report this worker's rows only.
        Ok(pmi_sinks::SinkStats {
            rows: self.kept,
            ..Default::default()
        })
    }
}

/// Where a training set comes from.
#[derive(Clone, Debug)]
pub enum TrainingInput {
    /// The simulator, in snapshots.
    Simulated(SimulatedTrainingSet),
    /// Recorded telemetry and ground truth.
    Parquet(ParquetTrainingSet),
}

impl TrainingInput {
    /// Computes the set, logging progress as `what`.
    pub fn compute(&self, what: &'static str) -> Result<TrainingSet, DataflowError> {
        match self {
            TrainingInput::Simulated(s) => simulated_training_set(s, move |done, total| {
                tracing::info!(
                    "{what}: {:.0}% of the snapshot bursts simulated and windowed",
                    100.0 * done as f64 / total.max(1) as f64
                )
            }),
            TrainingInput::Parquet(p) => parquet_training_set(p),
        }
    }

    fn horizon_ms(&self) -> i64 {
        match self {
            TrainingInput::Simulated(s) => s.horizon_ms,
            TrainingInput::Parquet(p) => p.horizon_ms,
        }
    }

    fn describe(&self) -> String {
        match self {
            TrainingInput::Simulated(s) => format!(
                "simulator: {} vehicles × {} days, seed {}, {} snapshots per day",
                s.fleet.vehicles, s.plan.days, s.fleet.seed, s.plan.per_day
            ),
            TrainingInput::Parquet(p) => format!(
                "telemetry {} with ground truth {}, a vector every {} s",
                p.telemetry,
                p.ground_truth,
                p.every_ms / 1000
            ),
        }
    }
}

/// `pmi train`: training set (simulated or recorded) → split by vehicle → train → evaluate
/// on the held-out vehicles → publish to the registry.
#[derive(Clone, Debug)]
pub struct TrainJob {
    /// The training set.
    pub set: TrainingInput,
    /// Training settings (the seed also drives the split).
    pub params: TrainParams,
    /// Split shares.
    pub shares: SplitShares,
    /// The registry folder.
    pub registry: PathBuf,
    /// Mark the new version current.
    pub make_current: bool,
    /// Also write the training set (with its split) as a Parquet table here.
    pub export: Option<String>,
}

/// What a training run did.
#[derive(Clone, Debug, Serialize)]
pub struct TrainOutcome {
    /// The published version.
    pub version: String,
    /// Its folder.
    pub path: PathBuf,
    /// Rows in the training set.
    pub rows: usize,
    /// Positive rows.
    pub positives: usize,
    /// Rows whose longest window saw no engine running.
    pub parked: u64,
    /// Vehicles in train / validation / test.
    pub vehicles: [usize; 3],
    /// Readings simulated through the graph.
    pub readings: u64,
    /// Seconds computing the training set, training, evaluating.
    pub seconds: [f64; 3],
    /// The held-out evaluation, vehicles in service (the headline).
    pub evaluation: Evaluation,
    /// The held-out evaluation over all vectors, parked ones included.
    pub all_vectors: Evaluation,
}

fn model_err(e: pmi_models::ModelError) -> DataflowError {
    DataflowError::Input(e.to_string())
}

/// Runs a [`TrainJob`], logging progress.
pub fn train(job: &TrainJob) -> Result<TrainOutcome, DataflowError> {
    let started = Instant::now();
    let set = job.set.compute("training set")?;
    let t_set = started.elapsed().as_secs_f64();
    let ds = &set.dataset;
    tracing::info!(
        rows = ds.len(),
        positives = ds.positives(),
        parked = set.parked,
        "training set ready"
    );
    let split = split_by_group(ds, job.shares, job.params.seed).map_err(model_err)?;
    if let Some(location) = &job.export {
        let rows = export_table(location, ds, &split, &set.in_service)?;
        tracing::info!(rows, to = %location, "training set exported");
    }
    let vehicles = |rows: &[usize]| {
        let mut g: Vec<u32> = rows.iter().map(|r| ds.groups[*r]).collect();
        g.sort_unstable();
        g.dedup();
        g.len()
    };
    let trained_on = job.set.describe();
    let t0 = Instant::now();
    let mut model = pmi_models::train::train(
        ds,
        &split,
        &job.params,
        job.set.horizon_ms(),
        &trained_on,
        |step| tracing::info!(?step, "training"),
    )
    .map_err(model_err)?;
    let t_train = t0.elapsed().as_secs_f64();
    // Claim the version first, so the metrics and the report name it.
    let registry = Registry::new(&job.registry);
    let version = registry.reserve().map_err(model_err)?;
    model.set_version(version.clone());
    let t0 = Instant::now();
    let in_service: Vec<usize> = split
        .test
        .iter()
        .copied()
        .filter(|r| set.in_service[*r])
        .collect();
    let evaluation = evaluate(&model, ds, &in_service).map_err(model_err)?;
    let all_vectors = evaluate(&model, ds, &split.test).map_err(model_err)?;
    let t_eval = t0.elapsed().as_secs_f64();

    let mut files = vec![
        (
            "metrics.json".to_owned(),
            serde_json::to_vec_pretty(&serde_json::json!({
                "in_service": evaluation,
                "all_vectors": all_vectors,
            }))
            .map_err(|e| DataflowError::Input(e.to_string()))?,
        ),
        ("report.txt".to_owned(), {
            let mut text = format!(
                "trained on {trained_on}\n{} rows ({} positive, horizon {} days), {} of them parked (engine off for the whole window)\nvehicles: {} train, {} validation, {} test (held out: {})\nstacker weights [intercept, trees, anomaly, rules]: {:?}\n\n",
                ds.len(),
                ds.positives(),
                job.set.horizon_ms() / 86_400_000,
                set.parked,
                vehicles(&split.train),
                vehicles(&split.valid),
                vehicles(&split.test),
                split.test_groups.join(" "),
                model.stacker.weights,
            );
            text.push_str("held-out vehicles in service (the engine ran in the longest window):\n");
            text.push_str(&evaluation.render_text());
            text.push_str("\nheld-out vehicles, all vectors (parked included):\n");
            text.push_str(&all_vectors.render_text());
            text.into_bytes()
        }),
        (
            "training.json".to_owned(),
            serde_json::to_vec_pretty(&serde_json::json!({
                "params": job.params,
                "split": job.shares,
                "data": trained_on,
                "horizon_ms": job.set.horizon_ms(),
                "test_vehicles": split.test_groups,
            }))
            .map_err(|e| DataflowError::Input(e.to_string()))?,
        ),
    ];
    for (name, svg) in evaluation.plots().map_err(model_err)? {
        files.push((name, svg.into_bytes()));
    }
    registry
        .publish_as(&version, &mut model, &files, job.make_current)
        .map_err(model_err)?;
    Ok(TrainOutcome {
        path: registry.path_of(&version),
        version,
        rows: ds.len(),
        positives: ds.positives(),
        parked: set.parked,
        vehicles: [
            vehicles(&split.train),
            vehicles(&split.valid),
            vehicles(&split.test),
        ],
        readings: set.run.read,
        seconds: [t_set, t_train, t_eval],
        evaluation,
        all_vectors,
    })
}

/// `pmi evaluate`: a model on a fresh simulated fleet (another seed: vehicles it never saw)
/// or on recorded telemetry, through the training-set graph, on the vectors of vehicles in
/// service.
pub fn evaluate_on(
    model: &Ensemble,
    input: &TrainingInput,
) -> Result<(Evaluation, TrainingSet), DataflowError> {
    let window = match input {
        TrainingInput::Simulated(s) => &s.graph.window,
        TrainingInput::Parquet(p) => &p.graph.window,
    };
    model.check_schema(&window.schema()?).map_err(model_err)?;
    let ts = input.compute("evaluation set")?;
    let rows: Vec<usize> = (0..ts.dataset.len())
        .filter(|r| ts.in_service[*r])
        .collect();
    let ev = evaluate(model, &ts.dataset, &rows).map_err(model_err)?;
    Ok((ev, ts))
}

/// `pmi train --table`: the ensemble on an operator's labelled table, with the table's own
/// split (a split column), a separate test table, or a stratified (or, with groups, a
/// grouped) split by seed; evaluated on the test rows and published.
pub struct TableTrainJob {
    /// The table.
    pub table: pmi_sources::table::Table,
    /// A separate test table (same columns).
    pub test: Option<pmi_sources::table::Table>,
    /// What the data is, for the model's metadata.
    pub trained_on: String,
    /// Training settings.
    pub params: TrainParams,
    /// Split shares (when the table fixes no split).
    pub shares: SplitShares,
    /// Registry folder.
    pub registry: PathBuf,
    /// Mark the new version current.
    pub make_current: bool,
}

/// Trains and publishes a table model; returns the version, its folder and the evaluation.
pub fn train_table(job: TableTrainJob) -> Result<(String, PathBuf, Evaluation), DataflowError> {
    let mut ds = job.table.dataset;
    let has_groups = ds.groups.iter().any(|g| *g as usize != 0) && !ds.group_names.is_empty();
    let mut split = match (job.table.split, &job.test) {
        (Some(s), None) => s,
        _ if has_groups => split_by_group(&ds, job.shares, job.params.seed).map_err(model_err)?,
        _ => pmi_models::dataset::split_stratified(&ds, job.shares, job.params.seed)
            .map_err(model_err)?,
    };
    if let Some(test) = job.test {
        // The table's own test part is folded into training; the test table is the test.
        if test.dataset.feature_names != ds.feature_names {
            return Err(DataflowError::Input(
                "the test table's feature columns differ from the training table's".into(),
            ));
        }
        split.train.append(&mut split.test);
        let offset = ds.len();
        let mut classes = ds.classes.clone();
        for (i, l) in test.dataset.labels.iter().enumerate() {
            let label = l.map(|c| {
                let name = &test.dataset.classes[c as usize];
                match classes.iter().position(|x| x == name) {
                    Some(p) => p as u16,
                    None => {
                        classes.push(name.clone());
                        (classes.len() - 1) as u16
                    }
                }
            });
            ds.values.extend_from_slice(test.dataset.row(i));
            ds.labels.push(label);
            ds.groups.push(u32::MAX - 1);
            ds.times.push(test.dataset.times[i]);
            split.test.push(offset + i);
        }
        ds.classes = classes;
    }
    let mut model =
        pmi_models::train::train(&ds, &split, &job.params, 0, &job.trained_on, |step| {
            tracing::info!(?step, "training")
        })
        .map_err(model_err)?;
    let registry = Registry::new(&job.registry);
    let version = registry.reserve().map_err(model_err)?;
    model.set_version(version.clone());
    let evaluation = evaluate(&model, &ds, &split.test).map_err(model_err)?;
    let mut files = vec![
        (
            "metrics.json".to_owned(),
            serde_json::to_vec_pretty(&evaluation)
                .map_err(|e| DataflowError::Input(e.to_string()))?,
        ),
        (
            "report.txt".to_owned(),
            format!(
                "trained on {}\n{} rows ({} positive), {} train / {} validation / {} test\n\n{}",
                job.trained_on,
                ds.len(),
                ds.positives(),
                split.train.len(),
                split.valid.len(),
                split.test.len(),
                evaluation.render_text()
            )
            .into_bytes(),
        ),
    ];
    for (name, svg) in evaluation.plots().map_err(model_err)? {
        files.push((name, svg.into_bytes()));
    }
    registry
        .publish_as(&version, &mut model, &files, job.make_current)
        .map_err(model_err)?;
    Ok((version.clone(), registry.path_of(&version), evaluation))
}

/// Writes the labelled training set with its split: to one Parquet file when `location`
/// ends in `.parquet` (a local path, or an `s3://…/name.parquet` object written locally and
/// uploaded in one put), otherwise as a dataset partitioned by date in that folder or
/// `s3://` prefix (`date=YYYY-MM-DD/part-….parquet`). `pmi train --table` reads either back.
fn export_table(
    location: &str,
    ds: &pmi_models::dataset::Dataset,
    split: &pmi_models::dataset::Split,
    in_service: &[bool],
) -> Result<u64, DataflowError> {
    let sink = |e: pmi_sinks::SinkError| DataflowError::Sink(e.to_string());
    let remote = pmi_sources::store::Store::is_remote(location);
    if !location.ends_with(".parquet") {
        let store = pmi_sources::store::Store::open(location).map_err(crate::jobs::store_err)?;
        return pmi_sinks::table::write_partitioned(
            &store,
            "",
            &crate::jobs::run_id(),
            ds,
            split,
            in_service,
        )
        .map_err(sink);
    }
    if !remote {
        return pmi_sinks::table::write_table(
            std::path::Path::new(location),
            ds,
            split,
            in_service,
        )
        .map_err(sink);
    }
    let tmp = std::env::temp_dir().join(format!("pmi-export-{}.parquet", crate::jobs::run_id()));
    let rows = pmi_sinks::table::write_table(&tmp, ds, split, in_service).map_err(sink)?;
    let bytes = std::fs::read(&tmp);
    std::fs::remove_file(&tmp).ok();
    let bytes = bytes.map_err(|e| DataflowError::Sink(format!("{}: {e}", tmp.display())))?;
    let cut = location.rfind('/').unwrap_or(0);
    let folder =
        pmi_sources::store::Store::open(&location[..cut]).map_err(crate::jobs::store_err)?;
    folder
        .put(&folder.object(&location[cut + 1..]), bytes.into())
        .map_err(crate::jobs::store_err)?;
    Ok(rows)
}

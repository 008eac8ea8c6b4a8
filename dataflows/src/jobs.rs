//! The named jobs behind the CLI: `live` (simulator → graph), `ingest` (HTTP ingest queue →
//! the same graph, for `pmi serve`), `simulate` (Parquet of raw telemetry and ground truth),
//! `backfill` (Parquet → the same graph) and `bench`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pmi_core::{
    AlertChange, EventTime, FeatureSchema, RawReading, SeverityThresholds, Validator, WindowConfig,
};
use pmi_models::rules::{InactiveReason, RuleScorer, RuleSet};
use pmi_sinks::console::ConsoleAlerts;
use pmi_sinks::parquet_out::{
    BackgroundWriter, DatasetOptions, FeatureLayout, GroundTruthLayout, ParquetDataset,
    PredictionLayout, RawLayout, RejectedLayout, TelemetryLayout,
};
use pmi_sinks::sql::tables::TableWatcher;
use pmi_sinks::sql::{AlertRow, AlertTable, PredictionTable, SqlConfig, SqlSink, TelemetryTable};
use pmi_sinks::CountingSink;
use pmi_sinks::Mapped;
pub use pmi_sources::fleet::ForcedFailure;
use pmi_sources::fleet::{BadReadings, Fleet, SimulatorConfig};
use pmi_sources::ingest::IngestSources;
use pmi_sources::parquet_in::{TelemetryFiles, TimeRange, VehicleInterner};
use pmi_sources::store::Store;

use crate::backfill::{plan, ParquetSource};
use crate::cpu::{CpuSampler, CpuSplit};
use crate::graph::{
    run, AlertTableFeed, DatabaseSinks, GraphConfig, RunReport, ScoreFn, WorkerSinks,
};
use crate::scoring::ModelScorer;
use crate::simulated::{Pace, SimulatedSource};
use crate::DataflowError;

/// The simulated fleet of a job.
#[derive(Clone, Debug)]
pub struct FleetSpec {
    /// Vehicles.
    pub vehicles: u32,
    /// Seed.
    pub seed: u64,
    /// First tick.
    pub start: EventTime,
    /// Expected failures per vehicle per 30 days.
    pub failures_per_vehicle_month: f64,
    /// Inject bad readings.
    pub bad_readings: bool,
    /// Failures injected regardless of the random plan (demos, golden tests).
    pub forced_failures: Vec<ForcedFailure>,
}

impl FleetSpec {
    /// The simulator settings of this fleet over `span`.
    pub fn simulator_config(&self, span: Duration) -> SimulatorConfig {
        SimulatorConfig {
            vehicles: self.vehicles,
            seed: self.seed,
            start: self.start,
            failures_per_vehicle_month: self.failures_per_vehicle_month,
            span_ms: (span.as_millis() as i64).max(86_400_000),
            bad: BadReadings {
                enabled: self.bad_readings,
                ..Default::default()
            },
            forced_failures: self.forced_failures.clone(),
            ..Default::default()
        }
    }
}

fn sink_err(e: pmi_sinks::SinkError) -> DataflowError {
    DataflowError::Sink(e.to_string())
}

/// An output store that cannot be opened or used.
pub(crate) fn store_err(e: pmi_sources::store::StoreError) -> DataflowError {
    DataflowError::Sink(e.to_string())
}

fn rules(
    schema: &FeatureSchema,
    severity: SeverityThresholds,
) -> Result<RuleScorer, DataflowError> {
    let scorer = RuleScorer::new(
        RuleSet {
            severity,
            ..Default::default()
        },
        schema,
    )
    .map_err(|e| DataflowError::Input(e.to_string()))?;
    let inactive = scorer.inactive_rules();
    if !inactive.is_empty() {
        let list: Vec<String> = inactive
            .iter()
            .map(|r| match &r.reason {
                InactiveReason::Disabled => format!("{} (disabled)", r.id),
                InactiveReason::MissingFeatures(f) => format!("{} (lacks {})", r.id, f.join(" ")),
            })
            .collect();
        tracing::warn!(
            rules = inactive.len(),
            "rules inactive: {}",
            list.join(", ")
        );
    }
    Ok(scorer)
}

/// How often a running graph looks for a new current model in the registry.
pub const MODEL_RELOAD_POLL: Duration = Duration::from_secs(2);

/// The graph's scorer: the registry's current model with hot reload (the rules until one
/// is published), or the rules alone without a registry. Keep the [`ModelScorer`] alive for
/// the run: dropping it stops the reloads.
pub(crate) fn scorer(
    schema: &FeatureSchema,
    severity: SeverityThresholds,
    registry: Option<&Path>,
) -> Result<(ScoreFn, Option<ModelScorer>), DataflowError> {
    let rules = rules(schema, severity)?;
    match registry {
        None => {
            let f: ScoreFn = Arc::new(move |v| rules.score(v));
            Ok((f, None))
        }
        Some(r) => {
            let m = ModelScorer::start(r.to_path_buf(), schema, rules, MODEL_RELOAD_POLL)?;
            Ok((m.score_fn(), Some(m)))
        }
    }
}

/// A unique prefix for this run's files, so that runs into the same folder never overwrite
/// each other's files.
pub(crate) fn run_id() -> String {
    format!("{}", EventTime::now().0)
}

/// A job's SQL outputs: predictions and alerts (and optionally telemetry) upserted into the
/// database of `config` (SQLite or PostgreSQL; `pmi_sinks::sql`).
#[derive(Clone, Debug)]
pub struct SqlOutputs {
    /// The database and the sinks' batching and retries.
    pub config: SqlConfig,
    /// Also write every accepted reading to `vehicle_telemetry`.
    pub telemetry: bool,
    /// How often the alert collection's tables (registry, open appointments, recent
    /// repairs) are read again for changes.
    pub watch_every: Duration,
    /// How long a repair keeps a component's alerts back.
    pub recent_repairs: Duration,
}

impl SqlOutputs {
    /// Predictions and alerts to `config`'s database; tables watched every second, repairs
    /// recent for 30 days.
    pub fn new(config: SqlConfig) -> Self {
        SqlOutputs {
            config,
            telemetry: false,
            watch_every: Duration::from_secs(1),
            recent_repairs: Duration::from_secs(30 * 86_400),
        }
    }
}

/// `graph` ready for a job: the alert collection's thresholds are the scorer's, and with a
/// database (schema prepared) its tables are read now and watched for changes while the
/// returned watcher lives.
pub(crate) fn graph_for(
    graph: &GraphConfig,
    severity: SeverityThresholds,
    database: Option<&SqlOutputs>,
) -> Result<(GraphConfig, Option<TableWatcher>), DataflowError> {
    let mut graph = graph.clone();
    graph.alerts.thresholds = severity;
    // Only worker 0 of the cluster (in process 0) reads the tables.
    let first_process = graph.cluster.as_ref().is_none_or(|c| c.process == 0);
    let Some(sql) = database.filter(|_| first_process) else {
        return Ok((graph, None));
    };
    let watched =
        TableWatcher::start(&sql.config, sql.watch_every, sql.recent_repairs).map_err(sink_err)?;
    tracing::info!(
        rows = watched.initial.len(),
        "alert tables read from the database"
    );
    graph.tables = AlertTableFeed {
        initial: Arc::new(watched.initial),
        updates: Some(watched.updates),
    };
    Ok((graph, Some(watched.watcher)))
}

/// Creates or migrates the schema before a job's workers start (once, not per worker).
pub(crate) fn prepare_database(sql: Option<&SqlOutputs>) -> Result<(), DataflowError> {
    if let Some(sql) = sql {
        let timescale = pmi_sinks::sql::prepare(&sql.config).map_err(sink_err)?;
        tracing::info!(database = %pmi_sinks::sql::redact(&sql.config.url), ?timescale, "database schema ready");
    }
    Ok(())
}

/// Adds the SQL sinks of `sql` (if any) to one worker's sinks.
pub(crate) fn with_database(
    mut sinks: WorkerSinks,
    sql: Option<&SqlOutputs>,
    writer: &str,
) -> Result<WorkerSinks, DataflowError> {
    if let Some(sql) = sql {
        sinks.database = Some(DatabaseSinks {
            telemetry: if sql.telemetry {
                Some(Box::new(
                    SqlSink::<TelemetryTable>::start(&sql.config, writer).map_err(sink_err)?,
                ))
            } else {
                None
            },
            predictions: Box::new(
                SqlSink::<PredictionTable>::start(&sql.config, writer).map_err(sink_err)?,
            ),
            alerts: Box::new(Mapped::new(
                Box::new(SqlSink::<AlertTable>::start(&sql.config, writer).map_err(sink_err)?),
                alert_rows,
            )),
        });
    }
    Ok(sinks)
}

/// The `alerts` rows of a chunk of alert changes.
fn alert_rows(changes: Vec<AlertChange>) -> Vec<AlertRow> {
    changes.iter().flat_map(AlertRow::of).collect()
}

/// The sinks of a run that is not transactional (simulator, HTTP ingest, backfill): the
/// Parquet datasets under `out` and the SQL outputs of `database`, whose schema is prepared
/// here, once, before any worker starts. Worker `w` writes as `<run id>-<w>`.
fn worker_sinks(
    out: Store,
    schema: FeatureSchema,
    telemetry: bool,
    alerts_to_console: bool,
    database: Option<SqlOutputs>,
) -> Result<
    impl Fn(usize) -> Result<WorkerSinks, DataflowError> + Send + Sync + 'static,
    DataflowError,
> {
    prepare_database(database.as_ref())?;
    let id = run_id();
    Ok(move |w| {
        let writer = format!("{id}-{w}");
        let sinks =
            parquet_sinks_checkpointed(&out, &writer, &schema, telemetry, alerts_to_console, None)?;
        with_database(sinks, database.as_ref(), &writer)
    })
}

/// Parquet outputs of one worker under `out`. With `checkpoints` (a folder of `out` for
/// this worker's markers), the datasets are transactional: files appear at checkpoints,
/// each dataset's marker records its last one, and the sinks' `resume` is read from them.
pub(crate) fn parquet_sinks_checkpointed(
    out: &Store,
    writer: &str,
    schema: &FeatureSchema,
    telemetry: bool,
    alerts_to_console: bool,
    checkpoints: Option<&str>,
) -> Result<WorkerSinks, DataflowError> {
    let opts = |dataset: &str| DatasetOptions {
        checkpoint_marker: checkpoints.map(|c| format!("{c}/{dataset}")),
        ..if dataset == "features" {
            DatasetOptions::features()
        } else {
            DatasetOptions::default()
        }
    };
    let marker = |dataset: &str| -> Result<Option<u64>, DataflowError> {
        match checkpoints {
            Some(c) => pmi_sinks::parquet_out::read_marker(out, &format!("{c}/{dataset}"))
                .map_err(sink_err),
            None => Ok(None),
        }
    };
    let resume = crate::graph::Resume {
        telemetry: marker("telemetry")?,
        features: marker("features")?,
        predictions: marker("predictions")?,
        alerts: None,
    };
    Ok(WorkerSinks {
        telemetry: if telemetry {
            Some(Box::new(
                BackgroundWriter::start(
                    out,
                    "telemetry",
                    writer,
                    TelemetryLayout,
                    opts("telemetry"),
                )
                .map_err(sink_err)?,
            ))
        } else {
            None
        },
        features: Box::new(
            BackgroundWriter::start(
                out,
                "features",
                writer,
                FeatureLayout::new(schema),
                opts("features"),
            )
            .map_err(sink_err)?,
        ),
        predictions: Box::new(
            BackgroundWriter::start(
                out,
                "predictions",
                writer,
                PredictionLayout,
                opts("predictions"),
            )
            .map_err(sink_err)?,
        ),
        alerts: if alerts_to_console {
            Box::new(ConsoleAlerts::default())
        } else {
            Box::new(CountingSink::default())
        },
        dead_letter: Box::new(
            BackgroundWriter::start(
                out,
                "dead_letter",
                writer,
                RejectedLayout,
                opts("dead_letter"),
            )
            .map_err(sink_err)?,
        ),
        late: Box::new(
            BackgroundWriter::start(out, "late", writer, TelemetryLayout, opts("late"))
                .map_err(sink_err)?,
        ),
        resume,
        database: None,
    })
}

/// `pmi run`: the live graph over the simulator.
#[derive(Clone, Debug)]
pub struct LiveJob {
    /// The fleet.
    pub fleet: FleetSpec,
    /// Pace.
    pub pace: Pace,
    /// Event time to run; `None` runs until the process is stopped.
    pub duration: Option<Duration>,
    /// Graph settings.
    pub graph: GraphConfig,
    /// Where outputs go (local folder or object store).
    pub out: Store,
    /// Archive accepted telemetry.
    pub write_telemetry: bool,
    /// Severity thresholds.
    pub severity: SeverityThresholds,
    /// Model registry whose current model scores (hot reload); `None`: the rules.
    pub model_registry: Option<PathBuf>,
    /// SQL outputs besides the Parquet ones.
    pub database: Option<SqlOutputs>,
}

/// Runs a [`LiveJob`].
pub fn live(job: &LiveJob) -> Result<RunReport, DataflowError> {
    let schema = job.graph.window.schema()?;
    let (scorer, _model) = scorer(&schema, job.severity, job.model_registry.as_deref())?;
    let span = job.duration.unwrap_or(Duration::from_secs(30 * 86_400));
    let end = match job.duration {
        Some(d) => EventTime(job.fleet.start.0 + d.as_millis() as i64),
        None => EventTime(i64::MAX / 4),
    };
    let config = job.fleet.simulator_config(span);
    let (pace, lateness) = (job.pace, job.graph.window.lateness_ms());
    let sinks = worker_sinks(
        job.out.clone(),
        schema,
        job.write_telemetry,
        true,
        job.database.clone(),
    )?;
    if let Some(sql) = &job.database {
        crate::registry::seed(&sql.config, &job.fleet)?;
    }
    let (graph, _tables) = graph_for(&job.graph, job.severity, job.database.as_ref())?;
    run(
        &graph,
        move |w, peers| {
            let s = SimulatedSource::new(config.clone(), w, peers, pace, end, lateness)?;
            Ok(if pace == Pace::Realtime {
                s.with_wall_clock()
            } else {
                s
            })
        },
        sinks,
        scorer,
        false,
    )
}

/// `pmi serve`'s graph: readings posted over HTTP, through an ingest queue, into the live
/// graph with the sinks of [`live`].
#[derive(Clone, Debug)]
pub struct IngestJob {
    /// Graph settings (give it [`GraphConfig::stats`] to watch it run).
    pub graph: GraphConfig,
    /// Where outputs go (local folder or object store).
    pub out: Store,
    /// Archive accepted telemetry.
    pub write_telemetry: bool,
    /// Severity thresholds.
    pub severity: SeverityThresholds,
    /// Model registry whose current model scores (hot reload); `None`: the rules.
    pub model_registry: Option<PathBuf>,
    /// SQL outputs besides the Parquet ones.
    pub database: Option<SqlOutputs>,
}

/// Runs an [`IngestJob`] over `queue` until the queue is closed (or every producer is
/// dropped) and drained; the last panes are then closed and every sink flushed.
pub fn ingest(job: &IngestJob, queue: IngestSources) -> Result<RunReport, DataflowError> {
    let schema = job.graph.window.schema()?;
    let (scorer, _model) = scorer(&schema, job.severity, job.model_registry.as_deref())?;
    let lateness = job.graph.window.lateness_ms();
    let sinks = worker_sinks(
        job.out.clone(),
        schema,
        job.write_telemetry,
        true,
        job.database.clone(),
    )?;
    let (graph, _tables) = graph_for(&job.graph, job.severity, job.database.as_ref())?;
    run(
        &graph,
        move |_w, _peers| Ok(queue.source(lateness)),
        sinks,
        scorer,
        false,
    )
}

/// `pmi simulate`.
#[derive(Clone, Debug)]
pub struct SimulateJob {
    /// The fleet.
    pub fleet: FleetSpec,
    /// Span of event time.
    pub duration: Duration,
    /// Where outputs go (`telemetry/`, `ground_truth/`; local folder or object store).
    pub out: Store,
}

/// What [`simulate`] wrote.
#[derive(Clone, Debug, Default)]
pub struct SimulateSummary {
    /// Readings written (as sent, bad ones included).
    pub readings: u64,
    /// Of which fail validation.
    pub bad_readings: u64,
    /// Failures in the ground truth.
    pub failures: u64,
}

/// Writes the fleet's raw telemetry (time order, as vehicles send it, bad readings
/// included) and its ground truth as Parquet.
pub fn simulate(job: &SimulateJob) -> Result<SimulateSummary, DataflowError> {
    let mut raw = ParquetDataset::new(
        &job.out,
        "telemetry",
        &run_id(),
        RawLayout,
        DatasetOptions::default(),
    )
    .map_err(sink_err)?;
    let summary = simulate_with(job, 64 * 1024, |chunk| raw.push(chunk).map_err(sink_err))?;
    raw.close().map_err(sink_err)?;
    Ok(summary)
}

/// Runs the fleet of `job` over its span, handing its raw readings (time order, bad ones
/// included) to `send` in chunks of at least `chunk_rows` (the last may be smaller), and
/// writes its ground truth under `job.out_dir`.
pub(crate) fn simulate_with(
    job: &SimulateJob,
    chunk_rows: usize,
    mut send: impl FnMut(Vec<RawReading>) -> Result<(), DataflowError>,
) -> Result<SimulateSummary, DataflowError> {
    let mut fleet = Fleet::new(job.fleet.simulator_config(job.duration))
        .map_err(|e| DataflowError::Input(e.to_string()))?;
    let end = EventTime(job.fleet.start.0 + job.duration.as_millis() as i64);
    let mut summary = SimulateSummary::default();
    let validator = Validator {
        max_future_ms: i64::MAX / 4,
    };
    let mut chunk: Vec<RawReading> = Vec::new();
    let mut flush = |chunk: Vec<RawReading>, summary: &mut SimulateSummary| {
        summary.readings += chunk.len() as u64;
        summary.bad_readings += chunk
            .iter()
            .filter(|r| validator.validate((*r).clone(), EventTime(0)).is_err())
            .count() as u64;
        send(chunk)
    };
    while fleet.next_tick() < end {
        fleet.tick(&mut chunk);
        if chunk.len() >= chunk_rows {
            flush(std::mem::take(&mut chunk), &mut summary)?;
        }
    }
    flush(chunk, &mut summary)?;
    let truth: Vec<_> = fleet
        .ground_truth()
        .iter()
        .filter(|f| f.onset < end)
        .cloned()
        .collect();
    summary.failures = truth.len() as u64;
    write_ground_truth(&job.out, truth)?;
    Ok(summary)
}

/// Writes a fleet's ground truth under `out/ground_truth/`.
fn write_ground_truth(
    out: &Store,
    truth: Vec<pmi_core::FailureEvent>,
) -> Result<(), DataflowError> {
    let mut gt = ParquetDataset::new(
        out,
        "ground_truth",
        &run_id(),
        GroundTruthLayout,
        DatasetOptions::default(),
    )
    .map_err(sink_err)?;
    gt.push(truth).map_err(sink_err)?;
    gt.close().map_err(sink_err)?;
    Ok(())
}

/// `pmi backfill`.
#[derive(Clone, Debug)]
pub struct BackfillJob {
    /// Telemetry Parquet: a file or folder, or an `s3://bucket/prefix` URL.
    pub input: String,
    /// Only readings in this span of event time (`pmi backfill --from/--to`).
    pub range: TimeRange,
    /// Where outputs go (local folder or object store).
    pub out: Store,
    /// Graph settings.
    pub graph: GraphConfig,
    /// Severity thresholds.
    pub severity: SeverityThresholds,
    /// Model registry whose current model scores; `None`: the rules.
    pub model_registry: Option<PathBuf>,
    /// SQL outputs besides the Parquet ones.
    pub database: Option<SqlOutputs>,
}

/// Runs a [`BackfillJob`].
pub fn backfill(job: &BackfillJob) -> Result<RunReport, DataflowError> {
    backfill_with(job, false, false)
}

fn backfill_with(
    job: &BackfillJob,
    measure_state: bool,
    console: bool,
) -> Result<RunReport, DataflowError> {
    let schema = job.graph.window.schema()?;
    let (scorer, _model) = scorer(&schema, job.severity, job.model_registry.as_deref())?;
    let plan = Arc::new(plan(
        &job.input,
        job.range,
        job.graph.window.lateness_ms(),
        job.graph.local_workers(),
    )?);
    let p = plan.clone();
    let sinks = worker_sinks(
        job.out.clone(),
        schema,
        false,
        console,
        job.database.clone(),
    )?;
    let (graph, _tables) = graph_for(&job.graph, job.severity, job.database.as_ref())?;
    let graph = crate::backfill::graph_config(graph);
    run(
        &graph,
        move |w, peers| Ok(ParquetSource::new(&p, w, peers)),
        sinks,
        scorer,
        measure_state,
    )
}

/// `pmi bench`.
#[derive(Clone, Debug)]
pub struct BenchJob {
    /// Vehicles.
    pub vehicles: u32,
    /// Event time per vehicle.
    pub duration: Duration,
    /// Workers.
    pub workers: usize,
    /// Window settings.
    pub window: WindowConfig,
    /// Folder to keep input and outputs in.
    pub dir: Option<PathBuf>,
    /// Also time the same backfill with its input in this object store (`s3://bucket/prefix`;
    /// the input is uploaded under it first and removed after).
    pub s3: Option<String>,
    /// Backfills of the same input, one after the other (at least 1): the figures are the
    /// median run's, so that one run slowed down by the machine's other tenants does not
    /// decide them.
    pub runs: usize,
}

/// Figures of a bench run.
#[derive(Clone, Debug)]
pub struct BenchResult {
    /// Readings in the input.
    pub readings: u64,
    /// Workers.
    pub workers: usize,
    /// Features per vector.
    pub features: usize,
    /// Backfill wall time, s (the median run's).
    pub backfill_s: f64,
    /// Every run's backfill wall time, s, in the order they ran.
    pub runs_s: Vec<f64>,
    /// Decoding and validating the same Parquet alone (one thread per worker), s.
    pub decode_s: f64,
    /// Window state per vehicle at the peak, bytes.
    pub state_bytes_per_vehicle: u64,
    /// The run's report.
    pub report: RunReport,
    /// The same backfill reading its input from the object store, s (`BenchJob::s3`).
    pub s3_backfill_s: Option<f64>,
    /// The median run's CPU time by thread role (Linux; see [`crate::cpu`]).
    pub cpu: Option<CpuSplit>,
}

impl BenchResult {
    /// Readings per second of the whole backfill.
    pub fn rate(&self) -> f64 {
        self.readings as f64 / self.backfill_s
    }
    /// With more than one run: how many, and the fastest and the slowest.
    fn spread(&self) -> String {
        if self.runs_s.len() < 2 {
            return String::new();
        }
        let fast = self.runs_s.iter().copied().fold(f64::INFINITY, f64::min);
        let slow = self.runs_s.iter().copied().fold(0.0, f64::max);
        let rate = |s: f64| self.readings as f64 / s;
        format!(
            "; median of {} runs, fastest {:.2} s = {:.0} readings/s, slowest {:.2} s = {:.0} readings/s",
            self.runs_s.len(),
            fast,
            rate(fast),
            slow,
            rate(slow)
        )
    }
    /// Human-readable figures.
    pub fn render(&self) -> String {
        format!(
            "bench: backfill Parquet → features → Parquet, {} readings, {} features per vector, {} workers\n\
             backfill: {:.2} s = {:.0} readings/s ({:.0} per worker){}\n\
             decode + validate alone (same files, {} threads): {:.2} s = {:.0} readings/s; backfill at {:.0}% of it\n\
             window state: {} bytes per vehicle (peak)\n\
             outputs: {} feature vectors, {} predictions, {} rejected, {} late",
            self.readings,
            self.features,
            self.workers,
            self.backfill_s,
            self.rate(),
            self.rate() / self.workers as f64,
            self.spread(),
            self.workers,
            self.decode_s,
            self.readings as f64 / self.decode_s,
            100.0 * self.decode_s / self.backfill_s,
            self.state_bytes_per_vehicle,
            self.report.features,
            self.report.predictions,
            self.report.rejected,
            self.report.late,
        ) + &match &self.cpu {
            Some(cpu) => format!("\n{}", cpu.render(cores())),
            None => String::new(),
        } + &match self.s3_backfill_s {
            Some(s3) => format!(
                "\nbackfill from the object store: {:.2} s = {:.0} readings/s; {:.2}× the time from local files",
                s3,
                self.readings as f64 / s3,
                s3 / self.backfill_s
            ),
            None => String::new(),
        }
    }
}

/// Generates a fleet's telemetry as Parquet (time-ordered, 1 Hz), then times the backfill
/// graph over it, and decoding alone for comparison.
pub fn bench(job: &BenchJob) -> Result<BenchResult, DataflowError> {
    let tmp;
    let dir = match &job.dir {
        Some(d) => d.clone(),
        None => {
            tmp = std::env::temp_dir().join(format!("pmi-bench-{}", run_id()));
            tmp.clone()
        }
    };
    clear_bench_outputs(&dir, &["input", "output", "output-s3"])?;
    let fleet = FleetSpec {
        vehicles: job.vehicles,
        seed: 1,
        start: EventTime(1_767_225_600_000),
        failures_per_vehicle_month: 1.0,
        bad_readings: false,
        forced_failures: Vec::new(),
    };
    let input = dir.join("input");
    tracing::info!(vehicles = job.vehicles, duration_s = job.duration.as_secs(), dir = %dir.display(), "generating bench input");
    let sim = simulate(&SimulateJob {
        fleet,
        duration: job.duration,
        out: Store::local(&input).map_err(store_err)?,
    })?;

    // Decoding alone, one thread per worker, same split of row groups.
    let files = Arc::new(
        TelemetryFiles::open(&input.join("telemetry"))
            .map_err(|e| DataflowError::Input(e.to_string()))?,
    );
    let started = Instant::now();
    let threads: Vec<_> = (0..job.workers)
        .map(|w| {
            let files = files.clone();
            let workers = job.workers;
            std::thread::spawn(move || {
                let mut interner = VehicleInterner::default();
                let (mut ok, mut bad) = (Vec::new(), Vec::new());
                for u in files.units().iter().skip(w).step_by(workers) {
                    files
                        .read_unit(
                            u,
                            &Validator::default(),
                            EventTime::now(),
                            &mut interner,
                            &mut ok,
                            &mut bad,
                        )
                        .ok();
                    ok.clear();
                }
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| DataflowError::Timely("decode thread panicked".into()))?;
    }
    let decode_s = started.elapsed().as_secs_f64();

    let graph = GraphConfig {
        window: job.window.clone(),
        workers: job.workers,
        ..Default::default()
    };
    let backfill_job = BackfillJob {
        input: input.join("telemetry").display().to_string(),
        range: TimeRange::default(),
        out: Store::local(&dir.join("output")).map_err(store_err)?,
        graph,
        severity: SeverityThresholds::default(),
        model_registry: None,
        database: None,
    };
    let run_count = job.runs.max(1);
    let mut runs = Vec::with_capacity(run_count);
    for run in 0..run_count {
        if run > 0 {
            // A run's outputs would be read by nobody, but would pile up: each run writes
            // files of its own.
            clear_bench_outputs(&dir, &["output"])?;
        }
        let sampler = CpuSampler::start();
        let started = Instant::now();
        let report = backfill_with(&backfill_job, true, false)?;
        let backfill_s = started.elapsed().as_secs_f64();
        let cpu = sampler.and_then(CpuSampler::finish);
        tracing::info!(run, backfill_s, "bench run");
        runs.push((backfill_s, (report, cpu)));
    }
    let runs_s: Vec<f64> = runs.iter().map(|(s, _)| *s).collect();
    let (backfill_s, (report, cpu)) = median_run(runs);
    let s3_backfill_s = match &job.s3 {
        Some(url) => Some(bench_from_store(url, &input, &dir, &backfill_job)?),
        None => None,
    };
    if job.dir.is_none() {
        std::fs::remove_dir_all(&dir).ok();
    }
    Ok(BenchResult {
        readings: sim.readings,
        workers: job.workers,
        features: job.window.schema()?.len(),
        backfill_s,
        runs_s,
        decode_s,
        state_bytes_per_vehicle: report.state_bytes_per_vehicle(),
        report,
        s3_backfill_s,
        cpu,
    })
}

/// The run of median time (of an even number, the faster of the middle two): the one whose
/// figures a bench reports. `runs` is not empty.
fn median_run<T>(mut runs: Vec<(f64, T)>) -> (f64, T) {
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let middle = (runs.len() - 1) / 2;
    runs.swap_remove(middle)
}

/// Cores this process may run on (for the CPU line's utilisation).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Removes what an earlier bench left in `dir` (`subdirs`, which the bench writes):
/// the simulator adds files beside those already in a folder, so a rerun in the same
/// `--dir` would otherwise read the earlier fleet too (duplicates, a wrong rate).
pub(crate) fn clear_bench_outputs(dir: &Path, subdirs: &[&str]) -> Result<(), DataflowError> {
    for sub in subdirs {
        let path = dir.join(sub);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(DataflowError::Input(format!(
                    "clearing {} for the bench: {e}",
                    path.display()
                )))
            }
        }
    }
    Ok(())
}

/// Uploads the bench input to `url`, times the backfill reading it from there (outputs to a
/// local folder, as the local run), and removes the upload.
fn bench_from_store(
    url: &str,
    input: &Path,
    dir: &Path,
    local: &BackfillJob,
) -> Result<f64, DataflowError> {
    let store = Store::open(&format!(
        "{}/pmi-bench-{}",
        url.trim_end_matches('/'),
        run_id()
    ))
    .map_err(store_err)?;
    let telemetry = input.join("telemetry");
    let files = pmi_sources::parquet_in::parquet_files(&telemetry)
        .map_err(|e| DataflowError::Input(e.to_string()))?;
    tracing::info!(files = files.len(), store = %store.url(), "uploading bench input");
    let mut uploaded = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&telemetry).unwrap_or(f).to_string_lossy();
        let object = store.object(&format!("telemetry/{rel}"));
        let bytes =
            std::fs::read(f).map_err(|e| DataflowError::Input(format!("{}: {e}", f.display())))?;
        store.put(&object, bytes.into()).map_err(store_err)?;
        uploaded.push(object);
    }
    let job = BackfillJob {
        input: store.child("telemetry").url(),
        out: Store::local(&dir.join("output-s3")).map_err(store_err)?,
        ..local.clone()
    };
    let started = Instant::now();
    backfill_with(&job, false, false)?;
    let took = started.elapsed().as_secs_f64();
    for object in &uploaded {
        store.delete(object).map_err(store_err)?;
    }
    Ok(took)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The median run whatever order the runs came in; of an even number, the faster of
    /// the middle two; one run is its own median.
    #[test]
    fn median_run_is_the_middle_time() {
        let runs = |times: &[f64]| -> Vec<(f64, usize)> {
            times.iter().enumerate().map(|(i, &t)| (t, i)).collect()
        };
        assert_eq!(median_run(runs(&[3.0, 1.0, 2.0])).1, 2);
        assert_eq!(median_run(runs(&[2.5, 4.0, 1.0, 3.0])).1, 0);
        assert_eq!(median_run(runs(&[7.0])).0, 7.0);
    }
}

//! The PMI graph: source → validation/watermark → pane windows → scoring → sinks, run on
//! `workers` timely workers in this process. The `stream` and `backfill` graphs are this
//! graph with different sources.
//!
//! ```text
//!            ┌─ readings ─► [telemetry sink]
//! source ────┼─ readings ─► PaneWindows ─► features ─┬─► [features sink]
//!  (driver)  │                  │ │                   └─► score ─► predictions ─┬─► [predictions sink]
//!            │                  │ │                                             └─► AlertCollection ─► changes ─► [alerts]
//!            │                  │ │     registry, open appointments, repairs ──────────┘ (differential inputs)
//!            │                  │ └ late ─────┐
//!            ├─ late ───────────┼─────────────┴──► [late sink]
//!            └─ rejected ───────┴ duplicates ────► [dead-letter sink]
//! ```
//!
//! The alert collection (`pmi_operators::alerts`) is checked against three tables that
//! enter as differential input collections on worker 0 of the cluster: the rows of
//! [`AlertTableFeed::initial`] at time 0, then each batch of [`AlertTableFeed::updates`] at
//! the source's current time (so a booking retracts its alert as soon as the stream passes
//! it). The tables' inputs follow the source's frontier and close with it.
//!
//! The workers of a process share one timely computation ([`WorkerProgress::Shared`]), or,
//! when the source already hands each worker only its own vehicles (a backfill), each runs
//! the graph as a computation of its own ([`WorkerProgress::Independent`]), feeding its own
//! copy of the tables, so that no worker waits on another's progress.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concat, Concatenate, Probe};
use timely::dataflow::ProbeHandle;

use differential_dataflow::input::{Input, InputSession};
use pmi_core::{
    AlertChange, AlertConfig, Component, CustomerRecord, EventKey, FeatureBatch, FeatureRow,
    Prediction, Rejected, ServiceCenterRecord, TableRow, TableUpdate, Telemetry, TelemetrySource,
    VehicleId, VehicleRecord, WindowConfig,
};
use pmi_operators::alerts::{
    AlertChanges, AlertCollection, AlertTables, RegistryTables, ScoredPane,
};
use pmi_operators::source::{
    telemetry_source, SourceCounters, SourceOptions, Throttle, ThrottleWaker, WakeOnProgress,
};
use pmi_operators::windows::{pane_windows_with_gauges, WindowGauges, WindowSpec};

use crate::sink::{
    at_time, close, shared, write_to, ChunkSink, SinkStats, Stamp, Suppressed, WriteOptions,
};
use crate::stats::GraphStats;
use crate::DataflowError;

/// A scorer usable on every worker: turns a row of features into a prediction.
pub type ScoreFn = Arc<dyn Fn(FeatureRow<'_>) -> Prediction + Send + Sync>;

/// Graph settings.
#[derive(Clone, Debug)]
pub struct GraphConfig {
    /// Windows, panes, lateness, channels.
    pub window: WindowConfig,
    /// Timely worker threads in this process.
    pub workers: usize,
    /// The alert collection: floor, hysteresis, whether a registry row is required.
    pub alerts: AlertConfig,
    /// The registry, open appointments and recent repairs the alerts are checked against.
    pub tables: AlertTableFeed,
    /// Features an alert carries for the agents to diagnose from (names of the schema;
    /// others are ignored). Usually the diagnosis catalogue's.
    pub alert_features: Arc<Vec<String>>,
    /// How far (ms of event time) a source may run ahead of the end of the graph. The
    /// readings of panes not yet sealed wait in window state, so this bounds most of it
    /// beyond the panes themselves (about `(max_ahead + P) · rate` readings per vehicle).
    pub max_ahead_ms: u64,
    /// Several `pmi` processes forming one timely cluster (timely's own networking); `None`:
    /// this process alone.
    pub cluster: Option<Cluster>,
    /// Checkpoint the sinks this often, so a replayable source can commit behind them
    /// (`crate::sink`); `None`: outputs are durable when the run ends.
    pub checkpoint_every: Option<Duration>,
    /// Live counters the workers update while the graph runs (for `/stats`); `None`: none.
    pub stats: Option<Arc<GraphStats>>,
    /// Whether this process's workers share one timely computation or each run their own.
    pub progress: WorkerProgress,
}

/// How the workers of a process run the graph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WorkerProgress {
    /// One timely computation: readings cross to the worker owning their vehicle, and a
    /// pane closes once every worker's source has passed its end (one frontier).
    #[default]
    Shared,
    /// Each worker runs the graph as a timely computation of its own, so its panes close
    /// as its own source passes them, never waiting on a slower worker. Only for a source
    /// that hands every worker exactly the readings of the vehicles it owns
    /// ([`pmi_operators::exchange::owner`]; the backfill's readers deal them so), since no
    /// reading can cross to another worker. Each worker reads the alert tables itself.
    /// Ignored in a cluster, whose processes share one computation.
    Independent,
}

impl GraphConfig {
    /// Global indices of this process's workers (timely numbers a cluster's workers
    /// process by process).
    pub fn local_workers(&self) -> std::ops::Range<usize> {
        let n = self.workers.max(1);
        let first = self.cluster.as_ref().map_or(0, |c| c.process * n);
        first..first + n
    }
}

/// The rows of the alert collection's tables and their later changes (usually from
/// `pmi_sinks::sql::tables::TableWatcher`). Only worker 0 of the cluster reads them.
#[derive(Clone, Debug, Default)]
pub struct AlertTableFeed {
    /// Rows present at start (inserted at time 0).
    pub initial: Arc<Vec<TableUpdate>>,
    /// Later changes; `None`: the tables never change during the run.
    pub updates: Option<crossbeam_channel::Receiver<Vec<TableUpdate>>>,
}

/// The table inputs of one worker's alert collection.
struct TableInputs {
    vehicles: InputSession<u64, (VehicleId, VehicleRecord), isize>,
    customers: InputSession<u64, (String, CustomerRecord), isize>,
    service_centers: InputSession<u64, (String, ServiceCenterRecord), isize>,
    appointments: InputSession<u64, (VehicleId, Option<Component>), isize>,
    maintenance: InputSession<u64, (VehicleId, Component), isize>,
}

impl AlertTableFeed {
    /// The feed for each of `n` readers: the same initial rows, and every batch of updates
    /// for each (forwarded by a thread that ends with the updates' sender or the readers;
    /// none is needed for a single reader).
    fn broadcast(self, n: usize) -> Result<Vec<AlertTableFeed>, DataflowError> {
        let updates = match self.updates {
            Some(updates) if n > 1 => updates,
            _ => return Ok(vec![self; n]),
        };
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..n).map(|_| crossbeam_channel::unbounded()).unzip();
        let forward = move || {
            for batch in updates.iter() {
                let sent = txs
                    .iter()
                    .filter(|tx| tx.send(batch.clone()).is_ok())
                    .count();
                if sent == 0 {
                    return;
                }
            }
        };
        std::thread::Builder::new()
            .name("pmi-table-feed".into())
            .spawn(forward)
            .map_err(|e| DataflowError::Timely(format!("cannot start a thread: {e}")))?;
        Ok(rxs
            .into_iter()
            .map(|rx| AlertTableFeed {
                initial: self.initial.clone(),
                updates: Some(rx),
            })
            .collect())
    }
}

impl TableInputs {
    fn apply(&mut self, updates: &[TableUpdate]) {
        for (row, diff) in updates {
            match row.clone() {
                TableRow::Vehicle(v, r) => self.vehicles.update((v, r), *diff),
                TableRow::Customer(c, r) => self.customers.update((c, r), *diff),
                TableRow::ServiceCenter(s, r) => self.service_centers.update((s, r), *diff),
                TableRow::Appointment(v, c) => self.appointments.update((v, c), *diff),
                TableRow::Maintenance(v, c) => self.maintenance.update((v, c), *diff),
            }
        }
    }

    fn advance_to(&mut self, time: u64) {
        if time > *self.vehicles.time() {
            self.vehicles.advance_to(time);
            self.customers.advance_to(time);
            self.service_centers.advance_to(time);
            self.appointments.advance_to(time);
            self.maintenance.advance_to(time);
        }
        self.vehicles.flush();
        self.customers.flush();
        self.service_centers.flush();
        self.appointments.flush();
        self.maintenance.flush();
    }
}

/// This process's place in a cluster of `pmi` processes, each running `workers` threads.
/// Sources and sinks use global worker indices, so the cluster's outputs are those of one
/// process with as many workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// Index of this process, `0 ..addresses.len()`.
    pub process: usize,
    /// `host:port` of every process, in process order (the hostfile's lines).
    pub addresses: Vec<String>,
}

impl Cluster {
    /// Reads a hostfile (one `host:port` per line; blank lines and `#` comments ignored)
    /// and checks it names `processes` processes, of which this is `process`.
    pub fn from_hostfile(
        path: &std::path::Path,
        processes: usize,
        process: usize,
    ) -> Result<Cluster, DataflowError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| DataflowError::Input(format!("hostfile {}: {e}", path.display())))?;
        let addresses: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
        if addresses.len() != processes {
            return Err(DataflowError::Config(pmi_core::ConfigError::new(
                "hostfile",
                format!(
                    "{} names {} processes, --processes says {processes}",
                    path.display(),
                    addresses.len()
                ),
            )));
        }
        if process >= processes {
            return Err(DataflowError::Config(pmi_core::ConfigError::new(
                "process",
                format!("--process {process} is not below --processes {processes}"),
            )));
        }
        Ok(Cluster { process, addresses })
    }
}

impl Default for GraphConfig {
    fn default() -> Self {
        GraphConfig {
            window: WindowConfig::default(),
            workers: 1,
            alerts: AlertConfig::default(),
            tables: AlertTableFeed::default(),
            alert_features: Arc::default(),
            max_ahead_ms: 10_000,
            cluster: None,
            checkpoint_every: None,
            stats: None,
            progress: WorkerProgress::Shared,
        }
    }
}

/// One worker's outputs.
pub struct WorkerSinks {
    /// Accepted readings (optional: the raw archive).
    pub telemetry: Option<Box<dyn ChunkSink<Telemetry>>>,
    /// Feature vectors.
    pub features: Box<dyn ChunkSink<FeatureBatch>>,
    /// Predictions.
    pub predictions: Box<dyn ChunkSink<Prediction>>,
    /// Changes of the alert collection (raised, changed, retracted).
    pub alerts: Box<dyn ChunkSink<AlertChange>>,
    /// Rejected readings with their reasons.
    pub dead_letter: Box<dyn ChunkSink<Rejected>>,
    /// Late readings.
    pub late: Box<dyn ChunkSink<Telemetry>>,
    /// The SQL tables, when a database is configured.
    pub database: Option<DatabaseSinks>,
    /// Where an earlier run's durable output ends, per exactly-once output (a resumed run
    /// drops its replay of what is already written; `crate::sink`).
    pub resume: Resume,
}

/// One worker's SQL outputs. They are idempotent upserts keyed by `(vehicle_id, ts)` or
/// `(vehicle_id, pane_end)`, so a resumed run writes its whole replay to them again (no
/// suppression by the Parquet markers, which may be ahead of the database) and nothing is
/// duplicated. Their durable checkpoints hold back the source's commits like every sink's.
pub struct DatabaseSinks {
    /// `vehicle_telemetry` (optional: heavy).
    pub telemetry: Option<Box<dyn ChunkSink<Telemetry>>>,
    /// `failure_predictions`.
    pub predictions: Box<dyn ChunkSink<Prediction>>,
    /// `alerts` (the alert changes, as rows).
    pub alerts: Box<dyn ChunkSink<AlertChange>>,
}

/// The last durable checkpoint of each output whose records are stamped deterministically
/// (features, predictions and alerts by pane end, telemetry by the pane of its reading).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resume {
    /// Raw telemetry archive.
    pub telemetry: Option<u64>,
    /// Feature vectors.
    pub features: Option<u64>,
    /// Predictions.
    pub predictions: Option<u64>,
    /// Alerts.
    pub alerts: Option<u64>,
}

/// What a run did, summed over workers. Every reading read is accounted for:
/// `read = windowed + rejected + late`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RunReport {
    /// Readings the sources produced (accepted + rejected + late).
    pub read: u64,
    /// Readings that went into windows.
    pub windowed: u64,
    /// Readings rejected (validation and duplicates), all in the dead-letter output.
    pub rejected: u64,
    /// Late readings, all in the late output.
    pub late: u64,
    /// Feature vectors written.
    pub features: u64,
    /// Predictions written.
    pub predictions: u64,
    /// Alert changes (raised, changed, retracted).
    pub alerts: u64,
    /// Telemetry rows archived.
    pub telemetry_rows: u64,
    /// Files written over all sinks.
    pub files: u64,
    /// Wall-clock time of the run, ms.
    pub elapsed_ms: u64,
    /// Largest window state seen on any worker, bytes.
    pub peak_state_bytes: u64,
    /// Vehicles with window state at that moment.
    pub peak_state_vehicles: u64,
    /// Records of a replay dropped because an earlier run had made them durable.
    pub replayed: u64,
}

impl RunReport {
    fn add(&mut self, o: &RunReport) {
        self.read += o.read;
        self.windowed += o.windowed;
        self.rejected += o.rejected;
        self.late += o.late;
        self.features += o.features;
        self.predictions += o.predictions;
        self.alerts += o.alerts;
        self.telemetry_rows += o.telemetry_rows;
        self.files += o.files;
        self.peak_state_bytes = self.peak_state_bytes.max(o.peak_state_bytes);
        self.peak_state_vehicles = self.peak_state_vehicles.max(o.peak_state_vehicles);
        self.replayed += o.replayed;
    }

    /// Mean window state per vehicle at the peak, bytes.
    pub fn state_bytes_per_vehicle(&self) -> u64 {
        self.peak_state_bytes
            .checked_div(self.peak_state_vehicles)
            .unwrap_or(0)
    }
}

/// Runs the graph to completion: `make_source(worker, peers)` builds each worker's share of
/// the input, `make_sinks(worker)` its outputs, `scorer` scores every feature vector.
/// `measure_state` samples window state size (costs a pass over the state per activation;
/// for `pmi bench`).
pub fn run<S, FS, FK>(
    config: &GraphConfig,
    make_source: FS,
    make_sinks: FK,
    scorer: ScoreFn,
    measure_state: bool,
) -> Result<RunReport, DataflowError>
where
    S: TelemetrySource,
    FS: Fn(usize, usize) -> Result<S, DataflowError> + Send + Sync + 'static,
    FK: Fn(usize) -> Result<WorkerSinks, DataflowError> + Send + Sync + 'static,
{
    let spec = Arc::new(WindowSpec::new(&config.window)?);
    let started = Instant::now();
    let clustered = config.cluster.is_some();
    let mut job = Job {
        config: config.clone(),
        spec,
        make_source,
        make_sinks,
        scorer,
        measure_state,
    };
    let results = if config.progress == WorkerProgress::Independent && !clustered {
        run_independent(job)?
    } else {
        let timely_config = match &config.cluster {
            None => timely::Config::process(config.workers.max(1)),
            Some(c) => timely::Config {
                communication: timely::CommunicationConfig::Cluster {
                    threads: config.workers.max(1),
                    process: c.process,
                    addresses: c.addresses.clone(),
                    report: false,
                    zerocopy: false,
                },
                worker: timely::WorkerConfig::default(),
            },
        };
        // Worker 0 of the cluster feeds the alert tables; the others receive their share
        // through the collection's exchange.
        let tables = std::mem::take(&mut job.config.tables);
        timely::execute(timely_config, move |worker| {
            let at = (worker.index(), worker.peers());
            let feed = (at.0 == 0).then(|| tables.clone());
            run_worker(worker, at, feed, &job)
        })
        .map_err(DataflowError::Timely)?
        .join()
    };
    let mut report = RunReport::default();
    let (mut src_rejected, mut src_late) = (0, 0);
    for result in results {
        let (r, rejected, late) = result.map_err(DataflowError::Timely)??;
        report.add(&r);
        src_rejected += rejected;
        src_late += late;
    }
    // Accepted readings that left the windows (duplicates, late at the window operator)
    // were counted by the sinks beyond what the sources rejected or marked late (those go
    // to the sinks of their own worker).
    let left = (report.rejected - src_rejected) + (report.late - src_late);
    report.windowed = if clustered {
        // They may surface in another process (the one whose worker owns the vehicle), so
        // a live source's process may count as windowed some readings another process
        // counts as rejected or late. A backfill reads each vehicle in the process owning
        // it: there every process's count is exact (tests/cluster.rs).
        report.windowed.saturating_sub(left)
    } else {
        report.windowed - left
    };
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    tracing::debug!(elapsed_ms = report.elapsed_ms, "graph done");
    Ok(report)
}

/// What a worker hands back: its report and its source's own rejected and late counts, or
/// the panic that ended it.
type WorkerResult = Result<Result<(RunReport, u64, u64), DataflowError>, String>;

/// [`WorkerProgress::Independent`]: each of this process's workers runs the graph as a
/// timely computation of its own (one worker, on a thread named as timely names its
/// workers), with its own copy of the alert tables.
fn run_independent<S, FS, FK>(mut job: Job<FS, FK>) -> Result<Vec<WorkerResult>, DataflowError>
where
    S: TelemetrySource,
    FS: Fn(usize, usize) -> Result<S, DataflowError> + Send + Sync + 'static,
    FK: Fn(usize) -> Result<WorkerSinks, DataflowError> + Send + Sync + 'static,
{
    let peers = job.config.workers.max(1);
    let feeds = std::mem::take(&mut job.config.tables).broadcast(peers)?;
    let job = Arc::new(job);
    let threads: Vec<_> = feeds
        .into_iter()
        .enumerate()
        .map(|(index, feed)| {
            let worker_job = job.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("timely:work-{index}"))
                .spawn(move || {
                    timely::execute_directly(move |worker| {
                        run_worker(worker, (index, peers), Some(feed), &worker_job)
                    })
                });
            if spawned.is_err() {
                // Nobody will read this worker's share: made and dropped at once, it lets a
                // source fed by other threads (the backfill's readers) know, rather than
                // wait for it and hold the other workers up.
                drop((job.make_source)(index, peers));
            }
            spawned
        })
        .collect();
    Ok(threads
        .into_iter()
        .map(|spawned| {
            let thread = spawned.map_err(|e| format!("cannot start a worker thread: {e}"))?;
            thread.join().map_err(|panic| {
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "worker panicked".into())
            })
        })
        .collect())
}

/// A source shared between the driver and the worker, which finishes it after the sinks
/// are closed (with the source's name, copied once).
struct SharedSource<S>(Rc<RefCell<S>>, String);

impl<S: TelemetrySource> TelemetrySource for SharedSource<S> {
    fn name(&self) -> &str {
        &self.1
    }
    fn poll(
        &mut self,
        batch: &mut pmi_core::SourceBatch,
    ) -> Result<pmi_core::SourceStatus, pmi_core::SourceFailure> {
        self.0.borrow_mut().poll(batch)
    }
    fn watermark(&self) -> Option<EventKey> {
        self.0.borrow().watermark()
    }
    fn acknowledge(&mut self, durable: EventKey) -> Result<(), pmi_core::SourceFailure> {
        self.0.borrow_mut().acknowledge(durable)
    }
}

/// What every worker of a run is given (see [`run`]); the alert tables are handed to
/// workers apart, as not every worker feeds them.
struct Job<FS, FK> {
    config: GraphConfig,
    spec: Arc<WindowSpec>,
    make_source: FS,
    make_sinks: FK,
    scorer: ScoreFn,
    measure_state: bool,
}

/// Worker `index` of `peers` (global, whatever timely numbers the worker) runs the graph
/// to its end; with `feed`, it feeds the alert tables.
fn run_worker<S, FS, FK>(
    worker: &mut timely::worker::Worker,
    (index, peers): (usize, usize),
    feed: Option<AlertTableFeed>,
    job: &Job<FS, FK>,
) -> Result<(RunReport, u64, u64), DataflowError>
where
    S: TelemetrySource,
    FS: Fn(usize, usize) -> Result<S, DataflowError>,
    FK: Fn(usize) -> Result<WorkerSinks, DataflowError>,
{
    let Job {
        config,
        spec,
        make_source,
        make_sinks,
        scorer,
        measure_state,
    } = job;
    let measure_state = *measure_state;
    let begun = Instant::now();
    let source = make_source(index, peers)?;
    let source_name = source.name().to_owned();
    let source = Rc::new(RefCell::new(source));
    let sinks = make_sinks(index)?;
    let resume = sinks.resume;
    let suppressed: Suppressed = Rc::new(RefCell::new(0));
    let durable = ProbeHandle::new();
    let pane_ms = config.window.pane_ms().max(1) as u64;
    let counters = Arc::new(SourceCounters::default());
    let _running = config.stats.as_ref().map(|stats| {
        stats.register_source(&source_name, index, counters.clone());
        stats.worker_started()
    });
    let sinks = match &config.stats {
        Some(stats) => stats.count_sinks(sinks),
        None => sinks,
    };
    let errors = Arc::new(Mutex::new(Vec::new()));
    let gauges = measure_state.then(|| Arc::new(Mutex::new(WindowGauges::default())));
    let probe = ProbeHandle::new();
    let throttle_waker = ThrottleWaker::default();

    let telemetry = sinks.telemetry.map(shared);
    let features_sink = shared(sinks.features);
    let predictions_sink = shared(sinks.predictions);
    let alerts_sink = shared(sinks.alerts);
    let dead_sink = shared(sinks.dead_letter);
    let late_sink = shared(sinks.late);
    let db = sinks.database.map(|d| {
        (
            d.telemetry.map(shared),
            shared(d.predictions),
            shared(d.alerts),
        )
    });

    let (tables, tables_clock) = worker.dataflow::<u64, _, _>(|scope| {
        let options = SourceOptions {
            lateness_ms: config.window.lateness_ms(),
            throttle: Some(Throttle {
                probe: probe.clone(),
                max_ahead_ms: config.max_ahead_ms,
                waker: throttle_waker.clone(),
                poll: Duration::from_millis(10),
            }),
            counters: counters.clone(),
            durable: Some(durable.clone()),
        };
        let src = telemetry_source(
            scope,
            SharedSource(source.clone(), source_name.clone()),
            options,
        );
        let write = |resume: Option<u64>| WriteOptions {
            checkpoint_every: config.checkpoint_every,
            resume,
        };
        let mut acks = Vec::new();
        if let Some(t) = &telemetry {
            // Stamped by the pane of the reading's own key, which does not depend on when it
            // arrived, so a replay stamps it alike.
            let stamp: Stamp<Telemetry> = Rc::new(move |r: &Telemetry, time: u64| {
                let key = EventKey::new(0, r.ts).0;
                (key - key % pane_ms + pane_ms).max(time)
            });
            acks.push(write_to(
                src.readings.clone().map(|s| s.reading),
                "telemetry",
                t.clone(),
                errors.clone(),
                stamp,
                write(resume.telemetry),
                suppressed.clone(),
            ));
        }
        if let Some((Some(t), _, _)) = &db {
            acks.push(write_to(
                src.readings.clone().map(|s| s.reading),
                "sql telemetry",
                t.clone(),
                errors.clone(),
                at_time(),
                write(None),
                suppressed.clone(),
            ));
        }
        // The source's clock: its outputs share one frontier, so the probe watches the
        // rejected stream (rarely any data) rather than the readings, which a probe would
        // be handed a copy of.
        let (tables_clock, _) = src.rejected.clone().probe();
        let windows = pane_windows_with_gauges(src.readings, spec.clone(), gauges.clone());
        let score = scorer.clone();
        let schema = spec.schema().clone();
        let carried: Vec<(String, usize)> = config
            .alert_features
            .iter()
            .filter_map(|name| Some((name.clone(), schema.index_of_name(name)?)))
            .collect();
        // Only a prediction that can set an alert's level carries features.
        let carry_from = config.alerts.thresholds.of(config.alerts.floor) - config.alerts.margin;
        let scored = windows.features.clone().flat_map(move |batch| {
            (0..batch.rows())
                .map(|r| {
                    let v = batch.row(r);
                    let prediction = score(v);
                    let features = if prediction.risk >= carry_from {
                        carried
                            .iter()
                            .filter_map(|(name, i)| Some((name.clone(), v.get(*i)?)))
                            .collect()
                    } else {
                        Vec::new()
                    };
                    ScoredPane {
                        in_service: schema.in_service(v),
                        prediction,
                        features,
                    }
                })
                .collect::<Vec<_>>()
        });
        let predictions = scored.clone().map(|s| s.prediction);
        let (vehicles_in, vehicles) = scope.new_collection();
        let (customers_in, customers) = scope.new_collection();
        let (service_centers_in, service_centers) = scope.new_collection();
        let (appointments_in, appointments) = scope.new_collection();
        let (maintenance_in, maintenance) = scope.new_collection();
        let registry = RegistryTables {
            vehicles,
            customers,
            service_centers,
        };
        let tables = AlertTables {
            registry: registry.joined(),
            appointments,
            maintenance,
        };
        let alerts = scored.alerts(&config.alerts, tables).alert_changes();
        if let Some((_, db_predictions, db_alerts)) = &db {
            acks.push(write_to(
                predictions.clone(),
                "sql predictions",
                db_predictions.clone(),
                errors.clone(),
                at_time(),
                write(None),
                suppressed.clone(),
            ));
            acks.push(write_to(
                alerts.clone(),
                "sql alerts",
                db_alerts.clone(),
                errors.clone(),
                at_time(),
                write(None),
                suppressed.clone(),
            ));
        }
        acks.push(write_to(
            windows
                .features
                .probe_with(&probe)
                .wake_on_progress(&throttle_waker),
            "features",
            features_sink.clone(),
            errors.clone(),
            at_time(),
            write(resume.features),
            suppressed.clone(),
        ));
        acks.push(write_to(
            predictions
                .probe_with(&probe)
                .wake_on_progress(&throttle_waker),
            "predictions",
            predictions_sink.clone(),
            errors.clone(),
            at_time(),
            write(resume.predictions),
            suppressed.clone(),
        ));
        acks.push(write_to(
            alerts,
            "alerts",
            alerts_sink.clone(),
            errors.clone(),
            at_time(),
            write(resume.alerts),
            suppressed.clone(),
        ));
        acks.push(write_to(
            src.rejected.concat(windows.rejected),
            "dead_letter",
            dead_sink.clone(),
            errors.clone(),
            at_time(),
            write(None),
            suppressed.clone(),
        ));
        acks.push(write_to(
            src.late.concat(windows.late),
            "late",
            late_sink.clone(),
            errors.clone(),
            at_time(),
            write(None),
            suppressed.clone(),
        ));
        scope.concatenate(acks).probe_with(&durable);
        (
            TableInputs {
                vehicles: vehicles_in,
                customers: customers_in,
                service_centers: service_centers_in,
                appointments: appointments_in,
                maintenance: maintenance_in,
            },
            tables_clock,
        )
    });

    // The alert tables: the worker given the feed feeds them; every worker's inputs follow
    // its source.
    let mut tables = Some(tables);
    if let (Some(feed), Some(t)) = (&feed, tables.as_mut()) {
        t.apply(&feed.initial);
        t.advance_to(0);
    }
    let mut peak = (0u64, 0u64);
    while worker.step_or_park(Some(Duration::from_millis(5))) {
        if let Some(t) = tables.as_mut() {
            match tables_clock.with_frontier(|f| f.first().copied()) {
                Some(now) => {
                    if let Some(updates) = feed.as_ref().and_then(|f| f.updates.as_ref()) {
                        for batch in updates.try_iter() {
                            t.apply(&batch);
                        }
                    }
                    t.advance_to(now);
                }
                // The source is done: so are the tables.
                None => tables = None,
            }
        }
        if let Some(g) = &gauges {
            let g = g.lock().expect("gauges lock");
            if g.state_bytes as u64 > peak.0 {
                peak = (g.state_bytes as u64, g.vehicles as u64);
            }
        }
        if !errors.lock().expect("errors lock").is_empty() {
            break;
        }
    }
    if let Some(failure) = counters.failure.lock().expect("counters lock").take() {
        return Err(DataflowError::Source(failure));
    }
    if let Some(e) = errors.lock().expect("errors lock").first() {
        return Err(DataflowError::Sink(e.clone()));
    }

    let drained = Instant::now();
    let stat = |r: Result<SinkStats, pmi_sinks::SinkError>| {
        r.map_err(|e| DataflowError::Sink(e.to_string()))
    };
    let telemetry_stats = match &telemetry {
        Some(t) => stat(close(t))?,
        None => SinkStats::default(),
    };
    let features = stat(close(&features_sink))?;
    let predictions = stat(close(&predictions_sink))?;
    let alerts = stat(close(&alerts_sink))?;
    let dead = stat(close(&dead_sink))?;
    let late = stat(close(&late_sink))?;
    if let Some((db_telemetry, db_predictions, db_alerts)) = &db {
        if let Some(t) = db_telemetry {
            stat(close(t))?;
        }
        stat(close(db_predictions))?;
        stat(close(db_alerts))?;
    }
    let closed = Instant::now();
    // Everything is durable: the source may commit its final position.
    source
        .borrow_mut()
        .finish()
        .map_err(DataflowError::Source)?;
    tracing::debug!(
        worker = index,
        dataflow_ms = drained.duration_since(begun).as_millis() as u64,
        close_sinks_ms = closed.duration_since(drained).as_millis() as u64,
        finish_source_ms = closed.elapsed().as_millis() as u64,
        "worker done"
    );

    let accepted = counters.accepted.load(Ordering::Relaxed);
    let src_rejected = counters.rejected.load(Ordering::Relaxed);
    let src_late = counters.late.load(Ordering::Relaxed);
    let report = RunReport {
        read: accepted + src_rejected + src_late,
        // Corrected in `run` once all workers are summed: duplicates and window-late
        // readings of this worker's source may surface on another worker.
        windowed: accepted,
        rejected: dead.rows,
        late: late.rows,
        features: features.rows,
        predictions: predictions.rows,
        alerts: alerts.rows,
        telemetry_rows: telemetry_stats.rows,
        files: features.files + predictions.files + dead.files + late.files + telemetry_stats.files,
        elapsed_ms: 0,
        peak_state_bytes: peak.0,
        peak_state_vehicles: peak.1,
        replayed: *suppressed.borrow(),
    };
    Ok((report, src_rejected, src_late))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pmi_core::{
        Component, EventTime, SensorValues, Sequenced, Severity, SourceBatch, SourceFailure,
        SourceStatus, SENSOR_COUNT,
    };
    use pmi_operators::exchange::owner;
    use pmi_sinks::MemorySink;

    /// A worker's share of a fleet: the readings of the vehicles it owns, in one batch, as
    /// a backfill's readers deal them.
    struct Share(Option<Vec<Sequenced>>);

    impl TelemetrySource for Share {
        fn name(&self) -> &str {
            "share"
        }
        fn poll(&mut self, batch: &mut SourceBatch) -> Result<SourceStatus, SourceFailure> {
            match self.0.take() {
                Some(readings) => {
                    batch.readings = readings;
                    Ok(SourceStatus::Ready)
                }
                None => Ok(SourceStatus::Finished),
            }
        }
    }

    /// Twenty minutes of 8 vehicles at 1 Hz; the engines of the odd ones heat up.
    fn fleet() -> Arc<Vec<Sequenced>> {
        let readings = (1..=1_200i64)
            .flat_map(|s| {
                (0..8).map(move |v| {
                    let mut values = [Some(1.0); SENSOR_COUNT];
                    values[0] = Some(80.0 + if v % 2 == 1 { s as f64 / 20.0 } else { 0.0 });
                    Sequenced {
                        group: 0,
                        reading: Telemetry {
                            vehicle_id: VehicleId::parse(&format!("V{v}")).unwrap(),
                            ts: EventTime(1_000 * s - v),
                            values: SensorValues::new(values).unwrap(),
                        },
                    }
                })
            })
            .collect();
        Arc::new(readings)
    }

    /// Features, predictions and alert changes of `fleet` on two workers run as `progress`
    /// says, with vehicles V0 to V4 registered and alerts for registered vehicles only.
    fn run_fleet(
        progress: WorkerProgress,
    ) -> (RunReport, Vec<String>, Vec<String>, Vec<AlertChange>) {
        let config = GraphConfig {
            workers: 2,
            progress,
            alerts: AlertConfig {
                require_registry: true,
                fall_after_ms: 0,
                ..AlertConfig::default()
            },
            tables: AlertTableFeed {
                initial: Arc::new(
                    (0..5)
                        .map(|v| {
                            let id = VehicleId::parse(&format!("V{v}")).unwrap();
                            (TableRow::Vehicle(id, VehicleRecord::default()), 1)
                        })
                        .collect(),
                ),
                updates: None,
            },
            ..GraphConfig::default()
        };
        let spec = WindowSpec::new(&config.window).unwrap();
        let mean_60s = spec
            .schema()
            .index_of_name("engine_temp_c_mean_60s")
            .unwrap();
        let (features, predictions, alerts) = (
            Arc::new(Mutex::new(Vec::<FeatureBatch>::new())),
            Arc::new(Mutex::new(Vec::<Prediction>::new())),
            Arc::new(Mutex::new(Vec::new())),
        );
        let fleet = fleet();
        let (f, p, a) = (features.clone(), predictions.clone(), alerts.clone());
        let scorer: ScoreFn = Arc::new(move |row: FeatureRow<'_>| {
            let hot = row.get(mean_60s).is_some_and(|t| t > 100.0);
            Prediction {
                vehicle_id: row.vehicle_id.clone(),
                pane_end: row.pane_end,
                risk: if hot { 0.9 } else { 0.1 },
                severity: if hot { Severity::High } else { Severity::Low },
                component: hot.then_some(Component::Thermostat),
                model: Arc::from("test"),
                explanation: Vec::new(),
            }
        });
        let report = run(
            &config,
            move |worker, peers| {
                let mine = fleet.iter().filter(|s| owner(s, peers) == worker);
                Ok(Share(Some(mine.cloned().collect())))
            },
            move |_| {
                Ok(WorkerSinks {
                    telemetry: None,
                    features: Box::new(MemorySink { rows: f.clone() }),
                    predictions: Box::new(MemorySink { rows: p.clone() }),
                    alerts: Box::new(MemorySink { rows: a.clone() }),
                    dead_letter: Box::new(MemorySink {
                        rows: Arc::new(Mutex::new(Vec::new())),
                    }),
                    late: Box::new(MemorySink {
                        rows: Arc::new(Mutex::new(Vec::new())),
                    }),
                    database: None,
                    resume: Resume::default(),
                })
            },
            scorer,
            false,
        )
        .unwrap();
        let mut features: Vec<String> = features
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| {
                (0..b.rows())
                    .map(|r| format!("{:?}", b.row(r)))
                    .collect::<Vec<_>>()
            })
            .collect();
        features.sort();
        let mut predictions: Vec<String> = predictions
            .lock()
            .unwrap()
            .iter()
            .map(|p| format!("{p:?}"))
            .collect();
        predictions.sort();
        let mut alerts = alerts.lock().unwrap().clone();
        alerts.sort_by_key(|a| format!("{a:?}"));
        (report, features, predictions, alerts)
    }

    /// Workers that each run their own computation give what workers sharing one give: the
    /// same features, predictions and alert changes (each worker with the whole registry),
    /// and the same accounting.
    #[test]
    fn independent_workers_give_the_outputs_of_shared_ones() {
        let (shared, sf, sp, sa) = run_fleet(WorkerProgress::Shared);
        let (independent, inf, ip, ia) = run_fleet(WorkerProgress::Independent);
        assert_eq!(shared.read, 9_600);
        assert_eq!(
            (independent.read, independent.windowed),
            (shared.read, shared.windowed)
        );
        // Every vehicle at every pane end from its first reading to 900 s after its last.
        assert_eq!(sf.len(), 8 * (120 + 89));
        assert!(sf == inf, "features differ");
        assert!(sp == ip, "predictions differ");
        // Hot vehicles are the odd ones; only V1 and V3 are registered.
        let raised: Vec<&str> = ia
            .iter()
            .filter_map(|a| match a {
                AlertChange::Raised(alert) => Some(alert.vehicle_id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(raised, ["V1", "V3"], "{ia:?}");
        assert_eq!(sa, ia, "alert changes differ");
    }

    /// Every feed of a broadcast gets the initial rows and every batch of updates, and the
    /// forwarder ends with the updates' sender.
    #[test]
    fn a_broadcast_feed_hands_every_worker_every_update() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let vehicle = |v: &str| {
            let id = VehicleId::parse(v).unwrap();
            (TableRow::Vehicle(id, VehicleRecord::default()), 1)
        };
        let feed = AlertTableFeed {
            initial: Arc::new(vec![vehicle("V0")]),
            updates: Some(rx),
        };
        let feeds = feed.broadcast(3).unwrap();
        tx.send(vec![vehicle("V1")]).unwrap();
        tx.send(vec![vehicle("V2"), vehicle("V3")]).unwrap();
        drop(tx);
        for feed in &feeds {
            assert_eq!(feed.initial.len(), 1);
            let got: Vec<usize> = feed
                .updates
                .as_ref()
                .unwrap()
                .iter()
                .map(|b| b.len())
                .collect();
            assert_eq!(got, [1, 2], "every batch, in order, then the end");
        }
        let still = AlertTableFeed::default().broadcast(2).unwrap();
        assert!(still.iter().all(|f| f.updates.is_none()));
    }
}

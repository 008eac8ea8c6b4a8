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
    let config = config.clone();
    let clustered = config.cluster.is_some();
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
    let guards = timely::execute(timely_config, move |worker| {
        run_worker(
            worker,
            &config,
            &spec,
            &make_source,
            &make_sinks,
            &scorer,
            measure_state,
        )
    })
    .map_err(DataflowError::Timely)?;
    let mut report = RunReport::default();
    let (mut src_rejected, mut src_late) = (0, 0);
    for result in guards.join() {
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

fn run_worker<S, FS, FK>(
    worker: &mut timely::worker::Worker,
    config: &GraphConfig,
    spec: &Arc<WindowSpec>,
    make_source: &FS,
    make_sinks: &FK,
    scorer: &ScoreFn,
    measure_state: bool,
) -> Result<(RunReport, u64, u64), DataflowError>
where
    S: TelemetrySource,
    FS: Fn(usize, usize) -> Result<S, DataflowError>,
    FK: Fn(usize) -> Result<WorkerSinks, DataflowError>,
{
    let begun = Instant::now();
    let (index, peers) = (worker.index(), worker.peers());
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

    // The alert tables: worker 0 feeds them; every worker's inputs follow its source.
    let mut tables = Some(tables);
    let feed = (index == 0).then(|| config.tables.clone());
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

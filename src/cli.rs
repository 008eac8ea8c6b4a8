//! Command-line definitions (clap derive) and the subcommands' thin bodies.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use pmi_core::EventTime;
use pmi_dataflows::jobs::{self, BackfillJob, BenchJob, FleetSpec, LiveJob, SimulateJob};
use pmi_dataflows::simulated::Pace;
use pmi_dataflows::training::{
    self, ParquetTrainingSet, SimulatedTrainingSet, TableTrainJob, TrainJob, TrainingInput,
};
use pmi_dataflows::RunReport;
use pmi_models::dataset::SplitShares;
use pmi_models::registry::Registry;
use pmi_models::train::TrainParams;
use pmi_sources::fleet::SnapshotPlan;
use pmi_sources::table::{Table, TableColumns};

use crate::settings::{parse_duration, Settings};

/// PMI: streaming predictive maintenance for vehicle fleets.
#[derive(Debug, Parser)]
#[command(name = "pmi", version, about, long_about = None)]
struct Cli {
    /// TOML settings file: sections [window], [severity], [run], [simulator], [model],
    /// [kafka], [database], [alerts], [agents], [scheduling], and [flags.<subcommand>]
    /// for any flag by its long name.
    #[arg(long, global = true, env = "PMI_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Live run: simulated fleet → window features → scoring → Parquet and console alerts.
    Run(RunArgs),
    /// Write a simulated fleet's telemetry and its ground truth (failures) as Parquet, or
    /// post the telemetry to a running `pmi serve` (`--to http://HOST:PORT`).
    Simulate(SimulateArgs),
    /// The same graph in batch over telemetry Parquet (a file or a folder), any row order.
    Backfill(BackfillArgs),
    /// Benchmark: backfill Parquet → features → Parquet on a generated fleet, or
    /// (`--source kafka`) the Kafka graph beside plain consumers on a generated topic.
    Bench(BenchArgs),
    /// Train the ensemble on a simulated fleet's features (the training-set graph), evaluate
    /// it on held-out vehicles and publish it to the model registry.
    Train(TrainArgs),
    /// Evaluate a registry model on a fresh simulated fleet (vehicles it never saw).
    Evaluate(EvaluateArgs),
    /// The HTTP API with the live graph behind it: POST /ingest and /ingest/batch feed the
    /// graph (same outputs as `run`), GET /stats, /health, /metrics, /openapi.json, and
    /// POST /predict, GET /model/info with the registry's current model (hot reload).
    Serve(ServeArgs),
    /// The maintenance agents over the database the graph writes: one workflow per alert
    /// (diagnose, slots within the SLA, customer, book, confirm), and the HTTP API: GET
    /// /alerts, /appointments, /escalations, /workflows/{alert_id}, POST
    /// /appointments/{id}/reschedule and /cancel.
    Agents(AgentsArgs),
}

#[derive(Debug, Args)]
struct AgentsArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:8090", env = "PMI_AGENTS_LISTEN")]
    listen: std::net::SocketAddr,
    /// Work until a pass finds nothing to do, then exit (no HTTP API).
    #[arg(long)]
    once: bool,
    /// The clock SLAs and slots follow: `wall` (live operation) or `event` (the alerts'
    /// event time: replays and simulations) [default: wall].
    #[arg(long, value_enum, env = "PMI_AGENTS_CLOCK")]
    clock: Option<ClockArg>,
    /// Diagnosis catalogue (TOML) [default: the embedded agents/catalogue/diagnosis.toml].
    #[arg(long, env = "PMI_CATALOGUE")]
    catalogue: Option<PathBuf>,
    /// Where the graph's output lives, for the default SQLite file [default: ./pmi-data].
    #[arg(long, env = "PMI_OUT")]
    out: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ClockArg {
    /// Wall-clock time.
    Wall,
    /// The alerts' event time.
    Event,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "PMI_LISTEN")]
    listen: std::net::SocketAddr,
    /// Model registry [default: ./pmi-data/models].
    #[arg(long, env = "PMI_REGISTRY")]
    registry: Option<PathBuf>,
    /// Timely worker threads of the graph [default: 1].
    #[arg(long, env = "PMI_WORKERS")]
    workers: Option<usize>,
    /// Where the graph's Parquet goes: a folder or s3://bucket/prefix [default: ./pmi-data].
    #[arg(long, env = "PMI_OUT")]
    out: Option<String>,
    /// Readings the ingest queue holds before POSTs get 429 (at least --max-batch).
    #[arg(long, default_value_t = 100_000, env = "PMI_INGEST_QUEUE")]
    queue_capacity: usize,
    /// Most readings in one POST /ingest/batch (more: 413).
    #[arg(long, default_value_t = 10_000, env = "PMI_INGEST_MAX_BATCH")]
    max_batch: usize,
    /// Largest request body in bytes (more: 413).
    #[arg(long, default_value_t = 4 * 1024 * 1024, env = "PMI_INGEST_BODY_LIMIT")]
    body_limit: usize,
    /// With no reading for this long, the watermark follows the wall clock less the allowed
    /// lateness, so the last panes close.
    #[arg(long, default_value = "10s", env = "PMI_INGEST_IDLE_TIMEOUT", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Produce accepted readings to Kafka on these bootstrap servers instead of feeding a
    /// graph in this process (`pmi run --source kafka` reads them); --queue-capacity bounds
    /// the readings waiting for the broker.
    #[arg(long = "kafka-brokers", env = "PMI_SERVE_KAFKA_BROKERS")]
    kafka_brokers: Option<String>,
    /// With --kafka-brokers: the telemetry topic [default: the [kafka] telemetry topic].
    #[arg(long = "kafka-topic", env = "PMI_SERVE_KAFKA_TOPIC")]
    kafka_topic: Option<String>,
    /// With --kafka-brokers: topic of rejected readings ("" for none) [default: the
    /// [kafka] dead-letter topic].
    #[arg(
        long = "kafka-dead-letter-topic",
        env = "PMI_SERVE_KAFKA_DEAD_LETTER_TOPIC"
    )]
    kafka_dead_letter_topic: Option<String>,
    /// With --kafka-brokers: how long a request waits for the broker before `503`.
    #[arg(long = "kafka-delivery-timeout", default_value = "30s", value_parser = parse_duration)]
    kafka_delivery_timeout: Duration,
}

#[derive(Debug, Args)]
struct TrainArgs {
    /// Vehicles in the simulated fleet.
    #[arg(long, default_value_t = 100, env = "PMI_TRAIN_VEHICLES")]
    vehicles: u32,
    /// Simulated days (every failure mode should appear several times).
    #[arg(long, default_value_t = 60, env = "PMI_TRAIN_DAYS")]
    days: u32,
    /// Snapshots per vehicle and day.
    #[arg(long, default_value_t = 8, env = "PMI_TRAIN_SNAPSHOTS_PER_DAY")]
    snapshots_per_day: u32,
    /// Seed of the simulated fleet, the split and training [default: the simulator seed].
    #[arg(long, env = "PMI_SEED")]
    seed: Option<u64>,
    /// Timely worker threads [default: available cores].
    #[arg(long, env = "PMI_WORKERS")]
    workers: Option<usize>,
    /// Registry folder [default: ./pmi-data/models].
    #[arg(long, env = "PMI_REGISTRY")]
    registry: Option<PathBuf>,
    /// Publish without marking the new version current.
    #[arg(long)]
    no_current: bool,
    /// Also write the labelled training set, with its split, as a Parquet table (a file,
    /// or an s3://…/name.parquet object; for `pmi train --table`, `benches/reference.py` or
    /// any other tool).
    #[arg(long)]
    export: Option<String>,
    #[command(flatten)]
    recorded: RecordedArgs,
    #[command(flatten)]
    table: TableArgs,
    /// With `--table`: a separate test table (same columns) instead of a split of the table.
    #[arg(long, requires = "table")]
    test: Option<String>,
}

/// One process of a timely cluster (for `run` and `backfill`).
#[derive(Debug, Args)]
struct ClusterArgs {
    /// Processes in the cluster (each runs `--workers` threads).
    #[arg(long, default_value_t = 1, env = "PMI_PROCESSES")]
    processes: usize,
    /// This process's index, 0 ..processes.
    #[arg(long, default_value_t = 0, env = "PMI_PROCESS")]
    process: usize,
    /// One `host:port` per process, in process order (needed with --processes > 1).
    #[arg(long, env = "PMI_HOSTFILE")]
    hostfile: Option<PathBuf>,
}

impl ClusterArgs {
    fn cluster(&self) -> anyhow::Result<Option<pmi_dataflows::Cluster>> {
        if self.processes <= 1 {
            anyhow::ensure!(
                self.process == 0,
                "--process {} without --processes",
                self.process
            );
            return Ok(None);
        }
        let hostfile = self
            .hostfile
            .as_deref()
            .context("--processes > 1 needs --hostfile (one host:port per process)")?;
        Ok(Some(pmi_dataflows::Cluster::from_hostfile(
            hostfile,
            self.processes,
            self.process,
        )?))
    }
}

/// An operator's labelled table (for `train` and `evaluate`).
#[derive(Debug, Args)]
struct TableArgs {
    /// Use an operator's labelled table (CSV or Parquet, a path or an s3:// URL, e.g. a
    /// training set exported with --export) instead of the simulator: numeric columns are
    /// features, empty cells and `na` are missing.
    #[arg(long, requires = "label")]
    table: Option<String>,
    /// The table's label column (empty, 0, false, no, none, normal, healthy: negative; any
    /// other value: a positive class of that name).
    #[arg(long)]
    label: Option<String>,
    /// The table's group column (e.g. a vehicle id): a group never straddles the split.
    #[arg(long)]
    group: Option<String>,
    /// The table's time column (ms since the epoch or a timestamp).
    #[arg(long)]
    time: Option<String>,
    /// The table's split column (train / valid / test), fixing the split.
    #[arg(long)]
    split_column: Option<String>,
    /// Columns of the table that are not features (repeat the flag for several).
    #[arg(long)]
    ignore: Vec<String>,
}

impl TableArgs {
    fn columns(&self) -> TableColumns {
        TableColumns {
            label: self.label.clone().unwrap_or_default(),
            group: self.group.clone(),
            time: self.time.clone(),
            split: self.split_column.clone(),
            ignore: self.ignore.clone(),
        }
    }
}

#[derive(Debug, Args)]
struct EvaluateArgs {
    /// Registry version to evaluate [default: the current one].
    #[arg(long)]
    version: Option<String>,
    /// Vehicles in the fresh fleet.
    #[arg(long, default_value_t = 30)]
    vehicles: u32,
    /// Simulated days.
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// Snapshots per vehicle and day.
    #[arg(long, default_value_t = 8)]
    snapshots_per_day: u32,
    /// Seed of the fresh fleet (use another than training's).
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Timely worker threads [default: available cores].
    #[arg(long, env = "PMI_WORKERS")]
    workers: Option<usize>,
    /// Registry folder [default: ./pmi-data/models].
    #[arg(long, env = "PMI_REGISTRY")]
    registry: Option<PathBuf>,
    /// Folder for evaluation.json, report.txt and the plots [default: the version's
    /// folder, under evaluations/].
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    table: TableArgs,
    #[command(flatten)]
    recorded: RecordedArgs,
}

/// Recorded telemetry with its ground truth (for `train` and `evaluate`).
#[derive(Debug, Args)]
struct RecordedArgs {
    /// Use recorded telemetry Parquet (a file or folder, e.g. `pmi simulate`'s telemetry/,
    /// or an s3:// URL) instead of the simulator; needs `--ground-truth`.
    #[arg(long, requires = "ground_truth")]
    telemetry: Option<String>,
    /// Ground truth for `--telemetry`: Parquet with vehicle_id, component, onset, failure
    /// (a path or an s3:// URL).
    #[arg(long, requires = "telemetry")]
    ground_truth: Option<String>,
    /// With `--telemetry`: keep one feature vector per vehicle every this long.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    every: Duration,
}

/// The simulated fleet of a training or evaluation set.
struct FleetSize {
    vehicles: u32,
    days: u32,
    per_day: u32,
    seed: u64,
}

impl RecordedArgs {
    /// The recorded telemetry when given, else the simulated fleet.
    fn or_simulated(
        &self,
        settings: &Settings,
        fleet: &FleetSize,
        workers: usize,
    ) -> TrainingInput {
        if self.telemetry.is_none() {
            return TrainingInput::Simulated(training_set(
                settings,
                fleet.vehicles,
                fleet.days,
                fleet.per_day,
                fleet.seed,
                workers,
            ));
        }
        TrainingInput::Parquet(ParquetTrainingSet {
            telemetry: self.telemetry.clone().unwrap_or_default(),
            ground_truth: self.ground_truth.clone().unwrap_or_default(),
            every_ms: self.every.as_millis() as i64,
            horizon_ms: settings.model.horizon_days as i64 * 86_400_000,
            graph: pmi_dataflows::GraphConfig {
                workers,
                ..graph_config(settings)
            },
        })
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Speed {
    /// One reading per vehicle per second of wall-clock time.
    Realtime,
    /// As fast as the graph goes, over the given span of event time.
    Max,
}

#[derive(Debug, Args)]
struct FleetArgs {
    /// Vehicles in the simulated fleet [default: 10].
    #[arg(long, env = "PMI_VEHICLES")]
    vehicles: Option<u32>,
    /// Simulator seed [default: 42].
    #[arg(long, env = "PMI_SEED")]
    seed: Option<u64>,
    /// Emit occasional bad readings (dropouts, spikes, duplicates, late, malformed).
    #[arg(long, env = "PMI_BAD_READINGS")]
    bad_readings: bool,
    /// Start of simulated event time, ms since the epoch [default: now − duration for
    /// `--speed max` and `simulate`, now for realtime].
    #[arg(long, env = "PMI_START_MS")]
    start_ms: Option<i64>,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    fleet: FleetArgs,
    /// Pace of simulated time.
    #[arg(long, value_enum, default_value = "realtime", env = "PMI_SPEED")]
    speed: Speed,
    /// How much event time to run (e.g. 90s, 15m, 2h, 7d) [default: until stopped for
    /// realtime, 1h for max].
    #[arg(long, env = "PMI_DURATION", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Timely worker threads [default: 1].
    #[arg(long, env = "PMI_WORKERS")]
    workers: Option<usize>,
    /// Where the Parquet goes: a folder or s3://bucket/prefix [default: ./pmi-data].
    #[arg(long, env = "PMI_OUT")]
    out: Option<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Model registry: its current model scores, and a newly published one takes over
    /// without a restart; the domain rules score while it has none [default:
    /// ./pmi-data/models].
    #[arg(long, env = "PMI_REGISTRY")]
    registry: Option<PathBuf>,
    /// Where telemetry comes from.
    #[arg(long, value_enum, default_value = "simulator", env = "PMI_SOURCE")]
    source: SourceKind,
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Do not run the maintenance agents beside the graph.
    #[arg(long)]
    no_agents: bool,
    /// Diagnosis catalogue (TOML) [default: the embedded one].
    #[arg(long, env = "PMI_CATALOGUE")]
    catalogue: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SourceKind {
    /// The built-in fleet simulator.
    Simulator,
    /// A Kafka topic of JSON readings ([kafka] settings and the --kafka-* flags).
    Kafka,
}

/// Kafka settings of `pmi run --source kafka` (each also a `[kafka]` key).
#[derive(Debug, Args)]
struct KafkaArgs {
    /// Bootstrap servers [default: 127.0.0.1:19092].
    #[arg(long = "kafka-brokers", env = "PMI_KAFKA_BROKERS")]
    brokers: Option<String>,
    /// Telemetry topic [default: pmi.telemetry].
    #[arg(long = "kafka-topic", env = "PMI_KAFKA_TOPIC")]
    topic: Option<String>,
    /// Consumer group [default: pmi].
    #[arg(long = "kafka-group", env = "PMI_KAFKA_GROUP")]
    group: Option<String>,
    /// Read up to the topic's end as of the start, then finish (a backfill from Kafka).
    #[arg(long = "kafka-bounded")]
    bounded: bool,
    /// Predictions topic ("" for none) [default: pmi.predictions].
    #[arg(long = "kafka-predictions-topic", env = "PMI_KAFKA_PREDICTIONS_TOPIC")]
    predictions_topic: Option<String>,
    /// Alerts topic ("" for the console) [default: pmi.alerts].
    #[arg(long = "kafka-alerts-topic", env = "PMI_KAFKA_ALERTS_TOPIC")]
    alerts_topic: Option<String>,
    /// Dead-letter topic ("" for none) [default: pmi.dead-letter].
    #[arg(long = "kafka-dead-letter-topic", env = "PMI_KAFKA_DEAD_LETTER_TOPIC")]
    dead_letter_topic: Option<String>,
    /// Idle timeout of a partition (e.g. 10s) [default: 10s].
    #[arg(long = "kafka-idle-timeout", value_parser = parse_duration)]
    idle_timeout: Option<Duration>,
    /// Sink checkpoint (and offset commit) interval, ms [default: 5000].
    #[arg(long = "checkpoint-ms", env = "PMI_CHECKPOINT_MS")]
    checkpoint_ms: Option<u64>,
    /// Accept readings with timestamps in the future (replays of simulated spans).
    #[arg(long = "kafka-any-time")]
    any_time: bool,
}

impl KafkaArgs {
    fn apply(&self, k: &mut crate::settings::KafkaSettings) {
        let set = |dst: &mut String, src: &Option<String>| {
            if let Some(v) = src {
                *dst = v.clone();
            }
        };
        set(&mut k.brokers, &self.brokers);
        set(&mut k.telemetry_topic, &self.topic);
        set(&mut k.group, &self.group);
        set(&mut k.predictions_topic, &self.predictions_topic);
        set(&mut k.alerts_topic, &self.alerts_topic);
        set(&mut k.dead_letter_topic, &self.dead_letter_topic);
        if let Some(t) = self.idle_timeout {
            k.idle_timeout_s = t.as_secs();
        }
        if let Some(c) = self.checkpoint_ms {
            k.checkpoint_ms = c;
        }
    }
}

#[derive(Debug, Args)]
struct SimulateArgs {
    #[command(flatten)]
    fleet: FleetArgs,
    /// Span of event time to simulate [default: 1h; with `--to` at realtime speed, until
    /// stopped].
    #[arg(long, env = "PMI_DURATION", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Send the readings instead of writing Parquet: `http://HOST:PORT` posts them to
    /// `pmi serve` (`POST /ingest/batch`; a full queue, 429, is retried until they are
    /// taken); `kafka://HOST:PORT[,…]/TOPIC` produces them (JSON, key = vehicle id) to a
    /// topic, created with --partitions if missing, and writes the ground truth to --out.
    #[arg(long, env = "PMI_SIMULATE_TO")]
    to: Option<String>,
    /// Pace with `--to`: realtime (one tick per second, from now) or max (a past span as fast
    /// as the server takes it) [default: realtime].
    #[arg(long, value_enum, requires = "to")]
    speed: Option<Speed>,
    /// Most readings per request with `--to`.
    #[arg(long, default_value_t = 1000, requires = "to")]
    batch: usize,
    /// Output folder (telemetry/ and ground_truth/ are written in it) [default: ./pmi-data].
    #[arg(long, env = "PMI_OUT")]
    out: Option<String>,
    /// Partitions of a topic `--to kafka://…` creates.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Serve the fleet over HTTP instead (`GET /vehicles`, `/telemetry`, the WebSocket
    /// `/telemetry/stream`, `/ground_truth`), driving in real time from now until stopped
    /// (or for --duration), e.g. 127.0.0.1:8090.
    #[arg(long, conflicts_with = "to")]
    listen: Option<std::net::SocketAddr>,
    /// With --listen: wall-clock time per tick (1 s of event time); below 1s runs the
    /// fleet faster than real time.
    #[arg(long, default_value = "1s", value_parser = parse_duration, requires = "listen")]
    tick: Duration,
    /// With --listen: readings kept per vehicle for `GET /telemetry`.
    #[arg(long, default_value_t = 600, requires = "listen")]
    keep: usize,
    /// With --listen: readings the live stream buffers per client before it reports a lag
    /// [default: 10 ticks of the fleet, at least 1024].
    #[arg(long, requires = "listen")]
    stream_buffer: Option<usize>,
}

/// Where predictions and alerts are upserted besides Parquet (`[database]`).
#[derive(Debug, Args)]
struct DatabaseArgs {
    /// `sqlite://path` or `postgres://user@host:port/db` [default: sqlite://OUT/pmi.sqlite].
    #[arg(long, env = "PMI_DATABASE_URL")]
    database_url: Option<String>,
    /// Write nothing to a database.
    #[arg(long)]
    no_database: bool,
    /// Also upsert every accepted reading into `vehicle_telemetry`.
    #[arg(long)]
    database_telemetry: bool,
}

#[derive(Debug, Args)]
struct BackfillArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Telemetry Parquet: a file, a folder, or s3://bucket/prefix (Hive `date=` folders
    /// outside --from/--to are not read).
    #[arg(long, env = "PMI_INPUT")]
    input: String,
    /// First UTC date (YYYY-MM-DD) of readings to read.
    #[arg(long, value_parser = parse_date)]
    from: Option<i64>,
    /// Last UTC date (YYYY-MM-DD, included) of readings to read.
    #[arg(long, value_parser = parse_date)]
    to: Option<i64>,
    /// Where the Parquet goes: a folder or s3://bucket/prefix [default: ./pmi-data].
    #[arg(long, env = "PMI_OUT")]
    out: Option<String>,
    /// Timely worker threads [default: 1].
    #[arg(long, env = "PMI_WORKERS")]
    workers: Option<usize>,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Model registry: its current model scores, and a newly published one takes over
    /// without a restart; the domain rules score while it has none [default:
    /// ./pmi-data/models].
    #[arg(long, env = "PMI_REGISTRY")]
    registry: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Vehicles in the generated fleet.
    #[arg(long, default_value_t = 1000)]
    vehicles: u32,
    /// Event time per vehicle (1 Hz readings).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    duration: Duration,
    /// Timely worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Aggregate only the first N sensors (N ≤ 14) instead of every channel.
    #[arg(long)]
    sensors: Option<usize>,
    /// Backfill the generated input this many times and report the median run (with the
    /// fastest and slowest): on a shared machine one run's time varies by a fifth or more.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: u32,
    /// Keep the generated input and the outputs in this folder [default: a temporary one].
    /// What an earlier bench left in its `input`, `output`, `output-s3` and
    /// `ground_truth` subfolders is removed first.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Also time the backfill with its input in this object store (e.g. s3://pmi/bench;
    /// endpoint and credentials from AWS_*), and report the ratio to local files.
    #[arg(long)]
    s3: Option<String>,
    /// Instead of the graph: the SQL prediction sink's rate, --workers sinks writing
    /// --sql-rows predictions into a fresh database on this server (postgres://… or
    /// sqlite://…).
    #[arg(long)]
    sql: Option<String>,
    /// Predictions written by the --sql benchmark.
    #[arg(long, default_value_t = 1_000_000)]
    sql_rows: usize,
    /// Instead of the graph: this many simultaneous alerts through the master agent, on
    /// the database of --sql (default: a SQLite file in --dir or a temporary folder);
    /// reports alert-to-appointment latency and throughput.
    #[arg(long)]
    agents: Option<usize>,
    /// Workflows the --agents benchmark advances at once.
    #[arg(long, default_value_t = 8)]
    agents_concurrency: usize,
    /// What the graph reads: Parquet (a backfill), or a Kafka topic filled for the run
    /// (compared with plain rdkafka consumers on the same topic).
    #[arg(long, value_enum, default_value = "parquet")]
    source: BenchSource,
    /// With `--source kafka`: bootstrap servers [default: the [kafka] brokers].
    #[arg(long = "kafka-brokers", env = "PMI_KAFKA_BROKERS")]
    kafka_brokers: Option<String>,
    /// With `--source kafka`: partitions of the generated topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BenchSource {
    /// Generated Parquet, through the backfill graph.
    Parquet,
    /// A generated Kafka topic, through the `run --source kafka` graph.
    Kafka,
}

/// Entry point of the CLI.
pub fn main() -> anyhow::Result<()> {
    // Parsed twice: once to find the settings file, then again with the flags its
    // `[flags.<subcommand>]` table sets (see `flags`).
    let command = crate::flags::with_env(Cli::command());
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let first = command.clone().get_matches_from(argv.clone());
    let mut settings = Settings::load(first.get_one::<PathBuf>("config").map(PathBuf::as_path))?;
    let argv = crate::flags::from_file(&command, &first, argv, &settings.flags)?;
    let cli = Cli::from_arg_matches(&command.get_matches_from(argv))?;
    match cli.command {
        Command::Run(args) => {
            apply_fleet(&mut settings, &args.fleet);
            if let Some(w) = args.workers {
                settings.run.workers = w;
            }
            if let Some(o) = args.out.clone() {
                settings.run.out_dir = o;
            }
            let pace = match args.speed {
                Speed::Realtime => Pace::Realtime,
                Speed::Max => Pace::Max,
            };
            let duration = match (pace, args.duration) {
                (_, Some(d)) => Some(d),
                (Pace::Max, None) => Some(Duration::from_secs(3600)),
                (Pace::Realtime, None) => None,
            };
            let now = EventTime::now();
            let start = args
                .fleet
                .start_ms
                .map(EventTime)
                .unwrap_or(match (pace, duration) {
                    (Pace::Max, Some(d)) => EventTime(now.0 - d.as_millis() as i64),
                    _ => now,
                });
            if args.source == SourceKind::Kafka {
                return run_kafka(&mut settings, &args);
            }
            let job = LiveJob {
                fleet: fleet_spec(&settings, start),
                pace,
                duration,
                graph: pmi_dataflows::GraphConfig {
                    cluster: args.cluster.cluster()?,
                    ..graph_config(&settings)
                },
                out: open_out(&settings.run.out_dir)?,
                write_telemetry: settings.run.write_telemetry,
                severity: settings.severity,
                model_registry: Some(
                    args.registry
                        .clone()
                        .unwrap_or(settings.model.registry.clone()),
                ),
                database: database(&mut settings, &args.database)?,
            };
            settings.run.agents &= !args.no_agents;
            let catalogue = catalogue(args.catalogue.as_deref())?;
            let mut job = job;
            job.graph.alert_features = std::sync::Arc::new(catalogue.feature_names());
            let agents = match (&job.database, settings.run.agents) {
                (Some(sql), true) => {
                    // The schema must exist before the agent reads it.
                    pmi_sinks::sql::prepare(&sql.config)?;
                    let mut master = settings.agents.clone();
                    master.clock = match pace {
                        Pace::Max => pmi_agents::Clock::EventTime,
                        Pace::Realtime => pmi_agents::Clock::Wall,
                    };
                    Some(crate::agents::InProcess::start(
                        sql.config.clone(),
                        master,
                        settings.scheduling.clone(),
                        catalogue,
                    )?)
                }
                _ => None,
            };
            let report = jobs::live(&job)?;
            print_report("run", &report, &settings.run.out_dir);
            if let Some(agents) = agents {
                let summary = agents.finish()?;
                crate::agents::print_summary("agents", &summary);
            }
        }
        Command::Agents(args) => {
            if let Some(o) = args.out.clone() {
                settings.run.out_dir = o;
            }
            let Some(sql) = database(&mut settings, &args.database)? else {
                anyhow::bail!(
                    "pmi agents needs a database: drop --no-database / [database] enabled = false"
                );
            };
            let mut master = settings.agents.clone();
            master.clock = match args.clock {
                Some(ClockArg::Event) => pmi_agents::Clock::EventTime,
                Some(ClockArg::Wall) | None => pmi_agents::Clock::Wall,
            };
            let listen = (!args.once).then_some(args.listen);
            crate::agents::serve(
                &sql.config,
                master,
                settings.scheduling.clone(),
                catalogue(args.catalogue.as_deref())?,
                listen,
                args.once,
            )?;
        }
        Command::Simulate(args) => {
            apply_fleet(&mut settings, &args.fleet);
            if let Some(listen) = args.listen {
                let start = args
                    .fleet
                    .start_ms
                    .map(EventTime)
                    .unwrap_or(EventTime::now());
                let span = args.duration.unwrap_or(Duration::from_secs(30 * 86_400));
                let fleet = fleet_spec(&settings, start).simulator_config(span);
                let service = crate::simulator_api::SimulatorService {
                    stream_buffer: args
                        .stream_buffer
                        .unwrap_or((fleet.vehicles as usize * 10).max(1024)),
                    fleet,
                    tick: args.tick,
                    keep: args.keep,
                };
                let end = args
                    .duration
                    .map(|d| EventTime(start.0 + d.as_millis() as i64));
                return crate::simulator_api::serve(service, listen, end);
            }
            if let Some(to) = args.to.as_deref().filter(|t| !t.starts_with("kafka://")) {
                simulate_to(&settings, &args, to)?;
                return Ok(());
            }
            let duration = args.duration.unwrap_or(Duration::from_secs(3600));
            let out = args.out.unwrap_or(settings.run.out_dir.clone());
            let start = args
                .fleet
                .start_ms
                .map(EventTime)
                .unwrap_or(EventTime(EventTime::now().0 - duration.as_millis() as i64));
            let job = SimulateJob {
                fleet: fleet_spec(&settings, start),
                duration,
                out: open_out(&out)?,
            };
            let summary = match args.to.as_deref() {
                None => jobs::simulate(&job)?,
                Some(to) => {
                    anyhow::ensure!(
                        !matches!(args.speed, Some(Speed::Realtime)),
                        "--to kafka://… produces a past span as fast as the broker takes it: use --speed max"
                    );
                    let Some(rest) = to.strip_prefix("kafka://") else {
                        anyhow::bail!("--to `{to}`: expected kafka://HOST:PORT/TOPIC");
                    };
                    let Some((brokers, topic)) = rest.split_once('/') else {
                        anyhow::bail!("--to `{to}`: expected kafka://HOST:PORT/TOPIC");
                    };
                    pmi_dataflows::kafka::produce_simulated(&job, brokers, topic, args.partitions)
                        .with_context(|| format!("producing to {to}"))?
                }
            };
            println!(
                "simulate: {} readings ({} rejected by validation downstream expected: {}), {} failures in ground truth → {}",
                summary.readings,
                summary.bad_readings,
                settings.simulator.bad_readings,
                summary.failures,
                out
            );
        }
        Command::Backfill(args) => {
            if let Some(w) = args.workers {
                settings.run.workers = w;
            }
            let out = args.out.unwrap_or(settings.run.out_dir.clone());
            settings.run.out_dir = out.clone();
            if let (Some(from), Some(to)) = (args.from, args.to) {
                anyhow::ensure!(from <= to, "--from is after --to");
            }
            let job = BackfillJob {
                input: args.input.clone(),
                range: pmi_sources::parquet_in::TimeRange {
                    from_ms: args.from,
                    to_ms: args.to.map(|d| d + 86_400_000),
                },
                out: open_out(&out)?,
                graph: pmi_dataflows::GraphConfig {
                    cluster: args.cluster.cluster()?,
                    ..graph_config(&settings)
                },
                severity: settings.severity,
                model_registry: Some(
                    args.registry
                        .clone()
                        .unwrap_or(settings.model.registry.clone()),
                ),
                database: database(&mut settings, &args.database)?,
            };
            let report =
                jobs::backfill(&job).with_context(|| format!("backfill of {}", args.input))?;
            print_report("backfill", &report, &out);
        }
        Command::Bench(args) => {
            if let Some(n) = args.agents {
                let tmp = tempfile::tempdir()?;
                let url = match &args.sql {
                    Some(u) => u.clone(),
                    None => format!(
                        "sqlite://{}",
                        args.dir
                            .as_deref()
                            .unwrap_or(tmp.path())
                            .join("agents-bench.sqlite")
                            .display()
                    ),
                };
                let r = crate::agents::bench(&url, n, args.agents_concurrency)?;
                println!(
                    "bench: {} simultaneous alerts through the master agent ({}, {} at once): \
                     {} confirmed, {} escalated in {:.2} s = {:.0} workflows/s; \
                     alert-to-outcome latency p50 {} ms, p95 {} ms, p99 {} ms, max {} ms; \
                     agent time per workflow p50 {} ms, p95 {} ms, p99 {} ms, max {} ms",
                    r.alerts,
                    r.backend,
                    r.concurrency,
                    r.confirmed,
                    r.escalated,
                    r.seconds,
                    r.workflows_per_s,
                    r.latency_ms[0],
                    r.latency_ms[1],
                    r.latency_ms[2],
                    r.latency_ms[3],
                    r.service_ms[0],
                    r.service_ms[1],
                    r.service_ms[2],
                    r.service_ms[3]
                );
                return Ok(());
            }
            if let Some(url) = &args.sql {
                let r = pmi_sinks::sql::bench::predictions(url, args.workers, args.sql_rows)?;
                println!(
                    "bench: SQL prediction sink ({:?}), {} writers, batches of {}: {} rows in {:.2} s = {:.0} rows/s",
                    r.backend, r.writers, r.batch_rows, r.rows, r.seconds, r.rows_per_s
                );
                return Ok(());
            }
            let mut window = settings.window.clone();
            if let Some(n) = args.sensors {
                anyhow::ensure!((1..=14).contains(&n), "--sensors must be between 1 and 14");
                window.channels = pmi_core::Sensor::ALL[..n]
                    .iter()
                    .map(|s| s.name().to_owned())
                    .collect();
            }
            if args.source == BenchSource::Kafka {
                let job = pmi_dataflows::kafka_bench::KafkaBenchJob {
                    brokers: args.kafka_brokers.unwrap_or(settings.kafka.brokers.clone()),
                    vehicles: args.vehicles,
                    duration: args.duration,
                    workers: args.workers,
                    partitions: args.partitions,
                    window,
                    dir: args.dir,
                };
                let result = pmi_dataflows::kafka_bench::bench_kafka(&job)
                    .with_context(|| format!("kafka bench on {}", job.brokers))?;
                println!("{}", result.render());
                return Ok(());
            }
            let job = BenchJob {
                vehicles: args.vehicles,
                duration: args.duration,
                workers: args.workers,
                window,
                dir: args.dir,
                s3: args.s3,
                runs: args.runs as usize,
            };
            let result = jobs::bench(&job)?;
            println!("{}", result.render());
        }
        Command::Train(args) => train(&settings, args)?,
        Command::Evaluate(args) => evaluate(&settings, args)?,
        Command::Serve(args) => {
            let rules = pmi_models::RuleScorer::new(
                pmi_models::RuleSet {
                    severity: settings.severity,
                    ..Default::default()
                },
                &settings.window.schema()?,
            )?;
            anyhow::ensure!(
                args.max_batch >= 1 && args.queue_capacity >= args.max_batch,
                "--queue-capacity ({}) must be at least --max-batch ({}), and both at least 1",
                args.queue_capacity,
                args.max_batch
            );
            if let Some(w) = args.workers {
                settings.run.workers = w;
            }
            if let Some(o) = args.out {
                settings.run.out_dir = o;
            }
            let registry = args.registry.unwrap_or(settings.model.registry.clone());
            let api = crate::serve::Api::new(registry.clone(), &settings.window, rules)?;
            if let Some(brokers) = &args.kafka_brokers {
                let k = &settings.kafka;
                let topic = args.kafka_topic.as_deref().unwrap_or(&k.telemetry_topic);
                let dead_letter = args
                    .kafka_dead_letter_topic
                    .clone()
                    .unwrap_or(k.dead_letter_topic.clone());
                let mut producer = pmi_sinks::kafka::KafkaSinkConfig::new(brokers, topic);
                producer.delivery_timeout = Some(args.kafka_delivery_timeout);
                let config = crate::serve::KafkaServeConfig {
                    addr: args.listen,
                    producer,
                    dead_letter: (!dead_letter.is_empty()).then_some(dead_letter),
                    partitions: 4,
                    capacity: args.queue_capacity,
                    limits: crate::ingest::IngestLimits {
                        max_batch: args.max_batch,
                        body_limit: args.body_limit,
                        ..Default::default()
                    },
                };
                let s = tokio::runtime::Runtime::new()?
                    .block_on(crate::serve::serve_to_kafka(
                        std::sync::Arc::new(api),
                        config,
                    ))
                    .with_context(|| format!("serve to Kafka topic `{topic}` on {brokers}"))?;
                println!(
                    "serve: {} readings accepted, {} rejected; {} delivered to Kafka topic `{topic}` (rejected ones to the dead-letter topic, if any), {} failed",
                    s.accepted, s.rejected, s.delivered, s.failed
                );
                return Ok(());
            }
            let config = crate::serve::ServeConfig {
                addr: args.listen,
                job: jobs::IngestJob {
                    graph: graph_config(&settings),
                    out: open_out(&settings.run.out_dir)?,
                    write_telemetry: settings.run.write_telemetry,
                    severity: settings.severity,
                    model_registry: Some(registry),
                    database: database(&mut settings, &args.database)?,
                },
                queue: pmi_sources::ingest::IngestOptions {
                    capacity: args.queue_capacity,
                    idle_timeout: args.idle_timeout,
                    ..Default::default()
                },
                limits: crate::ingest::IngestLimits {
                    max_batch: args.max_batch,
                    body_limit: args.body_limit,
                    ..Default::default()
                },
            };
            let report = tokio::runtime::Runtime::new()?
                .block_on(crate::serve::serve(std::sync::Arc::new(api), config))?;
            print_report("serve", &report, &settings.run.out_dir);
        }
    }
    Ok(())
}

/// `pmi simulate --to URL`.
fn simulate_to(settings: &Settings, args: &SimulateArgs, to: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        to.starts_with("http://"),
        "--to {to}: give the base URL of `pmi serve`, e.g. http://127.0.0.1:8080"
    );
    let realtime = !matches!(args.speed, Some(Speed::Max));
    let duration = match (realtime, args.duration) {
        (_, Some(d)) => Some(d),
        (false, None) => Some(Duration::from_secs(3600)),
        (true, None) => None,
    };
    let now = EventTime::now();
    let start = args
        .fleet
        .start_ms
        .map(EventTime)
        .unwrap_or(match (realtime, duration) {
            (false, Some(d)) => EventTime(now.0 - d.as_millis() as i64),
            _ => now,
        });
    // The same fleet as `pmi simulate` writes to Parquet for the same span and seed.
    let span = duration.unwrap_or(Duration::from_secs(30 * 86_400));
    let job = crate::post::PostJob {
        to: to.to_owned(),
        fleet: fleet_spec(settings, start).simulator_config(span),
        end: duration.map(|d| EventTime(start.0 + d.as_millis() as i64)),
        realtime,
        batch: args.batch,
    };
    let started = std::time::Instant::now();
    let s = tokio::runtime::Runtime::new()?.block_on(crate::post::post(&job))?;
    println!(
        "simulate: sent {} readings to {to} in {} requests ({} retried after 429): {} accepted, {} rejected (dead-letter) in {:.1} s",
        s.sent,
        s.requests,
        s.retries,
        s.accepted,
        s.rejected,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn write_evaluation(
    out: &std::path::Path,
    ev: &pmi_models::evaluate::Evaluation,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let text = ev.render_text();
    std::fs::write(out.join("evaluation.json"), serde_json::to_vec_pretty(ev)?)?;
    std::fs::write(out.join("report.txt"), &text)?;
    for (name, svg) in ev.plots()? {
        std::fs::write(out.join(name), svg)?;
    }
    print!("{text}");
    Ok(())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The simulated training (or evaluation) set of the settings.
fn training_set(
    settings: &Settings,
    vehicles: u32,
    days: u32,
    per_day: u32,
    seed: u64,
    workers: usize,
) -> SimulatedTrainingSet {
    let mut fleet = fleet_spec(settings, EventTime(1_767_225_600_000));
    fleet.vehicles = vehicles;
    fleet.seed = seed;
    fleet.bad_readings = false;
    SimulatedTrainingSet {
        fleet,
        plan: SnapshotPlan {
            days,
            per_day,
            ..SnapshotPlan::default()
        },
        horizon_ms: settings.model.horizon_days as i64 * 86_400_000,
        graph: pmi_dataflows::GraphConfig {
            workers,
            ..graph_config(settings)
        },
    }
}

fn read(location: &str, cols: &TableColumns) -> anyhow::Result<Table> {
    let t = pmi_sources::table::read_table_at(location, cols)?;
    if !t.ignored.is_empty() {
        tracing::info!(columns = %t.ignored.join(", "), "non-numeric columns ignored");
    }
    Ok(t)
}

fn train_params(settings: &Settings, seed: u64) -> TrainParams {
    TrainParams {
        seed,
        severity: settings.severity,
        ..TrainParams::default()
    }
}

fn train(settings: &Settings, args: TrainArgs) -> anyhow::Result<()> {
    let seed = args.seed.unwrap_or(settings.simulator.seed);
    if let Some(path) = &args.table.table {
        let cols = args.table.columns();
        let table = read(path, &cols)?;
        let test = args.test.as_deref().map(|t| read(t, &cols)).transpose()?;
        let (version, dir, ev) = training::train_table(TableTrainJob {
            table,
            test,
            trained_on: format!("table {path} (label `{}`)", cols.label),
            params: train_params(settings, seed),
            shares: SplitShares::default(),
            registry: args.registry.unwrap_or(settings.model.registry.clone()),
            make_current: !args.no_current,
        })?;
        print!("{}", ev.render_text());
        println!("train: {} → {version} ({})", path, dir.display());
        return Ok(());
    }
    let workers = args.workers.unwrap_or_else(cores);
    let fleet = FleetSize {
        vehicles: args.vehicles,
        days: args.days,
        per_day: args.snapshots_per_day,
        seed,
    };
    let set = args.recorded.or_simulated(settings, &fleet, workers);
    let job = TrainJob {
        set,
        params: train_params(settings, seed),
        shares: SplitShares::default(),
        registry: args.registry.unwrap_or(settings.model.registry.clone()),
        make_current: !args.no_current,
        export: args.export.clone(),
    };
    let o = training::train(&job)?;
    println!("held-out vehicles in service (the engine ran in the longest window):");
    print!("{}", o.evaluation.render_text());
    println!(
        "all held-out vectors (parked included): ROC-AUC {}, PR-AUC {}",
        o.all_vectors
            .overall
            .roc_auc
            .map_or("–".into(), |x| format!("{x:.4}")),
        o.all_vectors
            .overall
            .pr_auc
            .map_or("–".into(), |x| format!("{x:.4}")),
    );
    println!(
        "train: {} rows ({} positive, {} parked) from {} readings; vehicles {} train / {} validation / {} test; set {:.1} s, fit {:.1} s, evaluation {:.1} s → {} ({})",
        o.rows,
        o.positives,
        o.parked,
        o.readings,
        o.vehicles[0],
        o.vehicles[1],
        o.vehicles[2],
        o.seconds[0],
        o.seconds[1],
        o.seconds[2],
        o.version,
        o.path.display(),
    );
    Ok(())
}

fn evaluate(settings: &Settings, args: EvaluateArgs) -> anyhow::Result<()> {
    let registry = Registry::new(args.registry.unwrap_or(settings.model.registry.clone()));
    let version = match args.version {
        Some(v) => v,
        None => registry.current()?.with_context(|| {
            format!(
                "no current model in {}: run `pmi train` first",
                registry.root().display()
            )
        })?,
    };
    let model = registry.load(&version)?;
    if let Some(path) = &args.table.table {
        let cols = args.table.columns();
        let table = read(path, &cols)?;
        let rows: Vec<usize> = match &table.split {
            Some(s) => s.test.clone(),
            None => (0..table.dataset.len()).collect(),
        };
        let ev = pmi_models::evaluate::evaluate(&model, &table.dataset, &rows)
            .with_context(|| format!("evaluating {version} on {}", path))?;
        let out = args
            .out
            .unwrap_or_else(|| registry.path_of(&version).join("evaluations").join("table"));
        write_evaluation(&out, &ev)?;
        println!(
            "evaluate: {version} on {} ({} rows) → {}",
            path,
            rows.len(),
            out.display()
        );
        return Ok(());
    }
    let workers = args.workers.unwrap_or_else(cores);
    let fleet = FleetSize {
        vehicles: args.vehicles,
        days: args.days,
        per_day: args.snapshots_per_day,
        seed: args.seed,
    };
    let input = args.recorded.or_simulated(settings, &fleet, workers);
    let (ev, ts) = training::evaluate_on(&model, &input)?;
    if let Some(telemetry) = &args.recorded.telemetry {
        let out = args.out.unwrap_or_else(|| {
            registry
                .path_of(&version)
                .join("evaluations")
                .join("recorded")
        });
        write_evaluation(&out, &ev)?;
        println!(
            "evaluate: {version} on {}: {} rows, {} of them parked and not counted → {}",
            telemetry,
            ts.dataset.len(),
            ts.parked,
            out.display()
        );
        return Ok(());
    }
    let out = args.out.unwrap_or_else(|| {
        registry.path_of(&version).join("evaluations").join(format!(
            "seed{}-{}v-{}d",
            args.seed, args.vehicles, args.days
        ))
    });
    write_evaluation(&out, &ev)?;
    println!(
        "evaluate: {version} on {} fresh vehicles × {} days (seed {}): {} rows, {} of them parked and not counted → {}",
        args.vehicles,
        args.days,
        args.seed,
        ts.dataset.len(),
        ts.parked,
        out.display()
    );
    Ok(())
}

/// `pmi run --source kafka`.
fn run_kafka(settings: &mut Settings, args: &RunArgs) -> anyhow::Result<()> {
    args.kafka.apply(&mut settings.kafka);
    let database = database(settings, &args.database)?;
    let k = &settings.kafka;
    let topic = |t: &str| (!t.is_empty()).then(|| t.to_owned());
    let mut source =
        pmi_sources::kafka::KafkaSourceConfig::new(&k.brokers, &k.telemetry_topic, &k.group);
    source.bounded = args.kafka.bounded;
    source.idle_timeout = Duration::from_secs(k.idle_timeout_s);
    source.wall_clock = !args.kafka.any_time;
    if !source.bounded {
        source.stop = Some(graceful_stop(settings.run.workers.max(1)));
    }
    let job = pmi_dataflows::kafka::KafkaJob {
        source,
        outputs: pmi_dataflows::kafka::KafkaOutputs {
            predictions: topic(&k.predictions_topic),
            alerts: topic(&k.alerts_topic),
            dead_letter: topic(&k.dead_letter_topic),
        },
        graph: pmi_dataflows::GraphConfig {
            cluster: args.cluster.cluster()?,
            checkpoint_every: Some(Duration::from_millis(k.checkpoint_ms.max(1))),
            ..graph_config(settings)
        },
        out: open_out(&settings.run.out_dir)?,
        write_telemetry: settings.run.write_telemetry,
        severity: settings.severity,
        model_registry: Some(
            args.registry
                .clone()
                .unwrap_or(settings.model.registry.clone()),
        ),
        database,
    };
    let report = pmi_dataflows::kafka::kafka(&job)
        .with_context(|| format!("kafka run on topic `{}`", k.telemetry_topic))?;
    print_report("run", &report, &settings.run.out_dir);
    Ok(())
}

/// How long a graceful stop may take before the process exits anyway.
const STOP_DEADLINE: Duration = Duration::from_secs(120);

/// On SIGTERM or Ctrl-C: the Kafka sources of this process stop reading; once the outputs
/// of everything they read are durable and the offsets behind them committed (all `workers`
/// sources drained), the process exits 0. Open windows are rebuilt from the replay on the
/// next start, as after a crash. Past [`STOP_DEADLINE`] it exits 1 (nothing is lost either:
/// the next run replays from the last commit).
fn graceful_stop(workers: usize) -> std::sync::Arc<pmi_sources::kafka::StopSignal> {
    let stop = std::sync::Arc::new(pmi_sources::kafka::StopSignal::new(workers));
    let signal = stop.clone();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            tracing::warn!("no runtime for the stop signal: stop with SIGKILL (at least once)");
            return;
        };
        rt.block_on(crate::serve::stop_signal());
        tracing::info!(
            "stop requested: reading nothing more, waiting for what was read to be durable"
        );
        signal.request();
        let started = std::time::Instant::now();
        while !signal.all_drained() {
            if started.elapsed() > STOP_DEADLINE {
                eprintln!(
                    "run: stop timed out after {} s; the next run replays from the last commit",
                    STOP_DEADLINE.as_secs()
                );
                std::process::exit(1);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        println!("run: stopped on request: everything read is durable and its offsets committed");
        std::process::exit(0);
    });
    stop
}

/// The diagnosis catalogue at `path`, or the embedded one.
fn catalogue(path: Option<&std::path::Path>) -> anyhow::Result<pmi_agents::Catalogue> {
    Ok(match path {
        Some(p) => pmi_agents::Catalogue::load(p)?,
        None => pmi_agents::Catalogue::embedded(),
    })
}

/// The SQL outputs of a run: `[database]` with the flags over it. The default is the
/// SQLite file `pmi.sqlite` beside the Parquet output.
fn database(
    settings: &mut Settings,
    args: &DatabaseArgs,
) -> anyhow::Result<Option<jobs::SqlOutputs>> {
    let d = &mut settings.database;
    if let Some(url) = &args.database_url {
        d.url = Some(url.clone());
    }
    d.enabled &= !args.no_database;
    d.telemetry |= args.database_telemetry;
    if !d.enabled {
        return Ok(None);
    }
    let url = match &d.url {
        Some(u) => u.clone(),
        None if pmi_sources::store::Store::is_remote(&settings.run.out_dir) => {
            "sqlite://pmi-data/pmi.sqlite".into()
        }
        None => format!(
            "sqlite://{}",
            std::path::Path::new(&settings.run.out_dir)
                .join("pmi.sqlite")
                .display()
        ),
    };
    let config = pmi_sinks::sql::SqlConfig {
        url,
        batch_rows: d.batch_rows,
        retry_deadline_ms: d.retry_deadline_ms,
        ..Default::default()
    };
    config.validate()?;
    Ok(Some(jobs::SqlOutputs {
        telemetry: d.telemetry,
        watch_every: std::time::Duration::from_millis(settings.alerts.watch_every_ms.max(10)),
        recent_repairs: std::time::Duration::from_secs(
            u64::from(settings.alerts.recent_repair_days) * 86_400,
        ),
        ..jobs::SqlOutputs::new(config)
    }))
}

fn apply_fleet(settings: &mut Settings, fleet: &FleetArgs) {
    if let Some(v) = fleet.vehicles {
        settings.simulator.vehicles = v;
    }
    if let Some(s) = fleet.seed {
        settings.simulator.seed = s;
    }
    settings.simulator.bad_readings |= fleet.bad_readings;
}

fn fleet_spec(settings: &Settings, start: EventTime) -> FleetSpec {
    FleetSpec {
        vehicles: settings.simulator.vehicles,
        seed: settings.simulator.seed,
        start,
        failures_per_vehicle_month: settings.simulator.failures_per_vehicle_month,
        bad_readings: settings.simulator.bad_readings,
        forced_failures: Vec::new(),
    }
}

fn graph_config(settings: &Settings) -> pmi_dataflows::GraphConfig {
    pmi_dataflows::GraphConfig {
        // What the diagnosis reads travels with the alert.
        alert_features: std::sync::Arc::new(pmi_agents::Catalogue::embedded().feature_names()),
        window: settings.window.clone(),
        workers: settings.run.workers,
        alerts: pmi_core::AlertConfig {
            floor: settings.alerts.floor,
            margin: settings.alerts.margin,
            thresholds: settings.severity,
            fall_after_ms: settings.alerts.fall_after_s * 1000,
            require_registry: settings.alerts.require_registry,
        },
        ..Default::default()
    }
}

/// The output store a `--out` / `out_dir` names (a folder, or `s3://bucket/prefix` with
/// the endpoint and credentials from the `AWS_*` environment).
fn open_out(url: &str) -> anyhow::Result<pmi_sources::store::Store> {
    Ok(pmi_sources::store::Store::open(url)?)
}

/// `YYYY-MM-DD` as the UTC midnight that starts it, in ms.
fn parse_date(text: &str) -> Result<i64, String> {
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(|d| {
            d.and_hms_opt(0, 0, 0)
                .expect("midnight exists")
                .and_utc()
                .timestamp_millis()
        })
        .map_err(|e| format!("`{text}`: expected a date YYYY-MM-DD ({e})"))
}

fn print_report(what: &str, r: &RunReport, out: &str) {
    println!(
        "{what}: read {} readings: {} into windows, {} rejected (dead-letter), {} late; \
         {} feature vectors, {} predictions, {} alerts; {} files under {} in {:.1} s",
        r.read,
        r.windowed,
        r.rejected,
        r.late,
        r.features,
        r.predictions,
        r.alerts,
        r.files,
        out,
        r.elapsed_ms as f64 / 1000.0
    );
    if r.replayed > 0 {
        println!(
            "{what}: {} records of the replay were already durable from an earlier run and not written again",
            r.replayed
        );
    }
}

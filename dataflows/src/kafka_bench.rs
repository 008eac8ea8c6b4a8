//! `pmi bench --source kafka`: readings per second end to end from a broker, beside what
//! librdkafka alone reaches on the same topic in the same run.
//!
//! 1. A fleet's raw telemetry is produced to a fresh topic ([`produce_simulated`]; 1 Hz per
//!    vehicle, time order, key = vehicle id, JSON wire format).
//! 2. **Ceiling**: one plain [`BaseConsumer`] per worker (the same client settings and the
//!    same partition split as the graph's source) reads every owned partition to its end,
//!    decoding nothing; then again decoding and validating each payload as the source does
//!    ([`pmi_core::wire::Decoder`]), which is the cheapest a source can be.
//! 3. **Graph**: the full `pmi run --source kafka` graph ([`crate::kafka::kafka`]) in
//!    bounded mode over the topic with the same number of workers: source, windows,
//!    scoring, Parquet outputs to a temporary folder, a fresh consumer group.
//!
//! The figures are readings per second over wall time, each from the creation of the first
//! consumer to the end (the graph's includes writing and closing its outputs). The topic is
//! deleted at the end.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use pmi_core::{EventTime, SeverityThresholds, Validator, WindowConfig};
use pmi_sources::kafka::{ConsumerLog, KafkaSourceConfig};
use pmi_sources::store::Store;

use crate::graph::{GraphConfig, RunReport};
use crate::jobs::{run_id, store_err, FleetSpec, SimulateJob};
use crate::kafka::{kafka, produce_simulated, KafkaJob, KafkaOutputs};
use crate::DataflowError;

/// `pmi bench --source kafka`.
#[derive(Clone, Debug)]
pub struct KafkaBenchJob {
    /// Bootstrap servers of the broker to measure.
    pub brokers: String,
    /// Vehicles in the generated fleet.
    pub vehicles: u32,
    /// Event time per vehicle (1 Hz readings).
    pub duration: Duration,
    /// Timely workers (and ceiling threads).
    pub workers: usize,
    /// Partitions of the generated topic.
    pub partitions: i32,
    /// Window settings.
    pub window: WindowConfig,
    /// Folder to keep the outputs in [default: a temporary one, removed at the end].
    pub dir: Option<PathBuf>,
}

/// What a plain consumer pass over the topic saw.
#[derive(Clone, Copy, Debug, Default)]
pub struct DrainCount {
    /// Messages read.
    pub messages: u64,
    /// Payload bytes read.
    pub bytes: u64,
    /// Of the messages, valid readings (decoding passes only).
    pub valid: u64,
    /// Wall time, s.
    pub seconds: f64,
}

impl DrainCount {
    /// Messages per second.
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.seconds.max(1e-9)
    }
}

/// Figures of a Kafka bench run.
#[derive(Clone, Debug)]
pub struct KafkaBenchResult {
    /// Readings produced to the topic.
    pub readings: u64,
    /// Workers.
    pub workers: usize,
    /// Partitions of the topic.
    pub partitions: i32,
    /// Producing them (simulator + producer, acknowledged), s.
    pub produce_s: f64,
    /// librdkafka alone, nothing decoded.
    pub raw: DrainCount,
    /// librdkafka plus decoding and validating each payload.
    pub decoded: DrainCount,
    /// The full graph, bounded, wall time, s.
    pub graph_s: f64,
    /// The graph's report.
    pub report: RunReport,
}

impl KafkaBenchResult {
    /// Readings per second of the full graph.
    pub fn rate(&self) -> f64 {
        self.readings as f64 / self.graph_s.max(1e-9)
    }

    /// The graph's rate as a share of the raw consumers' rate.
    pub fn ratio(&self) -> f64 {
        self.rate() / self.raw.rate().max(1e-9)
    }

    /// Human-readable figures.
    pub fn render(&self) -> String {
        format!(
            "bench: Kafka topic → features → Parquet, {} readings in {} partitions, {} workers\n\
             produce: {:.2} s = {:.0} readings/s (simulator + producer, acks=all)\n\
             rdkafka alone (BaseConsumer per worker, to the end): {:.2} s = {:.0} msg/s ({:.1} MB/s)\n\
             rdkafka + JSON decode + validate: {:.2} s = {:.0} readings/s\n\
             full graph (bounded `run --source kafka`): {:.2} s = {:.0} readings/s ({:.0} per worker)\n\
             graph at {:.0}% of rdkafka alone, {:.0}% of rdkafka + decode\n\
             outputs: {} read, {} into windows, {} rejected, {} late; {} feature vectors, {} predictions",
            self.readings,
            self.partitions,
            self.workers,
            self.produce_s,
            self.readings as f64 / self.produce_s.max(1e-9),
            self.raw.seconds,
            self.raw.rate(),
            self.raw.bytes as f64 / self.raw.seconds.max(1e-9) / 1e6,
            self.decoded.seconds,
            self.decoded.rate(),
            self.graph_s,
            self.rate(),
            self.rate() / self.workers as f64,
            100.0 * self.ratio(),
            100.0 * self.rate() / self.decoded.rate().max(1e-9),
            self.report.read,
            self.report.windowed,
            self.report.rejected,
            self.report.late,
            self.report.features,
            self.report.predictions,
        )
    }
}

fn input_err(context: &str, e: KafkaError) -> DataflowError {
    DataflowError::Input(format!("{context}: {e}"))
}

/// Reads the partitions `p % workers == worker` of `config.topic` from the beginning to the
/// end of each, with the source's client settings; decodes and validates each payload when
/// `decode`.
pub fn drain(
    config: &KafkaSourceConfig,
    worker: usize,
    workers: usize,
    decode: bool,
) -> Result<DrainCount, DataflowError> {
    let started = Instant::now();
    let consumer: BaseConsumer<ConsumerLog> = config
        .client_config()
        .create_with_context(ConsumerLog::default())
        .map_err(|e| input_err("creating a consumer", e))?;
    let metadata = consumer
        .fetch_metadata(Some(&config.topic), config.setup_timeout)
        .map_err(|e| input_err(&format!("metadata of `{}`", config.topic), e))?;
    let count = metadata
        .topics()
        .iter()
        .find(|t| t.name() == config.topic)
        .map_or(0, |t| t.partitions().len());
    let mut list = TopicPartitionList::new();
    let mut open = 0;
    for p in (0..count as i32).filter(|p| *p as usize % workers.max(1) == worker) {
        list.add_partition_offset(&config.topic, p, Offset::Beginning)
            .map_err(|e| input_err("assigning partitions", e))?;
        open += 1;
    }
    consumer
        .assign(&list)
        .map_err(|e| input_err("assigning partitions", e))?;
    let mut decoder = pmi_core::wire::Decoder::new(Validator {
        max_future_ms: i64::MAX / 4,
    });
    let mut n = DrainCount::default();
    let mut ended = std::collections::BTreeSet::new();
    while ended.len() < open {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                let payload = m.payload().unwrap_or_default();
                n.messages += 1;
                n.bytes += payload.len() as u64;
                if decode && decoder.decode(payload, EventTime(0)).is_ok() {
                    n.valid += 1;
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                ended.insert(p);
            }
            Some(Err(e)) => tracing::warn!(error = %e, "bench consumer error (retrying)"),
        }
    }
    n.seconds = started.elapsed().as_secs_f64();
    Ok(n)
}

/// [`drain`] on `workers` threads at once; the wall time is the slowest thread's.
fn drain_all(
    config: &KafkaSourceConfig,
    workers: usize,
    decode: bool,
) -> Result<DrainCount, DataflowError> {
    let started = Instant::now();
    let counts = std::thread::scope(|s| {
        let threads: Vec<_> = (0..workers)
            .map(|w| s.spawn(move || drain(config, w, workers, decode)))
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .map_err(|_| DataflowError::Timely("bench consumer panicked".into()))?
            })
            .collect::<Result<Vec<_>, _>>()
    })?;
    let mut total = DrainCount::default();
    for c in counts {
        total.messages += c.messages;
        total.bytes += c.bytes;
        total.valid += c.valid;
    }
    total.seconds = started.elapsed().as_secs_f64();
    Ok(total)
}

/// Produces a fleet to a fresh topic, measures the ceiling and then the full graph over it
/// (see the module docs).
pub fn bench_kafka(job: &KafkaBenchJob) -> Result<KafkaBenchResult, DataflowError> {
    let id = run_id();
    let tmp;
    let dir = match &job.dir {
        Some(d) => d.clone(),
        None => {
            tmp = std::env::temp_dir().join(format!("pmi-bench-kafka-{id}"));
            tmp.clone()
        }
    };
    crate::jobs::clear_bench_outputs(&dir, &["ground_truth", "output"])?;
    let topic = format!("pmi-bench-{id}");
    let workers = job.workers.max(1);
    let fleet = FleetSpec {
        vehicles: job.vehicles,
        seed: 1,
        start: EventTime(1_767_225_600_000),
        failures_per_vehicle_month: 1.0,
        bad_readings: false,
        forced_failures: Vec::new(),
    };
    tracing::info!(vehicles = job.vehicles, duration_s = job.duration.as_secs(), %topic, "producing bench input");
    let started = Instant::now();
    let sim = produce_simulated(
        &SimulateJob {
            fleet,
            duration: job.duration,
            out: Store::local(&dir.join("ground_truth")).map_err(store_err)?,
        },
        &job.brokers,
        &topic,
        job.partitions,
    )?;
    let produce_s = started.elapsed().as_secs_f64();

    let result = (|| {
        let mut source = KafkaSourceConfig::new(&job.brokers, &topic, &format!("{topic}-raw"));
        source.bounded = true;
        source.wall_clock = false;
        tracing::info!("reading the topic with plain consumers");
        let raw = drain_all(&source, workers, false)?;
        let decoded = drain_all(&source, workers, true)?;
        if raw.messages != sim.readings || decoded.messages != sim.readings {
            return Err(DataflowError::Input(format!(
                "topic `{topic}`: {} readings produced but the consumers read {} and {}",
                sim.readings, raw.messages, decoded.messages
            )));
        }

        source.group = format!("{topic}-graph");
        let graph_job = KafkaJob {
            source,
            outputs: KafkaOutputs::default(),
            graph: GraphConfig {
                window: job.window.clone(),
                workers,
                ..Default::default()
            },
            out: Store::local(&dir.join("output")).map_err(store_err)?,
            write_telemetry: false,
            severity: SeverityThresholds::default(),
            model_registry: None,
            database: None,
        };
        tracing::info!("running the graph over the topic");
        let started = Instant::now();
        let report = kafka(&graph_job)?;
        let graph_s = started.elapsed().as_secs_f64();
        if report.read != sim.readings {
            return Err(DataflowError::Input(format!(
                "topic `{topic}`: {} readings produced but the graph read {}",
                sim.readings, report.read
            )));
        }
        Ok(KafkaBenchResult {
            readings: sim.readings,
            workers,
            partitions: job.partitions,
            produce_s,
            raw,
            decoded,
            graph_s,
            report,
        })
    })();
    if let Err(e) = pmi_sinks::kafka::delete_topic(&job.brokers, &topic, Duration::from_secs(30)) {
        tracing::warn!(error = %e, %topic, "could not delete the bench topic");
    }
    if job.dir.is_none() {
        std::fs::remove_dir_all(&dir).ok();
    }
    result
}

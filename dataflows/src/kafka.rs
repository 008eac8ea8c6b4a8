//! `pmi run --source kafka`: the graph over a Kafka telemetry topic, at least once.
//!
//! - Source: [`KafkaSource`] on every worker of every process (partition `p` on global
//!   worker `p % peers`), starting from the consumer group's committed offsets.
//! - Sinks: the Parquet datasets under `out`, transactional (files appear at
//!   checkpoints; one marker per dataset and worker under
//!   `out/_checkpoints/<group>/w<worker>of<peers>/`); predictions, alerts and rejected
//!   readings also to Kafka topics when named.
//! - Every [`GraphConfig::checkpoint_every`] the sinks checkpoint; once every sink of every
//!   worker is durable up to a time, the sources commit offsets that replay the longest
//!   window before it (`crate::sink`). A restart (after a crash, or with the same settings
//!   later) resumes there: windows are rebuilt from the replay and each exactly-once sink
//!   drops what it had already made durable. Restart with the same number of workers: the
//!   markers are per worker, because a vehicle's outputs are written by its worker.
//! - Late and rejected readings, and the Kafka output topics, are at least once: a replay
//!   may write again what was written after the last checkpoint (records carry their origin
//!   or `(vehicle_id, pane_end)` for deduplication).

use std::path::PathBuf;
use std::time::Duration;

use pmi_core::{Prediction, Rejected, SeverityThresholds};
use pmi_sinks::console::ConsoleAlerts;
use pmi_sinks::kafka::{KafkaSink, KafkaSinkConfig};
use pmi_sinks::{ChunkSink, Tee};
use pmi_sources::kafka::{KafkaSource, KafkaSourceConfig};
use pmi_sources::store::Store;

use crate::graph::{run, GraphConfig, RunReport};
use crate::jobs::{
    graph_for, parquet_sinks_checkpointed, prepare_database, run_id, scorer, with_database,
    SqlOutputs,
};
use crate::DataflowError;

/// Topics the graph writes besides its Parquet outputs.
#[derive(Clone, Debug, Default)]
pub struct KafkaOutputs {
    /// Every prediction (key: vehicle id; value: the prediction as JSON).
    pub predictions: Option<String>,
    /// Predictions at or above the alert floor.
    pub alerts: Option<String>,
    /// Rejected readings with field and reason.
    pub dead_letter: Option<String>,
}

/// A Kafka run.
#[derive(Clone, Debug)]
pub struct KafkaJob {
    /// The telemetry topic and consumer settings.
    pub source: KafkaSourceConfig,
    /// Output topics.
    pub outputs: KafkaOutputs,
    /// Graph settings (set `checkpoint_every`: default 5 s).
    pub graph: GraphConfig,
    /// Where the Parquet outputs go (local folder or object store).
    pub out: Store,
    /// Archive accepted telemetry.
    pub write_telemetry: bool,
    /// Severity thresholds.
    pub severity: SeverityThresholds,
    /// Model registry whose current model scores (hot reload); `None`: the rules.
    pub model_registry: Option<PathBuf>,
    /// SQL outputs besides the Parquet ones; the offsets also wait for these writes.
    pub database: Option<SqlOutputs>,
}

/// Default checkpoint interval of Kafka runs.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);

/// Runs a [`KafkaJob`] until the source finishes (bounded) or fails.
pub fn kafka(job: &KafkaJob) -> Result<RunReport, DataflowError> {
    let schema = job.graph.window.schema()?;
    let (score, _model) = scorer(&schema, job.severity, job.model_registry.as_deref())?;
    let mut graph = job.graph.clone();
    graph.checkpoint_every.get_or_insert(CHECKPOINT_EVERY);
    let processes = graph.cluster.as_ref().map_or(1, |c| c.addresses.len());
    let peers = graph.workers.max(1) * processes;

    let mut source = job.source.clone();
    source.lateness_ms = graph.window.lateness_ms();
    source.replay_ms = graph.window.windows_s.iter().copied().max().unwrap_or(0) as i64 * 1000
        + graph.window.pane_ms();
    let out = job.out.clone();
    let (telemetry, schema_for_sinks) = (job.write_telemetry, schema.clone());
    let outputs = job.outputs.clone();
    let brokers = job.source.brokers.clone();
    let group = job.source.group.clone();
    let id = run_id();
    prepare_database(job.database.as_ref())?;
    let (graph, _tables) = graph_for(&graph, job.severity, job.database.as_ref())?;
    let database = job.database.clone();
    run(
        &graph,
        move |w, peers| Ok(KafkaSource::new(source.clone(), w, peers)?),
        move |w| {
            let checkpoints = format!("_checkpoints/{group}/w{w}of{peers}");
            let mut sinks = parquet_sinks_checkpointed(
                &out,
                &format!("{id}-{w}"),
                &schema_for_sinks,
                telemetry,
                false,
                Some(&checkpoints),
            )?;
            let producer = |topic: &str| KafkaSinkConfig::new(&brokers, topic);
            let sink_err = |e: pmi_sinks::SinkError| DataflowError::Sink(e.to_string());
            if let Some(topic) = &outputs.predictions {
                let kafka: Box<dyn ChunkSink<Prediction>> =
                    Box::new(KafkaSink::new(producer(topic)).map_err(sink_err)?);
                sinks.predictions = Box::new(Tee::new(sinks.predictions, kafka));
            }
            sinks.alerts = match &outputs.alerts {
                Some(topic) => Box::new(KafkaSink::new(producer(topic)).map_err(sink_err)?),
                None => Box::new(ConsoleAlerts::default()),
            };
            if let Some(topic) = &outputs.dead_letter {
                let kafka: Box<dyn ChunkSink<Rejected>> =
                    Box::new(KafkaSink::new(producer(topic)).map_err(sink_err)?);
                sinks.dead_letter = Box::new(Tee::new(sinks.dead_letter, kafka));
            }
            with_database(sinks, database.as_ref(), &format!("{id}-{w}"))
        },
        score,
        false,
    )
}

/// `pmi simulate --to kafka://…`: produces the fleet's raw telemetry (time order, bad
/// readings included, JSON wire format, key = vehicle id) to `topic`, creating it with
/// `partitions` partitions if needed, and waits until every message is acknowledged. The
/// ground truth goes to `job.out` as Parquet, as for a plain `pmi simulate`.
pub fn produce_simulated(
    job: &crate::jobs::SimulateJob,
    brokers: &str,
    topic: &str,
    partitions: i32,
) -> Result<crate::jobs::SimulateSummary, DataflowError> {
    use pmi_core::RawReading;
    let sink_err = |e: pmi_sinks::SinkError| DataflowError::Sink(e.to_string());
    pmi_sinks::kafka::ensure_topic(brokers, topic, partitions, Duration::from_secs(30))
        .map_err(sink_err)?;
    let mut producer: KafkaSink<RawReading> =
        KafkaSink::new(KafkaSinkConfig::new(brokers, topic)).map_err(sink_err)?;
    let summary = crate::jobs::simulate_with(job, 1, |chunk| {
        chunk
            .iter()
            .try_for_each(|r| producer.send_one(r))
            .map_err(sink_err)
    })?;
    producer.flush().map_err(sink_err)?;
    Ok(summary)
}

//! Telemetry from a Kafka topic (rdkafka, the bundled librdkafka), one JSON reading per
//! message in the wire format of [`pmi_core::wire`].
//!
//! # Partitions and workers
//! The topic's partitions are divided among all timely workers of all processes: global
//! worker `w` of `peers` reads partition `p` when `p % peers == w` (an explicit assignment,
//! not a group rebalance: a timely cluster has a fixed set of workers, and a rebalance in the
//! middle of a dataflow would move window inputs between workers). The consumer group is used
//! for committed offsets only. A worker with no partition finishes at once.
//!
//! # Event time and the watermark
//! Each reading's event time is its `ts`. A partition's watermark is the largest `ts` it has
//! delivered less the allowed lateness; the source's watermark is the minimum over its
//! partitions, so one slow partition holds the windows back rather than making the others'
//! readings late. Readings below it go to the late output.
//!
//! An idle partition must not stall the windows forever: a partition that has reached the end
//! of its log and delivered nothing for [`KafkaSourceConfig::idle_timeout`] (default 10 s)
//! drops out of the minimum. When every partition of a worker is idle, its watermark follows
//! the wall clock less the allowed lateness (live telemetry has event time close to the wall
//! clock; a partition that wakes up with readings older than that sends them to the late
//! output, counted and kept). A partition that has never delivered anything counts as idle
//! once it has reached its end and the timeout has passed since the source started.
//!
//! # Bounded mode
//! With [`KafkaSourceConfig::bounded`], the source reads each partition until it reaches
//! the end of its log (librdkafka's end-of-partition event) and then finishes, so every pane
//! is emitted: a backfill from Kafka, and the mode of the tests and of
//! `pmi bench --source kafka`. Messages that arrive after a partition reached its end are
//! left for the next run. (The end is the event, not the high watermark read at the start:
//! some Kafka-protocol brokers answer that query with a stale offset.) A bounded run is final
//! for what it read: its last panes are emitted as the input ends, and a later run goes on
//! after them.
//!
//! # Offsets and replay
//! The source starts from the group's committed offset of each partition (the beginning when
//! there is none). [`KafkaSource::acknowledge`] is told when every output of readings up to
//! an event time is durable; it then commits, for each partition, the offset from which a
//! replay rebuilds the window state of every pane not yet durable: the first message that may
//! hold a reading within the longest window of that time. Commits happen on the worker's
//! thread without waiting (`CommitMode::Async`); a failed commit is retried by the next one.
//!
//! Malformed payloads become rejected readings whose origin is `topic/partition@offset` and
//! whose reason keeps the start of the payload.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::ClientContext;
use rdkafka::{Offset, TopicPartitionList};

use pmi_core::{
    wire, ErrorClass, EventKey, EventTime, SourceBatch, SourceFailure, SourceStatus,
    TelemetrySource, Validator,
};

/// How a [`KafkaSource`] connects and reads.
#[derive(Clone, Debug)]
pub struct KafkaSourceConfig {
    /// `host:port[,host:port…]`.
    pub brokers: String,
    /// The telemetry topic.
    pub topic: String,
    /// Consumer group (committed offsets).
    pub group: String,
    /// Read up to the end offsets as of the start, then finish.
    pub bounded: bool,
    /// A partition at its end with nothing new for this long stops holding the watermark.
    pub idle_timeout: Duration,
    /// Allowed lateness, ms.
    pub lateness_ms: i64,
    /// Longest window, ms: commits keep this much event time replayable.
    pub replay_ms: i64,
    /// Check timestamps against the wall clock (false: accept any future time; tests with
    /// fixed simulated spans).
    pub wall_clock: bool,
    /// Extra librdkafka settings (`key=value`), e.g. security.
    pub extra: Vec<(String, String)>,
    /// Timeout of the blocking calls made before the dataflow starts (metadata, offsets).
    pub setup_timeout: Duration,
    /// How long a source starting while its broker is away keeps trying (a topic that does
    /// not exist fails at once). Default 5 minutes.
    pub startup_wait: Duration,
    /// A graceful stop (SIGTERM): once requested, the sources read nothing more, and each
    /// reports when the outputs of everything it read are durable (see [`StopSignal`]).
    pub stop: Option<Arc<StopSignal>>,
}

/// A graceful stop of the Kafka sources of one process.
///
/// After [`StopSignal::request`] every source stops consuming and holds its watermark (no
/// pane closes early); the graph emits what the watermark already allows, the sinks make it
/// durable at the next checkpoint and the offsets behind it are committed. A source whose
/// durable frontier has reached its watermark counts itself [`StopSignal::drained`]. The
/// process may then exit: its open windows are rebuilt on restart from the replay the
/// commits keep (the longest window), exactly as after a crash at a checkpoint, so the
/// features equal those of an uninterrupted run and nothing is lost or written twice.
#[derive(Debug)]
pub struct StopSignal {
    requested: std::sync::atomic::AtomicBool,
    drained: std::sync::atomic::AtomicUsize,
    /// Sources that have seen the request and held their watermark.
    held: std::sync::atomic::AtomicUsize,
    /// The least watermark held (the process's durable frontier can reach no further).
    held_min: std::sync::atomic::AtomicU64,
    sources: usize,
}

impl StopSignal {
    /// A signal for the `sources` Kafka sources of this process (its workers).
    pub fn new(sources: usize) -> StopSignal {
        StopSignal {
            requested: Default::default(),
            drained: Default::default(),
            held: Default::default(),
            held_min: std::sync::atomic::AtomicU64::new(u64::MAX),
            sources: sources.max(1),
        }
    }

    /// Whether every source of the process is drained.
    pub fn all_drained(&self) -> bool {
        self.drained() >= self.sources
    }

    /// Asks the sources to stop reading.
    pub fn request(&self) {
        self.requested
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
    /// Whether a stop was requested.
    pub fn is_requested(&self) -> bool {
        self.requested.load(std::sync::atomic::Ordering::SeqCst)
    }
    /// Sources whose reads are all durable since the stop was requested.
    pub fn drained(&self) -> usize {
        self.drained.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl KafkaSourceConfig {
    /// Settings for `topic` on `brokers` in `group`, unbounded, 10 s idle timeout.
    pub fn new(brokers: &str, topic: &str, group: &str) -> Self {
        KafkaSourceConfig {
            brokers: brokers.to_owned(),
            topic: topic.to_owned(),
            group: group.to_owned(),
            bounded: false,
            idle_timeout: Duration::from_secs(10),
            lateness_ms: 5_000,
            replay_ms: 900_000,
            wall_clock: true,
            extra: Vec::new(),
            setup_timeout: Duration::from_secs(30),
            startup_wait: Duration::from_secs(300),
            stop: None,
        }
    }

    /// The librdkafka client settings common to PMI's consumers.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            // Keep librdkafka's prefetch bounded: the graph's throttle is the backpressure.
            .set("queued.max.messages.kbytes", "65536")
            // Once that prefetch is full, fetch again as soon as the graph has taken some of
            // it: librdkafka's default waits a whole second, and a graph that empties the
            // queue sooner then idles for the rest of it.
            .set("fetch.queue.backoff.ms", "10");
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }
}

/// librdkafka's callbacks: end-of-partition is an event here, not an error to log; a
/// failed offset commit is remembered so that the next commit sends every offset again.
#[derive(Debug, Default)]
pub struct ConsumerLog {
    commit_failed: AtomicBool,
}

impl ClientContext for ConsumerLog {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        librdkafka_log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF) {
            return;
        }
        librdkafka_error(&error, reason);
    }
}

/// librdkafka's own log lines, one level down from its errors: what it calls an error
/// (connection refused, broker down) it retries by itself, and ERROR is kept for data loss
/// (a failed delivery, a failed run), which PMI reports where it happens.
pub fn librdkafka_log(level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        // An idempotent producer's fatal sequence error (a broker that lost its state) is
        // recovered by the Kafka sink, which replaces the producer and says so.
        RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical
            if facility == "FATAL" && message.contains("sequence") =>
        {
            tracing::warn!(target: "librdkafka", facility, "{message}")
        }
        RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
            tracing::error!(target: "librdkafka", facility, "{message}")
        }
        RDKafkaLogLevel::Error | RDKafkaLogLevel::Warning => {
            tracing::warn!(target: "librdkafka", facility, "{message}")
        }
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", facility, "{message}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
    }
}

/// librdkafka's global errors (broker down, transport failure…): it retries them by
/// itself, so they are warnings; a fatal one (the client is unusable) is an error.
pub fn librdkafka_error(error: &KafkaError, reason: &str) {
    if matches!(
        error.rdkafka_error_code(),
        Some(rdkafka::types::RDKafkaErrorCode::Fatal)
    ) {
        tracing::error!(error = %error, reason, "kafka client: fatal");
    } else {
        tracing::warn!(error = %error, reason, "kafka client (retrying)");
    }
}

impl ConsumerContext for ConsumerLog {
    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            tracing::warn!(error = %e, "kafka offset commit failed; sent again at the next");
            self.commit_failed.store(true, Ordering::Relaxed);
        }
    }
}

/// One owned partition.
#[derive(Debug)]
struct Partition {
    id: i32,
    /// Next offset to read.
    position: i64,
    /// Bounded mode: the partition reached the end of its log; read no more.
    ended: bool,
    /// Largest event time delivered, ms.
    max_ts: Option<i64>,
    /// At the end of the log (EOF seen, nothing since).
    at_end: bool,
    last_message: Instant,
    /// `(first offset, largest ts)` of each run of messages read since the last commit, to
    /// find the replay offset of an event time without keeping every message.
    runs: VecDeque<(i64, i64)>,
    /// Offset last committed.
    committed: Option<i64>,
}

impl Partition {
    fn done(&self) -> bool {
        self.ended
    }

    fn idle(&self, timeout: Duration, now: Instant) -> bool {
        self.done() || (self.at_end && now.duration_since(self.last_message) >= timeout)
    }

    /// The first offset that may hold a reading at or after `ts` (conservative: whole runs).
    fn replay_offset(&mut self, ts: i64) -> i64 {
        while let Some(&(_, max)) = self.runs.front() {
            if max < ts {
                self.runs.pop_front();
            } else {
                break;
            }
        }
        self.runs.front().map_or(self.position, |&(first, _)| first)
    }
}

/// Messages per run in [`Partition::runs`].
const RUN_LEN: i64 = 256;

/// A consumer destroyed off the thread that drops it. librdkafka's destroy waits for its
/// threads to time out their system calls, about 100 ms (confluentinc/librdkafka#1895),
/// which a worker that has committed its final offsets has no reason to wait for; the
/// consumer is assigned its partitions (no group membership to leave), so nothing depends
/// on when the teardown ends.
struct ClosingConsumer(Option<BaseConsumer<ConsumerLog>>);

impl std::ops::Deref for ClosingConsumer {
    type Target = BaseConsumer<ConsumerLog>;
    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect("taken only when dropped")
    }
}

impl Drop for ClosingConsumer {
    fn drop(&mut self) {
        if let Some(consumer) = self.0.take() {
            // If no thread can be started, the closure, consumer included, drops here.
            let _ = std::thread::Builder::new()
                .name("pmi-kafka-close".into())
                .spawn(move || drop(consumer));
        }
    }
}

/// A worker's share of a Kafka topic.
pub struct KafkaSource {
    consumer: ClosingConsumer,
    config: KafkaSourceConfig,
    partitions: Vec<Partition>,
    decoder: wire::Decoder,
    watermark: Option<EventKey>,
    name: String,
    /// Since when consumer errors have come (broker away), and when that was last logged.
    erring_since: Option<(Instant, Instant)>,
    /// Counted in [`StopSignal::drained`] already.
    drained: bool,
    /// Counted in the held watermarks of the [`StopSignal`] already.
    held: bool,
    /// The last durable frontier acknowledged.
    durable: Option<EventKey>,
}

fn failure(message: String, class: ErrorClass) -> SourceFailure {
    SourceFailure {
        source_name: "kafka".into(),
        message,
        class,
    }
}

fn external(context: &str, e: KafkaError) -> SourceFailure {
    failure(format!("{context}: {e}"), ErrorClass::External)
}

impl KafkaSource {
    /// Connects and assigns this worker's partitions (blocking, before the dataflow runs).
    /// A broker that is away is waited for, up to [`KafkaSourceConfig::startup_wait`],
    /// with a warning every few seconds.
    pub fn new(
        config: KafkaSourceConfig,
        worker: usize,
        peers: usize,
    ) -> Result<KafkaSource, SourceFailure> {
        let started = Instant::now();
        loop {
            match Self::connect(config.clone(), worker, peers) {
                Err(e)
                    if e.class == ErrorClass::External
                        && started.elapsed() < config.startup_wait =>
                {
                    tracing::warn!(
                        brokers = %config.brokers,
                        error = %e.message,
                        waited_s = started.elapsed().as_secs(),
                        "waiting for the Kafka broker"
                    );
                    std::thread::sleep(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }

    fn connect(
        config: KafkaSourceConfig,
        worker: usize,
        peers: usize,
    ) -> Result<KafkaSource, SourceFailure> {
        let consumer: BaseConsumer<ConsumerLog> = config
            .client_config()
            .create_with_context(ConsumerLog::default())
            .map_err(|e| external("creating the Kafka consumer", e))?;
        let timeout = config.setup_timeout;
        let count = partition_count(&consumer, &config.topic, timeout)?;
        let owned: Vec<i32> = (0..count)
            .filter(|p| *p as usize % peers.max(1) == worker)
            .collect();

        let mut wanted = TopicPartitionList::new();
        for &p in &owned {
            wanted.add_partition(&config.topic, p);
        }
        let committed = if owned.is_empty() {
            TopicPartitionList::new()
        } else {
            consumer
                .committed_offsets(wanted, timeout)
                .map_err(|e| external("reading committed offsets", e))?
        };
        tracing::debug!(?committed, "kafka committed offsets");
        let now = Instant::now();
        let mut partitions = Vec::with_capacity(owned.len());
        let mut assignment = TopicPartitionList::new();
        for &p in &owned {
            let (low, _high) = consumer
                .fetch_watermarks(&config.topic, p, timeout)
                .map_err(|e| external(&format!("reading offsets of partition {p}"), e))?;
            let start = match committed
                .find_partition(&config.topic, p)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(o)) => o.max(low),
                _ => low,
            };
            assignment
                .add_partition_offset(&config.topic, p, Offset::Offset(start))
                .map_err(|e| external("assigning partitions", e))?;
            partitions.push(Partition {
                id: p,
                position: start,
                ended: false,
                max_ts: None,
                at_end: false,
                last_message: now,
                runs: VecDeque::new(),
                committed: None,
            });
        }
        consumer
            .assign(&assignment)
            .map_err(|e| external("assigning partitions", e))?;
        tracing::info!(
            topic = %config.topic,
            worker,
            partitions = ?partitions.iter().map(|p| (p.id, p.position)).collect::<Vec<_>>(),
            "kafka source assigned"
        );
        let name = format!("kafka:{}", config.topic);
        Ok(KafkaSource {
            consumer: ClosingConsumer(Some(consumer)),
            config,
            partitions,
            decoder: wire::Decoder::new(Validator::default()),
            watermark: None,
            name,
            erring_since: None,
            drained: false,
            held: false,
            durable: None,
        })
    }

    /// The partitions this worker reads, with the next offset of each.
    pub fn positions(&self) -> Vec<(i32, i64)> {
        self.partitions.iter().map(|p| (p.id, p.position)).collect()
    }

    /// Every output of readings with event time below `durable` is durable: commits, per
    /// partition, the offset from which a replay rebuilds all windows ending at or after it.
    fn commit_behind(&mut self, durable: i64, mode: CommitMode) -> Result<(), SourceFailure> {
        let from = durable.saturating_sub(self.config.replay_ms + self.config.lateness_ms);
        if self
            .consumer
            .context()
            .commit_failed
            .swap(false, Ordering::Relaxed)
        {
            // An earlier asynchronous commit failed (broker away): send every offset again.
            for p in &mut self.partitions {
                p.committed = None;
            }
        }
        let mut list = TopicPartitionList::new();
        for p in &mut self.partitions {
            let offset = p.replay_offset(from);
            if p.committed == Some(offset) {
                continue;
            }
            list.add_partition_offset(&self.config.topic, p.id, Offset::Offset(offset))
                .map_err(|e| external("committing offsets", e))?;
            p.committed = Some(offset);
        }
        if list.count() == 0 {
            return Ok(());
        }
        tracing::debug!(durable, offsets = ?list, "kafka commit");
        match self.consumer.commit(&list, mode) {
            Ok(()) => Ok(()),
            Err(e) if matches!(mode, CommitMode::Async) => {
                // Not fatal: the next acknowledgement commits again; a crash in between
                // replays a little more.
                tracing::warn!(error = %e, "kafka offset commit failed; retried at the next");
                for p in &mut self.partitions {
                    p.committed = None;
                }
                Ok(())
            }
            Err(e) => Err(external("committing offsets", e)),
        }
    }

    fn finished(&self) -> bool {
        self.partitions.iter().all(Partition::done)
    }

    fn compute_watermark(&self, now: Instant) -> Option<EventKey> {
        let lateness = self.config.lateness_ms;
        let timeout = self.config.idle_timeout;
        let mut min: Option<i64> = None;
        let mut all_idle = true;
        for p in &self.partitions {
            if p.idle(timeout, now) {
                continue;
            }
            all_idle = false;
            // A busy partition that has delivered nothing yet holds the watermark at 0.
            let wm = p.max_ts.map_or(0, |m| m - lateness);
            min = Some(min.map_or(wm, |x| x.min(wm)));
        }
        let candidate = if all_idle {
            if self.config.bounded {
                // Bounded: the driver seals everything when the source finishes.
                self.partitions
                    .iter()
                    .filter_map(|p| p.max_ts)
                    .min()
                    .map(|m| m - lateness)
            } else {
                Some(EventTime::now().0 - lateness)
            }
        } else {
            min
        };
        let candidate = candidate.map(|t| EventKey::new(0, EventTime(t.max(0))));
        match (self.watermark, candidate) {
            (Some(w), Some(c)) => Some(w.max(c)),
            (w, c) => w.or(c),
        }
    }
}

impl KafkaSource {
    /// Counts this source drained once a stop is requested and the sinks have made
    /// durable everything up to its (held) watermark, with the offsets behind it committed.
    fn check_drained(&mut self) {
        use std::sync::atomic::Ordering::SeqCst;
        let Some(stop) = self.config.stop.as_ref().filter(|s| s.is_requested()) else {
            return;
        };
        if !self.held {
            self.held = true;
            stop.held_min
                .fetch_min(self.watermark.map_or(u64::MAX, |w| w.0), SeqCst);
            stop.held.fetch_add(1, SeqCst);
        }
        // The durable frontier can reach the least watermark held in the process, no
        // further (it is global over the workers).
        let all_held = stop.held.load(SeqCst) >= stop.sources;
        let least = stop.held_min.load(SeqCst);
        let caught_up = least == u64::MAX || self.durable.is_some_and(|d| d.0 >= least);
        if !self.drained && all_held && caught_up {
            self.drained = true;
            stop.drained
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

fn partition_mut(partitions: &mut [Partition], id: i32) -> Option<&mut Partition> {
    partitions.iter_mut().find(|p| p.id == id)
}

fn partition_count(
    consumer: &BaseConsumer<ConsumerLog>,
    topic: &str,
    timeout: Duration,
) -> Result<i32, SourceFailure> {
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| external(&format!("reading metadata of topic `{topic}`"), e))?;
    let count = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    if count == 0 {
        return Err(failure(
            format!("topic `{topic}` does not exist or has no partitions"),
            ErrorClass::User,
        ));
    }
    Ok(count as i32)
}

/// How often a source waiting for its broker says so.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// Most messages taken per poll.
const POLL_BATCH: usize = 4096;

impl TelemetrySource for KafkaSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn poll(&mut self, batch: &mut SourceBatch) -> Result<SourceStatus, SourceFailure> {
        if self.finished() {
            return Ok(SourceStatus::Finished);
        }
        if self.config.stop.as_ref().is_some_and(|s| s.is_requested()) {
            // Stopping: read nothing more and hold the watermark where it is, so that no
            // pane closes early; what the graph already has is emitted and made durable.
            self.check_drained();
            return Ok(SourceStatus::Idle(Some(Duration::from_millis(20))));
        }
        let now_wall = if self.config.wall_clock {
            EventTime::now()
        } else {
            EventTime(i64::MAX / 2)
        };
        // One clock reading per batch (a batch takes well under a millisecond).
        let polled_at = Instant::now();
        let mut taken = 0;
        while taken < POLL_BATCH {
            let Some(result) = self.consumer.poll(Duration::ZERO) else {
                break;
            };
            let message = match result {
                Ok(m) => m,
                Err(KafkaError::PartitionEOF(p)) => {
                    if let Some(part) = partition_mut(&mut self.partitions, p) {
                        part.at_end = true;
                        part.ended |= self.config.bounded;
                    }
                    continue;
                }
                Err(e) => {
                    // Broker away, leader change…: librdkafka retries by itself; the source
                    // waits (the windows simply do not advance) and says so, every 10 s.
                    let now = Instant::now();
                    if self
                        .erring_since
                        .is_none_or(|(_, said)| now.duration_since(said) >= ERROR_LOG_EVERY)
                    {
                        let since = self.erring_since.map_or(now, |(since, _)| since);
                        tracing::warn!(error = %e, waiting_s = now.duration_since(since).as_secs(), "kafka consumer error (waiting for the broker)");
                        self.erring_since = Some((since, now));
                    }
                    return Ok(SourceStatus::Idle(Some(Duration::from_millis(100))));
                }
            };
            if let Some((since, _)) = self.erring_since.take() {
                tracing::info!(
                    after_s = since.elapsed().as_secs(),
                    "kafka consumer reading again"
                );
            }
            let (p, offset) = (message.partition(), message.offset());
            match partition_mut(&mut self.partitions, p) {
                // Not ours, or past the end of a bounded read: left for the next run.
                None => continue,
                Some(part) if part.ended => continue,
                Some(_) => {}
            }
            taken += 1;
            // The origin (`topic/partition@offset`) is only kept by rejections: made then.
            let decoded = self
                .decoder
                .decode(message.payload().unwrap_or_default(), now_wall);
            let ts = match decoded {
                Ok(reading) => {
                    let ts = reading.ts.0;
                    batch
                        .readings
                        .push(pmi_core::Sequenced { group: 0, reading });
                    Some(ts)
                }
                Err(mut rejected) => {
                    rejected.reading.origin =
                        Some(format!("{}/{}@{}", self.config.topic, p, offset));
                    batch.rejected.push(rejected);
                    None
                }
            };
            let part = partition_mut(&mut self.partitions, p).expect("owned partition");
            part.position = offset + 1;
            part.at_end = false;
            part.last_message = polled_at;
            if let Some(ts) = ts {
                part.max_ts = Some(part.max_ts.map_or(ts, |m| m.max(ts)));
            }
            let run_ts = ts.unwrap_or(i64::MIN);
            match part.runs.back_mut() {
                Some((first, max)) if offset - *first < RUN_LEN => *max = (*max).max(run_ts),
                _ => part.runs.push_back((offset, run_ts)),
            }
        }
        let now = Instant::now();
        self.watermark = self.compute_watermark(now);
        if self.finished() {
            return Ok(SourceStatus::Finished);
        }
        if taken == 0 {
            // Nothing now. Partitions not at their end: a fetch is on its way, so look
            // again very soon; all at their end: only the idle rule may still move the
            // watermark.
            let fetching = self.partitions.iter().any(|p| !p.at_end && !p.ended);
            let delay = if fetching { 1 } else { 20 };
            return Ok(SourceStatus::Idle(Some(Duration::from_millis(delay))));
        }
        Ok(SourceStatus::Ready)
    }

    fn watermark(&self) -> Option<EventKey> {
        self.watermark
    }

    fn acknowledge(&mut self, durable: EventKey) -> Result<(), SourceFailure> {
        // Everything done (the probe is empty) is left to `finish`.
        if durable.0 == u64::MAX {
            return Ok(());
        }
        self.commit_behind(durable.time().0, CommitMode::Async)?;
        self.durable = Some(durable);
        self.check_drained();
        Ok(())
    }

    fn finish(&mut self) -> Result<(), SourceFailure> {
        // Every output is durable: commit so that a later run over new messages replays
        // just the longest window before them (its sinks drop what this run wrote). Every
        // offset is sent (an asynchronous commit of the same offset may have failed), and a
        // broker that is away is waited for, up to the setup timeout.
        let end = self
            .partitions
            .iter()
            .filter_map(|p| p.max_ts)
            .min()
            .map_or(i64::MAX, |t| t + 1);
        let deadline = Instant::now() + self.config.setup_timeout;
        loop {
            for p in &mut self.partitions {
                p.committed = None;
            }
            match self.commit_behind(end, CommitMode::Sync) {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() < deadline => {
                    tracing::warn!(error = %e.message, "final kafka offset commit failed; retrying");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

//! Records to a Kafka topic (rdkafka's threaded producer: librdkafka batches and retries on
//! its own thread, so the worker only enqueues).
//!
//! - Keys are the vehicle id, so one vehicle's records stay in order on one partition.
//! - Values are JSON: predictions and alerts as [`Prediction`] serialises; telemetry in the
//!   wire format of [`pmi_core::wire`]; rejected readings as [`Rejected`] serialises.
//! - Delivery is acknowledged by all in-sync replicas (`acks=all`) with librdkafka's
//!   idempotent producer (no duplicates from its own retries). By default librdkafka
//!   retries a message until it is delivered (`delivery.timeout.ms=0`): a broker that is
//!   away for a while (restart, network) makes the sink wait, not fail. With a
//!   [`KafkaSinkConfig::delivery_timeout`], a message still undelivered after it is a sink
//!   error: the run fails rather than going on without it. Errors librdkafka does not retry
//!   (unknown topic, authorisation) fail the sink at once. A fatal idempotence error (a
//!   broker that lost the producer's sequence state) replaces the producer and sends the
//!   unacknowledged records again (see [`KafkaSink`]).
//! - A full local queue is backpressure: `send` waits for room (librdkafka's thread keeps
//!   delivering and frees it), saying so in the log every 10 s, up to the delivery timeout
//!   if there is one.
//! - [`KafkaSink::flush`] waits until everything sent so far is acknowledged: what the
//!   graph's durability protocol calls "durable" for this sink.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, NoCustomPartitioner, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::ClientContext;

use pmi_core::{Prediction, RawReading, Rejected, Telemetry};

use crate::{ChunkSink, SinkError, SinkStats};

/// How a Kafka sink connects.
#[derive(Clone, Debug)]
pub struct KafkaSinkConfig {
    /// `host:port[,host:port…]`.
    pub brokers: String,
    /// The topic.
    pub topic: String,
    /// How long librdkafka keeps retrying one message before it is a failure; `None`: until
    /// it is delivered (the sink waits out a broker outage).
    pub delivery_timeout: Option<Duration>,
    /// Extra librdkafka settings.
    pub extra: Vec<(String, String)>,
}

impl KafkaSinkConfig {
    /// Settings for `topic` on `brokers` (no delivery timeout: retried until delivered).
    pub fn new(brokers: &str, topic: &str) -> Self {
        KafkaSinkConfig {
            brokers: brokers.to_owned(),
            topic: topic.to_owned(),
            delivery_timeout: None,
            extra: Vec::new(),
        }
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("compression.type", "none")
            .set(
                "delivery.timeout.ms",
                self.delivery_timeout
                    .map_or(0, |t| t.as_millis().max(1))
                    .to_string(),
            );
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }
}

/// The producer's context: settles the records of its producer (one generation of a
/// sink's producers, see [`KafkaSink`]).
#[derive(Clone, Default)]
pub struct DeliveryContext {
    shared: Arc<Deliveries>,
    generation: u64,
}

/// A record sent and not yet acknowledged: kept so that it can be sent again by a new
/// producer if librdkafka declares the current one fatally broken.
struct Unsettled {
    key: String,
    value: Vec<u8>,
}

/// Delivery state of a sink, shared with its producers' contexts.
#[derive(Default)]
pub struct Deliveries {
    /// Records acknowledged (each sequence number once).
    delivered: AtomicU64,
    /// Records sent and not acknowledged, by sequence number.
    unsettled: Mutex<std::collections::BTreeMap<usize, Unsettled>>,
    /// The first delivery error of the current producer, if any.
    error: Mutex<Option<String>>,
    /// The generation of the current producer (errors of earlier ones are ignored).
    current: AtomicU64,
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        pmi_sources::kafka::librdkafka_log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // A fatal error of the producer (an idempotent producer's sequence lost by a broker
        // that restarted) is recovered by the sink: it replaces the producer and sends the
        // unacknowledged records again (`KafkaSink::check`, which says so).
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            tracing::warn!(error = %error, reason, "kafka producer: fatal error; the sink replaces the producer");
            return;
        }
        pmi_sources::kafka::librdkafka_error(&error, reason);
    }
}

/// A client context that only logs, as [`DeliveryContext`] does.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientLog;

impl ClientContext for ClientLog {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        pmi_sources::kafka::librdkafka_log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        pmi_sources::kafka::librdkafka_error(&error, reason);
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        let shared = &self.shared;
        match result {
            Ok(_) => {
                // Once per record, even if an earlier producer delivered it too.
                if shared
                    .unsettled
                    .lock()
                    .expect("deliveries lock")
                    .remove(&seq)
                    .is_some()
                {
                    shared.delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err((e, m)) => {
                // The record stays unsettled; the sink decides (see `KafkaSink::check`).
                if shared.current.load(Ordering::Acquire) == self.generation {
                    use rdkafka::message::Message;
                    let what = format!("delivery to `{}` failed after retries: {e}", m.topic());
                    shared
                        .error
                        .lock()
                        .expect("deliveries lock")
                        .get_or_insert(what);
                }
            }
        }
    }
}

/// How records of one kind become Kafka messages.
pub trait KafkaRecord {
    /// The message key.
    fn key(&self) -> &str;
    /// The message value.
    fn value(&self) -> Vec<u8>;
}

impl KafkaRecord for Prediction {
    fn key(&self) -> &str {
        self.vehicle_id.as_str()
    }
    fn value(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a prediction always serialises")
    }
}

/// An alert change as JSON: `{"raised": alert}`, `{"changed": {"from", "to"}}` or
/// `{"retracted": {"alert", "reason"}}`, keyed by vehicle (so a vehicle's changes stay in
/// order on one partition).
impl KafkaRecord for pmi_core::AlertChange {
    fn key(&self) -> &str {
        self.vehicle_id().as_str()
    }
    fn value(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an alert change always serialises")
    }
}

impl KafkaRecord for Telemetry {
    fn key(&self) -> &str {
        self.vehicle_id.as_str()
    }
    fn value(&self) -> Vec<u8> {
        pmi_core::wire::encode(self).into_bytes()
    }
}

impl KafkaRecord for RawReading {
    fn key(&self) -> &str {
        self.vehicle_id.as_deref().unwrap_or("")
    }
    fn value(&self) -> Vec<u8> {
        pmi_core::wire::encode_raw(self).into_bytes()
    }
}

impl KafkaRecord for Rejected {
    fn key(&self) -> &str {
        self.reading.vehicle_id.as_deref().unwrap_or("")
    }
    fn value(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a rejected reading always serialises")
    }
}

/// A producer to one topic.
///
/// If librdkafka declares the producer fatally broken (an idempotence error: a broker
/// that lost the producer's sequence state, as a restarted single-node test broker can),
/// the sink replaces it with a new one and sends every record not yet acknowledged again,
/// in order: at least once, never lost. Any other failed delivery fails the sink.
pub struct KafkaSink<T> {
    /// In a cell so that [`ChunkSink::durable`] (`&self`) can replace it too.
    producer: std::cell::RefCell<ThreadedProducer<DeliveryContext, NoCustomPartitioner>>,
    deliveries: Arc<Deliveries>,
    config: KafkaSinkConfig,
    sent: u64,
    bytes: u64,
    /// Producers replaced after a fatal error.
    replaced: std::cell::Cell<u64>,
    /// `(token, records sent before it)` of the checkpoint in flight, and the last durable.
    checkpoint: Option<(u64, u64)>,
    _records: std::marker::PhantomData<fn(T)>,
}

fn kafka_err(topic: &str, e: KafkaError) -> SinkError {
    SinkError::Kafka(format!("topic `{topic}`: {e}"))
}

fn producer(
    config: &KafkaSinkConfig,
    deliveries: &Arc<Deliveries>,
    generation: u64,
) -> Result<ThreadedProducer<DeliveryContext, NoCustomPartitioner>, SinkError> {
    deliveries.current.store(generation, Ordering::Release);
    config
        .client_config()
        .create_with_context(DeliveryContext {
            shared: deliveries.clone(),
            generation,
        })
        .map_err(|e| kafka_err(&config.topic, e))
}

impl<T: KafkaRecord> KafkaSink<T> {
    /// Connects (lazily: librdkafka connects in the background).
    pub fn new(config: KafkaSinkConfig) -> Result<Self, SinkError> {
        let deliveries = Arc::new(Deliveries::default());
        Ok(KafkaSink {
            producer: std::cell::RefCell::new(producer(&config, &deliveries, 0)?),
            deliveries,
            config,
            sent: 0,
            bytes: 0,
            replaced: std::cell::Cell::new(0),
            checkpoint: None,
            _records: std::marker::PhantomData,
        })
    }

    /// Fails on a delivery error, except a fatal one of the producer: that producer is
    /// replaced and the unacknowledged records are sent again.
    fn check(&self) -> Result<(), SinkError> {
        let Some(failure) = self
            .deliveries
            .error
            .lock()
            .expect("deliveries lock")
            .clone()
        else {
            return Ok(());
        };
        let fatal = self.producer.borrow().client().fatal_error();
        let Some((code, reason)) = fatal else {
            return Err(SinkError::Kafka(failure));
        };
        self.replaced.set(self.replaced.get() + 1);
        tracing::warn!(topic = %self.config.topic, ?code, %reason, "kafka producer fatally failed: replacing it and sending the unacknowledged records again");
        let fresh = producer(&self.config, &self.deliveries, self.replaced.get())?;
        let old = self.producer.replace(fresh);
        // What the old producer still holds is sent again below: drop it unsent.
        old.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
        drop(old);
        *self.deliveries.error.lock().expect("deliveries lock") = None;
        let again: Vec<(usize, String, Vec<u8>)> = self
            .deliveries
            .unsettled
            .lock()
            .expect("deliveries lock")
            .iter()
            .map(|(seq, u)| (*seq, u.key.clone(), u.value.clone()))
            .collect();
        for (seq, key, value) in again {
            self.enqueue(seq, &key, &value)?;
        }
        Ok(())
    }

    /// Hands one record to librdkafka, waiting for room while its queue is full.
    fn enqueue(&self, seq: usize, key: &str, value: &[u8]) -> Result<(), SinkError> {
        let started = Instant::now();
        let mut said = started;
        let mut message = BaseRecord::with_opaque_to(&self.config.topic, seq)
            .key(key)
            .payload(value);
        loop {
            let sent = self.producer.borrow().send(message);
            match sent {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), m)) => {
                    let waited = started.elapsed();
                    if let Some(limit) = self.config.delivery_timeout.filter(|l| waited > *l) {
                        return Err(SinkError::Kafka(format!(
                            "topic `{}`: local queue full for {limit:?} (broker away?)",
                            self.config.topic
                        )));
                    }
                    if said.elapsed() >= Duration::from_secs(10) {
                        said = Instant::now();
                        tracing::warn!(topic = %self.config.topic, waited_s = waited.as_secs(), "kafka producer queue full: waiting for the broker");
                    }
                    if self
                        .deliveries
                        .error
                        .lock()
                        .expect("deliveries lock")
                        .is_some()
                    {
                        // Settled below (a replaced producer sends this record again).
                        return Ok(());
                    }
                    // Backpressure: librdkafka's own thread delivers and makes room.
                    std::thread::sleep(Duration::from_millis(5));
                    message = m;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::Fatal), _)) => {
                    // The producer is fatally broken (its error callback may not have run
                    // yet): the record stays unsettled and the next `check` replaces the
                    // producer and sends it again.
                    self.deliveries
                        .error
                        .lock()
                        .expect("deliveries lock")
                        .get_or_insert_with(|| "the producer failed fatally".to_owned());
                    return Ok(());
                }
                Err((e, _)) => return Err(kafka_err(&self.config.topic, e)),
            }
        }
    }

    /// Enqueues one record, waiting for room while librdkafka's queue is full.
    pub fn send_one(&mut self, record: &T) -> Result<(), SinkError> {
        self.check()?;
        self.submit(record.key(), record.value())
    }

    /// Keeps one record until it is acknowledged, and enqueues it.
    fn submit(&mut self, key: &str, value: Vec<u8>) -> Result<(), SinkError> {
        let seq = self.sent as usize;
        self.deliveries
            .unsettled
            .lock()
            .expect("deliveries lock")
            .insert(
                seq,
                Unsettled {
                    key: key.to_owned(),
                    value: value.clone(),
                },
            );
        self.enqueue(seq, key, &value)?;
        self.sent += 1;
        self.bytes += value.len() as u64;
        Ok(())
    }

    /// Waits until every record sent so far is acknowledged by the broker.
    pub fn flush(&mut self) -> Result<(), SinkError> {
        let timeout = match self.config.delivery_timeout {
            Some(t) => rdkafka::util::Timeout::After(t),
            None => rdkafka::util::Timeout::Never,
        };
        loop {
            let flushed = self.producer.borrow().flush(timeout);
            let replaced = self.replaced.get();
            self.check()?;
            if self.replaced.get() == replaced {
                flushed.map_err(|e| kafka_err(&self.config.topic, e))?;
                return Ok(());
            }
            // A new producer sends the unacknowledged records again: wait for it too.
        }
    }

    /// Records acknowledged so far.
    pub fn delivered(&self) -> u64 {
        self.deliveries.delivered.load(Ordering::Relaxed)
    }
}

impl<T: KafkaRecord> ChunkSink<T> for KafkaSink<T> {
    fn send(&mut self, chunk: Vec<T>) -> Result<(), SinkError> {
        self.check()?;
        for record in &chunk {
            self.send_one(record)?;
        }
        Ok(())
    }

    fn checkpoint(&mut self, token: u64) -> Result<(), SinkError> {
        self.check()?;
        self.checkpoint = Some((token, self.sent));
        Ok(())
    }

    fn durable(&self) -> Result<Option<u64>, SinkError> {
        // Durable when every record sent before the checkpoint is acknowledged; a failed
        // delivery fails the sink, except that a fatally broken producer is replaced.
        self.check()?;
        Ok(match self.checkpoint {
            Some((token, sent))
                if self
                    .deliveries
                    .unsettled
                    .lock()
                    .expect("deliveries lock")
                    .range(..sent as usize)
                    .next()
                    .is_none() =>
            {
                Some(token)
            }
            _ => Some(0),
        })
    }

    fn close(mut self: Box<Self>) -> Result<SinkStats, SinkError> {
        self.flush()?;
        Ok(SinkStats {
            rows: self.sent,
            files: 0,
            bytes: self.bytes,
        })
    }
}

/// Creates `topic` with `partitions` partitions if it does not exist (tests, `pmi simulate
/// --to kafka://…`; production topics are usually made by their owners).
pub fn ensure_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> Result<(), SinkError> {
    use rdkafka::admin::{NewTopic, TopicReplication};
    let (admin, options, runtime) = admin_client(brokers, topic, timeout)?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let results = runtime
        .block_on(admin.create_topics([&new], &options))
        .map_err(|e| kafka_err(topic, e))?;
    for r in results {
        match r {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(SinkError::Kafka(format!("creating topic `{t}`: {code}")));
            }
        }
    }
    Ok(())
}

/// An admin client, its request options and a runtime to wait on them, for one request
/// about `topic` (topic set-up is rare and happens outside the graph's workers).
fn admin_client(
    brokers: &str,
    topic: &str,
    timeout: Duration,
) -> Result<
    (
        rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext>,
        rdkafka::admin::AdminOptions,
        tokio::runtime::Runtime,
    ),
    SinkError,
> {
    let admin = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|e| kafka_err(topic, e))?;
    let options = rdkafka::admin::AdminOptions::new().operation_timeout(Some(timeout));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| SinkError::Io {
            path: "tokio runtime".into(),
            source,
        })?;
    Ok((admin, options, runtime))
}

/// Deletes `topic` (bench topics; a missing topic is not an error).
pub fn delete_topic(brokers: &str, topic: &str, timeout: Duration) -> Result<(), SinkError> {
    let (admin, options, runtime) = admin_client(brokers, topic, timeout)?;
    let results = runtime
        .block_on(admin.delete_topics(&[topic], &options))
        .map_err(|e| kafka_err(topic, e))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((t, code)) => {
                return Err(SinkError::Kafka(format!("deleting topic `{t}`: {code}")));
            }
        }
    }
    Ok(())
}

/// Why [`TopicProducer::send`] took nothing.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Admitting the records would exceed the bound on records in flight: send again later.
    #[error("{in_flight} records waiting for the broker and {asked} more asked; at most {capacity}: send again later")]
    Full {
        /// Records in flight now.
        in_flight: usize,
        /// Records asked for.
        asked: usize,
        /// The bound.
        capacity: usize,
    },
    /// The producer is closed (shutting down).
    #[error("the producer is closed (shutting down)")]
    Closed,
}

/// Counters of a [`TopicProducer`].
#[derive(Debug, Default)]
pub struct ProducerCounts {
    /// Records acknowledged by the broker.
    pub delivered: AtomicU64,
    /// Records whose delivery failed (after librdkafka's retries, or refused locally).
    pub failed: AtomicU64,
}

/// Records admitted and not yet settled; releases its share of the bound when dropped.
struct Permit {
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    n: usize,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(self.n, Ordering::AcqRel);
    }
}

/// An asynchronous producer with a bound on records in flight, for request handlers
/// (`pmi serve` with Kafka configured): [`TopicProducer::send`] admits a whole batch or
/// nothing, enqueues it without blocking and returns a future of its acknowledgement
/// (`acks=all`, idempotent). The bound, not librdkafka's queue, is the backpressure: its
/// queue is sized above it, so an admitted batch is always enqueued whole.
pub struct TopicProducer {
    producer: rdkafka::producer::FutureProducer<ClientLog>,
    topic: String,
    capacity: usize,
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    closed: std::sync::atomic::AtomicBool,
    counts: Arc<ProducerCounts>,
}

/// One record for [`TopicProducer::send`]: topic (`None`: the producer's), key, value.
pub type OutRecord = (Option<String>, String, Vec<u8>);

impl TopicProducer {
    /// A producer to `config.topic` admitting at most `capacity` records in flight.
    pub fn new(config: &KafkaSinkConfig, capacity: usize) -> Result<Self, SinkError> {
        let mut client = config.client_config();
        client
            .set(
                "queue.buffering.max.messages",
                (capacity.saturating_mul(2).max(1000)).to_string(),
            )
            .set("linger.ms", "2");
        let producer = client
            .create_with_context(ClientLog)
            .map_err(|e| kafka_err(&config.topic, e))?;
        Ok(TopicProducer {
            producer,
            topic: config.topic.clone(),
            capacity: capacity.max(1),
            in_flight: Arc::default(),
            closed: Default::default(),
            counts: Arc::default(),
        })
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Records admitted and not yet acknowledged or failed.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// The bound on records in flight.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Delivery counters.
    pub fn counts(&self) -> &ProducerCounts {
        &self.counts
    }

    /// Refuses every later [`TopicProducer::send`].
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Whether [`TopicProducer::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Admits and enqueues `records` (all or none), without blocking. The future resolves
    /// when every one is acknowledged (`Ok`) or one failed (the first error); it need not be
    /// polled for the records to be delivered, and the bound is released as they settle
    /// even if it is dropped.
    pub fn send(
        &self,
        records: Vec<OutRecord>,
    ) -> Result<impl std::future::Future<Output = Result<usize, SinkError>> + Send + 'static, Refused>
    {
        if self.is_closed() {
            return Err(Refused::Closed);
        }
        let n = records.len();
        let admitted = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                (now + n <= self.capacity).then_some(now + n)
            });
        if let Err(now) = admitted {
            return Err(Refused::Full {
                in_flight: now,
                asked: n,
                capacity: self.capacity,
            });
        }
        let permit = Permit {
            in_flight: self.in_flight.clone(),
            n,
        };
        let mut futures = Vec::with_capacity(n);
        let mut local_failure = None;
        for (topic, key, value) in &records {
            let topic = topic.as_deref().unwrap_or(&self.topic);
            let record = rdkafka::producer::FutureRecord::to(topic)
                .key(key.as_str())
                .payload(value.as_slice());
            match self.producer.send_result(record) {
                Ok(f) => futures.push((topic.to_owned(), f)),
                Err((e, _)) => {
                    self.counts.failed.fetch_add(1, Ordering::Relaxed);
                    local_failure.get_or_insert_with(|| kafka_err(topic, e));
                }
            }
        }
        let counts = self.counts.clone();
        Ok(async move {
            let _permit = permit;
            let mut first = local_failure;
            let mut delivered = 0;
            for (topic, f) in futures {
                match f.await {
                    Ok(Ok(_)) => {
                        delivered += 1;
                        counts.delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Err((e, _))) => {
                        counts.failed.fetch_add(1, Ordering::Relaxed);
                        first.get_or_insert_with(|| kafka_err(&topic, e));
                    }
                    Err(_) => {
                        counts.failed.fetch_add(1, Ordering::Relaxed);
                        first.get_or_insert_with(|| {
                            SinkError::Kafka(format!("topic `{topic}`: producer gone"))
                        });
                    }
                }
            }
            match first {
                Some(e) => Err(e),
                None => Ok(delivered),
            }
        })
    }

    /// Waits until everything enqueued is delivered or `timeout` passes.
    pub fn flush(&self, timeout: Duration) -> Result<(), SinkError> {
        self.producer
            .flush(timeout)
            .map_err(|e| kafka_err(&self.topic, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    use rdkafka::{Message, Offset, TopicPartitionList};

    /// A one-broker mock cluster with a topic `out`, its address, and a sink to the topic.
    fn mock_sink() -> (
        MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
        String,
        KafkaSink<RawReading>,
    ) {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("out", 1, 1).unwrap();
        let brokers = cluster.bootstrap_servers();
        let sink = KafkaSink::new(KafkaSinkConfig::new(&brokers, "out")).unwrap();
        (cluster, brokers, sink)
    }

    /// Reading `i` of one vehicle: at time `1000 + i`, its first sensor's value `i`.
    fn reading(i: i64) -> RawReading {
        let mut values = [None; pmi_core::SENSOR_COUNT];
        values[0] = Some(i as f64);
        RawReading::new("VEH_000001", 1_000 + i, values)
    }

    /// A broker that lost the producer's sequence state (librdkafka's mock cluster answering
    /// produce requests with out-of-order-sequence errors) breaks the idempotent producer
    /// fatally: the sink replaces it and every record still arrives.
    #[test]
    fn a_fatally_broken_producer_is_replaced_and_nothing_is_lost() {
        let (cluster, brokers, mut sink) = mock_sink();
        for i in 0..50 {
            sink.send_one(&reading(i)).unwrap();
        }
        sink.flush().unwrap();
        cluster.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER; 2],
        );
        for i in 50..100 {
            sink.send_one(&reading(i)).unwrap();
        }
        sink.flush().unwrap();
        assert!(sink.replaced.get() >= 1, "the producer was not replaced");
        assert_eq!(sink.delivered(), 100);

        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "check")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("out", 0, Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen.len() < 100 && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                let raw = pmi_core::wire::decode(m.payload().unwrap(), None).unwrap();
                seen.insert(raw.ts.unwrap());
            }
        }
        // Every record, at least once.
        assert_eq!(seen, (1_000..1_100).collect());
    }

    /// Records handed to a producer that is already fatally broken (librdkafka refuses them
    /// at once, before any delivery report) are kept and sent again by its replacement.
    #[test]
    fn records_sent_to_a_broken_producer_are_sent_again() {
        let (cluster, _, mut sink) = mock_sink();
        sink.send_one(&reading(0)).unwrap();
        sink.flush().unwrap();
        cluster.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER; 2],
        );
        sink.send_one(&reading(1)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while sink.producer.borrow().client().fatal_error().is_none() {
            assert!(Instant::now() < deadline, "the producer never failed");
            sink.producer.borrow().poll(Duration::from_millis(10));
        }
        // The broken producer refuses this one outright.
        let refused = sink
            .producer
            .borrow()
            .send(BaseRecord::<str, [u8], usize>::with_opaque_to("out", usize::MAX).key("k"));
        assert!(matches!(
            refused,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::Fatal), _))
        ));
        // The sink's next record meets the same refusal (`submit` skips the `check` that
        // might have replaced the producer first): it is kept, not an error.
        let replaced = sink.replaced.get();
        sink.submit("VEH_000001", reading(2).value()).unwrap();
        for i in 3..20 {
            sink.send_one(&reading(i)).unwrap();
        }
        sink.flush().unwrap();
        assert!(
            sink.replaced.get() > replaced,
            "the producer was not replaced"
        );
        assert_eq!(sink.delivered(), 20);
    }
}

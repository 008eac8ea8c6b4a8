//! The HTTP ingest API of `pmi serve`. Embedded mode: readings go straight into the graph
//! running in this process, through a bounded [`pmi_sources::ingest`] queue. With Kafka
//! configured ([`Ingest::to_kafka`]): accepted readings are produced to the telemetry topic
//! (JSON wire format, key = vehicle id, `acks=all`) for `pmi run --source kafka` to read,
//! and rejected ones to the dead-letter topic when there is one.
//!
//! - `POST /ingest`: one reading in the JSON wire format of [`pmi_core::wire`] →
//!   `202 {"accepted": 1}`.
//! - `POST /ingest/batch`: `{"readings": [reading, …]}` (at most `max_batch` readings) →
//!   `202 {"accepted": n, "rejected": [{"index", "field", "error", "reason"}]}`, with fields
//!   named from the body's root (`readings[3].coolant_temp_c`). `422` only when every
//!   reading was rejected or the body is not such an object.
//! - `GET /stats`: readings accepted and rejected (by reason code), late, feature vectors,
//!   predictions, alerts, queue depth, and per-source rates over the last ~10 s.
//! - `GET /health`: `200 {"status": "ok"}` while the graph runs; `503` while it stops, once
//!   it has stopped or when it failed.
//! - `GET /metrics`: the same counters in the Prometheus text format.
//!
//! Every reading is validated here, so that a bad one is answered at once (`422` naming the
//! field; `payload` when the body is not JSON or not a reading), and is still queued as a
//! rejection: the graph writes it to its dead-letter output, so nothing sent is lost.
//! A batch is queued whole or not at all: a full queue answers `429` with `Retry-After`
//! (send the same request again later), a stopping or stopped graph `503`, a body over the
//! size limit or a batch over `max_batch` `413`.
//!
//! With Kafka, `202` means the broker acknowledged every record of the request; the queue
//! is the bound on records waiting for the broker (`429` beyond it, nothing produced), and a
//! delivery that fails (broker away past the delivery timeout) answers `503` (send again:
//! at least once, some records of the request may be in the topic already).

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use pmi_core::{wire, EventTime, Rejected, Validator};
use pmi_dataflows::GraphStats;
use pmi_sinks::kafka::{KafkaRecord, OutRecord, Refused, TopicProducer};
use pmi_sources::ingest::{IngestItem, IngestProducer, PushError};

/// Limits of the ingest endpoints.
#[derive(Clone, Copy, Debug)]
pub struct IngestLimits {
    /// Most readings in one `POST /ingest/batch` (more: `413`).
    pub max_batch: usize,
    /// Largest request body, bytes (more: `413`).
    pub body_limit: usize,
    /// `Retry-After` of a `429`, seconds.
    pub retry_after_s: u64,
}

impl Default for IngestLimits {
    fn default() -> Self {
        IngestLimits {
            max_batch: 10_000,
            body_limit: 4 * 1024 * 1024,
            retry_after_s: 1,
        }
    }
}

/// Where the graph behind the API is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GraphState {
    /// Running: ingest is open.
    Running,
    /// Shutting down: ingest is closed, the queue drains, sinks flush.
    Stopping,
    /// Stopped after a clean shutdown.
    Stopped,
    /// Stopped on an error.
    Failed(String),
}

/// What the HTTP side counts (the graph's own counters are in [`GraphStats`]).
#[derive(Debug, Default)]
struct HttpCounters {
    accepted: AtomicU64,
    rejected: AtomicU64,
    throttled: AtomicU64,
    unavailable: AtomicU64,
    too_large: AtomicU64,
    /// Kafka: requests whose records the broker did not acknowledge in time.
    undelivered: AtomicU64,
}

/// How long per-source rates look back.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Where accepted readings go.
enum Backend {
    /// The graph in this process, through the bounded ingest queue.
    Graph(IngestProducer),
    /// A Kafka topic; rejected readings to `dead_letter` when set.
    Kafka {
        producer: Arc<TopicProducer>,
        dead_letter: Option<String>,
    },
}

/// The ingest API's shared state.
pub struct Ingest {
    backend: Backend,
    validator: Validator,
    limits: IngestLimits,
    http: HttpCounters,
    graph: Arc<GraphStats>,
    state: Mutex<GraphState>,
    /// Samples of readings read per source, oldest first, spanning about [`RATE_WINDOW`].
    samples: Mutex<VecDeque<(Instant, BTreeMap<String, u64>)>>,
    started: Instant,
}

impl Ingest {
    /// The API over `producer`, reporting `graph`'s counters.
    pub fn new(producer: IngestProducer, graph: Arc<GraphStats>, limits: IngestLimits) -> Ingest {
        Ingest::with_backend(Backend::Graph(producer), graph, limits)
    }

    /// The API producing accepted readings to `producer`'s topic and rejected ones to
    /// `dead_letter` (none: counted only), with no graph in this process (`graph` stays
    /// empty).
    pub fn to_kafka(
        producer: Arc<TopicProducer>,
        dead_letter: Option<String>,
        graph: Arc<GraphStats>,
        limits: IngestLimits,
    ) -> Ingest {
        Ingest::with_backend(
            Backend::Kafka {
                producer,
                dead_letter,
            },
            graph,
            limits,
        )
    }

    fn with_backend(backend: Backend, graph: Arc<GraphStats>, limits: IngestLimits) -> Ingest {
        Ingest {
            backend,
            validator: Validator::default(),
            limits,
            http: HttpCounters::default(),
            graph,
            state: Mutex::new(GraphState::Running),
            samples: Mutex::new(VecDeque::new()),
            started: Instant::now(),
        }
    }

    /// The limits.
    pub fn limits(&self) -> IngestLimits {
        self.limits
    }

    /// Records where the graph is (`/health`).
    pub fn set_state(&self, state: GraphState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }

    /// Where the graph is.
    pub fn state(&self) -> GraphState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stops accepting readings (every ingest request gets `503`); what is queued drains.
    pub fn close(&self) {
        match &self.backend {
            Backend::Graph(p) => p.close(),
            Backend::Kafka { producer, .. } => producer.close(),
        }
    }

    /// Readings accepted and rejected over HTTP so far.
    pub fn http_counts(&self) -> (u64, u64) {
        (
            self.http.accepted.load(Ordering::Relaxed),
            self.http.rejected.load(Ordering::Relaxed),
        )
    }

    /// Records waiting in the queue (embedded) or for the broker (Kafka), and the bound.
    fn depth(&self) -> (usize, usize) {
        match &self.backend {
            Backend::Graph(p) => (p.len(), p.capacity()),
            Backend::Kafka { producer, .. } => (producer.in_flight(), producer.capacity()),
        }
    }

    /// Takes a sample of the per-source counters for the rates (call about once a second).
    pub fn sample_rates(&self, now: Instant) {
        let mut read: BTreeMap<String, u64> = BTreeMap::new();
        for s in self.graph.snapshot().sources {
            *read.entry(s.name).or_default() += s.accepted + s.rejected + s.late;
        }
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.push_back((now, read));
        while samples.len() > 2
            && samples
                .get(1)
                .is_some_and(|(t, _)| now.duration_since(*t) >= RATE_WINDOW)
        {
            samples.pop_front();
        }
    }

    /// Readings per second per source between the oldest and the newest sample.
    fn rates(&self) -> BTreeMap<String, f64> {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let (Some((t0, first)), Some((t1, last))) = (samples.front(), samples.back()) else {
            return BTreeMap::new();
        };
        let secs = t1.duration_since(*t0).as_secs_f64();
        last.iter()
            .map(|(name, n)| {
                let before = first.get(name).copied().unwrap_or(0);
                let rate = if secs > 0.0 {
                    n.saturating_sub(before) as f64 / secs
                } else {
                    0.0
                };
                (name.clone(), rate)
            })
            .collect()
    }

    fn refused_full(&self, message: String) -> Response {
        self.http.throttled.fetch_add(1, Ordering::Relaxed);
        let mut res = error(StatusCode::TOO_MANY_REQUESTS, "queue", message);
        res.headers_mut().insert(
            header::RETRY_AFTER,
            header::HeaderValue::from(self.limits.retry_after_s),
        );
        res
    }

    /// Queues `items` (embedded) or produces them and waits for the broker's
    /// acknowledgement (Kafka), or the response that says why not.
    async fn push(&self, items: Vec<IngestItem>) -> Result<(), Response> {
        let producer = match &self.backend {
            Backend::Graph(p) => p,
            Backend::Kafka {
                producer,
                dead_letter,
            } => return self.produce(producer, dead_letter.as_deref(), items).await,
        };
        match producer.try_push(items) {
            Ok(_) => Ok(()),
            Err(e @ PushError::Full { .. }) => Err(self.refused_full(e.to_string())),
            Err(e @ PushError::Closed) => {
                self.http.unavailable.fetch_add(1, Ordering::Relaxed);
                Err(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "queue",
                    e.to_string(),
                ))
            }
            Err(e @ PushError::TooLarge { .. }) => {
                self.http.too_large.fetch_add(1, Ordering::Relaxed);
                Err(error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "readings",
                    e.to_string(),
                ))
            }
        }
    }

    async fn produce(
        &self,
        producer: &TopicProducer,
        dead_letter: Option<&str>,
        items: Vec<IngestItem>,
    ) -> Result<(), Response> {
        let records: Vec<OutRecord> = items
            .iter()
            .filter_map(|item| match item {
                IngestItem::Reading(t) => Some((None, t.key().to_owned(), t.value())),
                IngestItem::Rejected(r) => {
                    dead_letter.map(|d| (Some(d.to_owned()), r.key().to_owned(), r.value()))
                }
            })
            .collect();
        if records.is_empty() {
            return Ok(());
        }
        let delivery = match producer.send(records) {
            Ok(d) => d,
            Err(e @ Refused::Full { .. }) => return Err(self.refused_full(e.to_string())),
            Err(e @ Refused::Closed) => {
                self.http.unavailable.fetch_add(1, Ordering::Relaxed);
                return Err(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "queue",
                    e.to_string(),
                ));
            }
        };
        // Its own task: the records settle (and free the bound) even if the client leaves.
        let outcome = tokio::spawn(delivery).await;
        let message = match outcome {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(join) => format!("delivery task: {join}"),
        };
        self.http.undelivered.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %message, "ingest: delivery to Kafka failed; the client is told to send again");
        let body = ErrorBody {
            error: format!(
                "{message} (send the request again; some of it may be in the topic already)"
            ),
            field: "kafka".to_owned(),
            reason: "undelivered".to_owned(),
        };
        Err((StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response())
    }

    fn validate(
        &self,
        decoded: Result<pmi_core::RawReading, Rejected>,
        now: EventTime,
    ) -> IngestItem {
        match decoded.and_then(|raw| self.validator.validate(raw, now)) {
            Ok(t) => IngestItem::Reading(t),
            Err(r) => IngestItem::Rejected(Box::new(r)),
        }
    }

    fn count(&self, accepted: usize, rejected: usize) {
        self.http
            .accepted
            .fetch_add(accepted as u64, Ordering::Relaxed);
        self.http
            .rejected
            .fetch_add(rejected as u64, Ordering::Relaxed);
    }
}

/// The ingest, stats, health and metrics routes.
pub fn router(ingest: Arc<Ingest>) -> Router {
    Router::new()
        .route("/ingest", post(ingest_one))
        .route("/ingest/batch", post(ingest_batch))
        .route("/stats", get(stats))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(ingest)
}

/// An error body: what went wrong, the field at fault, and a reason code.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// What went wrong.
    error: String,
    /// The field at fault (`payload`: the body as a whole).
    field: String,
    /// Reason code (`missing`, `malformed`, `out_of_range`, …; `queue_full`, `closed`,
    /// `too_large` for refusals).
    reason: String,
}

fn error(status: StatusCode, field: &str, message: String) -> Response {
    let reason = match status {
        StatusCode::TOO_MANY_REQUESTS => "queue_full",
        StatusCode::SERVICE_UNAVAILABLE => "closed",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        _ => "malformed",
    };
    (
        status,
        Json(ErrorBody {
            error: message,
            field: field.to_owned(),
            reason: reason.to_owned(),
        }),
    )
        .into_response()
}

fn rejected_body(r: &Rejected, field: String) -> ErrorBody {
    ErrorBody {
        error: r.to_string(),
        field,
        reason: r.code().to_owned(),
    }
}

fn body_error(e: BytesRejection) -> Response {
    error(e.status(), "payload", e.body_text())
}

/// One reading in the JSON wire format (`pmi_core::wire`): sensors are optional members,
/// a number or `null`; any other member is an error.
#[allow(dead_code)] // documentation only: handlers decode with `pmi_core::wire`
#[derive(ToSchema)]
pub(crate) struct Reading {
    /// Vehicle id: 1 to 64 ASCII letters, digits and `_ - . :`.
    #[schema(example = "VEH_000042")]
    vehicle_id: String,
    /// Event time: ms since the Unix epoch, or an RFC 3339 string.
    #[schema(value_type = i64, example = 1764336000000_i64)]
    ts: i64,
    /// °C, −40 … 150.
    engine_temp_c: Option<f64>,
    /// °C, −40 … 130.
    coolant_temp_c: Option<f64>,
    /// kPa, 0 … 1000.
    oil_pressure_kpa: Option<f64>,
    /// °C, −40 … 160.
    oil_temp_c: Option<f64>,
    /// 0 … 9000.
    rpm: Option<f64>,
    /// km/h, 0 … 300.
    speed_kmh: Option<f64>,
    /// %, 0 … 100.
    engine_load_pct: Option<f64>,
    /// V, 0 … 20.
    battery_voltage_v: Option<f64>,
    /// kPa, 0 … 1000.
    fuel_pressure_kpa: Option<f64>,
    /// %, 0 … 100.
    fuel_level_pct: Option<f64>,
    /// g, 0 … 20.
    vibration_rms_g: Option<f64>,
    /// °C, −60 … 60.
    ambient_temp_c: Option<f64>,
    /// km, 0 … 2,000,000.
    odometer_km: Option<f64>,
    /// %, 0 … 100.
    throttle_pct: Option<f64>,
}

/// The body of `POST /ingest/batch`.
#[allow(dead_code)] // documentation only
#[derive(ToSchema)]
pub(crate) struct Batch {
    /// The readings, at most `max_batch` (default 10,000).
    readings: Vec<Reading>,
}

/// Readings queued for the graph.
#[derive(Serialize, ToSchema)]
pub(crate) struct Accepted {
    /// Readings accepted (valid and queued).
    accepted: usize,
}

/// One rejected reading of a batch.
#[derive(Serialize, ToSchema)]
pub(crate) struct BatchRejection {
    /// Its index in `readings`.
    index: usize,
    /// The field at fault, from the body's root (`readings[3].coolant_temp_c`).
    field: String,
    /// What is wrong.
    error: String,
    /// Reason code (`missing`, `malformed`, `non_finite`, `out_of_range`, `in_future`, …).
    reason: String,
}

/// The answer to a batch.
#[derive(Serialize, ToSchema)]
pub(crate) struct BatchResult {
    /// Readings accepted (valid and queued).
    accepted: usize,
    /// Readings rejected (queued all the same, for the dead-letter output).
    rejected: Vec<BatchRejection>,
}

/// Ingest one reading.
#[utoipa::path(
    post,
    path = "/ingest",
    tag = "ingest",
    request_body(content = Reading, content_type = "application/json"),
    responses(
        (status = 202, description = "Queued for the graph (with Kafka: acknowledged by the broker)", body = Accepted),
        (status = 413, description = "Body over the size limit", body = ErrorBody),
        (status = 422, description = "Rejected (kept in the dead-letter output); `field` names the fault, `payload` for a body that is not a reading", body = ErrorBody),
        (status = 429, description = "Queue full: send again later", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "The graph is stopping or has stopped; with Kafka, the broker did not acknowledge in time (`reason: undelivered`: send again)", body = ErrorBody),
    )
)]
pub(crate) async fn ingest_one(
    State(ing): State<Arc<Ingest>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => return body_error(e),
    };
    let item = ing.validate(wire::decode(&body, Some("http".into())), EventTime::now());
    let rejection = match &item {
        IngestItem::Rejected(r) => Some(rejected_body(r, r.field.clone())),
        IngestItem::Reading(_) => None,
    };
    if let Err(res) = ing.push(vec![item]).await {
        return res;
    }
    match rejection {
        None => {
            ing.count(1, 0);
            (StatusCode::ACCEPTED, Json(Accepted { accepted: 1 })).into_response()
        }
        Some(body) => {
            ing.count(0, 1);
            (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
        }
    }
}

/// Ingest a batch of readings.
#[utoipa::path(
    post,
    path = "/ingest/batch",
    tag = "ingest",
    request_body(content = Batch, content_type = "application/json"),
    responses(
        (status = 202, description = "Queued; rejected readings listed (and kept in the dead-letter output)", body = BatchResult),
        (status = 413, description = "Body over the size limit, or more readings than `max_batch`", body = ErrorBody),
        (status = 422, description = "Every reading rejected (`BatchResult`), or the body is not `{\"readings\": [...]}` (`ErrorBody`, field `payload` or `readings`)", body = BatchResult),
        (status = 429, description = "Queue full: send the same batch again later (nothing of it was queued)", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "The graph is stopping or has stopped; with Kafka, the broker did not acknowledge in time (`reason: undelivered`: send again)", body = ErrorBody),
    )
)]
pub(crate) async fn ingest_batch(
    State(ing): State<Arc<Ingest>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => return body_error(e),
    };
    let origin = || Some("http".to_owned());
    // A body that is not a batch is one rejection, kept like any other.
    let not_a_batch = |field: &str, detail: String| {
        let r = Rejected {
            reading: pmi_core::RawReading {
                origin: origin(),
                ..Default::default()
            },
            field: field.to_owned(),
            reason: pmi_core::RejectReason::Malformed { detail },
        };
        let body = rejected_body(&r, r.field.clone());
        let ing = &ing;
        async move {
            match ing.push(vec![IngestItem::Rejected(Box::new(r))]).await {
                Err(res) => res,
                Ok(()) => {
                    ing.count(0, 1);
                    (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
                }
            }
        }
    };
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return not_a_batch(
                "payload",
                format!("invalid JSON ({e}): {}", wire::excerpt(&body)),
            )
            .await
        }
    };
    let Value::Object(mut members) = value else {
        return not_a_batch(
            "payload",
            format!("expected {{\"readings\": [...]}}: {}", wire::excerpt(&body)),
        )
        .await;
    };
    if let Some(other) = members.keys().find(|k| *k != "readings") {
        let field = other.clone();
        return not_a_batch(
            &field,
            "unknown member (the body is {\"readings\": [...]})".into(),
        )
        .await;
    }
    let readings = match members.remove("readings") {
        Some(Value::Array(a)) => a,
        _ => {
            return not_a_batch(
                "readings",
                format!("expected an array of readings: {}", wire::excerpt(&body)),
            )
            .await
        }
    };
    if readings.len() > ing.limits.max_batch {
        ing.http.too_large.fetch_add(1, Ordering::Relaxed);
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "readings",
            format!(
                "{} readings in one batch; at most {} (split it)",
                readings.len(),
                ing.limits.max_batch
            ),
        );
    }
    let now = EventTime::now();
    let mut items = Vec::with_capacity(readings.len());
    let mut rejected = Vec::new();
    for (index, v) in readings.iter().enumerate() {
        let item = ing.validate(wire::decode_value(v, origin()), now);
        if let IngestItem::Rejected(r) = &item {
            let body = rejected_body(r, format!("readings[{index}].{}", r.field));
            rejected.push(BatchRejection {
                index,
                field: body.field,
                error: body.error,
                reason: body.reason,
            });
        }
        items.push(item);
    }
    let accepted = items.len() - rejected.len();
    if let Err(res) = ing.push(items).await {
        return res;
    }
    ing.count(accepted, rejected.len());
    let status = if accepted == 0 && !rejected.is_empty() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::ACCEPTED
    };
    (status, Json(BatchResult { accepted, rejected })).into_response()
}

/// Counters of the API and the graph.
#[utoipa::path(
    get,
    path = "/stats",
    tag = "operations",
    responses((status = 200, description = "Counters: `http` (this API), `graph` (the graph's outputs), `sources` (per source, with readings/s over the last ~10 s), `queue`", content_type = "application/json"))
)]
pub(crate) async fn stats(State(ing): State<Arc<Ingest>>) -> Json<Value> {
    let g = ing.graph.snapshot();
    let rates = ing.rates();
    let mut sources: BTreeMap<String, Value> = BTreeMap::new();
    for s in &g.sources {
        let e = sources.entry(s.name.clone()).or_insert_with(|| {
            json!({"accepted": 0, "rejected": 0, "late": 0, "workers": 0,
                   "rate_per_s": rates.get(&s.name).copied().unwrap_or(0.0)})
        });
        for (k, n) in [
            ("accepted", s.accepted),
            ("rejected", s.rejected),
            ("late", s.late),
            ("workers", 1),
        ] {
            e[k] = json!(e[k].as_u64().unwrap_or(0) + n);
        }
    }
    let h = &ing.http;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    Json(json!({
        "status": status_word(&ing.state()),
        "uptime_s": ing.started.elapsed().as_secs_f64(),
        "http": {
            "accepted": load(&h.accepted),
            "rejected": load(&h.rejected),
            "refused": {
                "queue_full": load(&h.throttled),
                "closed": load(&h.unavailable),
                "too_large": load(&h.too_large),
            },
        },
        "queue": queue_stats(&ing),
        "graph": {
            "workers_running": g.workers_running,
            "accepted": g.accepted(),
            "rejected": g.rejected_total(),
            "rejected_by_reason": g.rejected,
            "late": g.late,
            "features": g.features,
            "predictions": g.predictions,
            "alerts": g.alerts,
        },
        "sources": sources,
    }))
}

fn queue_stats(ing: &Ingest) -> Value {
    match &ing.backend {
        Backend::Graph(p) => json!({
            "queued": p.len(),
            "capacity": p.capacity(),
            "watermark_ms": p.watermark().map(|w| w.0),
        }),
        Backend::Kafka {
            producer,
            dead_letter,
        } => {
            let c = producer.counts();
            json!({
                "queued": producer.in_flight(),
                "capacity": producer.capacity(),
                "kafka": {
                    "topic": producer.topic(),
                    "dead_letter_topic": dead_letter,
                    "delivered": c.delivered.load(Ordering::Relaxed),
                    "failed": c.failed.load(Ordering::Relaxed),
                    "undelivered_requests": ing.http.undelivered.load(Ordering::Relaxed),
                },
            })
        }
    }
}

fn status_word(s: &GraphState) -> &'static str {
    match s {
        GraphState::Running => "ok",
        GraphState::Stopping => "stopping",
        GraphState::Stopped => "stopped",
        GraphState::Failed(_) => "failed",
    }
}

/// Whether the graph runs.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses(
        (status = 200, description = "`{\"status\": \"ok\"}`: the graph runs", content_type = "application/json"),
        (status = 503, description = "`{\"status\": \"stopping\" | \"stopped\" | \"failed\", \"error\"?}`", content_type = "application/json"),
    )
)]
pub(crate) async fn health(State(ing): State<Arc<Ingest>>) -> Response {
    let state = ing.state();
    let word = status_word(&state);
    match state {
        GraphState::Running => (StatusCode::OK, Json(json!({"status": word}))).into_response(),
        GraphState::Failed(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": word, "error": e})),
        )
            .into_response(),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": word})),
        )
            .into_response(),
    }
}

/// The counters in the Prometheus text format (version 0.0.4).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String))
)]
pub(crate) async fn metrics(State(ing): State<Arc<Ingest>>) -> Response {
    let text = render_metrics(&ing);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Escapes a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn render_metrics(ing: &Ingest) -> String {
    let g = ing.graph.snapshot();
    let h = &ing.http;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let plain = |v: u64| vec![(String::new(), v as f64)];
    family(
        "pmi_up",
        "gauge",
        "1 while the graph runs.",
        &plain(u64::from(ing.state() == GraphState::Running)),
    );
    family(
        "pmi_ingest_readings_total",
        "counter",
        "Readings received over HTTP, by outcome of validation.",
        &[
            ("{outcome=\"accepted\"}".into(), load(&h.accepted) as f64),
            ("{outcome=\"rejected\"}".into(), load(&h.rejected) as f64),
        ],
    );
    family(
        "pmi_ingest_refused_total",
        "counter",
        "Ingest requests refused, by reason (nothing of them was queued).",
        &[
            ("{reason=\"queue_full\"}".into(), load(&h.throttled) as f64),
            ("{reason=\"closed\"}".into(), load(&h.unavailable) as f64),
            ("{reason=\"too_large\"}".into(), load(&h.too_large) as f64),
        ],
    );
    family(
        "pmi_ingest_queue_depth",
        "gauge",
        "Items waiting in the ingest queue.",
        &plain(ing.depth().0 as u64),
    );
    family(
        "pmi_ingest_queue_capacity",
        "gauge",
        "Items the ingest queue holds at most.",
        &plain(ing.depth().1 as u64),
    );
    if let Backend::Kafka { producer, .. } = &ing.backend {
        let c = producer.counts();
        family(
            "pmi_kafka_produced_total",
            "counter",
            "Records produced to Kafka by the ingest API, by outcome.",
            &[
                (
                    "{outcome=\"delivered\"}".into(),
                    c.delivered.load(Ordering::Relaxed) as f64,
                ),
                (
                    "{outcome=\"failed\"}".into(),
                    c.failed.load(Ordering::Relaxed) as f64,
                ),
            ],
        );
    }
    let watermark = match &ing.backend {
        Backend::Graph(p) => p.watermark(),
        Backend::Kafka { .. } => None,
    };
    if let Some(w) = watermark {
        family(
            "pmi_watermark_ms",
            "gauge",
            "The ingest sources' watermark, ms since the epoch.",
            &plain(w.0.max(0) as u64),
        );
    }
    let mut by_source = Vec::new();
    for s in &g.sources {
        for (outcome, n) in [
            ("accepted", s.accepted),
            ("rejected", s.rejected),
            ("late", s.late),
        ] {
            by_source.push((
                format!(
                    "{{source=\"{}\",worker=\"{}\",outcome=\"{outcome}\"}}",
                    label(&s.name),
                    s.worker
                ),
                n as f64,
            ));
        }
    }
    family(
        "pmi_source_readings_total",
        "counter",
        "Readings read by the graph's sources, by source, worker and outcome.",
        &by_source,
    );
    let rates: Vec<(String, f64)> = ing
        .rates()
        .into_iter()
        .map(|(name, r)| (format!("{{source=\"{}\"}}", label(&name)), r))
        .collect();
    family(
        "pmi_source_readings_per_second",
        "gauge",
        "Readings per second read by each source over the last ~10 s.",
        &rates,
    );
    let dead: Vec<(String, f64)> = g
        .rejected
        .iter()
        .map(|(code, n)| (format!("{{reason=\"{}\"}}", label(code)), *n as f64))
        .collect();
    family(
        "pmi_dead_letter_total",
        "counter",
        "Readings in the dead-letter output, by reason code.",
        &dead,
    );
    family(
        "pmi_late_total",
        "counter",
        "Late readings (kept in the late output).",
        &plain(g.late),
    );
    family(
        "pmi_features_total",
        "counter",
        "Feature vectors emitted.",
        &plain(g.features),
    );
    family(
        "pmi_predictions_total",
        "counter",
        "Predictions made.",
        &plain(g.predictions),
    );
    family(
        "pmi_alerts_total",
        "counter",
        "Alerts raised (predictions at or above the alert floor).",
        &plain(g.alerts),
    );
    family(
        "pmi_graph_workers_running",
        "gauge",
        "Timely workers running the graph.",
        &plain(g.workers_running as u64),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use pmi_core::{SourceBatch, TelemetrySource, WindowConfig};
    use pmi_sources::ingest::{IngestQueue, IngestSources};
    use tower::ServiceExt;

    struct App {
        router: Router,
        ingest: Arc<Ingest>,
        sources: IngestSources,
        _dir: tempfile::TempDir,
    }

    /// The whole router of `pmi serve` over a queue of `capacity`.
    fn app(capacity: usize, limits: IngestLimits) -> App {
        let dir = tempfile::tempdir().unwrap();
        let window = WindowConfig::default();
        let rules =
            pmi_models::RuleScorer::new(pmi_models::RuleSet::default(), &window.schema().unwrap())
                .unwrap();
        let api = crate::serve::Api::new(dir.path().join("models"), &window, rules).unwrap();
        let queue = IngestQueue::new(capacity);
        let ingest = Arc::new(Ingest::new(
            queue.producer,
            Arc::new(GraphStats::default()),
            limits,
        ));
        App {
            router: crate::serve::router(Arc::new(api), ingest.clone()),
            ingest,
            sources: queue.sources,
            _dir: dir,
        }
    }

    async fn call(app: &App, method: &str, uri: &str, body: String) -> (StatusCode, Response) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        let res = app.router.clone().oneshot(req).await.unwrap();
        (res.status(), res)
    }

    async fn json_of(res: Response) -> Value {
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    }

    async fn post(app: &App, uri: &str, body: String) -> (StatusCode, Value) {
        let (status, res) = call(app, "POST", uri, body).await;
        (status, json_of(res).await)
    }

    fn reading(vehicle: &str, coolant: f64) -> Value {
        json!({"vehicle_id": vehicle, "ts": EventTime::now().0 - 1_000,
               "coolant_temp_c": coolant, "rpm": 2000.0})
    }

    /// Everything queued now, as the graph would take it.
    fn queued(app: &App) -> SourceBatch {
        let mut source = app.sources.source(30_000);
        let mut batch = SourceBatch::default();
        while source.poll(&mut batch).unwrap() == pmi_core::SourceStatus::Ready {}
        batch
    }

    #[tokio::test]
    async fn one_reading_accepted_or_rejected_naming_the_field() {
        let app = app(100, IngestLimits::default());
        let (status, body) = post(&app, "/ingest", reading("VEH_000001", 90.0).to_string()).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body, json!({"accepted": 1}));

        let (status, body) = post(&app, "/ingest", reading("VEH_000001", 500.0).to_string()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["field"], "coolant_temp_c");
        assert_eq!(body["reason"], "out_of_range");
        assert!(body["error"].as_str().unwrap().contains("500"), "{body}");

        let (status, body) = post(&app, "/ingest", "{not json".into()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["field"], "payload");

        let (status, body) = post(
            &app,
            "/ingest",
            json!({"vehicle_id": "V", "ts": 1, "warp_drive": 1}).to_string(),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["field"], "warp_drive");

        // The rejected ones are queued too, for the dead-letter output.
        let batch = queued(&app);
        assert_eq!(batch.readings.len(), 1);
        let fields: Vec<&str> = batch.rejected.iter().map(|r| r.field.as_str()).collect();
        assert_eq!(fields, ["coolant_temp_c", "payload", "warp_drive"]);
        assert_eq!(batch.rejected[0].reading.origin.as_deref(), Some("http"));
    }

    #[tokio::test]
    async fn batch_with_partial_rejection() {
        let app = app(100, IngestLimits::default());
        let mut missing_ts = reading("VEH_000003", 90.0);
        missing_ts.as_object_mut().unwrap().remove("ts");
        let body = json!({"readings": [
            reading("VEH_000001", 90.0),
            reading("VEH_000002", 131.0),
            reading("VEH_000002", 91.0),
            missing_ts,
        ]});
        let (status, reply) = post(&app, "/ingest/batch", body.to_string()).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
        assert_eq!(reply["accepted"], 2);
        let rejected = reply["rejected"].as_array().unwrap();
        assert_eq!(rejected.len(), 2, "{reply}");
        assert_eq!(rejected[0]["index"], 1);
        assert_eq!(rejected[0]["field"], "readings[1].coolant_temp_c");
        assert_eq!(rejected[0]["reason"], "out_of_range");
        assert_eq!(rejected[1]["index"], 3);
        assert_eq!(rejected[1]["field"], "readings[3].ts");
        assert_eq!(rejected[1]["reason"], "missing");
        let batch = queued(&app);
        assert_eq!((batch.readings.len(), batch.rejected.len()), (2, 2));

        // Every reading rejected, or not a batch at all: 422.
        let body = json!({"readings": [reading("", 90.0)]});
        let (status, reply) = post(&app, "/ingest/batch", body.to_string()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reply}");
        assert_eq!(reply["accepted"], 0);
        assert_eq!(reply["rejected"][0]["field"], "readings[0].vehicle_id");
        for (body, field) in [
            (json!([reading("V", 90.0)]).to_string(), "payload"),
            (json!({"readings": 5}).to_string(), "readings"),
            (json!({"readings": [], "extra": 1}).to_string(), "extra"),
            ("[{".to_owned(), "payload"),
        ] {
            let (status, reply) = post(&app, "/ingest/batch", body.clone()).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body} → {reply}");
            assert_eq!(reply["field"], field, "{body} → {reply}");
        }
        assert_eq!(
            queued(&app).rejected.len(),
            5,
            "kept for the dead-letter output"
        );
    }

    #[tokio::test]
    async fn oversize_body_and_oversize_batch_get_413() {
        let limits = IngestLimits {
            max_batch: 3,
            body_limit: 2_000,
            ..Default::default()
        };
        let app = app(100, limits);
        let big = json!({"readings": vec![reading("VEH_000001", 90.0); 30]}).to_string();
        assert!(big.len() > 2_000);
        for uri in ["/ingest", "/ingest/batch"] {
            let (status, reply) = post(&app, uri, big.clone()).await;
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{uri}: {reply}");
            assert_eq!(reply["field"], "payload");
        }
        let four = json!({"readings": vec![reading("VEH_000001", 90.0); 4]}).to_string();
        let (status, reply) = post(&app, "/ingest/batch", four).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{reply}");
        assert_eq!(reply["field"], "readings");
        assert!(
            queued(&app).is_empty(),
            "nothing of a refused request is queued"
        );
    }

    #[tokio::test]
    async fn full_queue_gets_429_with_retry_after_and_closed_gets_503() {
        let app = app(3, IngestLimits::default());
        let two = json!({"readings": [reading("VEH_000001", 90.0), reading("VEH_000002", 90.0)]});
        let (status, _) = post(&app, "/ingest/batch", two.to_string()).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        // Two more do not fit in the one place left: refused whole.
        let (status, res) = call(&app, "POST", "/ingest/batch", two.to_string()).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(res.headers()[header::RETRY_AFTER], "1");
        assert_eq!(json_of(res).await["reason"], "queue_full");
        assert_eq!(queued(&app).readings.len(), 2);
        // Room again once the graph took them.
        let (status, _) = post(&app, "/ingest/batch", two.to_string()).await;
        assert_eq!(status, StatusCode::ACCEPTED);

        let (status, res) = call(&app, "GET", "/health", String::new()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json_of(res).await, json!({"status": "ok"}));
        app.ingest.set_state(GraphState::Stopping);
        app.ingest.close();
        let (status, reply) = post(&app, "/ingest", reading("VEH_000001", 90.0).to_string()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{reply}");
        let (status, res) = call(&app, "GET", "/health", String::new()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(json_of(res).await["status"], "stopping");

        let (_, res) = call(&app, "GET", "/stats", String::new()).await;
        let stats = json_of(res).await;
        assert_eq!(stats["http"]["accepted"], 4, "{stats}");
        assert_eq!(stats["http"]["refused"]["queue_full"], 1, "{stats}");
        assert_eq!(stats["http"]["refused"]["closed"], 1, "{stats}");
        assert_eq!(stats["queue"]["capacity"], 3);
        let (status, res) = call(&app, "GET", "/metrics", String::new()).await;
        assert_eq!(status, StatusCode::OK);
        let text = String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec())
            .unwrap();
        assert!(
            text.contains("pmi_ingest_readings_total{outcome=\"accepted\"} 4\n"),
            "{text}"
        );
        assert!(
            text.contains("pmi_ingest_refused_total{reason=\"queue_full\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("pmi_up 0\n"), "{text}");
    }

    #[tokio::test]
    async fn stats_report_graph_counters_and_rates() {
        let app = app(10, IngestLimits::default());
        let counters = Arc::new(pmi_operators::source::SourceCounters::default());
        app.ingest
            .graph
            .register_source("http", 0, counters.clone());
        let t0 = Instant::now();
        app.ingest.sample_rates(t0);
        counters.accepted.fetch_add(40, Ordering::Relaxed);
        counters.late.fetch_add(10, Ordering::Relaxed);
        app.ingest.sample_rates(t0 + Duration::from_secs(5));
        let (_, res) = call(&app, "GET", "/stats", String::new()).await;
        let stats = json_of(res).await;
        assert_eq!(stats["sources"]["http"]["accepted"], 40, "{stats}");
        assert_eq!(stats["sources"]["http"]["late"], 10, "{stats}");
        assert_eq!(stats["sources"]["http"]["rate_per_s"], 10.0, "{stats}");
        assert_eq!(stats["graph"]["accepted"], 40, "{stats}");
        // Samples older than the window fall out: the rate is over the last ~10 s only.
        app.ingest.sample_rates(t0 + Duration::from_secs(16));
        app.ingest.sample_rates(t0 + Duration::from_secs(21));
        assert_eq!(app.ingest.rates()["http"], 0.0);
    }

    #[tokio::test]
    async fn openapi_covers_every_endpoint_and_the_reading_schema() {
        let app = app(10, IngestLimits::default());
        let (status, res) = call(&app, "GET", "/openapi.json", String::new()).await;
        assert_eq!(status, StatusCode::OK);
        let doc = json_of(res).await;
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
        for (path, method) in [
            ("/ingest", "post"),
            ("/ingest/batch", "post"),
            ("/stats", "get"),
            ("/health", "get"),
            ("/metrics", "get"),
            ("/predict", "post"),
            ("/model/info", "get"),
        ] {
            assert!(doc["paths"][path][method].is_object(), "{path} {method}");
        }
        assert!(
            doc["paths"]["/ingest"]["post"]["responses"]["429"]["headers"]["Retry-After"]
                .is_object()
        );
        // The documented reading has exactly the wire format's members.
        let props = doc["components"]["schemas"]["Reading"]["properties"]
            .as_object()
            .unwrap();
        let mut documented: Vec<&str> = props.keys().map(String::as_str).collect();
        let mut wire: Vec<&str> = pmi_core::Sensor::ALL.iter().map(|s| s.name()).collect();
        wire.extend(["vehicle_id", "ts"]);
        documented.sort_unstable();
        wire.sort_unstable();
        assert_eq!(documented, wire);
    }

    /// Kafka mode against a broker that never answers: a request waits for its
    /// acknowledgement, the bound on records in flight refuses more with `429` (nothing of
    /// it produced), the waiting request gets `503` once its delivery times out, and a bad
    /// reading is still answered `422` naming the field without reaching the producer.
    #[tokio::test]
    async fn kafka_mode_bounds_records_in_flight_and_reports_undelivered() {
        let dir = tempfile::tempdir().unwrap();
        let window = WindowConfig::default();
        let rules =
            pmi_models::RuleScorer::new(pmi_models::RuleSet::default(), &window.schema().unwrap())
                .unwrap();
        let api = crate::serve::Api::new(dir.path().join("models"), &window, rules).unwrap();
        // Nothing listens on port 9 (discard) of loopback.
        let mut config = pmi_sinks::kafka::KafkaSinkConfig::new("127.0.0.1:9", "t");
        config.delivery_timeout = Some(Duration::from_millis(1500));
        let producer = Arc::new(TopicProducer::new(&config, 2).unwrap());
        let ingest = Arc::new(Ingest::to_kafka(
            producer.clone(),
            None,
            Arc::new(GraphStats::default()),
            IngestLimits::default(),
        ));
        let app = App {
            router: crate::serve::router(Arc::new(api), ingest.clone()),
            ingest,
            sources: IngestQueue::new(1).sources,
            _dir: dir,
        };
        let app = Arc::new(app);

        let batch = json!({"readings": [reading("VEH_000001", 90.0), reading("VEH_000002", 91.0)]});
        let waiting = {
            let app = app.clone();
            tokio::spawn(async move { post(&app, "/ingest/batch", batch.to_string()).await })
        };
        let started = Instant::now();
        while producer.in_flight() < 2 {
            assert!(started.elapsed() < Duration::from_secs(5));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (status, body) = post(&app, "/ingest", reading("VEH_000003", 90.0).to_string()).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert_eq!(body["reason"], "queue_full");

        // Validation comes first: a bad reading is answered at once, nothing produced.
        let (status, body) = post(&app, "/ingest", reading("VEH_000003", 500.0).to_string()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["field"], "coolant_temp_c");

        let (status, body) = waiting.await.unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["reason"], "undelivered");
        assert_eq!(body["field"], "kafka");
        assert_eq!(producer.in_flight(), 0);
        assert_eq!(producer.counts().failed.load(Ordering::Relaxed), 2);

        let (status, res) = call(&app, "GET", "/stats", String::new()).await;
        assert_eq!(status, StatusCode::OK);
        let stats = json_of(res).await;
        assert_eq!(stats["queue"]["kafka"]["topic"], "t", "{stats}");
        assert_eq!(stats["queue"]["kafka"]["failed"], 2, "{stats}");
        assert_eq!(
            stats["queue"]["kafka"]["undelivered_requests"], 1,
            "{stats}"
        );
        assert_eq!(stats["http"]["refused"]["queue_full"], 1, "{stats}");
    }
}

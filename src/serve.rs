//! `pmi serve`: the HTTP API (axum) and, in embedded mode, the live graph it feeds.
//!
//! - `POST /predict`: one vehicle's feature vector by name (`{"vehicle_id", "features":
//!   {name: value|null}, "pane_end"?}`; absent features are missing) or a window of its raw
//!   readings (`{"vehicle_id", "readings": [{"ts": ms, sensor: value, …}], "pane_end"?}`),
//!   which go through the same validation and the same per-vehicle window state machine as
//!   the stream, so the vector is the one the stream would emit at that pane end. Returns the
//!   prediction (risk, severity, component, model version, explanation: the likeliest
//!   component and the reasons even when the severity is normal).
//! - `GET /model/info`: the model scoring now (version, training data, horizon, schema,
//!   classes, severity thresholds, stacker weights) and its held-out metrics.
//! - `POST /ingest`, `POST /ingest/batch`, `GET /stats`, `GET /health`, `GET /metrics`: see
//!   [`crate::ingest`].
//! - `GET /openapi.json`: the OpenAPI 3 document of all of these.
//!
//! Bad prediction requests get `422` with `{"error", "field"}` naming the field at fault
//! (malformed JSON: `400`). The model is the registry's current one, reloaded when `CURRENT`
//! changes.
//!
//! With Kafka configured ([`serve_to_kafka`]) there is no graph in this process: ingest
//! validates as in embedded mode and produces accepted readings to the telemetry topic,
//! where `pmi run --source kafka` (any number of processes) reads them.
//!
//! Embedded mode ([`serve`]): the graph of `pmi run` (same sinks: Parquet under the output
//! folder, console alerts, the registry's model) runs on its own worker threads beside the
//! server, with the ingest queue as its source. On Ctrl-C or SIGTERM the API stops
//! accepting readings (`503`), the queue drains, the graph closes its last panes and its
//! sinks flush; then the server stops. If the graph stops on an error first, ingest answers
//! `503` and `/health` reports the error until the process is stopped, which then exits
//! with that error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa::{OpenApi, ToSchema};

use pmi_core::{
    EventTime, FeatureSchema, FeatureVector, RawReading, Sensor, Validator, VehicleId,
    WindowConfig, SENSOR_COUNT,
};
use pmi_dataflows::jobs::IngestJob;
use pmi_dataflows::scoring::ModelScorer;
use pmi_dataflows::{GraphStats, RunReport};
use pmi_models::registry::Registry;
use pmi_operators::windows::{vector_from_readings, WindowSpec};
use pmi_sources::ingest::{IngestOptions, IngestQueue};

use crate::ingest::{GraphState, Ingest, IngestLimits};

/// What the handlers share.
pub struct Api {
    scorer: ModelScorer,
    spec: WindowSpec,
    schema: FeatureSchema,
    registry: PathBuf,
}

impl Api {
    /// The API over `registry` for vectors of `window`'s schema (rules until a model is
    /// published).
    pub fn new(
        registry: PathBuf,
        window: &WindowConfig,
        rules: pmi_models::RuleScorer,
    ) -> anyhow::Result<Api> {
        let schema = window.schema()?;
        let scorer = ModelScorer::start(
            registry.clone(),
            &schema,
            rules,
            pmi_dataflows::jobs::MODEL_RELOAD_POLL,
        )?;
        Ok(Api {
            scorer,
            spec: WindowSpec::new(window)?,
            schema,
            registry,
        })
    }
}

/// The OpenAPI document of the API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "PMI",
        description = "ProActive Mobility Intelligence: telemetry ingest, graph statistics and predictions."
    ),
    paths(
        crate::ingest::ingest_one,
        crate::ingest::ingest_batch,
        crate::ingest::stats,
        crate::ingest::health,
        crate::ingest::metrics,
        predict,
        model_info
    ),
    tags(
        (name = "ingest", description = "Readings into the live graph"),
        (name = "operations", description = "Counters, health, Prometheus metrics"),
        (name = "prediction", description = "Scoring with the registry's current model")
    )
)]
pub struct ApiDoc;

/// Every route: prediction, ingest, operations and the OpenAPI document, with the body
/// size limit of `ingest`'s limits (`413` beyond it).
pub fn router(api: Arc<Api>, ingest: Arc<Ingest>) -> Router {
    let body_limit = ingest.limits().body_limit;
    Router::new()
        .route("/predict", post(predict))
        .route("/model/info", get(model_info))
        .with_state(api)
        .merge(crate::ingest::router(ingest))
        .route("/openapi.json", get(openapi))
        .layer(DefaultBodyLimit::max(body_limit))
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// What `pmi serve` runs.
pub struct ServeConfig {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// The graph (its `stats` are set here).
    pub job: IngestJob,
    /// The ingest queue.
    pub queue: IngestOptions,
    /// Request limits.
    pub limits: IngestLimits,
}

/// Serves the API with the graph running beside it until Ctrl-C or SIGTERM, then drains
/// and flushes (see the module docs). Returns the graph's report.
pub async fn serve(api: Arc<Api>, config: ServeConfig) -> anyhow::Result<RunReport> {
    let ServeConfig {
        addr,
        mut job,
        queue,
        limits,
    } = config;
    let stats = Arc::new(GraphStats::default());
    job.graph.stats = Some(stats.clone());
    let queue = IngestQueue::with_options(queue);
    let ingest = Arc::new(Ingest::new(queue.producer.clone(), stats, limits));
    let listener = tokio::net::TcpListener::bind(addr).await?;

    let sources = queue.sources;
    let ing = ingest.clone();
    let graph = tokio::task::spawn_blocking(move || {
        let result = pmi_dataflows::jobs::ingest(&job, sources);
        // From now on every ingest request gets 503.
        ing.close();
        match &result {
            Ok(_) => ing.set_state(GraphState::Stopped),
            Err(e) => {
                tracing::error!(error = %e, "graph stopped on an error; ingest closed");
                ing.set_state(GraphState::Failed(e.to_string()));
            }
        }
        result
    });
    let ing = ingest.clone();
    let sampler = tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            ing.sample_rates(std::time::Instant::now());
        }
    });

    tracing::info!(addr = %listener.local_addr()?, "API listening (ingest, stats, health, metrics, predict)");
    let outcome = Arc::new(std::sync::Mutex::new(None));
    let (ing, out) = (ingest.clone(), outcome.clone());
    axum::serve(listener, router(api, ingest))
        .with_graceful_shutdown(async move {
            stop_signal().await;
            tracing::info!("stopping: ingest closed, draining the queue and flushing the sinks");
            if ing.state() == GraphState::Running {
                ing.set_state(GraphState::Stopping);
            }
            ing.close();
            // The server keeps answering (503 to ingest) while the graph drains.
            let result = graph.await;
            *out.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
        })
        .await?;
    sampler.abort();
    let result = outcome.lock().unwrap_or_else(|p| p.into_inner()).take();
    match result {
        Some(Ok(report)) => Ok(report?),
        Some(Err(join)) => anyhow::bail!("graph thread: {join}"),
        None => anyhow::bail!("server stopped before the graph"),
    }
}

/// What `pmi serve` with Kafka configured runs: the API, with ingest producing to a topic
/// and no graph in this process.
pub struct KafkaServeConfig {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// The telemetry topic and its producer settings (`delivery_timeout`: how long a request
    /// waits for the broker before it is answered `503`).
    pub producer: pmi_sinks::kafka::KafkaSinkConfig,
    /// Topic of rejected readings (`None`: counted only).
    pub dead_letter: Option<String>,
    /// Partitions of the topics when they do not exist yet (they are created).
    pub partitions: i32,
    /// Most records waiting for the broker before requests get `429`.
    pub capacity: usize,
    /// Request limits.
    pub limits: IngestLimits,
}

/// What [`serve_to_kafka`] produced.
#[derive(Clone, Copy, Debug, Default)]
pub struct KafkaServeSummary {
    /// Readings accepted (valid) over HTTP.
    pub accepted: u64,
    /// Readings rejected over HTTP.
    pub rejected: u64,
    /// Records the broker acknowledged (readings, and rejections to the dead-letter topic).
    pub delivered: u64,
    /// Records whose delivery failed (their requests were answered `503`).
    pub failed: u64,
}

/// Serves the API with ingest producing to Kafka (see [`crate::ingest`]) until Ctrl-C or
/// SIGTERM; then ingest closes (`503`) and everything enqueued is delivered before it
/// returns.
pub async fn serve_to_kafka(
    api: Arc<Api>,
    config: KafkaServeConfig,
) -> anyhow::Result<KafkaServeSummary> {
    let KafkaServeConfig {
        addr,
        producer,
        dead_letter,
        partitions,
        capacity,
        limits,
    } = config;
    // Admin calls block (their own runtime): off the async threads.
    let (brokers, topics) = (
        producer.brokers.clone(),
        std::iter::once(producer.topic.clone())
            .chain(dead_letter.clone())
            .collect::<Vec<_>>(),
    );
    tokio::task::spawn_blocking(move || {
        topics.iter().try_for_each(|t| {
            pmi_sinks::kafka::ensure_topic(
                &brokers,
                t,
                partitions,
                std::time::Duration::from_secs(30),
            )
        })
    })
    .await??;
    let topic = producer.topic.clone();
    let kafka = Arc::new(pmi_sinks::kafka::TopicProducer::new(&producer, capacity)?);
    let ingest = Arc::new(Ingest::to_kafka(
        kafka.clone(),
        dead_letter,
        Arc::new(GraphStats::default()),
        limits,
    ));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, %topic, "API listening; ingest produces to Kafka");
    let ing = ingest.clone();
    axum::serve(listener, router(api, ingest.clone()))
        .with_graceful_shutdown(async move {
            stop_signal().await;
            tracing::info!("stopping: ingest closed, delivering what is enqueued");
            ing.set_state(GraphState::Stopping);
            ing.close();
        })
        .await?;
    let k = kafka.clone();
    let timeout = producer
        .delivery_timeout
        .unwrap_or(std::time::Duration::from_secs(60));
    tokio::task::spawn_blocking(move || k.flush(timeout)).await??;
    ingest.set_state(GraphState::Stopped);
    let (accepted, rejected) = ingest.http_counts();
    let c = kafka.counts();
    use std::sync::atomic::Ordering::Relaxed;
    Ok(KafkaServeSummary {
        accepted,
        rejected,
        delivered: c.delivered.load(Relaxed),
        failed: c.failed.load(Relaxed),
    })
}

/// Ctrl-C, or SIGTERM on Unix.
pub(crate) async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                return;
            }
            Err(e) => tracing::warn!(error = %e, "no SIGTERM handler; Ctrl-C only"),
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// A request error: status, message, the field at fault.
struct ApiError(StatusCode, String, String);

impl ApiError {
    fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            message.into(),
            field.into(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1, "field": self.2}))).into_response()
    }
}

/// A prediction request: a feature vector by name, or a window of raw readings.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PredictRequest {
    /// The vehicle.
    vehicle_id: String,
    /// Feature values by name (`coolant_temp_c_mean_300s`), a number or null; absent
    /// features are missing.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    features: Option<Map<String, Value>>,
    /// Raw readings (`{"ts": ms, sensor: value, …}`) of the vehicle's latest window.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    readings: Option<Vec<Map<String, Value>>>,
    /// Pane end to score at, ms since the epoch (default: the latest reading's pane; with
    /// features, now).
    #[serde(default)]
    pane_end: Option<i64>,
}

/// Score one vehicle.
#[utoipa::path(
    post,
    path = "/predict",
    tag = "prediction",
    request_body = PredictRequest,
    responses(
        (status = 200, description = "`{\"prediction\": {vehicle_id, risk, severity, component, model_version, explanation, …}, \"pane_end\", \"features\": {\"count\", \"missing\"}}`", content_type = "application/json"),
        (status = 400, description = "Malformed JSON", content_type = "application/json"),
        (status = 422, description = "`{\"error\", \"field\"}` naming the field at fault", content_type = "application/json"),
    )
)]
async fn predict(
    State(api): State<Arc<Api>>,
    body: Result<Json<PredictRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(req) = body.map_err(|e| ApiError(e.status(), e.body_text(), "body".into()))?;
    let vehicle = VehicleId::parse(&req.vehicle_id)
        .map_err(|e| ApiError::invalid("vehicle_id", e.to_string()))?;
    let vector = match (req.features, req.readings) {
        (Some(f), None) => vector_from_features(&api.schema, vehicle, &f, req.pane_end)?,
        (None, Some(r)) => vector_from_raw(&api.spec, vehicle, &r, req.pane_end)?,
        _ => {
            return Err(ApiError::invalid(
                "features",
                "give either `features` (by name) or `readings` (raw), not both or neither",
            ))
        }
    };
    let missing = vector.values.iter().filter(|v| v.is_nan()).count();
    let prediction = api.scorer.score_explained(&vector);
    Ok(Json(json!({
        "prediction": prediction,
        "pane_end": vector.pane_end.0,
        "features": {"count": vector.values.len(), "missing": missing},
    })))
}

fn vector_from_features(
    schema: &FeatureSchema,
    vehicle_id: VehicleId,
    given: &Map<String, Value>,
    pane_end: Option<i64>,
) -> Result<FeatureVector, ApiError> {
    let mut values = vec![f64::NAN; schema.len()];
    for (name, v) in given {
        let i = schema.index_of_name(name).ok_or_else(|| {
            ApiError::invalid(
                format!("features.{name}"),
                format!("unknown feature `{name}` (names look like coolant_temp_c_mean_300s; GET /model/info lists them)"),
            )
        })?;
        values[i] = match v {
            Value::Null => f64::NAN,
            Value::Number(n) => n.as_f64().filter(|x| x.is_finite()).ok_or_else(|| {
                ApiError::invalid(format!("features.{name}"), "not a finite number")
            })?,
            _ => {
                return Err(ApiError::invalid(
                    format!("features.{name}"),
                    "a number or null",
                ))
            }
        };
    }
    if values.iter().all(|v| v.is_nan()) {
        return Err(ApiError::invalid(
            "features",
            "no known feature has a value",
        ));
    }
    Ok(FeatureVector {
        vehicle_id,
        pane_end: EventTime(pane_end.unwrap_or_else(|| EventTime::now().0)),
        schema: schema.fingerprint(),
        values: values.into(),
    })
}

fn vector_from_raw(
    spec: &WindowSpec,
    vehicle_id: VehicleId,
    readings: &[Map<String, Value>],
    pane_end: Option<i64>,
) -> Result<FeatureVector, ApiError> {
    if readings.is_empty() {
        return Err(ApiError::invalid("readings", "no readings"));
    }
    let validator = Validator::default();
    let now = EventTime::now();
    let mut ok = Vec::with_capacity(readings.len());
    for (i, r) in readings.iter().enumerate() {
        let field = |f: &str| format!("readings[{i}].{f}");
        let mut raw = RawReading {
            vehicle_id: Some(vehicle_id.to_string()),
            ts: None,
            values: [None; SENSOR_COUNT],
            origin: None,
        };
        for (k, v) in r {
            if k == "ts" {
                raw.ts = Some(v.as_i64().ok_or_else(|| {
                    ApiError::invalid(field("ts"), "milliseconds since the epoch, an integer")
                })?);
                continue;
            }
            let s = Sensor::from_name(k)
                .ok_or_else(|| ApiError::invalid(field(k), format!("unknown sensor `{k}`")))?;
            raw.values[s.index()] = match v {
                Value::Null => None,
                Value::Number(n) => n.as_f64(),
                _ => return Err(ApiError::invalid(field(k), "a number or null")),
            };
        }
        let reading = validator
            .validate(raw, now)
            .map_err(|rej| ApiError::invalid(field(&rej.field), rej.to_string()))?;
        ok.push(reading);
    }
    vector_from_readings(spec, vehicle_id, &ok, pane_end.map(EventTime)).ok_or_else(|| {
        ApiError::invalid(
            "pane_end",
            "no reading within the longest window before that pane end",
        )
    })
}

/// The model scoring now and its held-out metrics.
#[utoipa::path(
    get,
    path = "/model/info",
    tag = "prediction",
    responses((status = 200, description = "Version, training data, horizon, schema, classes, severity thresholds, stacker weights, metrics; `version: null` while the domain rules score", content_type = "application/json"))
)]
async fn model_info(State(api): State<Arc<Api>>) -> Json<Value> {
    let Some(model) = api.scorer.model() else {
        return Json(json!({
            "model": api.scorer.model_name(),
            "version": null,
            "note": "no model in the registry yet: the domain rules score (run `pmi train`)",
            "registry": api.registry.display().to_string(),
            "schema_fingerprint": format!("{:#018x}", api.schema.fingerprint()),
            "features": api.schema.len(),
        }));
    };
    let m = &model.meta;
    let metrics = Registry::new(&api.registry)
        .path_of(&m.version)
        .join("metrics.json");
    let metrics: Value = std::fs::read(&metrics)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    Json(json!({
        "model": model.model_name(),
        "version": m.version,
        "created_ms": m.created_ms,
        "trained_on": m.trained_on,
        "horizon_ms": m.horizon_ms,
        "schema_fingerprint": model.schema_fingerprint().map(|f| format!("{f:#018x}")),
        "features": m.feature_names,
        "classes": m.classes,
        "severity": model.severity,
        "stacker_weights": model.stacker.weights,
        "members": {
            "risk_trees": model.risk.trees.len(),
            "component_heads": model.heads.iter().flatten().count(),
            "isolation_forest_trees": model.iforest.trees(),
            "rules": model.rules.is_some(),
        },
        "registry": api.registry.display().to_string(),
        "metrics": metrics,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn api() -> (Arc<Api>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let window = WindowConfig::default();
        let rules =
            pmi_models::RuleScorer::new(pmi_models::RuleSet::default(), &window.schema().unwrap())
                .unwrap();
        let api = Api::new(dir.path().join("models"), &window, rules).unwrap();
        (Arc::new(api), dir)
    }

    async fn call(api: &Arc<Api>, method: &str, uri: &str, body: Value) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(if method == "GET" {
                Body::empty()
            } else {
                Body::from(body.to_string())
            })
            .unwrap();
        let queue = IngestQueue::new(10);
        let ingest = Arc::new(Ingest::new(
            queue.producer,
            Arc::new(GraphStats::default()),
            IngestLimits::default(),
        ));
        let res = router(api.clone(), ingest).oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value)
    }

    fn readings(n: i64, coolant: f64) -> Vec<Value> {
        let t0 = EventTime::now().0 - n * 1000 - 5_000;
        (0..n)
            .map(|i| {
                json!({
                    "ts": t0 + i * 1000, "engine_temp_c": coolant + 5.0, "coolant_temp_c": coolant,
                    "oil_pressure_kpa": 320.0, "oil_temp_c": 95.0, "rpm": 2000.0,
                    "speed_kmh": 60.0, "engine_load_pct": 40.0, "battery_voltage_v": 14.1,
                    "fuel_pressure_kpa": 380.0, "fuel_level_pct": 50.0, "vibration_rms_g": 0.3,
                    "ambient_temp_c": 15.0, "odometer_km": 1000.0, "throttle_pct": 35.0
                })
            })
            .collect()
    }

    #[tokio::test]
    async fn predicts_from_readings_and_from_named_features() {
        let (api, _dir) = api();
        let (status, body) = call(
            &api,
            "POST",
            "/predict",
            json!({"vehicle_id": "VEH_000007", "readings": readings(300, 90.0)}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["features"]["count"], 441);
        assert_eq!(body["prediction"]["vehicle_id"], "VEH_000007");
        assert_eq!(body["prediction"]["severity"], "normal", "{body}");
        let healthy_risk = body["prediction"]["risk"].as_f64().unwrap();

        // An overheating engine scores higher, with reasons.
        let (status, hot) = call(
            &api,
            "POST",
            "/predict",
            json!({"vehicle_id": "VEH_000007", "readings": readings(300, 128.0)}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{hot}");
        assert!(
            hot["prediction"]["risk"].as_f64().unwrap() > healthy_risk,
            "{hot}"
        );
        assert!(!hot["prediction"]["explanation"]
            .as_array()
            .unwrap()
            .is_empty());

        let (status, body) = call(
            &api,
            "POST",
            "/predict",
            json!({"vehicle_id": "VEH_000007", "features": {"coolant_temp_c_mean_300s": 90.0, "rpm_max_900s": null}}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["features"]["missing"], 440);

        let (status, info) = call(&api, "GET", "/model/info", Value::Null).await;
        assert_eq!(status, StatusCode::OK);
        assert!(info["version"].is_null(), "{info}");
        assert_eq!(info["features"], 441);
    }

    #[tokio::test]
    async fn bad_requests_name_the_field() {
        let (api, _dir) = api();
        let cases = [
            (
                json!({"vehicle_id": "", "features": {"rpm_max_900s": 1.0}}),
                "vehicle_id",
            ),
            (
                json!({"vehicle_id": "VEH_1", "features": {"rpm_maximum": 1.0}}),
                "features.rpm_maximum",
            ),
            (
                json!({"vehicle_id": "VEH_1", "features": {"rpm_max_900s": "fast"}}),
                "features.rpm_max_900s",
            ),
            (json!({"vehicle_id": "VEH_1"}), "features"),
            (
                json!({"vehicle_id": "VEH_1", "readings": [{"ts": 1, "coolant_temp_c": 500.0}]}),
                "readings[0].coolant_temp_c",
            ),
            (
                json!({"vehicle_id": "VEH_1", "readings": [{"ts": 1, "warp_drive": 1.0}]}),
                "readings[0].warp_drive",
            ),
            (
                json!({"vehicle_id": "VEH_1", "readings": [{"coolant_temp_c": 90.0}]}),
                "readings[0].ts",
            ),
            (
                json!({"vehicle_id": "VEH_1", "readings": [{"ts": 1_000_000, "rpm": 800.0}], "pane_end": 9_000_000}),
                "pane_end",
            ),
        ];
        for (body, field) in cases {
            let (status, reply) = call(&api, "POST", "/predict", body.clone()).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body} → {reply}");
            assert_eq!(reply["field"], field, "{body} → {reply}");
            assert!(!reply["error"].as_str().unwrap().is_empty());
        }
        let (status, reply) = call(&api, "POST", "/predict", json!({"vehicle": 1})).await;
        assert!(status.is_client_error(), "{reply}");
        assert_eq!(reply["field"], "body");
    }
}

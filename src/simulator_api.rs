//! `pmi simulate --listen ADDR`: the simulated fleet as a service, the way a fleet's
//! telematics gateway exposes its vehicles. The fleet drives in real time (one tick per
//! `--tick`, default 1 s of event time per second) and the API serves what it sends:
//!
//! - `GET /vehicles`: every vehicle (id, model, usage profile) with its latest reading time.
//! - `GET /vehicles/{id}`: one vehicle with its latest reading; `404` naming the id.
//! - `GET /telemetry?vehicle_id=&since_ms=&limit=`: recent readings (the last
//!   `--keep` per vehicle), oldest first, in the ingest wire format (`POST /ingest` of
//!   `pmi serve` takes them as they are); `422` naming a bad parameter.
//! - `GET /telemetry/stream?vehicle_id=` (WebSocket): every reading as it is made, one JSON
//!   text message each. A client that falls behind gets `{"lagged": n}` in place of the `n`
//!   readings it missed, so a gap is never silent.
//! - `GET /ground_truth`: the failures the simulator injected (vehicle, component, onset,
//!   failure), the labels a model is judged against.
//! - `GET /health` (ticks, readings, stream clients), `GET /openapi.json`.
//!
//! Bad readings (`--bad-readings`) are served as the vehicles send them, as on every other
//! path of the simulator: the service is a source, validation is the pipeline's job.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::broadcast;
use utoipa::{IntoParams, OpenApi, ToSchema};

use pmi_core::{wire, EventTime, FailureEvent, RawReading};
use pmi_sources::fleet::{Fleet, SimulatorConfig};

/// The OpenAPI document of the simulator's API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "PMI fleet simulator",
        description = "A simulated fleet's vehicles, recent telemetry, live stream and injected failures."
    ),
    paths(vehicles, vehicle, telemetry, stream, ground_truth, health),
    components(schemas(VehicleView)),
    tags((name = "simulator", description = "The simulated fleet"))
)]
pub struct SimulatorDoc;

/// What the service runs.
#[derive(Clone, Debug)]
pub struct SimulatorService {
    /// The fleet.
    pub fleet: SimulatorConfig,
    /// Wall-clock time per tick (the fleet's tick is 1 s of event time by default).
    pub tick: Duration,
    /// Readings kept per vehicle for `GET /telemetry`.
    pub keep: usize,
    /// Readings the live stream buffers per client before it reports a lag.
    pub stream_buffer: usize,
}

/// A vehicle as `GET /vehicles` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct VehicleView {
    /// Its id.
    pub vehicle_id: String,
    /// Vehicle model.
    pub model: String,
    /// Usage profile.
    pub profile: String,
    /// Event time of its latest reading, ms since the epoch.
    pub last_ts: Option<i64>,
}

/// One reading as made: its time (for `since_ms`) and its wire JSON.
#[derive(Clone, Debug)]
struct Served {
    vehicle_id: Option<String>,
    ts: Option<i64>,
    json: Arc<str>,
}

/// What the fleet task and the handlers share.
pub struct FleetFeed {
    vehicles: Vec<VehicleView>,
    recent: Mutex<HashMap<String, VecDeque<Served>>>,
    keep: usize,
    stream: broadcast::Sender<Served>,
    ground_truth: Vec<FailureEvent>,
    ticks: AtomicU64,
    readings: AtomicU64,
    lagged: AtomicU64,
    clients: AtomicUsize,
}

impl FleetFeed {
    fn new(fleet: &Fleet, keep: usize, stream_buffer: usize) -> Self {
        FleetFeed {
            vehicles: fleet
                .vehicles()
                .map(|v| VehicleView {
                    vehicle_id: v.id.as_str().to_owned(),
                    model: v.model.to_owned(),
                    profile: v.profile.to_owned(),
                    last_ts: None,
                })
                .collect(),
            recent: Mutex::new(HashMap::new()),
            keep: keep.max(1),
            stream: broadcast::channel(stream_buffer.max(1)).0,
            ground_truth: fleet.ground_truth().to_vec(),
            ticks: AtomicU64::new(0),
            readings: AtomicU64::new(0),
            lagged: AtomicU64::new(0),
            clients: AtomicUsize::new(0),
        }
    }

    /// Takes one tick's readings: kept for `GET /telemetry`, sent to the stream.
    fn publish(&self, readings: &[RawReading]) {
        let mut recent = self.recent.lock().expect("recent readings lock");
        for r in readings {
            let served = Served {
                vehicle_id: r.vehicle_id.clone(),
                ts: r.ts,
                json: wire::encode_raw(r).into(),
            };
            // A reading without a vehicle id (a dropout) is streamed but kept nowhere.
            if let Some(id) = &r.vehicle_id {
                let buffer = recent.entry(id.clone()).or_default();
                if buffer.len() == self.keep {
                    buffer.pop_front();
                }
                buffer.push_back(served.clone());
            }
            // No subscriber is not an error: nobody is listening.
            let _ = self.stream.send(served);
        }
        self.ticks.fetch_add(1, Ordering::Relaxed);
        self.readings
            .fetch_add(readings.len() as u64, Ordering::Relaxed);
    }
}

/// The simulator's routes over `feed`.
pub fn router(feed: Arc<FleetFeed>) -> Router {
    Router::new()
        .route("/vehicles", get(vehicles))
        .route("/vehicles/{id}", get(vehicle))
        .route("/telemetry", get(telemetry))
        .route("/telemetry/stream", get(stream))
        .route("/ground_truth", get(ground_truth))
        .route("/health", get(health))
        .route(
            "/openapi.json",
            get(|| async { Json(SimulatorDoc::openapi()) }),
        )
        .with_state(feed)
}

fn error(status: StatusCode, message: String, field: &str) -> Response {
    (status, Json(json!({"error": message, "field": field}))).into_response()
}

fn json_array<'a>(items: impl Iterator<Item = &'a Served>) -> Response {
    let mut body = String::from("[");
    for (i, s) in items.enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&s.json);
    }
    body.push(']');
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Every vehicle with its latest reading time.
#[utoipa::path(get, path = "/vehicles", tag = "simulator",
    responses((status = 200, description = "Vehicles", body = [VehicleView])))]
async fn vehicles(State(feed): State<Arc<FleetFeed>>) -> Json<Vec<VehicleView>> {
    let recent = feed.recent.lock().expect("recent readings lock");
    Json(
        feed.vehicles
            .iter()
            .map(|v| VehicleView {
                last_ts: recent
                    .get(&v.vehicle_id)
                    .and_then(|b| b.back())
                    .and_then(|s| s.ts),
                ..v.clone()
            })
            .collect(),
    )
}

/// One vehicle with its latest reading.
#[utoipa::path(get, path = "/vehicles/{id}", tag = "simulator",
    params(("id" = String, Path, description = "Vehicle id")),
    responses((status = 200, description = "The vehicle and `latest`, its latest reading"),
              (status = 404, description = "No such vehicle")))]
async fn vehicle(State(feed): State<Arc<FleetFeed>>, Path(id): Path<String>) -> Response {
    let Some(v) = feed.vehicles.iter().find(|v| v.vehicle_id == id) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no vehicle `{id}` in the simulated fleet"),
            "id",
        );
    };
    let latest = feed
        .recent
        .lock()
        .expect("recent readings lock")
        .get(&id)
        .and_then(|b| b.back().cloned());
    let latest = latest
        .map(|s| serde_json::from_str::<serde_json::Value>(&s.json))
        .transpose()
        .unwrap_or(None);
    Json(json!({
        "vehicle_id": v.vehicle_id,
        "model": v.model,
        "profile": v.profile,
        "latest": latest,
    }))
    .into_response()
}

/// Filters of `GET /telemetry`.
#[derive(Debug, Deserialize, IntoParams)]
struct TelemetryQuery {
    /// Only this vehicle's readings.
    vehicle_id: Option<String>,
    /// Only readings with a time after this (ms since the epoch).
    since_ms: Option<String>,
    /// At most this many (the latest), default 1000.
    limit: Option<String>,
}

fn parse_param<T: std::str::FromStr>(
    value: Option<&str>,
    field: &str,
) -> Result<Option<T>, Response> {
    value
        .map(|v| {
            v.parse().map_err(|_| {
                error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("`{field}` must be a non-negative integer, got `{v}`"),
                    field,
                )
            })
        })
        .transpose()
}

/// Recent readings, oldest first, in the ingest wire format.
#[utoipa::path(get, path = "/telemetry", tag = "simulator", params(TelemetryQuery),
    responses((status = 200, description = "Readings (JSON array)", content_type = "application/json"),
              (status = 404, description = "No such vehicle"),
              (status = 422, description = "A bad parameter, named in `field`")))]
async fn telemetry(
    State(feed): State<Arc<FleetFeed>>,
    Query(q): Query<TelemetryQuery>,
) -> Response {
    let since: Option<u64> = match parse_param(q.since_ms.as_deref(), "since_ms") {
        Ok(v) => v,
        Err(r) => return r,
    };
    let limit: usize = match parse_param(q.limit.as_deref(), "limit") {
        Ok(v) => v.unwrap_or(1000),
        Err(r) => return r,
    };
    if let Some(id) = &q.vehicle_id {
        if !feed.vehicles.iter().any(|v| &v.vehicle_id == id) {
            return error(
                StatusCode::NOT_FOUND,
                format!("no vehicle `{id}` in the simulated fleet"),
                "vehicle_id",
            );
        }
    }
    let recent = feed.recent.lock().expect("recent readings lock");
    let mut out: Vec<&Served> = match &q.vehicle_id {
        Some(id) => recent.get(id).into_iter().flatten().collect(),
        None => recent.values().flatten().collect(),
    };
    if let Some(since) = since {
        out.retain(|s| s.ts.is_some_and(|t| t > since as i64));
    }
    out.sort_by_key(|s| (s.ts, s.vehicle_id.clone()));
    let skip = out.len().saturating_sub(limit);
    json_array(out.into_iter().skip(skip))
}

/// Filters of the live stream.
#[derive(Debug, Deserialize, IntoParams)]
struct StreamQuery {
    /// Only this vehicle's readings.
    vehicle_id: Option<String>,
}

/// The live stream (WebSocket): one text message per reading; `{"lagged": n}` when the
/// client fell `n` readings behind.
#[utoipa::path(get, path = "/telemetry/stream", tag = "simulator", params(StreamQuery),
    responses((status = 101, description = "WebSocket of readings")))]
async fn stream(
    State(feed): State<Arc<FleetFeed>>,
    Query(q): Query<StreamQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let rx = feed.stream.subscribe();
    upgrade.on_upgrade(move |socket| forward(feed, rx, socket, q.vehicle_id))
}

async fn forward(
    feed: Arc<FleetFeed>,
    mut rx: broadcast::Receiver<Served>,
    mut socket: WebSocket,
    vehicle: Option<String>,
) {
    feed.clients.fetch_add(1, Ordering::Relaxed);
    loop {
        let message = tokio::select! {
            received = rx.recv() => match received {
                Ok(s) if vehicle.is_none() || s.vehicle_id == vehicle => {
                    Message::Text(s.json.as_ref().into())
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    feed.lagged.fetch_add(n, Ordering::Relaxed);
                    Message::Text(json!({ "lagged": n }).to_string().into())
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            incoming = socket.recv() => match incoming {
                // The client closed or went away.
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => continue,
            },
        };
        if socket.send(message).await.is_err() {
            break;
        }
    }
    feed.clients.fetch_sub(1, Ordering::Relaxed);
}

/// The failures the simulator injected.
#[utoipa::path(get, path = "/ground_truth", tag = "simulator",
    responses((status = 200, description = "Failure events (vehicle, component, onset, failure)")))]
async fn ground_truth(State(feed): State<Arc<FleetFeed>>) -> Json<Vec<FailureEvent>> {
    Json(feed.ground_truth.clone())
}

/// Liveness and counters.
#[utoipa::path(get, path = "/health", tag = "simulator",
    responses((status = 200, description = "`status`, `ticks`, `readings`, `stream_clients`, `stream_lagged`")))]
async fn health(State(feed): State<Arc<FleetFeed>>) -> Json<serde_json::Value> {
    Json(json!({
        "status": "ok",
        "vehicles": feed.vehicles.len(),
        "ticks": feed.ticks.load(Ordering::Relaxed),
        "readings": feed.readings.load(Ordering::Relaxed),
        "stream_clients": feed.clients.load(Ordering::Relaxed),
        "stream_lagged": feed.lagged.load(Ordering::Relaxed),
    }))
}

/// Starts the fleet: a task that ticks it every `service.tick` (from its first tick on)
/// and publishes each tick's readings to the returned feed, until `end` (event time) if
/// given.
pub fn start_fleet(
    service: &SimulatorService,
    end: Option<EventTime>,
) -> anyhow::Result<(Arc<FleetFeed>, tokio::task::JoinHandle<()>)> {
    let mut fleet = Fleet::new(service.fleet.clone())?;
    let feed = Arc::new(FleetFeed::new(&fleet, service.keep, service.stream_buffer));
    let tick = service.tick;
    let task_feed = feed.clone();
    let task = tokio::spawn(async move {
        let started = Instant::now();
        let mut readings = Vec::new();
        for n in 0u32.. {
            if end.is_some_and(|end| fleet.next_tick() >= end) {
                break;
            }
            tokio::time::sleep_until((started + tick * n).into()).await;
            readings.clear();
            fleet.tick(&mut readings);
            task_feed.publish(&readings);
        }
    });
    Ok((feed, task))
}

/// `pmi simulate --listen`: the service until Ctrl-C / SIGTERM (or until `end`).
pub fn serve(
    service: SimulatorService,
    listen: SocketAddr,
    end: Option<EventTime>,
) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(async move {
        let (feed, fleet) = start_fleet(&service, end)?;
        let listener = tokio::net::TcpListener::bind(listen).await?;
        tracing::info!(addr = %listener.local_addr()?, vehicles = feed.vehicles.len(), "simulator API listening");
        let stop = async move {
            tokio::select! {
                _ = crate::serve::stop_signal() => {}
                _ = fleet => {}
            }
        };
        axum::serve(listener, router(feed))
            .with_graceful_shutdown(stop)
            .await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use pmi_core::SENSOR_COUNT;

    fn service(vehicles: u32) -> SimulatorService {
        SimulatorService {
            fleet: SimulatorConfig {
                vehicles,
                start: EventTime(1_772_442_000_000),
                ..SimulatorConfig::default()
            },
            tick: Duration::from_millis(5),
            keep: 50,
            stream_buffer: 1024,
        }
    }

    async fn get(addr: SocketAddr, path: &str) -> (StatusCode, serde_json::Value) {
        let res = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        let status = StatusCode::from_u16(res.status().as_u16()).unwrap();
        (status, res.json().await.unwrap())
    }

    async fn start(svc: SimulatorService) -> (SocketAddr, Arc<FleetFeed>) {
        let (feed, _task) = start_fleet(&svc, None).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(feed.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, feed)
    }

    #[tokio::test]
    async fn serves_vehicles_recent_telemetry_and_errors_naming_the_field() {
        let (addr, feed) = start(service(3)).await;
        while feed.ticks.load(Ordering::Relaxed) < 60 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (status, vehicles) = get(addr, "/vehicles").await;
        assert_eq!(status, StatusCode::OK);
        let vehicles: Vec<VehicleView> = serde_json::from_value(vehicles).unwrap();
        assert_eq!(vehicles.len(), 3);
        assert!(vehicles.iter().all(|v| v.last_ts.is_some()), "{vehicles:?}");
        let id = vehicles[0].vehicle_id.clone();

        let (status, one) = get(addr, &format!("/vehicles/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(one["vehicle_id"], id.as_str());
        assert!(one["latest"]["ts"].is_i64(), "{one}");

        // The last `keep` readings of the vehicle, oldest first, in the wire format the
        // ingest API decodes.
        let (status, readings) = get(addr, &format!("/telemetry?vehicle_id={id}")).await;
        assert_eq!(status, StatusCode::OK);
        let readings = readings.as_array().unwrap();
        assert_eq!(readings.len(), 50);
        let ts: Vec<i64> = readings.iter().map(|r| r["ts"].as_i64().unwrap()).collect();
        assert!(ts.windows(2).all(|w| w[0] < w[1]), "{ts:?}");
        for r in readings {
            let raw = wire::decode(r.to_string().as_bytes(), None).unwrap();
            assert_eq!(raw.vehicle_id.as_deref(), Some(id.as_str()));
            assert!(raw.values.iter().filter(|v| v.is_some()).count() <= SENSOR_COUNT);
        }
        let since = ts[40];
        let (_, later) = get(
            addr,
            &format!("/telemetry?vehicle_id={id}&since_ms={since}"),
        )
        .await;
        assert!(later.as_array().unwrap().len() >= 9);
        let (_, limited) = get(addr, "/telemetry?limit=5").await;
        assert_eq!(limited.as_array().unwrap().len(), 5);

        let (status, e) = get(addr, "/telemetry?since_ms=yesterday").await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e["field"], "since_ms");
        let (status, e) = get(addr, "/telemetry?limit=-1").await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e["field"], "limit");
        let (status, e) = get(addr, "/vehicles/NOPE").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(e["field"], "id");

        let (status, doc) = get(addr, "/openapi.json").await;
        assert_eq!(status, StatusCode::OK);
        assert!(doc["paths"]["/telemetry/stream"].is_object());
        let (_, truth) = get(addr, "/ground_truth").await;
        assert!(truth.is_array());
    }

    #[tokio::test]
    async fn the_stream_sends_every_reading_of_a_vehicle_in_order() {
        let (addr, feed) = start(service(2)).await;
        let id = feed.vehicles[1].vehicle_id.clone();
        let url = format!("ws://{addr}/telemetry/stream?vehicle_id={id}");
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut ts = Vec::new();
        while ts.len() < 30 {
            let msg = ws.next().await.unwrap().unwrap();
            let v: serde_json::Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
            assert!(
                v.get("lagged").is_none(),
                "a 1024-reading buffer keeps up: {v}"
            );
            assert_eq!(v["vehicle_id"], id.as_str());
            ts.push(v["ts"].as_i64().unwrap());
        }
        // One reading per tick (1 Hz of event time) without a gap.
        assert!(
            ts.windows(2).all(|w| w[1] > w[0] && w[1] - w[0] < 2_000),
            "{ts:?}"
        );
        let (_, health) = get(addr, "/health").await;
        assert_eq!(health["stream_clients"], 1);
    }

    #[tokio::test]
    async fn a_slow_client_is_told_how_many_readings_it_missed() {
        let mut svc = service(20);
        svc.stream_buffer = 4;
        let (addr, feed) = start(svc).await;
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/telemetry/stream"))
            .await
            .unwrap();
        // Not reading while 20 vehicles tick: far more than 4 readings pile up.
        let before = feed.readings.load(Ordering::Relaxed);
        while feed.readings.load(Ordering::Relaxed) < before + 200 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut lagged = 0;
        for _ in 0..20 {
            let msg = ws.next().await.unwrap().unwrap();
            let v: serde_json::Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
            lagged += v.get("lagged").and_then(|n| n.as_u64()).unwrap_or(0);
        }
        assert!(lagged > 0);
        assert!(feed.lagged.load(Ordering::Relaxed) >= lagged);
    }
}

//! The maintenance agents beside the graph: `pmi agents` (a process of its own over the
//! database, with the HTTP API below) and the agent `pmi run` starts in-process.
//!
//! HTTP (axum), JSON:
//! - `GET /alerts?status=open|acknowledged|resolved&active=true|false`: alerts, most
//!   urgent first, with whether the dataflow still holds them and why not.
//! - `GET /appointments?status=&vehicle_id=&center_id=`: appointments.
//! - `POST /appointments/{id}/reschedule` `{"starts_at": "RFC 3339"}` moves it there (same
//!   centre, bay and length; checked like a booking); without `starts_at`, to the first free
//!   slot after its current start within `within_days` (default 14).
//! - `POST /appointments/{id}/cancel` `{"reason": "…"}`: cancels it; the dataflow then
//!   raises the alert again if it still stands, and the master agent books anew.
//! - `GET /escalations`: the human queue (escalated workflows with their reason).
//! - `GET /workflows/{alert_id}`: one workflow.
//! - `GET /health`, `GET /openapi.json`.
//!
//! Errors are `{"error", "field"}`: `404` unknown appointment, `409` a conflict (slot
//! taken, not in business hours, wrong status), `422` a bad request, `503` the database.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, OpenApi, ToSchema};

use pmi_agents::scheduling::{AppointmentFilter, AppointmentStatus};
use pmi_agents::{
    BookError, Catalogue, ConsoleChannel, MasterAgent, MasterConfig, PassReport, Scheduler,
    SchedulingConfig, Slot, WorkflowState,
};
use pmi_core::EventTime;
use pmi_sinks::sql::{AlertStatus, Database, SqlConfig};

/// The OpenAPI document of the agents' API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "PMI agents",
        description = "Alerts, appointments and the human queue of the maintenance agents."
    ),
    paths(alerts, appointments, reschedule, cancel, escalations, workflow),
    tags((name = "agents", description = "Alerts, appointments, workflows"))
)]
pub struct AgentsDoc;

/// The agents' routes over `agent`'s database.
pub fn router(agent: Arc<MasterAgent>) -> Router {
    Router::new()
        .route("/alerts", get(alerts))
        .route("/appointments", get(appointments))
        .route("/appointments/{id}/reschedule", post(reschedule))
        .route("/appointments/{id}/cancel", post(cancel))
        .route("/escalations", get(escalations))
        .route("/workflows/{alert_id}", get(workflow))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route(
            "/openapi.json",
            get(|| async { Json(AgentsDoc::openapi()) }),
        )
        .with_state(agent)
}

/// An error answer: status, message, the field at fault.
struct ApiError(StatusCode, String, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1, "field": self.2}))).into_response()
    }
}

impl From<BookError> for ApiError {
    fn from(e: BookError) -> Self {
        let status = match &e {
            BookError::UnknownAppointment { .. } => StatusCode::NOT_FOUND,
            BookError::InvalidRequest { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            BookError::Sql { .. } => StatusCode::SERVICE_UNAVAILABLE,
            BookError::Corrupt { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::CONFLICT,
        };
        let field = match &e {
            BookError::InvalidRequest { field, .. } => field.clone(),
            BookError::UnknownAppointment { .. } => "id".into(),
            _ => String::new(),
        };
        ApiError(status, e.to_string(), field)
    }
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        e.to_string(),
        String::new(),
    )
}

/// Filters of `GET /alerts`.
#[derive(Deserialize, IntoParams)]
struct AlertQuery {
    /// `open`, `acknowledged` or `resolved`.
    status: Option<String>,
    /// Only alerts the dataflow holds now (`true`) or only retracted ones (`false`).
    active: Option<bool>,
}

/// Alerts, most urgent first.
#[utoipa::path(get, path = "/alerts", tag = "agents", params(AlertQuery),
    responses((status = 200, description = "Alerts (JSON array)", content_type = "application/json"),
              (status = 422, description = "Unknown status")))]
async fn alerts(
    State(agent): State<Arc<MasterAgent>>,
    Query(q): Query<AlertQuery>,
) -> Result<Response, ApiError> {
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(AlertStatus::from_name(s).ok_or_else(|| {
            ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("unknown status `{s}` (open, acknowledged, resolved)"),
                "status".into(),
            )
        })?),
    };
    let mut all = agent.database().alerts(status).await.map_err(unavailable)?;
    if let Some(active) = q.active {
        all.retain(|a| a.active == active);
    }
    Ok(Json(all).into_response())
}

/// Filters of `GET /appointments`.
#[derive(Deserialize, IntoParams)]
struct AppointmentQuery {
    /// `proposed`, `confirmed`, `in_progress`, `completed`, `cancelled`, `no_show`.
    status: Option<String>,
    /// Of this vehicle.
    vehicle_id: Option<String>,
    /// At this centre.
    center_id: Option<String>,
}

/// Appointments.
#[utoipa::path(get, path = "/appointments", tag = "agents", params(AppointmentQuery),
    responses((status = 200, description = "Appointments (JSON array)", content_type = "application/json"),
              (status = 422, description = "Unknown status")))]
async fn appointments(
    State(agent): State<Arc<MasterAgent>>,
    Query(q): Query<AppointmentQuery>,
) -> Result<Response, ApiError> {
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(AppointmentStatus::from_name(s).ok_or_else(|| {
            ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("unknown status `{s}`"),
                "status".into(),
            )
        })?),
    };
    let filter = AppointmentFilter {
        status,
        vehicle_id: q.vehicle_id,
        center_id: q.center_id,
    };
    let list = agent.scheduler().appointments(&filter).await?;
    Ok(Json(list).into_response())
}

/// Body of `POST /appointments/{id}/reschedule`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RescheduleRequest {
    /// New start (RFC 3339); absent: the first free slot after the current start.
    starts_at: Option<String>,
    /// How far ahead to look without `starts_at`, days (default 14).
    within_days: Option<u32>,
}

/// Moves an appointment.
#[utoipa::path(post, path = "/appointments/{id}/reschedule", tag = "agents",
    params(("id" = i64, Path, description = "Appointment id")),
    request_body = RescheduleRequest,
    responses((status = 200, description = "The appointment after the move", content_type = "application/json"),
              (status = 404, description = "Unknown appointment"),
              (status = 409, description = "Slot taken, outside business hours, or not movable"),
              (status = 422, description = "Bad request")))]
async fn reschedule(
    State(agent): State<Arc<MasterAgent>>,
    Path(id): Path<i64>,
    body: Option<Json<RescheduleRequest>>,
) -> Result<Response, ApiError> {
    let scheduler = agent.scheduler();
    let current = scheduler.appointment(id).await?.ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("no appointment {id}"),
            "id".into(),
        )
    })?;
    let body = body.map(|Json(b)| b).unwrap_or(RescheduleRequest {
        starts_at: None,
        within_days: None,
    });
    let moved = match body.starts_at {
        Some(text) => {
            let start = chrono::DateTime::parse_from_rfc3339(&text).map_err(|e| {
                ApiError(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("`{text}` is not an RFC 3339 time: {e}"),
                    "starts_at".into(),
                )
            })?;
            let start = EventTime(start.timestamp_millis());
            let length = current.ends_at.0 - current.starts_at.0;
            let slot = Slot {
                starts_at: start,
                ends_at: EventTime(start.0 + length),
                ..current.slot()
            };
            scheduler.reschedule(id, slot).await?
        }
        None => {
            let days = i64::from(body.within_days.unwrap_or(14).clamp(1, 92));
            let earliest = EventTime(current.starts_at.0.max(EventTime::now().0));
            let deadline = EventTime(earliest.0 + days * 86_400_000);
            scheduler.reschedule_next(id, earliest, deadline).await?
        }
    };
    Ok(Json(moved).into_response())
}

/// Body of `POST /appointments/{id}/cancel`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CancelRequest {
    /// Why (kept in the appointment's notes).
    reason: Option<String>,
}

/// Cancels an appointment.
#[utoipa::path(post, path = "/appointments/{id}/cancel", tag = "agents",
    params(("id" = i64, Path, description = "Appointment id")),
    request_body = CancelRequest,
    responses((status = 200, description = "The cancelled appointment", content_type = "application/json"),
              (status = 404, description = "Unknown appointment"),
              (status = 409, description = "Not cancellable (e.g. in progress)")))]
async fn cancel(
    State(agent): State<Arc<MasterAgent>>,
    Path(id): Path<i64>,
    body: Option<Json<CancelRequest>>,
) -> Result<Response, ApiError> {
    let reason = body
        .and_then(|Json(b)| b.reason)
        .unwrap_or_else(|| "cancelled over the API".into());
    let done = agent.scheduler().cancel(id, &reason).await?;
    Ok(Json(done).into_response())
}

/// The human queue: escalated workflows.
#[utoipa::path(get, path = "/escalations", tag = "agents",
    responses((status = 200, description = "Escalated workflows (JSON array)", content_type = "application/json")))]
async fn escalations(State(agent): State<Arc<MasterAgent>>) -> Result<Response, ApiError> {
    let queue = agent
        .workflows_in(WorkflowState::Escalated)
        .await
        .map_err(unavailable)?;
    Ok(Json(queue).into_response())
}

/// One alert's workflow.
#[utoipa::path(get, path = "/workflows/{alert_id}", tag = "agents",
    params(("alert_id" = i64, Path, description = "Alert id")),
    responses((status = 200, description = "The workflow", content_type = "application/json"),
              (status = 404, description = "No workflow for this alert")))]
async fn workflow(
    State(agent): State<Arc<MasterAgent>>,
    Path(alert_id): Path<i64>,
) -> Result<Response, ApiError> {
    match agent.workflow(alert_id).await.map_err(unavailable)? {
        Some(w) => Ok(Json(w).into_response()),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no workflow for alert {alert_id}"),
            "alert_id".into(),
        )),
    }
}

/// The master agent over the database of `sql` (schema migrated here).
pub async fn master_agent(
    sql: &SqlConfig,
    master: MasterConfig,
    scheduling: SchedulingConfig,
    catalogue: Catalogue,
    print_offers: bool,
) -> anyhow::Result<MasterAgent> {
    let mut sql = sql.clone();
    sql.max_connections = sql.max_connections.max(master.concurrency as u32 + 2);
    let db = Database::connect(&sql).await?;
    db.migrate().await?;
    let scheduler = Scheduler::new(db, scheduling)?;
    let channel = Arc::new(ConsoleChannel {
        print: print_offers,
    });
    Ok(MasterAgent::new(scheduler, catalogue, channel, master)?)
}

/// `pmi agents`: the master agent's loop and the HTTP API until Ctrl-C / SIGTERM (or, with
/// `once`, until a pass changes nothing).
pub fn serve(
    sql: &SqlConfig,
    master: MasterConfig,
    scheduling: SchedulingConfig,
    catalogue: Catalogue,
    listen: Option<SocketAddr>,
    once: bool,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let agent = Arc::new(master_agent(sql, master, scheduling, catalogue, true).await?);
        if once {
            let report = agent.drain(1000).await?;
            print_pass("agents", &report);
            return Ok(());
        }
        let stop = Arc::new(AtomicBool::new(false));
        let server = match listen {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr).await?;
                tracing::info!(%addr, "agents API listening");
                let app = router(agent.clone());
                let stop = stop.clone();
                Some(tokio::spawn(async move {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async move {
                            while !stop.load(Ordering::Relaxed) {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        })
                        .await
                }))
            }
            None => None,
        };
        let signal_stop = stop.clone();
        tokio::spawn(async move {
            crate::serve::stop_signal().await;
            signal_stop.store(true, Ordering::Relaxed);
        });
        agent.run(|| stop.load(Ordering::Relaxed)).await;
        if let Some(s) = server {
            s.await??;
        }
        Ok(())
    })
}

/// What the agents hold after a run: workflows by state.
pub type Summary = std::collections::BTreeMap<String, i64>;

/// The master agent running beside `pmi run`'s graph, on a thread of its own.
pub struct InProcess {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<Summary>>,
}

impl InProcess {
    /// Starts the agent over `sql`'s database (the graph's).
    pub fn start(
        sql: SqlConfig,
        master: MasterConfig,
        scheduling: SchedulingConfig,
        catalogue: Catalogue,
    ) -> anyhow::Result<InProcess> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("pmi-agents".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let agent = master_agent(&sql, master, scheduling, catalogue, false).await?;
                    agent.run(|| thread_stop.load(Ordering::Relaxed)).await;
                    // The graph is done: finish what its last alerts started.
                    agent.drain(1000).await?;
                    Ok(agent.state_counts().await?)
                })
            })?;
        Ok(InProcess { stop, thread })
    }

    /// Stops the loop, lets the agent finish the workflows the graph's last alerts
    /// started, and reports the workflows by state.
    pub fn finish(self) -> anyhow::Result<Summary> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the agents' thread panicked"))?
    }
}

/// Prints the workflows by state.
pub fn print_summary(what: &str, s: &Summary) {
    let total: i64 = s.values().sum();
    let parts: Vec<String> = s.iter().map(|(k, v)| format!("{v} {k}")).collect();
    println!("{what}: {total} workflows ({})", parts.join(", "));
}

/// Prints what some passes did.
pub fn print_pass(what: &str, r: &PassReport) {
    println!(
        "{what}: {} workflows started, {} confirmed, {} escalated, {} cancelled, {} reopened, {} failed steps",
        r.started, r.confirmed, r.escalated, r.cancelled, r.reopened, r.failed
    );
}

/// What `pmi bench --agents` measured.
#[derive(Debug, serde::Serialize)]
pub struct BenchReport {
    /// Database backend.
    pub backend: String,
    /// Alerts raised at once.
    pub alerts: usize,
    /// Workflows advanced at once.
    pub concurrency: usize,
    /// Workflows confirmed (appointment inside the SLA).
    pub confirmed: i64,
    /// Workflows escalated (no capacity within the SLA, …).
    pub escalated: i64,
    /// Wall-clock time from the first workflow created to the last one finished, s.
    pub seconds: f64,
    /// Finished workflows per second.
    pub workflows_per_s: f64,
    /// Alert-to-outcome latency (workflow created → finished), ms: p50, p95, p99, max.
    /// With all alerts raised at once this is mostly the wait for a turn.
    pub latency_ms: [i64; 4],
    /// The agents' own time per workflow (sum of its audited step latencies), ms: p50,
    /// p95, p99, max.
    pub service_ms: [i64; 4],
}

fn quantiles(mut v: Vec<i64>) -> [i64; 4] {
    v.sort_unstable();
    let q = |p: f64| {
        v.get(((v.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    [q(0.5), q(0.95), q(0.99), v.last().copied().unwrap_or(0)]
}

/// `pmi bench --agents N`: N simultaneous alerts (a registry of N vehicles at N/25 centres,
/// severities 10 % critical, 30 % high, 60 % medium, one working-day morning) through the
/// master agent with `concurrency` workflows at once, on a fresh database of the server at
/// `url` (PostgreSQL: a scratch database, dropped after; SQLite: the file).
pub fn bench(url: &str, alerts: usize, concurrency: usize) -> anyhow::Result<BenchReport> {
    use pmi_core::{Alert, AlertChange, Component, Severity, VehicleId, VehicleInfo};
    use pmi_sinks::sql::{admin, AlertRow, AlertTable, Backend, SqlSink};
    use pmi_sinks::ChunkSink;

    let rt = tokio::runtime::Runtime::new()?;
    let backend = Backend::from_url(url)
        .ok_or_else(|| anyhow::anyhow!("--sql `{url}`: expected sqlite:// or postgres://"))?;
    // PostgreSQL: a scratch database, dropped when this returns.
    let scratch = match backend {
        Backend::Postgres => Some(admin::ScratchDatabase::create(url, "pmi_agents_bench")?),
        Backend::Sqlite => None,
    };
    let mut config = SqlConfig::new(scratch.as_ref().map_or(url, |s| s.url()));
    config.max_connections = concurrency as u32 + 4;
    let result = (|| -> anyhow::Result<BenchReport> {
        pmi_sinks::sql::prepare(&config)?;
        // The registry of a simulated fleet of `alerts` vehicles.
        let fleet = pmi_dataflows::jobs::FleetSpec {
            vehicles: alerts as u32,
            seed: 7,
            start: EventTime(0),
            failures_per_vehicle_month: 1.0,
            bad_readings: false,
            forced_failures: Vec::new(),
        };
        pmi_dataflows::registry::seed(&config, &fleet)?;
        // Monday 2026-03-02 06:00 UTC, spread over ten minutes.
        let monday = 1_772_431_200_000i64;
        let catalogue = Catalogue::embedded();
        let changes: Vec<AlertRow> = (0..alerts)
            .map(|i| {
                let (severity, risk) = match i % 10 {
                    0 => (Severity::Critical, 0.95),
                    1..=3 => (Severity::High, 0.8),
                    _ => (Severity::Medium, 0.6),
                };
                let component = Component::ALL[i % Component::ALL.len()];
                let features = catalogue
                    .feature_names()
                    .into_iter()
                    .map(|n| (n, 0.0))
                    .collect();
                let alert = Alert {
                    vehicle_id: VehicleId::parse(&format!("VEH_{i:06}")).expect("valid id"),
                    severity,
                    component: Some(component),
                    risk,
                    pane_end: EventTime(monday + (i as i64 % 600) * 1000),
                    model: "bench".into(),
                    explanation: vec![],
                    features,
                    info: VehicleInfo::default(),
                };
                AlertRow::of(&AlertChange::Raised(alert)).remove(0)
            })
            .collect();
        let mut sink = SqlSink::<AlertTable>::start(&config, "bench")?;
        sink.send(changes)?;
        Box::new(sink).close()?;

        rt.block_on(async {
            let master = MasterConfig {
                concurrency,
                clock: pmi_agents::Clock::EventTime,
                ..MasterConfig::default()
            };
            let agent = master_agent(
                &config,
                master,
                SchedulingConfig::default(),
                Catalogue::embedded(),
                false,
            )
            .await?;
            let started = std::time::Instant::now();
            agent.drain(10_000).await?;
            let seconds = started.elapsed().as_secs_f64();
            let workflows = agent.workflows(None).await?;
            let counts = agent.state_counts().await?;
            let latency: Vec<i64> = workflows
                .iter()
                .filter(|w| w.state.is_terminal())
                .map(|w| w.updated_at - w.created_at)
                .collect();
            let finished = latency.len();
            let service_sql = "SELECT CAST(SUM(latency_ms) AS BIGINT) FROM agent_audit_log \
                               WHERE alert_id IS NOT NULL GROUP BY alert_id";
            let service: Vec<i64> = match agent.database() {
                Database::Sqlite(p) => sqlx::query_scalar(service_sql).fetch_all(p).await?,
                Database::Postgres(p) => sqlx::query_scalar(service_sql).fetch_all(p).await?,
            };
            Ok(BenchReport {
                backend: format!("{backend:?}"),
                alerts,
                concurrency,
                confirmed: counts.get("confirmed").copied().unwrap_or(0),
                escalated: counts.get("escalated").copied().unwrap_or(0),
                seconds,
                workflows_per_s: finished as f64 / seconds.max(1e-9),
                latency_ms: quantiles(latency),
                service_ms: quantiles(service),
            })
        })
    })();
    drop(scratch);
    result
}

//! The master agent end to end against SQLite and PostgreSQL: alerts written by the alert
//! sink become workflows that diagnose, find slots within the SLA, engage the customer, book
//! and confirm, with an audit row per step; escalation when there is no owner, no consent
//! or no slot in time, or the customer keeps declining; cancellation when the alert goes
//! away; rescheduling when the appointment is cancelled; and restarts mid-workflow that
//! never double-book.
//!
//! Run: `bash scripts/test.sh -p pmi-agents --test master`. Without `PMI_DATABASE_URL` the
//! PostgreSQL tests fail (they never skip).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pmi_agents::engagement::{ChannelError, OfferFuture};
use pmi_agents::scheduling::AppointmentFilter;
use pmi_agents::{
    Answer, Catalogue, ConsoleChannel, CustomerChannel, MasterAgent, MasterConfig, Offer,
    Scheduler, SchedulingConfig, WorkflowState,
};
use pmi_core::{Alert, AlertChange, Component, EventTime, RetractReason, Severity, VehicleId};
use pmi_core::{SeverityThresholds, VehicleInfo};
use pmi_sinks::sql::admin::ScratchDatabase;
use pmi_sinks::sql::registry::{
    self, ContactChannel, Customer, OpeningHours, ServiceCenter, Technician, Vehicle,
};
use pmi_sinks::sql::{AlertRow, AlertTable, Backend, Database, SqlConfig, SqlSink};
use pmi_sinks::ChunkSink;

/// Where a test database lives; dropped (folder deleted, database dropped) after the test.
#[allow(dead_code)] // held for its Drop
enum Target {
    Sqlite(tempfile::TempDir),
    Postgres(ScratchDatabase),
}

struct TestDb {
    db: Database,
    config: SqlConfig,
    _target: Target,
}

fn database_url() -> String {
    std::env::var("PMI_DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "PMI_DATABASE_URL is not set: the PostgreSQL tests need a server. Run `bash \
             scripts/test.sh`, or `eval \"$(bash scripts/services.sh up)\"` before cargo test"
        )
    })
}

impl TestDb {
    async fn new(backend: Backend) -> TestDb {
        let (mut config, target) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}/pmi.sqlite", dir.path().display());
                (SqlConfig::new(&url), Target::Sqlite(dir))
            }
            Backend::Postgres => {
                let scratch = ScratchDatabase::create(&database_url(), "pmi_master").unwrap();
                (SqlConfig::new(scratch.url()), Target::Postgres(scratch))
            }
        };
        config.max_connections = 8;
        let db = Database::connect(&config).await.unwrap();
        db.migrate().await.unwrap();
        TestDb {
            db,
            config,
            _target: target,
        }
    }

    fn agent(&self, channel: Arc<dyn CustomerChannel>) -> MasterAgent {
        let scheduler = Scheduler::new(self.db.clone(), SchedulingConfig::default()).unwrap();
        MasterAgent::new(
            scheduler,
            Catalogue::embedded(),
            channel,
            MasterConfig::default(),
        )
        .unwrap()
    }

    /// Writes alert changes through the dataflow's alert sink.
    fn write(&self, changes: &[AlertChange]) {
        let rows: Vec<AlertRow> = changes.iter().flat_map(AlertRow::of).collect();
        let config = self.config.clone();
        std::thread::spawn(move || {
            let mut sink = SqlSink::<AlertTable>::start(&config, "test").unwrap();
            sink.send(rows).unwrap();
            Box::new(sink).close().unwrap();
        })
        .join()
        .unwrap();
    }

    async fn count(&self, sql: &str) -> i64 {
        match &self.db {
            Database::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
            Database::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
        }
    }

    async fn audit(&self, alert_id: i64) -> Vec<(String, String, String)> {
        let sql = "SELECT agent, action, outcome FROM agent_audit_log WHERE alert_id = $1 \
                   ORDER BY audit_id";
        match &self.db {
            Database::Sqlite(p) => sqlx::query_as(sql).bind(alert_id).fetch_all(p).await,
            Database::Postgres(p) => sqlx::query_as(sql).bind(alert_id).fetch_all(p).await,
        }
        .unwrap()
    }
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::TestDb::new(pmi_sinks::sql::Backend::Sqlite).await).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::TestDb::new(pmi_sinks::sql::Backend::Postgres).await).await
                }
            )*
        }
    };
}

both!(
    an_alert_becomes_a_confirmed_appointment_within_its_sla,
    no_owner_no_consent_or_no_slot_is_escalated,
    declines_are_retried_then_escalated,
    a_retracted_alert_cancels_its_workflow,
    a_cancelled_appointment_is_booked_again,
    an_alert_for_another_component_widens_the_open_appointment,
    restarts_resume_without_double_booking,
    many_alerts_one_appointment_per_vehicle,
);

// ---------------------------------------------------------------------------------------
// Data

/// Monday 2026-03-02 09:00 UTC (10:00 in Berlin).
const MONDAY_9: i64 = 1_772_442_000_000;
const HOUR: i64 = 3_600_000;

fn vid(i: usize) -> String {
    format!("VEH_{i:06}")
}

/// One Berlin centre open Mon–Fri 08:00–18:00 with 2 bays and technicians for every
/// component; `vehicles` vehicles, each with a consenting owner, except those in
/// `no_consent`.
async fn seed(db: &Database, vehicles: usize, no_consent: &[usize]) {
    let center = ServiceCenter {
        center_id: "SC_BER".into(),
        name: "Berlin".into(),
        time_zone: "Europe/Berlin".into(),
        business_hours: (1..=5)
            .map(|d| OpeningHours {
                weekday: d,
                open: "08:00".into(),
                close: "18:00".into(),
            })
            .collect(),
        bays: 2,
        technicians: 2,
        address: None,
        phone: None,
        latitude: None,
        longitude: None,
    };
    registry::upsert_service_centers(db, &[center])
        .await
        .unwrap();
    let techs: Vec<Technician> = (1..=2)
        .map(|k| Technician {
            technician_id: format!("T{k}"),
            center_id: "SC_BER".into(),
            name: format!("tech {k}"),
            skills: Component::ALL.to_vec(),
            active: true,
        })
        .collect();
    registry::upsert_technicians(db, &techs).await.unwrap();
    let customers: Vec<Customer> = (0..vehicles)
        .map(|i| Customer {
            customer_id: format!("C{i}"),
            name: format!("customer {i}"),
            email: None,
            phone: None,
            preferred_channel: ContactChannel::Sms,
            contact_consent: !no_consent.contains(&i),
            locale: None,
            preferred_times: None,
        })
        .collect();
    registry::upsert_customers(db, &customers).await.unwrap();
    let vehicles: Vec<Vehicle> = (0..vehicles)
        .map(|i| Vehicle {
            vehicle_id: vid(i),
            customer_id: Some(format!("C{i}")),
            home_center_id: Some("SC_BER".into()),
            vin: None,
            make: None,
            model: None,
            model_year: None,
        })
        .collect();
    registry::upsert_vehicles(db, &vehicles).await.unwrap();
}

fn alert(vehicle: &str, severity: Severity, component: Component, pane_end: i64) -> Alert {
    let risk = match severity {
        Severity::Critical => 0.95,
        Severity::High => 0.8,
        Severity::Medium => 0.6,
        _ => 0.35,
    };
    assert_eq!(SeverityThresholds::default().classify(risk), severity);
    Alert {
        vehicle_id: VehicleId::parse(vehicle).unwrap(),
        severity,
        component: Some(component),
        risk,
        pane_end: EventTime(pane_end),
        model: "test".into(),
        explanation: vec![],
        features: vec![
            ("coolant_temp_c_mean_300s".into(), 110.0),
            ("coolant_temp_c_slope_900s".into(), 0.01),
        ],
        info: VehicleInfo::default(),
    }
}

async fn alert_id(db: &Database, vehicle: &str) -> i64 {
    let sql = "SELECT alert_id FROM alerts WHERE vehicle_id = $1 ORDER BY pane_end DESC";
    match db {
        Database::Sqlite(p) => sqlx::query_scalar(sql).bind(vehicle).fetch_one(p).await,
        Database::Postgres(p) => sqlx::query_scalar(sql).bind(vehicle).fetch_one(p).await,
    }
    .unwrap()
}

fn console() -> Arc<dyn CustomerChannel> {
    Arc::new(ConsoleChannel::default())
}

/// A channel that answers from a script, then accepts.
struct Scripted {
    answers: Vec<Result<Answer, ()>>,
    calls: AtomicUsize,
}

impl CustomerChannel for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }
    fn offer<'a>(&'a self, _offer: &'a Offer) -> OfferFuture<'a> {
        let i = self.calls.fetch_add(1, Ordering::SeqCst);
        let answer = self
            .answers
            .get(i)
            .cloned()
            .unwrap_or(Ok(Answer::Accept { index: 0 }));
        Box::pin(async move {
            answer.map_err(|()| ChannelError {
                channel: "scripted".into(),
                message: "unreachable".into(),
            })
        })
    }
}

fn scripted(answers: Vec<Result<Answer, ()>>) -> Arc<Scripted> {
    Arc::new(Scripted {
        answers,
        calls: AtomicUsize::new(0),
    })
}

// ---------------------------------------------------------------------------------------
// Tests

async fn an_alert_becomes_a_confirmed_appointment_within_its_sla(t: TestDb) {
    seed(&t.db, 1, &[]).await;
    let a = alert(&vid(0), Severity::High, Component::Thermostat, MONDAY_9);
    t.write(&[AlertChange::Raised(a.clone())]);
    let agent = t.agent(console());
    let report = agent.drain(10).await.unwrap();
    assert_eq!(
        (report.started, report.confirmed, report.escalated),
        (1, 1, 0),
        "{report:?}"
    );
    let id = alert_id(&t.db, &vid(0)).await;
    let wf = agent.workflow(id).await.unwrap().unwrap();
    assert_eq!(wf.state, WorkflowState::Confirmed);
    let diagnosis = wf.diagnosis.clone().unwrap();
    assert_eq!(diagnosis.component, Component::Thermostat);
    assert_eq!(
        diagnosis.failure_mode, "stuck_closed",
        "from the alert's features"
    );
    let appointment = agent
        .scheduler()
        .appointment(wf.appointment_id.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(appointment.alert_id, Some(id));
    assert_eq!(appointment.status.name(), "confirmed");
    // Inside the SLA (24 h for high) and not before the alert.
    assert!(appointment.starts_at.0 >= MONDAY_9);
    assert!(appointment.starts_at <= a.sla_due().unwrap());
    assert_eq!(wf.sla_due_at, a.sla_due().unwrap());
    // One audit row per step.
    let steps: Vec<(String, String)> = t
        .audit(id)
        .await
        .into_iter()
        .map(|(agent, action, outcome)| {
            assert_eq!(outcome, "success", "{agent} {action}");
            (agent, action)
        })
        .collect();
    let expected = [
        ("master", "start"),
        ("diagnosis", "diagnose"),
        ("scheduling", "find_slots"),
        ("scheduling", "book"),
        ("master", "confirm"),
    ];
    assert_eq!(
        steps,
        expected.map(|(a, b)| (a.to_owned(), b.to_owned())).to_vec()
    );
    // The alert is acknowledged; a further pass does nothing.
    let alerts = t.db.alerts(None).await.unwrap();
    assert_eq!(alerts[0].status.name(), "acknowledged");
    assert!(!agent.pass().await.unwrap().did_work());
}

async fn no_owner_no_consent_or_no_slot_is_escalated(t: TestDb) {
    seed(&t.db, 2, &[1]).await;
    // Saturday 2026-03-07 20:00 UTC, critical: 2 h SLA, the centre is closed.
    let saturday_night = MONDAY_9 + 5 * 24 * HOUR + 11 * HOUR;
    t.write(&[
        AlertChange::Raised(alert(
            &vid(0),
            Severity::Critical,
            Component::Battery,
            saturday_night,
        )),
        AlertChange::Raised(alert(&vid(1), Severity::High, Component::Battery, MONDAY_9)),
        AlertChange::Raised(alert(
            "VEH_999999",
            Severity::High,
            Component::Battery,
            MONDAY_9,
        )),
    ]);
    let agent = t.agent(console());
    let report = agent.drain(10).await.unwrap();
    assert_eq!(
        (report.started, report.escalated, report.confirmed),
        (3, 3, 0)
    );
    let queue = agent.workflows_in(WorkflowState::Escalated).await.unwrap();
    let reason = |v: &str| {
        queue
            .iter()
            .find(|w| w.vehicle_id == v)
            .and_then(|w| w.escalation_reason.clone())
            .unwrap()
    };
    assert!(
        reason(&vid(0)).contains("no 60-minute slot"),
        "{}",
        reason(&vid(0))
    );
    assert!(reason(&vid(1)).contains("not agreed to be contacted"));
    assert!(reason("VEH_999999").contains("no owner"));
    let escalations = t
        .count("SELECT COUNT(*) FROM agent_audit_log WHERE outcome = 'escalated'")
        .await;
    assert_eq!(escalations, 3);
    assert_eq!(t.count("SELECT COUNT(*) FROM appointments").await, 0);
}

async fn declines_are_retried_then_escalated(t: TestDb) {
    seed(&t.db, 2, &[]).await;
    t.write(&[AlertChange::Raised(alert(
        &vid(0),
        Severity::Medium,
        Component::Battery,
        MONDAY_9,
    ))]);
    let no = || Ok(Answer::Decline { reason: None });
    let agent = t.agent(scripted(vec![no(), Ok(Answer::NoAnswer), no()]));
    agent.drain(20).await.unwrap();
    let id = alert_id(&t.db, &vid(0)).await;
    let wf = agent.workflow(id).await.unwrap().unwrap();
    assert_eq!(wf.state, WorkflowState::Escalated);
    assert_eq!(wf.attempts, 3);
    assert!(wf.escalation_reason.unwrap().contains("after 3 offers"));
    // Declined twice, then accepted: booked.
    t.write(&[AlertChange::Raised(alert(
        &vid(1),
        Severity::Medium,
        Component::Battery,
        MONDAY_9,
    ))]);
    let agent = t.agent(scripted(vec![no(), no()]));
    agent.drain(20).await.unwrap();
    let wf = agent
        .workflow(alert_id(&t.db, &vid(1)).await)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((wf.state, wf.attempts), (WorkflowState::Confirmed, 2));
}

async fn a_retracted_alert_cancels_its_workflow(t: TestDb) {
    seed(&t.db, 1, &[]).await;
    let a = alert(&vid(0), Severity::High, Component::Battery, MONDAY_9);
    t.write(&[AlertChange::Raised(a.clone())]);
    // The channel is down: the workflow waits at `offered`.
    let agent = t.agent(scripted(vec![Err(())]));
    let report = agent.pass().await.unwrap();
    assert_eq!(report.steps, 3, "diagnose, find slots, offer (retry)");
    let id = alert_id(&t.db, &vid(0)).await;
    assert_eq!(
        agent.workflow(id).await.unwrap().unwrap().state,
        WorkflowState::Offered
    );
    // The vehicle recovers.
    t.write(&[AlertChange::Retracted {
        alert: a,
        reason: RetractReason::Recovered,
    }]);
    let report = agent.drain(5).await.unwrap();
    assert_eq!(report.cancelled, 1);
    assert_eq!(
        agent.workflow(id).await.unwrap().unwrap().state,
        WorkflowState::Cancelled
    );
    assert_eq!(t.count("SELECT COUNT(*) FROM appointments").await, 0);
    let audit = t.audit(id).await;
    assert_eq!(
        audit.last().unwrap(),
        &("master".into(), "cancel".into(), "skipped".into())
    );
}

async fn a_cancelled_appointment_is_booked_again(t: TestDb) {
    seed(&t.db, 1, &[]).await;
    let a = alert(&vid(0), Severity::High, Component::WaterPump, MONDAY_9);
    t.write(&[AlertChange::Raised(a.clone())]);
    let agent = t.agent(console());
    agent.drain(10).await.unwrap();
    let id = alert_id(&t.db, &vid(0)).await;
    let first = agent
        .workflow(id)
        .await
        .unwrap()
        .unwrap()
        .appointment_id
        .unwrap();
    // The dataflow sees the booking and retracts the alert.
    t.write(&[AlertChange::Retracted {
        alert: a.clone(),
        reason: RetractReason::Booked,
    }]);
    assert!(!agent.drain(5).await.unwrap().did_work());
    // The customer cancels; the dataflow raises the alert again.
    agent
        .scheduler()
        .cancel(first, "customer cancelled")
        .await
        .unwrap();
    t.write(&[AlertChange::Raised(a)]);
    let report = agent.drain(10).await.unwrap();
    assert_eq!((report.reopened, report.confirmed), (1, 1), "{report:?}");
    let wf = agent.workflow(id).await.unwrap().unwrap();
    let second = wf.appointment_id.unwrap();
    assert_ne!(first, second);
    let open = agent
        .scheduler()
        .appointments(&AppointmentFilter::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.status.is_open())
        .count();
    assert_eq!(open, 1);
}

async fn an_alert_for_another_component_widens_the_open_appointment(t: TestDb) {
    seed(&t.db, 1, &[]).await;
    let battery = alert(&vid(0), Severity::High, Component::Battery, MONDAY_9);
    t.write(&[AlertChange::Raised(battery)]);
    let agent = t.agent(console());
    agent.drain(10).await.unwrap();
    let first_id = alert_id(&t.db, &vid(0)).await;
    let booked = agent
        .workflow(first_id)
        .await
        .unwrap()
        .unwrap()
        .appointment_id
        .unwrap();
    let scheduler = agent.scheduler();
    let before = scheduler.appointment(booked).await.unwrap().unwrap();
    assert_eq!(before.component, Some(Component::Battery));
    // The battery appointment does not cover a water-pump alert: the dataflow raises it.
    let pump = alert(
        &vid(0),
        Severity::High,
        Component::WaterPump,
        MONDAY_9 + HOUR,
    );
    t.write(&[AlertChange::Raised(pump)]);
    let report = agent.drain(10).await.unwrap();
    assert_eq!((report.started, report.confirmed), (1, 1), "{report:?}");
    let second_id = alert_id(&t.db, &vid(0)).await;
    assert_ne!(first_id, second_id);
    let wf = agent.workflow(second_id).await.unwrap().unwrap();
    assert_eq!(
        wf.appointment_id,
        Some(booked),
        "the open appointment is reused"
    );
    // …widened to the whole vehicle, so that it covers both alerts.
    let after = scheduler.appointment(booked).await.unwrap().unwrap();
    assert_eq!(after.component, None);
    assert_eq!(after.starts_at, before.starts_at);
    assert!(
        after.notes.as_deref().unwrap_or("").contains("widened"),
        "{:?}",
        after.notes
    );
    assert_eq!(t.count("SELECT COUNT(*) FROM appointments").await, 1);
    assert!(t.audit(second_id).await.contains(&(
        "scheduling".into(),
        "use_open_appointment".into(),
        "success".into()
    )));
    // What the graph reads: an appointment for the whole vehicle, which holds every alert.
    let rows =
        t.db.alert_table_rows(EventTime(MONDAY_9), std::time::Duration::from_secs(86_400))
            .await
            .unwrap();
    let vehicle = VehicleId::parse(&vid(0)).unwrap();
    assert!(rows.contains(&pmi_core::TableRow::Appointment(vehicle.clone(), None)));
    assert!(!rows.contains(&pmi_core::TableRow::Appointment(
        vehicle,
        Some(Component::Battery)
    )));
}

async fn restarts_resume_without_double_booking(t: TestDb) {
    seed(&t.db, 1, &[]).await;
    t.write(&[AlertChange::Raised(alert(
        &vid(0),
        Severity::High,
        Component::Battery,
        MONDAY_9,
    ))]);
    // First agent: stops with the channel down (workflow at `offered`).
    let agent = t.agent(scripted(vec![Err(())]));
    agent.pass().await.unwrap();
    let id = alert_id(&t.db, &vid(0)).await;
    let wf = agent.workflow(id).await.unwrap().unwrap();
    assert_eq!(wf.state, WorkflowState::Offered);
    // A crash after booking but before the state was saved: the booking exists.
    let slot = wf.offers.unwrap()[0].clone();
    agent
        .scheduler()
        .book(pmi_agents::BookRequest {
            slot,
            vehicle_id: vid(0),
            alert_id: Some(id),
            component: Some(Component::Battery),
            booked_by: "pmi-master-agent".into(),
            notes: None,
        })
        .await
        .unwrap();
    drop(agent);
    // A new agent resumes: the booking is found, not repeated.
    let agent = t.agent(console());
    let report = agent.drain(10).await.unwrap();
    assert_eq!((report.started, report.confirmed), (0, 1));
    assert_eq!(t.count("SELECT COUNT(*) FROM appointments").await, 1);
    // Two agents racing over the same workflows never double-book either.
    t.write(&[AlertChange::Raised(alert(
        &vid(0),
        Severity::Critical,
        Component::Battery,
        MONDAY_9 + HOUR,
    ))]);
    let (a, b) = (t.agent(console()), t.agent(console()));
    let (ra, rb) = tokio::join!(a.drain(10), b.drain(10));
    ra.unwrap();
    rb.unwrap();
    assert_eq!(t.count("SELECT COUNT(*) FROM appointments").await, 1);
}

async fn many_alerts_one_appointment_per_vehicle(t: TestDb) {
    let n = 12;
    seed(&t.db, n, &[]).await;
    let changes: Vec<AlertChange> = (0..n)
        .map(|i| {
            AlertChange::Raised(alert(
                &vid(i),
                [Severity::Medium, Severity::High][i % 2],
                Component::ALL[i % Component::ALL.len()],
                MONDAY_9 + (i as i64) * 600_000,
            ))
        })
        .collect();
    t.write(&changes);
    let agent = t.agent(console());
    let report = agent.drain(20).await.unwrap();
    assert_eq!(report.started, n as u64);
    assert_eq!(report.confirmed + report.escalated, n as u64, "{report:?}");
    let appointments = agent
        .scheduler()
        .appointments(&AppointmentFilter::default())
        .await
        .unwrap();
    let mut vehicles: Vec<&str> = appointments.iter().map(|a| a.vehicle_id.as_str()).collect();
    vehicles.sort();
    vehicles.dedup();
    assert_eq!(vehicles.len(), appointments.len(), "one per vehicle");
    for wf in agent.workflows(Some(true)).await.unwrap() {
        if wf.state == WorkflowState::Confirmed {
            let a = appointments
                .iter()
                .find(|a| Some(a.appointment_id) == wf.appointment_id)
                .unwrap();
            assert!(a.starts_at <= wf.sla_due_at && a.starts_at >= wf.pane_end);
        }
    }
}

//! The SQL storage, end to end: the same suite against SQLite (a temporary file) and
//! PostgreSQL (a fresh database per test on the server of `PMI_DATABASE_URL`, dropped
//! afterwards, so tests run in parallel), plus PostgreSQL-only tests of TimescaleDB detection,
//! the retry deadline and a server restart in the middle of a run (a private instance).
//!
//! Run: `bash scripts/test.sh -p pmi-sinks --test sql`, or `eval "$(bash
//! scripts/services.sh up)"` then `cargo test -p pmi-sinks --test sql`. Without
//! `PMI_DATABASE_URL` the PostgreSQL tests fail (they never skip).

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pmi_core::{
    Alert, AlertChange, CustomerRecord, RetractReason, ServiceCenterRecord, TableRow, VehicleInfo,
    VehicleRecord,
};
use pmi_core::{Component, EventTime, Prediction, Sensor, Severity, Telemetry, VehicleId};
use pmi_core::{RawReading, Validator, SENSOR_COUNT};
use pmi_sinks::sql::registry::{
    self, ContactChannel, Customer, OpeningHours, ServiceCenter, Vehicle,
};
use pmi_sinks::sql::{
    admin, AlertRow, AlertStatus, AlertTable, Backend, Database, ForeignKey, PredictionTable,
    Retraction, SqlConfig, SqlSink, TelemetryTable, Timescale, TABLES,
};
use pmi_sinks::{ChunkSink, SinkError};

// ---------------------------------------------------------------------------------------
// Test databases

enum Target {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin_url: String, name: String },
}

/// A fresh, migrated database for one test.
struct TestDb {
    config: SqlConfig,
    db: Database,
    target: Target,
}

fn database_url() -> String {
    std::env::var("PMI_DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "PMI_DATABASE_URL is not set: the PostgreSQL tests need a server. Run `bash \
             scripts/test.sh`, or `eval \"$(bash scripts/services.sh up)\"` before cargo test"
        )
    })
}

fn fast_retries(mut config: SqlConfig) -> SqlConfig {
    config.retry_initial_ms = 20;
    config.retry_max_ms = 200;
    config.connect_timeout_ms = 1000;
    config
}

impl TestDb {
    async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/nested/pmi.sqlite", dir.path().display());
        TestDb::open(fast_retries(SqlConfig::new(&url)), Target::Sqlite(dir)).await
    }

    async fn postgres() -> TestDb {
        let admin_url = database_url();
        let name = admin::unique_name("pmi_test");
        admin::create_database(&admin_url, &name).await.unwrap();
        let config = fast_retries(SqlConfig::new(&admin::with_database(&admin_url, &name)));
        TestDb::open(config, Target::Postgres { admin_url, name }).await
    }

    async fn open(config: SqlConfig, target: Target) -> TestDb {
        let db = Database::connect(&config).await.unwrap();
        db.migrate().await.unwrap();
        TestDb { config, db, target }
    }

    fn config(&self, batch_rows: usize) -> SqlConfig {
        SqlConfig {
            batch_rows,
            ..self.config.clone()
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Target::Postgres { admin_url, name } = &self.target {
            // Drop runs inside the test's runtime: drop the database from a thread of its own.
            let (admin_url, name, db) = (admin_url.clone(), name.clone(), self.db.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                drop(db);
                rt.block_on(admin::drop_database(&admin_url, &name))
                    .unwrap();
            })
            .join()
            .unwrap();
        }
    }
}

/// Runs each named test against both backends.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::TestDb::sqlite().await).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::TestDb::postgres().await).await
                }
            )*
        }
    };
}

both!(
    migrations_apply_twice_and_create_every_table,
    tables_have_their_keys,
    predictions_are_stored_value_for_value,
    telemetry_is_stored_value_for_value_with_nulls,
    alerts_upsert_keeps_an_agents_status,
    alert_changes_keep_one_active_row_per_vehicle,
    writing_the_same_chunks_twice_leaves_one_row_each,
    durable_follows_commits_in_checkpoint_order,
    a_permanent_error_fails_the_sink_naming_the_table,
    registry_upserts_and_enforces_references,
);

// ---------------------------------------------------------------------------------------
// Data

fn vid(s: &str) -> VehicleId {
    VehicleId::parse(s).unwrap()
}

fn prediction(v: &str, pane_end: i64, risk: f64) -> Prediction {
    let severity = pmi_core::SeverityThresholds::default().classify(risk);
    Prediction {
        vehicle_id: vid(v),
        pane_end: EventTime(pane_end),
        risk,
        severity,
        component: (severity > Severity::Normal).then_some(Component::WaterPump),
        model: "gbt-v2".into(),
        explanation: if severity > Severity::Normal {
            vec![
                "coolant_temp_c_mean_300s 104.2 °C (\"high\")".into(),
                "engine–coolant gap widening".into(),
            ]
        } else {
            vec![]
        },
    }
}

/// The alert a prediction sets (no registry row).
fn alert_of(p: &Prediction) -> Alert {
    Alert {
        vehicle_id: p.vehicle_id.clone(),
        severity: p.severity,
        component: p.component,
        risk: p.risk,
        pane_end: p.pane_end,
        model: p.model.to_string(),
        explanation: p.explanation.clone(),
        features: vec![("coolant_temp_c_mean_300s".into(), p.risk * 100.0)],
        info: VehicleInfo::default(),
    }
}

/// Active alert rows of predictions.
fn rows(ps: &[Prediction]) -> Vec<AlertRow> {
    ps.iter()
        .map(|p| AlertRow {
            alert: alert_of(p),
            retraction: None,
        })
        .collect()
}

fn predictions(vehicles: usize, panes: usize) -> Vec<Prediction> {
    let mut out = Vec::new();
    for p in 0..panes {
        for v in 0..vehicles {
            let risk = ((v * 7 + p * 13) % 101) as f64 / 100.0;
            // Millisecond-precise times, not only whole panes.
            out.push(prediction(
                &format!("VEH_{v:06}"),
                1_700_000_000_000 + p as i64 * 10_000 + v as i64,
                risk,
            ));
        }
    }
    out
}

fn reading(v: usize, i: i64) -> Telemetry {
    let mut values = [None; SENSOR_COUNT];
    for (c, value) in values.iter_mut().enumerate() {
        // A pattern of absent channels, extremes of the valid ranges, and fractions.
        if (c + v + i as usize).is_multiple_of(4) {
            continue;
        }
        let (lo, hi) = Sensor::ALL[c].range();
        *value = Some(match (c + i as usize) % 3 {
            0 => lo,
            1 => hi,
            _ => lo + (hi - lo) * 0.123_456_789,
        });
    }
    let raw = RawReading::new(&format!("VEH_{v:06}"), 1_700_000_000_001 + i * 997, values);
    Validator::default()
        .validate(raw, EventTime(1_800_000_000_000))
        .unwrap()
}

fn sorted_predictions(mut p: Vec<Prediction>) -> Vec<Prediction> {
    p.sort_by(|a, b| (&a.vehicle_id, a.pane_end).cmp(&(&b.vehicle_id, b.pane_end)));
    p
}

fn write_all<K: pmi_sinks::sql::SqlTable>(config: &SqlConfig, chunks: Vec<Vec<K::Record>>) -> u64
where
    K::Record: Clone,
{
    let mut sink = SqlSink::<K>::start(config, "test").unwrap();
    for c in chunks {
        sink.send(c).unwrap();
    }
    Box::new(sink).close().unwrap().rows
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------
// The suite

async fn migrations_apply_twice_and_create_every_table(t: TestDb) {
    // TestDb::open migrated once already.
    let first = t.db.migrate().await.unwrap();
    let second = t.db.migrate().await.unwrap();
    assert_eq!(first, second);
    let mut expected: Vec<String> = TABLES.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(t.db.tables().await.unwrap(), expected);
    for table in TABLES {
        assert_eq!(t.db.count(table).await.unwrap(), 0, "{table}");
    }
    assert!(t.db.count("pg_class; DROP TABLE alerts").await.is_err());
    // A second pool migrating the same database concurrently is harmless too.
    let other = Database::connect(&t.config).await.unwrap();
    let (a, b) = tokio::join!(t.db.migrate(), other.migrate());
    a.unwrap();
    b.unwrap();
    match t.db.backend() {
        Backend::Sqlite => assert_eq!(first, Timescale::NotApplicable),
        // Not installed on the test machines: the plain-table path.
        Backend::Postgres => assert_eq!(first, Timescale::Absent),
    }
}

async fn tables_have_their_keys(t: TestDb) {
    let pk = |cols: &[&str]| cols.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let audit_pk = match t.db.backend() {
        // Hypertables need the time column in the key.
        Backend::Postgres => pk(&["audit_id", "at"]),
        Backend::Sqlite => pk(&["audit_id"]),
    };
    for (table, key) in [
        ("customers", pk(&["customer_id"])),
        ("service_centers", pk(&["center_id"])),
        ("vehicles", pk(&["vehicle_id"])),
        ("vehicle_telemetry", pk(&["vehicle_id", "ts"])),
        ("failure_predictions", pk(&["vehicle_id", "pane_end"])),
        ("alerts", pk(&["alert_id"])),
        ("appointments", pk(&["appointment_id"])),
        ("maintenance_records", pk(&["maintenance_id"])),
        ("rca_capa_records", pk(&["rca_id"])),
        ("agent_audit_log", audit_pk),
        ("agent_workflows", pk(&["alert_id"])),
        ("technicians", pk(&["technician_id"])),
        ("service_center_closures", pk(&["center_id", "day"])),
    ] {
        assert_eq!(t.db.primary_key(table).await.unwrap(), key, "{table}");
    }
    let fk = |column: &str, references: &str, references_column: &str| ForeignKey {
        column: column.into(),
        references: references.into(),
        references_column: references_column.into(),
    };
    for (table, mut keys) in [
        (
            "vehicles",
            vec![
                fk("customer_id", "customers", "customer_id"),
                fk("home_center_id", "service_centers", "center_id"),
            ],
        ),
        (
            "appointments",
            vec![
                fk("alert_id", "alerts", "alert_id"),
                fk("center_id", "service_centers", "center_id"),
                fk("vehicle_id", "vehicles", "vehicle_id"),
            ],
        ),
        (
            "maintenance_records",
            vec![
                fk("alert_id", "alerts", "alert_id"),
                fk("appointment_id", "appointments", "appointment_id"),
                fk("center_id", "service_centers", "center_id"),
                fk("rca_id", "rca_capa_records", "rca_id"),
                fk("vehicle_id", "vehicles", "vehicle_id"),
            ],
        ),
        // Streamed vehicles may be unknown to the registry: no references.
        ("vehicle_telemetry", vec![]),
        ("failure_predictions", vec![]),
        ("alerts", vec![]),
        ("agent_audit_log", vec![]),
        (
            "agent_workflows",
            vec![
                fk("alert_id", "alerts", "alert_id"),
                fk("appointment_id", "appointments", "appointment_id"),
            ],
        ),
        (
            "technicians",
            vec![fk("center_id", "service_centers", "center_id")],
        ),
        (
            "service_center_closures",
            vec![fk("center_id", "service_centers", "center_id")],
        ),
    ] {
        keys.sort();
        assert_eq!(t.db.foreign_keys(table).await.unwrap(), keys, "{table}");
    }
}

async fn predictions_are_stored_value_for_value(t: TestDb) {
    let input = predictions(13, 9);
    let chunks: Vec<Vec<Prediction>> = input.chunks(10).map(|c| c.to_vec()).collect();
    // Batches of 7: many batches, each spanning chunk boundaries.
    let rows = write_all::<PredictionTable>(&t.config(7), chunks);
    assert_eq!(rows, input.len() as u64);
    let stored = t.db.predictions(None).await.unwrap();
    assert_eq!(stored, sorted_predictions(input.clone()));
    assert!(stored
        .iter()
        .any(|p| p.component.is_none() && p.explanation.is_empty()));
    // Latest per vehicle: the last pane of each.
    let latest = t.db.latest_predictions().await.unwrap();
    let mut expected: Vec<Prediction> = input[input.len() - 13..].to_vec();
    expected.sort_by(|a, b| a.vehicle_id.cmp(&b.vehicle_id));
    assert_eq!(latest, expected);
    let one = t.db.predictions(Some("VEH_000003")).await.unwrap();
    assert_eq!(one.len(), 9);
    assert!(one.iter().all(|p| p.vehicle_id.as_str() == "VEH_000003"));
}

async fn telemetry_is_stored_value_for_value_with_nulls(t: TestDb) {
    let input: Vec<Telemetry> = (0..5)
        .flat_map(|v| (0..40).map(move |i| reading(v, i)))
        .collect();
    assert!(input.iter().any(|r| r.values.present() < SENSOR_COUNT));
    let chunks: Vec<Vec<Telemetry>> = input.chunks(33).map(|c| c.to_vec()).collect();
    let rows = write_all::<TelemetryTable>(&t.config(50), chunks);
    assert_eq!(rows, 200);
    let mut expected = input.clone();
    expected.sort_by(|a, b| (&a.vehicle_id, a.ts).cmp(&(&b.vehicle_id, b.ts)));
    assert_eq!(t.db.telemetry(None).await.unwrap(), expected);
    assert_eq!(t.db.count("vehicle_telemetry").await.unwrap(), 200);
}

async fn alerts_upsert_keeps_an_agents_status(t: TestDb) {
    let first = vec![
        prediction("VEH_000001", 1_700_000_010_000, 0.6),
        prediction("VEH_000002", 1_700_000_010_000, 0.8),
        prediction("VEH_000003", 1_700_000_010_000, 0.95),
    ];
    write_all::<AlertTable>(&t.config(100), vec![rows(&first)]);
    let alerts = t.db.alerts(None).await.unwrap();
    assert_eq!(alerts.len(), 3);
    // Most urgent first; all open; SLA from the severity.
    assert_eq!(alerts[0].prediction, first[2]);
    assert_eq!(
        alerts[0].sla_due_at,
        Some(1_700_000_010_000 + 2 * 3_600_000)
    );
    assert_eq!(
        alerts[2].sla_due_at,
        Some(1_700_000_010_000 + 72 * 3_600_000)
    );
    assert!(alerts.iter().all(|a| a.status == AlertStatus::Open));
    let id = |v: &str| {
        alerts
            .iter()
            .find(|a| a.prediction.vehicle_id.as_str() == v)
            .unwrap()
            .alert_id
    };
    // Agents act on two of them.
    assert!(t
        .db
        .set_alert_status(id("VEH_000001"), AlertStatus::Resolved, Some("serviced"))
        .await
        .unwrap());
    assert!(t
        .db
        .set_alert_status(id("VEH_000002"), AlertStatus::Acknowledged, None)
        .await
        .unwrap());
    assert!(!t
        .db
        .set_alert_status(999_999, AlertStatus::Resolved, None)
        .await
        .unwrap());
    std::thread::sleep(Duration::from_millis(5));
    // The pane is rescored (worse) and replayed: values change, statuses do not.
    let mut again = first.clone();
    again[0] = prediction("VEH_000001", 1_700_000_010_000, 0.97);
    again[0].component = Some(Component::Thermostat);
    again.push(prediction("VEH_000004", 1_700_000_020_000, 0.55));
    write_all::<AlertTable>(&t.config(100), vec![rows(&again)]);
    let after = t.db.alerts(None).await.unwrap();
    assert_eq!(after.len(), 4);
    let get = |v: &str| {
        after
            .iter()
            .find(|a| a.prediction.vehicle_id.as_str() == v)
            .unwrap()
            .clone()
    };
    let resolved = get("VEH_000001");
    assert_eq!(resolved.status, AlertStatus::Resolved);
    assert_eq!(resolved.alert_id, id("VEH_000001"));
    assert_eq!(resolved.prediction, again[0]);
    assert_eq!(resolved.prediction.severity, Severity::Critical);
    assert!(resolved.updated_at > alerts[2].updated_at);
    assert_eq!(resolved.raised_at, alerts[2].raised_at);
    assert_eq!(get("VEH_000002").status, AlertStatus::Acknowledged);
    // Unchanged rows are not rewritten.
    let unchanged = get("VEH_000003");
    assert_eq!(unchanged.updated_at, alerts[0].updated_at);
    assert_eq!(get("VEH_000004").status, AlertStatus::Open);
    let queue = t.db.open_alerts(Severity::High).await.unwrap();
    let names: Vec<&str> = queue
        .iter()
        .map(|a| a.prediction.vehicle_id.as_str())
        .collect();
    assert_eq!(names, ["VEH_000003", "VEH_000002"]);
    assert_eq!(t.db.alerts(Some(AlertStatus::Open)).await.unwrap().len(), 2);
}

async fn alert_changes_keep_one_active_row_per_vehicle(t: TestDb) {
    let high = alert_of(&prediction("VEH_000001", 1_700_000_010_000, 0.8));
    let critical = alert_of(&prediction("VEH_000001", 1_700_000_020_000, 0.95));
    let other = alert_of(&prediction("VEH_000002", 1_700_000_010_000, 0.6));
    let changes = [
        AlertChange::Raised(high.clone()),
        AlertChange::Raised(other.clone()),
        AlertChange::Changed {
            from: high.clone(),
            to: critical.clone(),
        },
        AlertChange::Retracted {
            alert: other.clone(),
            reason: RetractReason::Booked,
        },
    ];
    let chunk: Vec<AlertRow> = changes.iter().flat_map(AlertRow::of).collect();
    assert_eq!(chunk.len(), 5);
    // Written, then replayed: the same rows.
    write_all::<AlertTable>(&t.config(2), vec![chunk.clone()]);
    let first = t.db.alerts(None).await.unwrap();
    write_all::<AlertTable>(&t.config(100), vec![chunk]);
    let again = t.db.alerts(None).await.unwrap();
    assert_eq!(first, again);
    let state: Vec<(&str, Severity, bool, Option<&str>)> = again
        .iter()
        .map(|a| {
            (
                a.prediction.vehicle_id.as_str(),
                a.prediction.severity,
                a.active,
                a.retraction.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        state,
        [
            ("VEH_000001", Severity::Critical, true, None),
            (
                "VEH_000001",
                Severity::High,
                false,
                Some(Retraction::Superseded.name())
            ),
            ("VEH_000002", Severity::Medium, false, Some("booked")),
        ]
    );
    let queue = t.db.open_alerts(Severity::Low).await.unwrap();
    assert_eq!(queue.len(), 1);
    assert_eq!(queue[0].prediction.pane_end, critical.pane_end);
    // The booking is cancelled: the same alert is raised again and is active once more.
    write_all::<AlertTable>(
        &t.config(100),
        vec![AlertRow::of(&AlertChange::Raised(other))],
    );
    let queue = t.db.open_alerts(Severity::Low).await.unwrap();
    assert_eq!(queue.len(), 2);
    assert!(queue.iter().all(|a| a.active && a.retraction.is_none()));
}

async fn writing_the_same_chunks_twice_leaves_one_row_each(t: TestDb) {
    let input = predictions(20, 10);
    let chunks: Vec<Vec<Prediction>> = input.chunks(25).map(|c| c.to_vec()).collect();
    // Twice through one sink (duplicates may meet inside one batch), then again through a
    // second sink (a replay after a restart).
    let mut doubled = chunks.clone();
    doubled.extend(chunks.clone());
    write_all::<PredictionTable>(&t.config(60), doubled);
    write_all::<PredictionTable>(&t.config(1000), chunks.clone());
    let alert_chunks: Vec<Vec<AlertRow>> = chunks.iter().map(|c| rows(c)).collect();
    write_all::<AlertTable>(&t.config(60), alert_chunks.clone());
    write_all::<AlertTable>(&t.config(60), alert_chunks);
    assert_eq!(t.db.count("failure_predictions").await.unwrap(), 200);
    assert_eq!(t.db.count("alerts").await.unwrap(), 200);
    assert_eq!(
        t.db.predictions(None).await.unwrap(),
        sorted_predictions(input)
    );
    let telemetry: Vec<Telemetry> = (0..50).map(|i| reading(1, i)).collect();
    let twice = vec![telemetry.clone(), telemetry.clone(), telemetry];
    write_all::<TelemetryTable>(&t.config(40), twice);
    assert_eq!(t.db.count("vehicle_telemetry").await.unwrap(), 50);
}

async fn durable_follows_commits_in_checkpoint_order(t: TestDb) {
    let input = predictions(50, 40);
    let mut sink = SqlSink::<PredictionTable>::start(&t.config(100), "test").unwrap();
    assert_eq!(sink.durable().unwrap(), Some(0));
    let mut before = Vec::new();
    let mut sent = 0u64;
    for (i, chunk) in input.chunks(50).enumerate() {
        sink.send(chunk.to_vec()).unwrap();
        sent += chunk.len() as u64;
        let token = i as u64 + 1;
        sink.checkpoint(token).unwrap();
        before.push(sent);
        // Whatever token is durable, the rows sent before it are in the table.
        let durable = sink.durable().unwrap().unwrap();
        assert!(durable <= token);
        if durable > 0 {
            let rows = t.db.count("failure_predictions").await.unwrap();
            assert!(
                rows >= before[durable as usize - 1],
                "token {durable}: {rows} rows"
            );
        }
    }
    let last = before.len() as u64;
    wait_for("the last checkpoint", || {
        sink.durable().unwrap() == Some(last)
    });
    assert_eq!(t.db.count("failure_predictions").await.unwrap(), sent);
    assert_eq!(sink.committed(), sent);
    assert_eq!(Box::new(sink).close().unwrap().rows, sent);
}

async fn a_permanent_error_fails_the_sink_naming_the_table(t: TestDb) {
    let mut sink = SqlSink::<PredictionTable>::start(&t.config(100), "test").unwrap();
    sink.send(predictions(3, 1)).unwrap();
    let mut bad = prediction("VEH_000009", 1_700_000_000_000, 0.5);
    bad.risk = 1.5; // outside the CHECK (risk in [0, 1])
    sink.send(vec![bad]).unwrap();
    sink.checkpoint(1).unwrap();
    wait_for("the sink to fail", || sink.durable().is_err());
    let e = sink.durable().unwrap_err();
    assert!(matches!(e, SinkError::Sql { .. }), "{e}");
    assert!(e.to_string().contains("failure_predictions"), "{e}");
    assert_eq!(e.class(), pmi_core::ErrorClass::External);
    // Further sends and close report it too; the failure was immediate, not retried.
    let e = sink.send(predictions(1, 1)).unwrap_err();
    assert!(e.to_string().contains("failure_predictions"), "{e}");
    let mut sink = SqlSink::<PredictionTable>::start(&t.config(100), "test").unwrap();
    let mut bad = prediction("VEH_000009", 1_700_000_000_000, 0.5);
    bad.risk = -0.5;
    sink.send(vec![bad]).unwrap();
    let e = Box::new(sink).close().unwrap_err();
    assert!(e.to_string().contains("table `failure_predictions`"), "{e}");
}

async fn registry_upserts_and_enforces_references(t: TestDb) {
    let customer = Customer {
        customer_id: "CUST_1".into(),
        name: "Ada Lovelace".into(),
        email: Some("ada@example.invalid".into()),
        phone: None,
        preferred_channel: ContactChannel::Sms,
        contact_consent: true,
        locale: Some("en-GB".into()),
        preferred_times: Some(vec![registry::PreferredTime {
            weekday: 6,
            from: "09:00".into(),
            to: "12:00".into(),
        }]),
    };
    let center = ServiceCenter {
        center_id: "SC_BER".into(),
        name: "Berlin Mitte".into(),
        time_zone: "Europe/Berlin".into(),
        business_hours: (1..=5)
            .map(|d| OpeningHours {
                weekday: d,
                open: "08:00".into(),
                close: "18:00".into(),
            })
            .collect(),
        bays: 4,
        technicians: 6,
        address: None,
        phone: None,
        latitude: Some(52.52),
        longitude: Some(13.405),
    };
    let vehicle = Vehicle {
        vehicle_id: "VEH_000001".into(),
        customer_id: Some("CUST_1".into()),
        home_center_id: Some("SC_BER".into()),
        vin: Some("WVWZZZ1JZXW000001".into()),
        make: Some("VW".into()),
        model: Some("Golf".into()),
        model_year: Some(2021),
    };
    for _ in 0..2 {
        registry::upsert_customers(&t.db, std::slice::from_ref(&customer))
            .await
            .unwrap();
        registry::upsert_service_centers(&t.db, std::slice::from_ref(&center))
            .await
            .unwrap();
        registry::upsert_vehicles(&t.db, std::slice::from_ref(&vehicle))
            .await
            .unwrap();
    }
    let technician = registry::Technician {
        technician_id: "TECH_1".into(),
        center_id: "SC_BER".into(),
        name: "Grace Hopper".into(),
        skills: vec![Component::Thermostat, Component::Battery],
        active: true,
    };
    let closure = registry::Closure {
        center_id: "SC_BER".into(),
        day: chrono::NaiveDate::from_ymd_opt(2026, 12, 25).unwrap(),
        reason: Some("Christmas".into()),
    };
    for _ in 0..2 {
        registry::upsert_technicians(&t.db, std::slice::from_ref(&technician))
            .await
            .unwrap();
        registry::upsert_closures(&t.db, std::slice::from_ref(&closure))
            .await
            .unwrap();
    }
    for table in [
        "customers",
        "service_centers",
        "vehicles",
        "technicians",
        "service_center_closures",
    ] {
        assert_eq!(t.db.count(table).await.unwrap(), 1, "{table}");
    }
    let stray = registry::Technician {
        center_id: "SC_NOWHERE".into(),
        ..technician
    };
    assert!(registry::upsert_technicians(&t.db, &[stray]).await.is_err());
    let orphan = Vehicle {
        vehicle_id: "VEH_000002".into(),
        customer_id: Some("CUST_UNKNOWN".into()),
        vin: None,
        ..vehicle
    };
    let e = registry::upsert_vehicles(&t.db, &[orphan])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("vehicles"), "{e}");
    assert_eq!(t.db.count("vehicles").await.unwrap(), 1);
    // Streamed vehicles need no registry entry.
    write_all::<PredictionTable>(
        &t.config(10),
        vec![vec![prediction("VEH_UNREGISTERED", 1_700_000_000_000, 0.9)]],
    );
    assert_eq!(t.db.count("failure_predictions").await.unwrap(), 1);

    // The alert collection's registry rows: the vehicle, its owner and its centre, each a
    // row of its own (the graph joins them); a change of the owner's consent is one
    // customer row out and one in, and leaves the vehicle's row alone.
    let now = EventTime::now();
    let recent = Duration::from_secs(30 * 86_400);
    let before = t.db.alert_table_rows(now, recent).await.unwrap();
    let owner = CustomerRecord {
        name: Some("Ada Lovelace".into()),
        preferred_channel: Some("sms".into()),
        contact_consent: Some(true),
    };
    assert_eq!(
        before.iter().collect::<Vec<_>>(),
        vec![
            &TableRow::Vehicle(
                vid("VEH_000001"),
                VehicleRecord {
                    customer_id: Some("CUST_1".into()),
                    service_center_id: Some("SC_BER".into()),
                    model: Some("Golf".into()),
                }
            ),
            &TableRow::Customer("CUST_1".into(), owner.clone()),
            &TableRow::ServiceCenter(
                "SC_BER".into(),
                ServiceCenterRecord {
                    name: Some("Berlin Mitte".into()),
                    time_zone: Some("Europe/Berlin".into()),
                }
            ),
        ]
    );
    let withdrawn = Customer {
        contact_consent: false,
        ..customer
    };
    registry::upsert_customers(&t.db, &[withdrawn])
        .await
        .unwrap();
    let after = t.db.alert_table_rows(now, recent).await.unwrap();
    let changed = CustomerRecord {
        contact_consent: Some(false),
        ..owner.clone()
    };
    assert_eq!(
        pmi_sinks::sql::tables::diff(&before, &after),
        vec![
            (TableRow::Customer("CUST_1".into(), owner), -1),
            (TableRow::Customer("CUST_1".into(), changed), 1),
        ]
    );
}

// ---------------------------------------------------------------------------------------
// PostgreSQL only

#[tokio::test]
async fn postgres_timescale_detection_reports_absent() {
    let t = TestDb::postgres().await;
    // TimescaleDB is not installed on the test machines: detection says so and migration
    // keeps plain tables (the hypertable path is not exercised here).
    assert_eq!(t.db.timescale().await.unwrap(), Timescale::Absent);
    assert_eq!(t.db.migrate().await.unwrap(), Timescale::Absent);
    let sqlite = TestDb::sqlite().await;
    assert_eq!(
        sqlite.db.timescale().await.unwrap(),
        Timescale::NotApplicable
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn postgres_away_past_the_deadline_fails_the_sink_naming_the_table() {
    let _ = database_url();
    let config = SqlConfig {
        retry_deadline_ms: Some(1500),
        ..fast_retries(SqlConfig::new(&format!(
            "postgres://postgres@127.0.0.1:{}/pmi",
            free_port()
        )))
    };
    let started = Instant::now();
    let mut sink = SqlSink::<AlertTable>::start(&config, "test").unwrap();
    sink.send(rows(&predictions(2, 1))).unwrap();
    let e = Box::new(sink).close().unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert!(e.to_string().contains("table `alerts`"), "{e}");
    assert!(e.to_string().contains("gave up"), "{e}");
}

/// A PostgreSQL server of our own (so that the test may stop and start it).
struct PrivatePostgres {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
    root: bool,
}

impl PrivatePostgres {
    fn start() -> PrivatePostgres {
        let bin = PathBuf::from(
            std::env::var("PMI_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()),
        );
        assert!(
            bin.join("initdb").exists(),
            "no PostgreSQL server binaries in {} (set PMI_PG_BIN)",
            bin.display()
        );
        let root = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout)
            .unwrap()
            .trim()
            == "0";
        let dir = std::env::temp_dir().join(admin::unique_name("pmi_sql_pg"));
        std::fs::create_dir_all(&dir).unwrap();
        let pg = PrivatePostgres {
            dir,
            port: free_port(),
            bin,
            root,
        };
        if root {
            // initdb and the server refuse root: they run as `postgres`, who must own this.
            let ok = Command::new("chown")
                .arg("postgres")
                .arg(&pg.dir)
                .status()
                .unwrap();
            assert!(ok.success());
        }
        let data = pg.dir.join("data");
        pg.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
            ],
        );
        pg.server_start();
        pg
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let tool = self.bin.join(tool);
        let mut cmd = if self.root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(tool);
            c
        } else {
            Command::new(tool)
        };
        let out = cmd.args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn server_start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let data = self.dir.join("data");
        let log = self.dir.join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "-o",
                &options,
                "start",
            ],
        );
    }

    fn server_stop(&self, mode: &str) {
        let data = self.dir.join("data");
        self.run(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", mode, "-w", "stop"],
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        if data.join("postmaster.pid").exists() {
            self.server_stop("immediate");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn postgres_stopped_mid_run_and_restarted_loses_nothing() {
    let _ = database_url();
    let pg = PrivatePostgres::start();
    let config = SqlConfig {
        batch_rows: 100,
        queue_chunks: 2,
        ..fast_retries(SqlConfig::new(&pg.url()))
    };
    let db = Database::connect(&config).await.unwrap();
    db.migrate().await.unwrap();

    let input = predictions(100, 40);
    let chunks: Vec<Vec<Prediction>> = input.chunks(100).map(|c| c.to_vec()).collect();
    let (first, second) = chunks.split_at(20);
    let mut sink = SqlSink::<PredictionTable>::start(&config, "test").unwrap();
    for c in first {
        sink.send(c.clone()).unwrap();
    }
    sink.checkpoint(1).unwrap();
    wait_for("the first half", || sink.durable().unwrap() == Some(1));

    pg.server_stop("fast");
    // Keep sending while the server is away: the sink retries, the channel fills, the
    // sender waits.
    let sent = Arc::new(AtomicUsize::new(0));
    let progress = sent.clone();
    let second = second.to_vec();
    let sender = std::thread::spawn(move || {
        for c in second {
            sink.send(c).unwrap();
            progress.fetch_add(1, Ordering::SeqCst);
        }
        sink.checkpoint(2).unwrap();
        sink
    });
    std::thread::sleep(Duration::from_millis(2000));
    let while_down = sent.load(Ordering::SeqCst);
    assert!(
        while_down < 10,
        "{while_down} of 20 chunks accepted while the database was down: no backpressure"
    );
    pg.server_start();
    let sink = sender.join().unwrap();
    assert_eq!(sink.durable().unwrap().map(|d| d >= 1), Some(true));
    wait_for("the second half", || sink.durable().unwrap() == Some(2));
    assert_eq!(Box::new(sink).close().unwrap().rows, 4000);

    let db = Database::connect(&config).await.unwrap();
    assert_eq!(db.count("failure_predictions").await.unwrap(), 4000);
    assert_eq!(
        db.predictions(None).await.unwrap(),
        sorted_predictions(input)
    );
    db.close().await;
}

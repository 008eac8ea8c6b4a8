//! The loop from telemetry to appointments, end to end on the simulator: `pmi run` with the
//! agents in-process writes alerts, workflows, appointments and audit rows to a fresh
//! PostgreSQL database; appointments lie inside their SLA windows and the centre's business
//! hours, every workflow step is audited, no vehicle has two open appointments; `pmi agents`
//! started again (a restart) books nothing twice; its HTTP API lists, reschedules and
//! cancels appointments.
//!
//! Needs PostgreSQL (`PMI_DATABASE_URL`, as `scripts/test.sh` sets it); fails without.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use chrono::{Datelike, TimeZone, Timelike, Weekday};

use common::{check, free_port, pmi};
use pmi_agents::scheduling::AppointmentFilter;
use pmi_agents::{
    Catalogue, ConsoleChannel, MasterAgent, MasterConfig, Scheduler, SchedulingConfig,
    WorkflowState,
};
use pmi_sinks::sql::admin::ScratchDatabase;
use pmi_sinks::sql::{Database, SqlConfig};

/// Monday 2026-03-02 00:00 UTC: a working week, so that business hours matter.
const START_MS: i64 = 1_772_409_600_000;

/// A fresh database on the test server (`PMI_DATABASE_URL`), dropped afterwards.
fn fresh_database(prefix: &str) -> ScratchDatabase {
    let server = std::env::var("PMI_DATABASE_URL").expect(
        "PMI_DATABASE_URL is not set: start the test services with \
         `eval \"$(bash scripts/services.sh up)\"` (scripts/test.sh does)",
    );
    ScratchDatabase::create(&server, prefix).unwrap()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

async fn agent(url: &str) -> MasterAgent {
    let db = Database::connect(&SqlConfig::new(url)).await.unwrap();
    let scheduler = Scheduler::new(db, SchedulingConfig::default()).unwrap();
    MasterAgent::new(
        scheduler,
        Catalogue::embedded(),
        std::sync::Arc::new(ConsoleChannel::default()),
        MasterConfig::default(),
    )
    .unwrap()
}

async fn audit_steps(db: &Database) -> BTreeMap<i64, Vec<String>> {
    let Database::Postgres(pool) = db else {
        panic!("the test database is PostgreSQL")
    };
    let rows: Vec<(i64, String, String, String)> = sqlx::query_as(
        "SELECT alert_id, agent, action, outcome FROM agent_audit_log \
         WHERE alert_id IS NOT NULL ORDER BY audit_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut out: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for (alert, agent, action, outcome) in rows {
        out.entry(alert)
            .or_default()
            .push(format!("{agent}.{action}:{outcome}"));
    }
    out
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn simulated_failures_end_in_appointments_within_their_slas() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_database("pmi_agents_e2e");
    // Failures often enough that a day of 20 vehicles raises alerts.
    std::fs::write(
        dir.path().join("pmi.toml"),
        "[simulator]\nfailures_per_vehicle_month = 30.0\n",
    )
    .unwrap();
    let report = check(
        pmi(dir.path())
            .args([
                "--config",
                "pmi.toml",
                "run",
                "--speed",
                "max",
                "--duration",
                "12h",
            ])
            .args([
                "--vehicles",
                "20",
                "--out",
                "out",
                "--database-url",
                db.url(),
            ])
            .args(["--start-ms", &START_MS.to_string()]),
    );
    assert!(report.contains("agents: "), "{report}");

    let alert_count = block_on(async {
        let agent = agent(db.url()).await;
        let alerts = agent.database().alerts(None).await.unwrap();
        assert!(
            !alerts.is_empty(),
            "the injected failures raise alerts: {report}"
        );
        let workflows = agent.workflows(None).await.unwrap();
        assert!(!workflows.is_empty());
        assert!(
            workflows.iter().all(|w| w.state.is_terminal()),
            "the run drains its workflows: {workflows:#?}"
        );
        let confirmed: Vec<_> = workflows
            .iter()
            .filter(|w| w.state == WorkflowState::Confirmed)
            .collect();
        assert!(!confirmed.is_empty(), "{workflows:#?}");
        let appointments = agent
            .scheduler()
            .appointments(&AppointmentFilter::default())
            .await
            .unwrap();
        // Inside the SLA window and Berlin business hours (the simulated centre of the
        // first 25 vehicles: Mon–Fri 08–18, Sat 09–13).
        let berlin = chrono_tz::Europe::Berlin;
        for w in &confirmed {
            let a = appointments
                .iter()
                .find(|a| Some(a.appointment_id) == w.appointment_id)
                .unwrap();
            assert!(a.starts_at <= w.sla_due_at, "{a:?} after the SLA of {w:?}");
            let start = berlin.timestamp_millis_opt(a.starts_at.0).unwrap();
            let end = berlin.timestamp_millis_opt(a.ends_at.0).unwrap();
            let (open, close) = match start.weekday() {
                Weekday::Sat => (9, 13),
                Weekday::Sun => panic!("booked on a Sunday: {a:?}"),
                _ => (8, 18),
            };
            assert!(start.hour() >= open, "{a:?}");
            assert!(
                end.date_naive() == start.date_naive()
                    && (end.hour() < close || (end.hour() == close && end.minute() == 0)),
                "{a:?}"
            );
        }
        // At most one open appointment per vehicle.
        let mut open: BTreeMap<&str, usize> = BTreeMap::new();
        for a in appointments.iter().filter(|a| a.status.is_open()) {
            *open.entry(a.vehicle_id.as_str()).or_default() += 1;
        }
        assert!(open.values().all(|n| *n == 1), "{open:?}");
        // Every workflow started and was diagnosed; confirmed ones booked and confirmed;
        // escalated ones say so.
        let steps = audit_steps(agent.database()).await;
        for w in &workflows {
            let s = &steps[&w.alert_id];
            assert_eq!(s[0], "master.start:success", "{s:?}");
            if w.state != WorkflowState::Cancelled {
                assert!(
                    s.contains(&"diagnosis.diagnose:success".to_owned()),
                    "{s:?}"
                );
            }
            match w.state {
                WorkflowState::Confirmed => {
                    assert!(
                        s.iter().any(|x| x == "scheduling.book:success"
                            || x == "scheduling.use_open_appointment:success"),
                        "{s:?}"
                    );
                    assert_eq!(s.last().unwrap(), "master.confirm:success", "{s:?}");
                }
                WorkflowState::Escalated => {
                    assert!(w.escalation_reason.is_some());
                    assert!(s.last().unwrap().ends_with(":escalated"), "{s:?}");
                }
                WorkflowState::Cancelled => {
                    assert_eq!(s.last().unwrap(), "master.cancel:skipped", "{s:?}");
                }
                other => panic!("unfinished workflow in state {other:?}"),
            }
        }
        alerts.len()
    });

    // A restart of the agents alone: nothing new to do, nothing booked twice.
    let before = block_on(async {
        let a = agent(db.url()).await;
        (
            a.scheduler()
                .appointments(&AppointmentFilter::default())
                .await
                .unwrap(),
            a.state_counts().await.unwrap(),
        )
    });
    let again = check(pmi(dir.path()).args([
        "agents",
        "--once",
        "--clock",
        "event",
        "--database-url",
        db.url(),
    ]));
    assert!(again.contains("0 workflows started"), "{again}");
    let after = block_on(async {
        let a = agent(db.url()).await;
        (
            a.scheduler()
                .appointments(&AppointmentFilter::default())
                .await
                .unwrap(),
            a.state_counts().await.unwrap(),
        )
    });
    assert_eq!(before, after);

    // The HTTP API.
    let port = free_port();
    let _server = Server(
        pmi(dir.path())
            .args(["agents", "--clock", "event", "--database-url", db.url()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    block_on(async {
        let http = reqwest::Client::new();
        let started = Instant::now();
        while http.get(format!("{base}/health")).send().await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "agents API never came up"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let get = |path: String| {
            let http = http.clone();
            async move {
                let r = http.get(path).send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.json::<serde_json::Value>().await.unwrap()
            }
        };
        let alerts = get(format!("{base}/alerts")).await;
        assert_eq!(alerts.as_array().unwrap().len(), alert_count);
        let open = get(format!("{base}/appointments?status=confirmed")).await;
        let open = open.as_array().unwrap();
        assert!(!open.is_empty());
        assert!(open.iter().all(|a| a["status"] == "confirmed"));
        let id = open[0]["appointment_id"].as_i64().unwrap();
        let old_start = open[0]["starts_at"].as_i64().unwrap();
        // Reschedule to the next free slot: later, same id.
        let r = http
            .post(format!("{base}/appointments/{id}/reschedule"))
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        let moved: serde_json::Value = r.json().await.unwrap();
        assert_eq!(moved["appointment_id"].as_i64(), Some(id));
        assert!(moved["starts_at"].as_i64().unwrap() > old_start);
        // A start outside business hours is refused as a conflict; a bad time names the
        // field.
        let sunday_night = "2026-03-08T23:00:00Z";
        let r = http
            .post(format!("{base}/appointments/{id}/reschedule"))
            .json(&serde_json::json!({ "starts_at": sunday_night }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 409);
        let r = http
            .post(format!("{base}/appointments/{id}/reschedule"))
            .json(&serde_json::json!({ "starts_at": "tomorrow" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["field"], "starts_at");
        // Cancel.
        let r = http
            .post(format!("{base}/appointments/{id}/cancel"))
            .json(&serde_json::json!({ "reason": "customer on holiday" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let cancelled: serde_json::Value = r.json().await.unwrap();
        assert_eq!(cancelled["status"], "cancelled");
        let r = http
            .post(format!("{base}/appointments/999999/cancel"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        let escalations = get(format!("{base}/escalations")).await;
        let escalated = before.1.get("escalated").copied().unwrap_or(0);
        assert_eq!(escalations.as_array().unwrap().len() as i64, escalated);
        let r = http
            .get(format!("{base}/alerts?status=bogus"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422);
    });
}

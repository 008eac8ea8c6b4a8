//! The master agent: one durable workflow per alert, from the alert to a confirmed
//! appointment inside the alert's SLA, every step in the audit log.
//!
//! ```text
//!  alert (active, open) ──► pending ──diagnose──► diagnosed ──find slots──► offered
//!                                                   ▲   │                     │ offer to the customer
//!                            declined / slot taken  └───┼─────────────────────┤
//!                                                       │                     ▼ book
//!                                   no slot in SLA,     │                   booked ──confirm──► confirmed
//!                                   no owner, no consent ▼
//!                                                   escalated (the human queue)
//! ```
//!
//! # Durability
//!
//! The workflow's state lives in `agent_workflows` and each step commits its result there
//! before the next begins, with an optimistic check on the state it started from (two
//! agents on one database never both take a step). A restarted agent resumes every
//! unfinished workflow at its last committed state. The one step with an effect outside the
//! database row, booking, is idempotent per alert (the scheduler returns an alert's open
//! appointment instead of booking again), so a crash between booking and saving the state
//! never double-books.
//!
//! # Following the alert collection
//!
//! Each [`MasterAgent::pass`] first reconciles the workflows with the `alerts` table the
//! dataflow writes:
//! - an active alert not resolved, at or above [`MasterConfig::min_severity`], without a
//!   workflow gets one (`pending`);
//! - a workflow not yet booked whose alert left the collection (recovered, repaired,
//!   superseded by a newer alert of the vehicle, unregistered) or was resolved is
//!   `cancelled` (a superseded alert's successor has its own workflow);
//! - a `confirmed` workflow whose appointment was cancelled and whose alert is active again
//!   (the dataflow re-raises it when the appointment no longer holds it back) goes back to
//!   `diagnosed` and is scheduled again.
//!
//! # Time
//!
//! SLAs are the alert's: its pane end plus the severity's response time (critical 2 h, high
//! 24 h, medium 72 h, low 168 h); the appointment must *start* by then. Slots are searched
//! from the alert's pane end ([`Clock::EventTime`]: simulations and backfills schedule as if
//! the agent had acted at once) or from the later of that and now ([`Clock::Wall`]: live
//! operation; a workflow whose SLA passes before it is booked is escalated).

use std::sync::Arc;
use std::time::Instant;

use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;

use pmi_core::{Component, EventTime, Severity};
use pmi_sinks::sql::registry::ContactChannel;
use pmi_sinks::sql::{Backend, Database};

use crate::audit::{self, AuditEntry, Outcome};
use crate::diagnosis::{Catalogue, Diagnosis};
use crate::engagement::{Answer, CustomerChannel, Offer};
use crate::scheduling::store::Dialect;
use crate::scheduling::{BookError, BookRequest, Scheduler, Slot, SlotRequest};
use crate::AgentError;

/// Where a workflow is (the `state` column).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowState {
    /// Created, nothing done yet.
    Pending,
    /// Diagnosed; slots to be found (again, after a declined offer or a lost slot).
    Diagnosed,
    /// Slots found and to be offered to the customer.
    Offered,
    /// An appointment is booked (proposed), to be confirmed.
    Booked,
    /// Done: a confirmed appointment inside the SLA.
    Confirmed,
    /// Handed to a person (see `escalation_reason`).
    Escalated,
    /// The alert went away before an appointment was booked.
    Cancelled,
}

impl WorkflowState {
    /// Every state.
    pub const ALL: [WorkflowState; 7] = [
        WorkflowState::Pending,
        WorkflowState::Diagnosed,
        WorkflowState::Offered,
        WorkflowState::Booked,
        WorkflowState::Confirmed,
        WorkflowState::Escalated,
        WorkflowState::Cancelled,
    ];

    /// The stored name.
    pub const fn name(self) -> &'static str {
        match self {
            WorkflowState::Pending => "pending",
            WorkflowState::Diagnosed => "diagnosed",
            WorkflowState::Offered => "offered",
            WorkflowState::Booked => "booked",
            WorkflowState::Confirmed => "confirmed",
            WorkflowState::Escalated => "escalated",
            WorkflowState::Cancelled => "cancelled",
        }
    }

    /// Looks a state up by its stored name.
    pub fn from_name(name: &str) -> Option<WorkflowState> {
        WorkflowState::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether the workflow is finished (as far as the agent goes).
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            WorkflowState::Confirmed | WorkflowState::Escalated | WorkflowState::Cancelled
        )
    }
}

/// Which clock the agent schedules by (see the module docs).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Clock {
    /// The alert's event time: slots from its pane end; no wall-clock SLA watchdog.
    #[default]
    EventTime,
    /// Wall-clock time: slots from now at the earliest; SLAs passed are escalated.
    Wall,
}

/// Settings of the master agent (`[agents]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MasterConfig {
    /// Alerts below this severity get no workflow (default `medium`).
    pub min_severity: Severity,
    /// Workflows advanced at once (default 8).
    pub concurrency: usize,
    /// Offers a customer may decline or leave unanswered before a person takes over
    /// (default 3).
    pub max_offers: u32,
    /// Longest appointment booked, minutes; a longer repair is booked for this long and
    /// the workshop plans the rest (default 480).
    pub max_appointment_minutes: u32,
    /// How often `run` looks for work, ms (default 1000).
    pub poll_ms: u64,
    /// The clock SLAs and slots follow.
    pub clock: Clock,
}

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            min_severity: Severity::Medium,
            concurrency: 8,
            max_offers: 3,
            max_appointment_minutes: 480,
            poll_ms: 1000,
            clock: Clock::EventTime,
        }
    }
}

impl MasterConfig {
    /// Checks the settings; errors name the field.
    pub fn validate(&self) -> Result<(), pmi_core::ConfigError> {
        let bad = |field: &'static str, message: &str| {
            Err(pmi_core::ConfigError::new(field, message.to_owned()))
        };
        if self.min_severity == Severity::Normal {
            return bad(
                "agents.min_severity",
                "must be low or above (normal has no SLA)",
            );
        }
        if self.concurrency == 0 {
            return bad("agents.concurrency", "must be at least 1");
        }
        if self.max_offers == 0 {
            return bad("agents.max_offers", "must be at least 1");
        }
        if self.max_appointment_minutes < 15 {
            return bad("agents.max_appointment_minutes", "must be at least 15");
        }
        Ok(())
    }
}

/// A workflow with what its steps need from the alert and the registry.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Workflow {
    /// The alert (the workflow's key).
    pub alert_id: i64,
    /// The vehicle.
    pub vehicle_id: String,
    /// Where it is.
    pub state: WorkflowState,
    /// The alert's severity.
    pub severity: Severity,
    /// The appointment must start by then.
    pub sla_due_at: EventTime,
    /// The alert's pane end.
    pub pane_end: EventTime,
    /// The implicated component.
    pub component: Option<Component>,
    /// The alert's features (for the diagnosis).
    pub features: Vec<(String, f64)>,
    /// The owner, if registered.
    pub customer_id: Option<String>,
    /// The home centre, if registered.
    pub center_id: Option<String>,
    /// Whether the owner agreed to be contacted.
    pub contact_consent: bool,
    /// How the owner prefers to be reached.
    pub channel: Option<ContactChannel>,
    /// The diagnosis, once made.
    pub diagnosis: Option<Diagnosis>,
    /// The slots found for the offer.
    pub offers: Option<Vec<Slot>>,
    /// The appointment, once booked.
    pub appointment_id: Option<i64>,
    /// Offers declined or unanswered so far.
    pub attempts: u32,
    /// Why a person took over.
    pub escalation_reason: Option<String>,
    /// When the workflow was created, ms since the epoch (wall clock).
    pub created_at: i64,
    /// When it last changed, ms since the epoch (wall clock).
    pub updated_at: i64,
}

/// What one [`MasterAgent::pass`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PassReport {
    /// Workflows created for new alerts.
    pub started: u64,
    /// Workflows cancelled because their alert went away.
    pub cancelled: u64,
    /// Confirmed workflows reopened because their appointment was cancelled.
    pub reopened: u64,
    /// Steps taken.
    pub steps: u64,
    /// Workflows that reached `confirmed` in this pass.
    pub confirmed: u64,
    /// Workflows escalated in this pass.
    pub escalated: u64,
    /// Workflows whose step failed (retried next pass).
    pub failed: u64,
}

impl PassReport {
    /// Whether the pass changed anything.
    pub fn did_work(&self) -> bool {
        self.started + self.cancelled + self.reopened + self.steps > 0
    }

    fn add(&mut self, o: &PassReport) {
        self.started += o.started;
        self.cancelled += o.cancelled;
        self.reopened += o.reopened;
        self.steps += o.steps;
        self.confirmed += o.confirmed;
        self.escalated += o.escalated;
        self.failed += o.failed;
    }
}

/// The master agent (see the module docs).
pub struct MasterAgent {
    db: Database,
    scheduler: Scheduler,
    catalogue: Catalogue,
    channel: Arc<dyn CustomerChannel>,
    config: MasterConfig,
}

fn sql_err(context: &'static str) -> impl Fn(sqlx::Error) -> AgentError {
    move |e| AgentError::sql(context, e)
}

/// Runs the same code on whichever pool `$db` holds.
macro_rules! on_pool {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            Database::Sqlite($pool) => $body,
            Database::Postgres($pool) => $body,
        }
    };
}

impl MasterAgent {
    /// An agent over `scheduler`'s database, diagnosing with `catalogue` and reaching
    /// customers through `channel`.
    pub fn new(
        scheduler: Scheduler,
        catalogue: Catalogue,
        channel: Arc<dyn CustomerChannel>,
        config: MasterConfig,
    ) -> Result<MasterAgent, AgentError> {
        config.validate().map_err(AgentError::Config)?;
        Ok(MasterAgent {
            db: scheduler.database().clone(),
            scheduler,
            catalogue,
            channel,
            config,
        })
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The scheduler.
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    fn dialect(&self) -> Dialect {
        Dialect(self.db.backend())
    }

    /// Reconciles the workflows with the alerts, then advances every unfinished workflow
    /// as far as it goes (up to [`MasterConfig::concurrency`] at once).
    pub async fn pass(&self) -> Result<PassReport, AgentError> {
        let mut report = self.reconcile().await?;
        let open = self.workflows(Some(false)).await?;
        let results: Vec<PassReport> = stream::iter(open)
            .map(|wf| async move {
                let alert = wf.alert_id;
                match self.advance(wf).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(alert, error = %e, "workflow step failed; retried next pass");
                        PassReport {
                            failed: 1,
                            ..PassReport::default()
                        }
                    }
                }
            })
            .buffer_unordered(self.config.concurrency)
            .collect()
            .await;
        for r in &results {
            report.add(r);
        }
        Ok(report)
    }

    /// Passes until one changes nothing (at most `max_passes`); returns their sum.
    pub async fn drain(&self, max_passes: usize) -> Result<PassReport, AgentError> {
        let mut total = PassReport::default();
        for _ in 0..max_passes {
            let r = self.pass().await?;
            total.add(&r);
            if !r.did_work() {
                break;
            }
        }
        Ok(total)
    }

    /// Passes every [`MasterConfig::poll_ms`] until `stop` says so; a failing pass is
    /// logged and retried.
    pub async fn run(&self, stop: impl Fn() -> bool) {
        let poll = std::time::Duration::from_millis(self.config.poll_ms.max(10));
        while !stop() {
            match self.pass().await {
                Ok(r) if r.did_work() => tracing::debug!(?r, "agent pass"),
                Ok(_) => tokio::time::sleep(poll).await,
                Err(e) => {
                    tracing::warn!(error = %e, "agent pass failed; retrying");
                    tokio::time::sleep(poll).await;
                }
            }
        }
    }

    // ---- reconciliation -------------------------------------------------------------

    async fn reconcile(&self) -> Result<PassReport, AgentError> {
        let d = self.dialect();
        let active = match self.db.backend() {
            Backend::Postgres => "a.active",
            Backend::Sqlite => "a.active = 1",
        };
        let mut report = PassReport::default();
        // New alerts get a workflow.
        let sql = format!(
            "INSERT INTO agent_workflows (alert_id, vehicle_id, severity, sla_due_at) \
             SELECT a.alert_id, a.vehicle_id, a.severity, a.sla_due_at FROM alerts a \
             WHERE {active} AND a.status <> 'resolved' AND a.severity_rank >= $1 \
               AND a.sla_due_at IS NOT NULL \
               AND NOT EXISTS (SELECT 1 FROM agent_workflows w WHERE w.alert_id = a.alert_id) \
             ON CONFLICT (alert_id) DO NOTHING \
             RETURNING alert_id, vehicle_id"
        );
        let started = self
            .alerts_returned(&sql, Some(self.config.min_severity as i64))
            .await?;
        for (alert, vehicle) in &started {
            self.audit(
                "master",
                "start",
                *alert,
                vehicle,
                Outcome::Success,
                0,
                json!({}),
            )
            .await?;
        }
        report.started = started.len() as u64;

        // Alerts gone before booking: cancel.
        let sql = format!(
            "UPDATE agent_workflows SET state = 'cancelled', updated_at = {now}, closed_at = {now} \
             WHERE state IN ('pending', 'diagnosed', 'offered') AND alert_id IN \
               (SELECT a.alert_id FROM alerts a WHERE NOT ({active}) OR a.status = 'resolved') \
             RETURNING alert_id, vehicle_id",
            now = d.now()
        );
        let cancelled = self.alerts_returned(&sql, None).await?;
        for (alert, vehicle) in &cancelled {
            let why = self.retraction(*alert).await?;
            self.audit(
                "master",
                "cancel",
                *alert,
                vehicle,
                Outcome::Skipped,
                0,
                json!({ "reason": why }),
            )
            .await?;
        }
        report.cancelled = cancelled.len() as u64;

        // Appointments cancelled while the alert stands: schedule again.
        let sql = format!(
            "UPDATE agent_workflows SET state = 'diagnosed', appointment_id = NULL, \
               updated_at = {now}, closed_at = NULL \
             WHERE state = 'confirmed' \
               AND alert_id IN (SELECT a.alert_id FROM alerts a WHERE {active} AND a.status <> 'resolved') \
               AND (appointment_id IS NULL OR appointment_id IN \
                 (SELECT appointment_id FROM appointments WHERE status IN ('cancelled', 'no_show'))) \
             RETURNING alert_id, vehicle_id",
            now = d.now()
        );
        let reopened = self.alerts_returned(&sql, None).await?;
        for (alert, vehicle) in &reopened {
            self.audit(
                "master",
                "reopen",
                *alert,
                vehicle,
                Outcome::Success,
                0,
                json!({ "reason": "appointment cancelled while the alert stands" }),
            )
            .await?;
        }
        report.reopened = reopened.len() as u64;
        Ok(report)
    }

    /// Runs a workflow statement (`$1` bound to `param` when given) and returns the
    /// `(alert_id, vehicle_id)` rows it returns.
    async fn alerts_returned(
        &self,
        sql: &str,
        param: Option<i64>,
    ) -> Result<Vec<(i64, String)>, AgentError> {
        on_pool!(&self.db, |pool| {
            let mut q = sqlx::query(sql);
            if let Some(p) = param {
                q = q.bind(p);
            }
            q.fetch_all(pool)
                .await
                .map_err(sql_err("agent_workflows"))?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(sql_err("agent_workflows"))
        })
    }

    async fn retraction(&self, alert_id: i64) -> Result<Option<String>, AgentError> {
        let row: Option<(Option<String>, String)> = on_pool!(&self.db, |pool| sqlx::query(
            "SELECT retraction, status FROM alerts WHERE alert_id = $1"
        )
        .bind(alert_id)
        .fetch_optional(pool)
        .await
        .map_err(sql_err("alerts"))?
        .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?)))
        .transpose()
        .map_err(sql_err("alerts"))?);
        Ok(row.map(|(retraction, status)| retraction.unwrap_or(status)))
    }

    // ---- reading and writing workflows ----------------------------------------------

    /// Workflows, joined with their alert and the registry: all (`None`), only finished
    /// (`Some(true)`) or only unfinished (`Some(false)`), oldest first.
    pub async fn workflows(&self, finished: Option<bool>) -> Result<Vec<Workflow>, AgentError> {
        self.query_workflows(finished, None, None).await
    }

    /// One workflow.
    pub async fn workflow(&self, alert_id: i64) -> Result<Option<Workflow>, AgentError> {
        Ok(self
            .query_workflows(None, Some(alert_id), None)
            .await?
            .into_iter()
            .next())
    }

    /// How many workflows are in each state.
    pub async fn state_counts(
        &self,
    ) -> Result<std::collections::BTreeMap<String, i64>, AgentError> {
        let rows: Vec<(String, i64)> = on_pool!(&self.db, |pool| sqlx::query_as(
            "SELECT state, COUNT(*) FROM agent_workflows GROUP BY state"
        )
        .fetch_all(pool)
        .await
        .map_err(sql_err("agent_workflows"))?);
        Ok(rows.into_iter().collect())
    }

    /// Workflows in `state` (e.g. the human queue: [`WorkflowState::Escalated`]).
    pub async fn workflows_in(&self, state: WorkflowState) -> Result<Vec<Workflow>, AgentError> {
        self.query_workflows(None, None, Some(state)).await
    }

    async fn query_workflows(
        &self,
        finished: Option<bool>,
        alert_id: Option<i64>,
        state: Option<WorkflowState>,
    ) -> Result<Vec<Workflow>, AgentError> {
        let d = self.dialect();
        let terminal = "('confirmed', 'escalated', 'cancelled')";
        let mut filter = vec!["1 = 1".to_owned()];
        match finished {
            Some(true) => filter.push(format!("w.state IN {terminal}")),
            Some(false) => filter.push(format!("w.state NOT IN {terminal}")),
            None => {}
        }
        if alert_id.is_some() {
            filter.push("w.alert_id = $1".into());
        }
        if state.is_some() {
            filter.push("w.state = $2".into());
        }
        let consent = match self.db.backend() {
            Backend::Postgres => "COALESCE(c.contact_consent, FALSE)",
            Backend::Sqlite => "COALESCE(c.contact_consent, 0) = 1",
        };
        let sql = format!(
            "SELECT w.alert_id, w.vehicle_id, w.state, w.severity, {sla}, {pane}, a.component, \
                    {features}, v.customer_id, v.home_center_id, {consent}, c.preferred_channel, \
                    {diagnosis}, {offers}, w.appointment_id, CAST(w.attempts AS BIGINT), \
                    w.escalation_reason, {created}, {updated} \
             FROM agent_workflows w JOIN alerts a ON a.alert_id = w.alert_id \
             LEFT JOIN vehicles v ON v.vehicle_id = w.vehicle_id \
             LEFT JOIN customers c ON c.customer_id = v.customer_id \
             WHERE {filter} AND (CAST($1 AS BIGINT) IS NULL OR 1 = 1) \
               AND (CAST($2 AS TEXT) IS NULL OR 1 = 1) \
             ORDER BY w.created_at, w.alert_id",
            sla = d.ms("w.sla_due_at"),
            pane = d.ms("a.pane_end"),
            features = d.json("a.features"),
            diagnosis = d.json("w.diagnosis"),
            offers = d.json("w.offers"),
            created = d.ms("w.created_at"),
            updated = d.ms("w.updated_at"),
            filter = filter.join(" AND "),
        );
        let rows: Vec<Row3> = on_pool!(&self.db, |pool| sqlx::query(&sql)
            .bind(alert_id)
            .bind(state.map(WorkflowState::name))
            .fetch_all(pool)
            .await
            .map_err(sql_err("agent_workflows"))?
            .iter()
            .map(|r| {
                Ok((
                    (
                        r.try_get(0)?,
                        r.try_get(1)?,
                        r.try_get(2)?,
                        r.try_get(3)?,
                        r.try_get(4)?,
                        r.try_get(5)?,
                        r.try_get(6)?,
                        r.try_get(7)?,
                    ),
                    (r.try_get(8)?, r.try_get(9)?, r.try_get(10)?, r.try_get(11)?),
                    (
                        r.try_get(12)?,
                        r.try_get(13)?,
                        r.try_get(14)?,
                        r.try_get(15)?,
                        r.try_get(16)?,
                        r.try_get(17)?,
                        r.try_get(18)?,
                    ),
                ))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(sql_err("agent_workflows"))?);
        rows.into_iter().map(workflow_from_row).collect()
    }

    /// Writes `wf`'s state and data if its stored state is still `from`; `false` when
    /// another agent moved it first (this step is then dropped).
    async fn save(&self, wf: &Workflow, from: WorkflowState) -> Result<bool, AgentError> {
        let d = self.dialect();
        let json = |col: &str| match self.db.backend() {
            Backend::Postgres => format!("{col}::jsonb"),
            Backend::Sqlite => col.to_owned(),
        };
        let closed = if wf.state.is_terminal() {
            d.now()
        } else {
            "NULL"
        };
        let sql = format!(
            "UPDATE agent_workflows SET state = $2, diagnosis = {diagnosis}, offers = {offers}, \
               appointment_id = $5, attempts = $6, escalation_reason = $7, \
               updated_at = {now}, closed_at = {closed} \
             WHERE alert_id = $1 AND state = $8",
            diagnosis = json("$3"),
            offers = json("$4"),
            now = d.now(),
        );
        let diagnosis = wf.diagnosis.as_ref().map(|x| json!(x).to_string());
        let offers = wf.offers.as_ref().map(|x| json!(x).to_string());
        let done = on_pool!(&self.db, |pool| sqlx::query(&sql)
            .bind(wf.alert_id)
            .bind(wf.state.name())
            .bind(diagnosis.as_deref())
            .bind(offers.as_deref())
            .bind(wf.appointment_id)
            .bind(i64::from(wf.attempts))
            .bind(wf.escalation_reason.as_deref())
            .bind(from.name())
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
            .map_err(sql_err("agent_workflows"))?);
        Ok(done == 1)
    }

    #[allow(clippy::too_many_arguments)]
    async fn audit(
        &self,
        agent: &'static str,
        action: &'static str,
        alert_id: i64,
        vehicle_id: &str,
        outcome: Outcome,
        latency_ms: u64,
        details: serde_json::Value,
    ) -> Result<(), AgentError> {
        audit::record(
            &self.db,
            &AuditEntry {
                agent,
                action,
                alert_id: Some(alert_id),
                vehicle_id: Some(vehicle_id.to_owned()),
                outcome,
                latency_ms,
                details,
            },
        )
        .await
    }

    // ---- the steps ------------------------------------------------------------------

    /// Takes `wf` through its steps until it finishes or has to wait.
    async fn advance(&self, mut wf: Workflow) -> Result<PassReport, AgentError> {
        let mut report = PassReport::default();
        while !wf.state.is_terminal() {
            let from = wf.state;
            let started = Instant::now();
            let (agent, action, outcome, details) = self.step(&mut wf).await?;
            let latency = started.elapsed().as_millis() as u64;
            if !self.save(&wf, from).await? {
                // Another agent took this step first.
                return Ok(report);
            }
            self.audit(
                agent,
                action,
                wf.alert_id,
                &wf.vehicle_id,
                outcome,
                latency,
                details,
            )
            .await?;
            report.steps += 1;
            match wf.state {
                WorkflowState::Confirmed => report.confirmed += 1,
                WorkflowState::Escalated => report.escalated += 1,
                // A channel that failed leaves the workflow where it was: try next pass.
                s if s == from => return Ok(report),
                _ => {}
            }
        }
        Ok(report)
    }

    fn escalate(wf: &mut Workflow, reason: String) -> (&'static str, Outcome, serde_json::Value) {
        let details = json!({ "reason": reason });
        wf.escalation_reason = Some(reason);
        wf.state = WorkflowState::Escalated;
        ("escalate", Outcome::Escalated, details)
    }

    /// One step of `wf`; returns what to audit (agent, action, outcome, details).
    async fn step(
        &self,
        wf: &mut Workflow,
    ) -> Result<(&'static str, &'static str, Outcome, serde_json::Value), AgentError> {
        match wf.state {
            WorkflowState::Pending => {
                let diagnosis = self.diagnose(wf);
                let details = json!({
                    "component": wf.component.map(Component::name),
                    "failure_mode": diagnosis.as_ref().map(|d| d.failure_mode.clone()),
                    "confidence": diagnosis.as_ref().map(|d| d.confidence),
                    "estimated_cost": diagnosis.as_ref().map(|d| d.estimated_cost),
                    "downtime_hours": diagnosis.as_ref().map(|d| d.downtime_hours),
                });
                wf.diagnosis = diagnosis;
                wf.state = WorkflowState::Diagnosed;
                Ok(("diagnosis", "diagnose", Outcome::Success, details))
            }
            WorkflowState::Diagnosed => self.find_slots(wf).await,
            WorkflowState::Offered => self.engage(wf).await,
            WorkflowState::Booked => self.confirm(wf).await,
            s => Err(AgentError::Workflow(format!(
                "alert {}: no step from state `{}`",
                wf.alert_id,
                s.name()
            ))),
        }
    }

    fn diagnose(&self, wf: &Workflow) -> Option<Diagnosis> {
        let component = wf.component?;
        self.catalogue.diagnose(component, |name| {
            wf.features.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
        })
    }

    /// How long to book: the diagnosis' downtime on the slot grid, within the bounds.
    fn duration_minutes(&self, wf: &Workflow) -> u32 {
        let grid = self.scheduler.config().slot_minutes.max(1);
        let wanted = wf
            .diagnosis
            .as_ref()
            .map_or(60.0, |d| d.downtime_hours * 60.0)
            .ceil()
            .max(f64::from(grid)) as u32;
        let on_grid = wanted.div_ceil(grid) * grid;
        on_grid.min(self.config.max_appointment_minutes.max(grid))
    }

    fn earliest(&self, wf: &Workflow) -> EventTime {
        match self.config.clock {
            Clock::EventTime => wf.pane_end,
            Clock::Wall => EventTime(wf.pane_end.0.max(EventTime::now().0)),
        }
    }

    async fn find_slots(
        &self,
        wf: &mut Workflow,
    ) -> Result<(&'static str, &'static str, Outcome, serde_json::Value), AgentError> {
        let master = |(action, outcome, details)| Ok(("master", action, outcome, details));
        if self.config.clock == Clock::Wall && EventTime::now() > wf.sla_due_at {
            return master(Self::escalate(
                wf,
                format!(
                    "the SLA passed at {} before booking",
                    wf.sla_due_at.to_rfc3339()
                ),
            ));
        }
        let (Some(customer), Some(center)) = (wf.customer_id.clone(), wf.center_id.clone()) else {
            return master(Self::escalate(
                wf,
                "the vehicle has no owner or home service centre in the registry".into(),
            ));
        };
        if !wf.contact_consent || wf.channel.is_none_or(|c| c == ContactChannel::None) {
            return master(Self::escalate(
                wf,
                format!("customer {customer} has not agreed to be contacted"),
            ));
        }
        let duration = self.duration_minutes(wf);
        let earliest = self.earliest(wf);
        // The appointment must start by the SLA: it may end up to its length later.
        let deadline = EventTime(wf.sla_due_at.0 + i64::from(duration) * 60_000);
        // A vehicle with an open appointment (booked by a person, or for an earlier alert)
        // keeps it if it starts in time, else it is moved earlier.
        if let Some(open) = self
            .scheduler
            .open_appointment(&wf.vehicle_id)
            .await
            .map_err(AgentError::Book)?
        {
            let appointment = if open.starts_at <= wf.sla_due_at {
                open
            } else {
                match self
                    .scheduler
                    .reschedule_next(open.appointment_id, earliest, deadline)
                    .await
                {
                    Ok(moved) => moved,
                    Err(e) if e.is_retryable() => return Err(AgentError::Book(e)),
                    Err(e) => {
                        return master(Self::escalate(
                            wf,
                            format!(
                            "open appointment {} starts after the SLA and cannot move earlier: {e}",
                            open.appointment_id
                        ),
                        ))
                    }
                }
            };
            // An appointment for another component now answers this alert too: widened to
            // the whole vehicle, so that the dataflow's anti-join retracts this alert as
            // booked (an appointment for one component only covers that component).
            let booked_for = appointment.component;
            let covering = match self
                .scheduler
                .cover(
                    appointment.appointment_id,
                    wf.component,
                    &format!("alert {}", wf.alert_id),
                )
                .await
            {
                Ok(covering) => Some(covering),
                Err(e) if e.is_retryable() => return Err(AgentError::Book(e)),
                // Closed in the meantime: book afresh below.
                Err(_) => None,
            };
            if let Some(appointment) = covering {
                let covers = appointment
                    .component
                    .map_or("whole vehicle", Component::name);
                let details = json!({ "appointment_id": appointment.appointment_id,
                                      "starts_at": appointment.starts_at.to_rfc3339(),
                                      "booked_for": booked_for.map(Component::name),
                                      "covers": covers });
                wf.appointment_id = Some(appointment.appointment_id);
                wf.state = WorkflowState::Booked;
                return Ok((
                    "scheduling",
                    "use_open_appointment",
                    Outcome::Success,
                    details,
                ));
            }
        }
        let request = SlotRequest {
            vehicle_id: wf.vehicle_id.clone(),
            center_id: Some(center.clone()),
            component: wf.component,
            duration_minutes: duration,
            earliest,
            deadline,
            preferred: None,
        };
        match self.scheduler.find_slots(&request).await {
            Ok(slots) if !slots.is_empty() => {
                let details = json!({ "center_id": center, "duration_minutes": duration,
                                      "slots": slots.len(),
                                      "first": slots[0].starts_at.to_rfc3339() });
                wf.offers = Some(slots);
                wf.state = WorkflowState::Offered;
                Ok(("scheduling", "find_slots", Outcome::Success, details))
            }
            Ok(_) => master(Self::escalate(
                wf,
                format!(
                    "no {duration}-minute slot at {center} starting between {} and the SLA {}",
                    earliest.to_rfc3339(),
                    wf.sla_due_at.to_rfc3339()
                ),
            )),
            Err(e) if e.is_retryable() => Err(AgentError::Book(e)),
            Err(e) => master(Self::escalate(wf, format!("scheduling failed: {e}"))),
        }
    }

    async fn engage(
        &self,
        wf: &mut Workflow,
    ) -> Result<(&'static str, &'static str, Outcome, serde_json::Value), AgentError> {
        let slots = wf.offers.clone().unwrap_or_default();
        let offer = Offer {
            alert_id: wf.alert_id,
            vehicle_id: wf.vehicle_id.clone(),
            customer_id: wf.customer_id.clone().unwrap_or_default(),
            channel: wf.channel.unwrap_or_default(),
            severity: wf.severity,
            component: wf.component,
            summary: wf.diagnosis.as_ref().map_or_else(
                || format!("{} alert needing an inspection", wf.severity.name()),
                |d| d.description.clone(),
            ),
            estimated_cost: wf
                .diagnosis
                .as_ref()
                .map(|d| (d.estimated_cost, self.catalogue.currency.clone())),
            slots: slots.clone(),
            respond_by: wf.sla_due_at,
        };
        let answer = match self.channel.offer(&offer).await {
            Ok(a) => a,
            Err(e) => {
                // The workflow stays `offered`; the next pass offers again.
                let details = json!({ "channel": self.channel.name(), "error": e.to_string() });
                return Ok(("engagement", "offer", Outcome::Retry, details));
            }
        };
        let channel = self.channel.name().to_owned();
        match answer {
            Answer::Accept { index } if index < slots.len() => {
                let slot = slots[index].clone();
                let request = BookRequest {
                    slot: slot.clone(),
                    vehicle_id: wf.vehicle_id.clone(),
                    alert_id: Some(wf.alert_id),
                    component: wf.component,
                    booked_by: "pmi-master-agent".into(),
                    notes: wf.diagnosis.as_ref().map(|d| d.failure_mode.clone()),
                };
                match self.scheduler.book(request).await {
                    Ok(appointment) => {
                        wf.appointment_id = Some(appointment.appointment_id);
                        wf.state = WorkflowState::Booked;
                        let details = json!({ "channel": channel, "answer": "accept",
                            "appointment_id": appointment.appointment_id,
                            "center_id": slot.center_id, "bay": slot.bay,
                            "starts_at": slot.starts_at.to_rfc3339() });
                        Ok(("scheduling", "book", Outcome::Success, details))
                    }
                    Err(e) if e.is_retryable() => Err(AgentError::Book(e)),
                    Err(e @ BookError::VehicleHasOpenAppointment { .. })
                    | Err(e @ BookError::SlotTaken { .. })
                    | Err(e @ BookError::TechnicianBusy { .. })
                    | Err(e @ BookError::NoTechnician { .. }) => {
                        // Lost the slot (or the vehicle got booked meanwhile): look again.
                        wf.state = WorkflowState::Diagnosed;
                        wf.offers = None;
                        let details = json!({ "channel": channel, "conflict": e.to_string() });
                        Ok(("scheduling", "book", Outcome::Retry, details))
                    }
                    Err(e) => Ok((
                        "master",
                        "escalate",
                        Outcome::Escalated,
                        Self::escalate(wf, format!("booking failed: {e}")).2,
                    )),
                }
            }
            Answer::OptOut => {
                self.withdraw_consent(wf).await?;
                let (_, outcome, details) =
                    Self::escalate(wf, "the customer withdrew consent to be contacted".into());
                Ok(("engagement", "offer", outcome, details))
            }
            other => {
                wf.attempts += 1;
                wf.offers = None;
                let details =
                    json!({ "channel": channel, "answer": other, "attempts": wf.attempts });
                if wf.attempts >= self.config.max_offers {
                    let (_, outcome, mut d) = Self::escalate(
                        wf,
                        format!("no slot accepted after {} offers", wf.attempts),
                    );
                    d["answer"] = details["answer"].clone();
                    Ok(("engagement", "offer", outcome, d))
                } else {
                    wf.state = WorkflowState::Diagnosed;
                    Ok(("engagement", "offer", Outcome::Retry, details))
                }
            }
        }
    }

    async fn withdraw_consent(&self, wf: &Workflow) -> Result<(), AgentError> {
        let Some(customer) = &wf.customer_id else {
            return Ok(());
        };
        let d = self.dialect();
        let (no, sql) = match self.db.backend() {
            Backend::Postgres => ("FALSE", "$1"),
            Backend::Sqlite => ("0", "$1"),
        };
        let sql = format!(
            "UPDATE customers SET contact_consent = {no}, consent_updated_at = {now}, \
               updated_at = {now} WHERE customer_id = {sql}",
            now = d.now()
        );
        on_pool!(&self.db, |pool| sqlx::query(&sql)
            .bind(customer)
            .execute(pool)
            .await
            .map(drop)
            .map_err(sql_err("customers")))
    }

    async fn confirm(
        &self,
        wf: &mut Workflow,
    ) -> Result<(&'static str, &'static str, Outcome, serde_json::Value), AgentError> {
        let Some(id) = wf.appointment_id else {
            wf.state = WorkflowState::Diagnosed;
            return Ok((
                "master",
                "confirm",
                Outcome::Retry,
                json!({ "reason": "no appointment" }),
            ));
        };
        let appointment = match self.scheduler.confirm(id).await {
            Ok(a) => a,
            Err(e) if e.is_retryable() => return Err(AgentError::Book(e)),
            Err(e) => {
                // Cancelled or gone meanwhile: schedule again.
                wf.appointment_id = None;
                wf.state = WorkflowState::Diagnosed;
                return Ok((
                    "master",
                    "confirm",
                    Outcome::Retry,
                    json!({ "error": e.to_string() }),
                ));
            }
        };
        let in_sla = appointment.starts_at <= wf.sla_due_at;
        let details = json!({
            "appointment_id": id,
            "starts_at": appointment.starts_at.to_rfc3339(),
            "sla_due_at": wf.sla_due_at.to_rfc3339(),
            "within_sla": in_sla,
        });
        self.db
            .set_alert_status(
                wf.alert_id,
                pmi_sinks::sql::AlertStatus::Acknowledged,
                Some("appointment booked"),
            )
            .await
            .map_err(|e| AgentError::Workflow(e.to_string()))?;
        if in_sla {
            wf.state = WorkflowState::Confirmed;
            Ok(("master", "confirm", Outcome::Success, details))
        } else {
            let (_, outcome, mut d) = Self::escalate(
                wf,
                format!(
                    "appointment {id} starts {} after the SLA {}",
                    appointment.starts_at.to_rfc3339(),
                    wf.sla_due_at.to_rfc3339()
                ),
            );
            d["appointment_id"] = json!(id);
            Ok(("master", "sla_check", outcome, d))
        }
    }
}

/// A workflow row as read (grouped to stay within tuple trait limits).
type Row3 = (
    (
        i64,
        String,
        String,
        String,
        i64,
        i64,
        Option<String>,
        String,
    ),
    (Option<String>, Option<String>, bool, Option<String>),
    (
        Option<String>,
        Option<String>,
        Option<i64>,
        i64,
        Option<String>,
        i64,
        i64,
    ),
);

fn workflow_from_row(row: Row3) -> Result<Workflow, AgentError> {
    let (
        (alert_id, vehicle_id, state, severity, sla, pane, component, features),
        (customer_id, center_id, contact_consent, channel),
        (diagnosis, offers, appointment_id, attempts, escalation_reason, created_at, updated_at),
    ) = row;
    let corrupt = |what: String| AgentError::Workflow(format!("alert {alert_id}: {what}"));
    let features: std::collections::BTreeMap<String, Option<f64>> =
        serde_json::from_str(&features).map_err(|e| corrupt(format!("features: {e}")))?;
    let channel = match channel.as_deref() {
        None => None,
        Some(name) => Some(
            serde_json::from_value::<ContactChannel>(json!(name))
                .map_err(|e| corrupt(format!("preferred_channel `{name}`: {e}")))?,
        ),
    };
    Ok(Workflow {
        alert_id,
        vehicle_id,
        state: WorkflowState::from_name(&state)
            .ok_or_else(|| corrupt(format!("unknown state `{state}`")))?,
        severity: Severity::from_name(&severity)
            .ok_or_else(|| corrupt(format!("unknown severity `{severity}`")))?,
        sla_due_at: EventTime(sla),
        pane_end: EventTime(pane),
        component: component.as_deref().and_then(Component::from_name),
        features: features
            .into_iter()
            .filter_map(|(n, v)| Some((n, v?)))
            .collect(),
        customer_id,
        center_id,
        contact_consent,
        channel,
        diagnosis: diagnosis
            .map(|d| serde_json::from_str(&d))
            .transpose()
            .map_err(|e| corrupt(format!("diagnosis: {e}")))?,
        offers: offers
            .map(|o| serde_json::from_str(&o))
            .transpose()
            .map_err(|e| corrupt(format!("offers: {e}")))?,
        appointment_id,
        attempts: attempts.max(0) as u32,
        escalation_reason,
        created_at,
        updated_at,
    })
}

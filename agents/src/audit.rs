//! The agents' audit log: one row in `agent_audit_log` per action (who, what, which alert
//! and vehicle, outcome, latency, details as JSON). Append-only.

use serde::Serialize;

use pmi_sinks::sql::Database;

use crate::AgentError;

/// How an action ended (the `outcome` column).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Done.
    Success,
    /// Failed; the workflow stays where it was.
    Failure,
    /// Failed for a reason that may pass; tried again later.
    Retry,
    /// Nothing to do (e.g. the alert went away first).
    Skipped,
    /// Handed to a person.
    Escalated,
}

impl Outcome {
    /// The stored name.
    pub const fn name(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Retry => "retry",
            Outcome::Skipped => "skipped",
            Outcome::Escalated => "escalated",
        }
    }
}

/// One audit row.
#[derive(Clone, Debug, Serialize)]
pub struct AuditEntry {
    /// The agent: `master`, `diagnosis`, `scheduling`, `engagement`.
    pub agent: &'static str,
    /// What it did, e.g. `diagnose`, `find_slots`, `offer`, `book`, `confirm`.
    pub action: &'static str,
    /// The alert.
    pub alert_id: Option<i64>,
    /// The vehicle.
    pub vehicle_id: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// How long it took, ms.
    pub latency_ms: u64,
    /// Anything else worth keeping (JSON object).
    pub details: serde_json::Value,
}

/// Appends `entry` to `agent_audit_log`.
pub async fn record(db: &Database, entry: &AuditEntry) -> Result<(), AgentError> {
    let details = entry.details.to_string();
    let latency = entry.latency_ms.min(i64::MAX as u64) as i64;
    let json = match db.backend() {
        pmi_sinks::sql::Backend::Postgres => "$7::jsonb",
        pmi_sinks::sql::Backend::Sqlite => "$7",
    };
    let sql = format!(
        "INSERT INTO agent_audit_log (agent, action, alert_id, vehicle_id, outcome, latency_ms, details) \
         VALUES ($1, $2, $3, $4, $5, $6, {json})"
    );
    macro_rules! insert {
        ($pool:expr) => {
            sqlx::query(&sql)
                .bind(entry.agent)
                .bind(entry.action)
                .bind(entry.alert_id)
                .bind(entry.vehicle_id.as_deref())
                .bind(entry.outcome.name())
                .bind(latency)
                .bind(&details)
                .execute($pool)
                .await
                .map(drop)
        };
    }
    let result = match db {
        Database::Sqlite(pool) => insert!(pool),
        Database::Postgres(pool) => insert!(pool),
    };
    result.map_err(|e| AgentError::sql("agent_audit_log", e))
}

//! `pmi-agents`: the maintenance agents' business logic, testable without a dataflow
//! (DESIGN.md: master with SLAs, diagnosis, scheduling, customer engagement, feedback).
//!
//! - [`master`]: one durable workflow per alert (diagnose → slots within the SLA →
//!   customer → book → confirm), escalation to a human queue, every step audited.
//! - [`diagnosis`]: from an alert's component and the vehicle's features to the likely
//!   failure mode, repair actions, parts, cost and downtime, from a catalogue that is data
//!   (`agents/catalogue/diagnosis.toml`), not code.
//! - [`scheduling`]: free slots at service centres (bays, technicians' skills, business
//!   hours in the centre's time zone, closed days, the customer's preferred times) and
//!   appointments booked, confirmed, cancelled and rescheduled without double bookings,
//!   over SQLite or PostgreSQL.
//! - [`engagement`]: the customer step as an interface ([`CustomerChannel`]); the embedded
//!   default logs the offer and accepts the first slot.
//! - [`audit`]: the `agent_audit_log` rows every agent writes.
#![forbid(unsafe_code)]

pub mod audit;
pub mod diagnosis;
pub mod engagement;
pub mod master;
pub mod scheduling;

pub use diagnosis::{Catalogue, Diagnosis, FailureMode};
pub use engagement::{Answer, ConsoleChannel, CustomerChannel, Offer};
pub use master::{Clock, MasterAgent, MasterConfig, PassReport, Workflow, WorkflowState};
pub use scheduling::{
    Appointment, BookError, BookRequest, Scheduler, SchedulingConfig, Slot, SlotRequest,
};

/// Why an agent could not act.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A query failed; `context` names the table.
    #[error("sql on `{context}`: {source}")]
    Sql {
        /// The table.
        context: &'static str,
        /// The database's error.
        source: sqlx::Error,
    },
    /// The scheduler refused or failed.
    #[error(transparent)]
    Book(#[from] BookError),
    /// A setting is invalid.
    #[error(transparent)]
    Config(pmi_core::ConfigError),
    /// A workflow row is inconsistent or a step is impossible.
    #[error("workflow: {0}")]
    Workflow(String),
}

impl AgentError {
    /// A failed query on `context`.
    pub fn sql(context: &'static str, source: sqlx::Error) -> Self {
        AgentError::Sql { context, source }
    }
}

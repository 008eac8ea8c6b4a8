//! `pmi-agents`: the maintenance agents' business logic, testable without a dataflow
//! (DESIGN.md: master with SLAs, diagnosis, scheduling, customer engagement, feedback).
//!
//! - [`diagnosis`]: from an alert's component and the vehicle's features to the likely
//!   failure mode, repair actions, parts, cost and downtime, from a catalogue that is data
//!   (`agents/catalogue/diagnosis.toml`), not code.
//! - [`scheduling`]: free slots at service centres (bays, technicians' skills, business
//!   hours in the centre's time zone, closed days, the customer's preferred times) and
//!   appointments booked, confirmed, cancelled and rescheduled without double bookings,
//!   over SQLite or PostgreSQL.
#![forbid(unsafe_code)]

pub mod diagnosis;
pub mod scheduling;

pub use diagnosis::{Catalogue, Diagnosis, FailureMode};
pub use scheduling::{
    Appointment, BookError, BookRequest, Scheduler, SchedulingConfig, Slot, SlotRequest,
};

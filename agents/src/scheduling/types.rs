//! The scheduler's vocabulary: requests, slots, appointments and the typed reasons a
//! scheduling operation fails.

use serde::{Deserialize, Serialize};

use pmi_core::{Component, ErrorClass, EventTime};
use pmi_sinks::sql::registry::PreferredTime;

/// Where an appointment is in its life (the `appointments.status` column).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppointmentStatus {
    /// Booked by the agent, not yet agreed with the customer.
    Proposed,
    /// Agreed with the customer.
    Confirmed,
    /// The vehicle is in the workshop.
    InProgress,
    /// Done.
    Completed,
    /// Called off.
    Cancelled,
    /// The vehicle did not come.
    NoShow,
}

impl AppointmentStatus {
    /// Every status.
    pub const ALL: [AppointmentStatus; 6] = [
        AppointmentStatus::Proposed,
        AppointmentStatus::Confirmed,
        AppointmentStatus::InProgress,
        AppointmentStatus::Completed,
        AppointmentStatus::Cancelled,
        AppointmentStatus::NoShow,
    ];

    /// The stored name.
    pub const fn name(self) -> &'static str {
        match self {
            AppointmentStatus::Proposed => "proposed",
            AppointmentStatus::Confirmed => "confirmed",
            AppointmentStatus::InProgress => "in_progress",
            AppointmentStatus::Completed => "completed",
            AppointmentStatus::Cancelled => "cancelled",
            AppointmentStatus::NoShow => "no_show",
        }
    }

    /// Looks a status up by its stored name.
    pub fn from_name(name: &str) -> Option<AppointmentStatus> {
        AppointmentStatus::ALL
            .into_iter()
            .find(|s| s.name() == name)
    }

    /// Whether the appointment holds its bay (proposed, confirmed, in progress).
    pub const fn is_open(self) -> bool {
        matches!(
            self,
            AppointmentStatus::Proposed
                | AppointmentStatus::Confirmed
                | AppointmentStatus::InProgress
        )
    }
}

impl std::fmt::Display for AppointmentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What to find slots for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlotRequest {
    /// The vehicle.
    pub vehicle_id: String,
    /// The centre; `None`: the vehicle's home centre (`vehicles.home_center_id`).
    pub center_id: Option<String>,
    /// What needs repair: only technicians with this skill are scheduled. `None`: any
    /// technician.
    pub component: Option<Component>,
    /// How long the job takes, in minutes.
    pub duration_minutes: u32,
    /// No slot starts before this.
    pub earliest: EventTime,
    /// No slot ends after this (the urgency window's end, e.g. the alert's SLA).
    pub deadline: EventTime,
    /// Preferred times; `None`: the customer's (`customers.preferred_times`), if any.
    pub preferred: Option<Vec<PreferredTime>>,
}

/// A bookable time in one bay of one centre.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Slot {
    /// The centre.
    pub center_id: String,
    /// The bay, 1-based.
    pub bay: u32,
    /// The technician, when the centre schedules technicians.
    pub technician: Option<String>,
    /// Start, UTC.
    pub starts_at: EventTime,
    /// End (exclusive), UTC.
    pub ends_at: EventTime,
}

/// What to book.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BookRequest {
    /// Where and when (usually one of [`super::Scheduler::find_slots`]'s offers). At a
    /// centre with `technicians` rows, a named technician must be one of them, active and
    /// skilled for the component; with none named, a free qualified one is assigned. At a
    /// centre without such rows the technician is free text (still never double-booked).
    pub slot: Slot,
    /// The vehicle.
    pub vehicle_id: String,
    /// The alert this appointment answers: booking again for an alert with an open
    /// appointment returns that appointment.
    pub alert_id: Option<i64>,
    /// What needs repair.
    pub component: Option<Component>,
    /// Who booked (agent or person), for the audit trail.
    pub booked_by: String,
    /// Free text.
    pub notes: Option<String>,
}

/// A row of `appointments`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Appointment {
    /// Id.
    pub appointment_id: i64,
    /// The vehicle.
    pub vehicle_id: String,
    /// The centre.
    pub center_id: String,
    /// The bay, 1-based.
    pub bay: u32,
    /// The technician, if assigned.
    pub technician: Option<String>,
    /// The alert it answers.
    pub alert_id: Option<i64>,
    /// Start, UTC.
    pub starts_at: EventTime,
    /// End (exclusive), UTC.
    pub ends_at: EventTime,
    /// Where it is in its life.
    pub status: AppointmentStatus,
    /// What needs repair.
    pub component: Option<Component>,
    /// Who booked.
    pub booked_by: Option<String>,
    /// Free text (cancellation reasons are appended).
    pub notes: Option<String>,
    /// When it was booked.
    pub created_at: EventTime,
    /// When it last changed.
    pub updated_at: EventTime,
}

impl Appointment {
    /// The slot it holds.
    pub fn slot(&self) -> Slot {
        Slot {
            center_id: self.center_id.clone(),
            bay: self.bay,
            technician: self.technician.clone(),
            starts_at: self.starts_at,
            ends_at: self.ends_at,
        }
    }
}

/// Which appointments to list; every field that is set must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppointmentFilter {
    /// With this status.
    pub status: Option<AppointmentStatus>,
    /// Of this vehicle.
    pub vehicle_id: Option<String>,
    /// At this centre.
    pub center_id: Option<String>,
}

/// Why a scheduling operation failed. Each variant says what is at fault;
/// [`BookError::class`] says whose fault and [`BookError::is_retryable`] whether the same
/// call may succeed later.
#[derive(Debug, thiserror::Error)]
pub enum BookError {
    /// The bay is booked (by another appointment) for part of the slot.
    #[error("bay {bay} of `{center_id}` is taken at {starts_at:?}")]
    SlotTaken {
        /// The centre.
        center_id: String,
        /// The bay.
        bay: u32,
        /// The slot's start.
        starts_at: EventTime,
    },
    /// The technician is booked for part of the slot.
    #[error("technician `{technician}` is busy at {starts_at:?}")]
    TechnicianBusy {
        /// The technician.
        technician: String,
        /// The slot's start.
        starts_at: EventTime,
    },
    /// The technician does not work at the centre, is inactive or lacks the skill.
    #[error("technician `{technician}` cannot take this job (unknown, inactive or lacks the skill {component:?})")]
    TechnicianNotQualified {
        /// The technician.
        technician: String,
        /// The job's component.
        component: Option<Component>,
    },
    /// The centre schedules technicians and none with the skill is free for the slot.
    #[error(
        "no technician of `{center_id}` with the skill {component:?} is free at {starts_at:?}"
    )]
    NoTechnician {
        /// The centre.
        center_id: String,
        /// The job's component.
        component: Option<Component>,
        /// The slot's start.
        starts_at: EventTime,
    },
    /// The vehicle already has an open appointment (cancel or reschedule that one).
    #[error("the vehicle already has open appointment {appointment_id}")]
    VehicleHasOpenAppointment {
        /// The open appointment.
        appointment_id: i64,
    },
    /// The slot is not inside the centre's business hours (or falls on a closed day).
    #[error("{starts_at:?} .. {ends_at:?} is outside the business hours of `{center_id}`")]
    OutsideHours {
        /// The centre.
        center_id: String,
        /// The slot's start.
        starts_at: EventTime,
        /// The slot's end.
        ends_at: EventTime,
    },
    /// No free slot in the window.
    #[error("no free slot for `{vehicle_id}` in the window")]
    NoSlot {
        /// The vehicle.
        vehicle_id: String,
    },
    /// No such centre.
    #[error("unknown service centre `{center_id}`")]
    UnknownCenter {
        /// The centre.
        center_id: String,
    },
    /// No such bay at the centre.
    #[error("`{center_id}` has bays 1 ..= {bays}, not {bay}")]
    UnknownBay {
        /// The centre.
        center_id: String,
        /// The bay asked for.
        bay: u32,
        /// The centre's bays.
        bays: u32,
    },
    /// No such vehicle in the registry.
    #[error("unknown vehicle `{vehicle_id}`")]
    UnknownVehicle {
        /// The vehicle.
        vehicle_id: String,
    },
    /// No centre given and the vehicle has no home centre.
    #[error("vehicle `{vehicle_id}` has no home centre: name one")]
    NoCenter {
        /// The vehicle.
        vehicle_id: String,
    },
    /// No such appointment.
    #[error("unknown appointment {appointment_id}")]
    UnknownAppointment {
        /// The appointment.
        appointment_id: i64,
    },
    /// The appointment's status does not allow the action (e.g. rescheduling a completed
    /// one).
    #[error("appointment {appointment_id} is {status}: cannot {action}")]
    InvalidStatus {
        /// The appointment.
        appointment_id: i64,
        /// Its status.
        status: AppointmentStatus,
        /// What was asked.
        action: &'static str,
    },
    /// A request field is invalid.
    #[error("invalid request: {field}: {message}")]
    InvalidRequest {
        /// The field, e.g. `duration_minutes` or `preferred[0].to`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A centre's stored data is unusable (e.g. an unknown time zone).
    #[error("service centre `{center_id}`: {field}: {message}")]
    InvalidCenter {
        /// The centre.
        center_id: String,
        /// The column at fault, e.g. `time_zone` or `business_hours[2].close`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A stored row is unusable (unknown status or component, bad JSON).
    #[error("{context}: {message}")]
    Corrupt {
        /// Table and row.
        context: String,
        /// What is wrong.
        message: String,
    },
    /// The database failed.
    #[error("{context}: {source}")]
    Sql {
        /// What was being done.
        context: String,
        /// The error.
        source: sqlx::Error,
    },
}

impl BookError {
    /// Whose fault: the request's or the stored data's (user), the database's (external),
    /// or PMI's (internal: a corrupt row).
    pub fn class(&self) -> ErrorClass {
        match self {
            BookError::Sql { .. } => ErrorClass::External,
            BookError::Corrupt { .. } => ErrorClass::Internal,
            _ => ErrorClass::User,
        }
    }

    /// Whether the same call may succeed if retried (the database was away or busy).
    /// A taken slot is not: ask for new slots instead.
    pub fn is_retryable(&self) -> bool {
        match self {
            BookError::Sql { source, .. } => pmi_sinks::sql::is_retryable(source),
            _ => false,
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> BookError {
        BookError::InvalidRequest {
            field: field.into(),
            message: message.into(),
        }
    }
}

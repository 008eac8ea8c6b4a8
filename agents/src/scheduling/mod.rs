//! The scheduling agent: finds free slots at service centres and books, confirms, cancels
//! and reschedules appointments, never booking a bay or a technician twice.
//!
//! - **Where and when a centre works** comes from the registry: `service_centers`
//!   (`time_zone`, `business_hours` as local-time spans, several per day allowed, `bays`),
//!   `technicians` (skills = component names, only active ones), `service_center_closures`
//!   (closed local dates). A centre without business hours gets
//!   [`SchedulingConfig::default_hours`] (Monday to Friday, 08:00 to 18:00). Local times
//!   become UTC per date through the IANA zone, so slots stay at 08:00 on the wall clock
//!   across DST changes (see `hours.rs` for gaps and ambiguous times).
//! - **Slots** ([`Scheduler::find_slots`]) start at opening time plus multiples of
//!   [`SchedulingConfig::slot_minutes`], lie wholly inside one opening span, inside the
//!   request's window (`earliest ≤ start`, `end ≤ deadline`: the urgency window), in a bay
//!   free for the whole span and, at centres that schedule technicians, with a technician
//!   who has the component's skill and is free too. Slots matching the customer's preferred
//!   times come first, then the earliest; offers do not overlap each other while there are
//!   enough of them (so they are real alternatives, not one start in several bays).
//! - **Booking** ([`Scheduler::book`]) happens in one transaction that serialises bookings
//!   per centre (PostgreSQL: the centre's row `FOR UPDATE`; SQLite: `BEGIN IMMEDIATE`, the
//!   database's write lock) and re-checks everything: hours, closed days, bay and technician
//!   overlaps, the vehicle's open appointment. The schema backs this with unique partial
//!   indexes (one open appointment per vehicle, per alert, per bay and start), which also
//!   catch bookings for one vehicle racing at two centres. Booking again for an alert that
//!   has an open appointment returns that appointment, so a restarted workflow never
//!   double-books.
//! - Every failure is a [`BookError`] naming what is at fault.

mod config;
mod hours;
pub(crate) mod store;
mod types;

use std::collections::BTreeSet;

use chrono_tz::Tz;

use pmi_core::{Component, ConfigError, EventTime};
use pmi_sinks::sql::registry::{OpeningHours, PreferredTime};
use pmi_sinks::sql::Database;

pub use config::{weekday_hours, SchedulingConfig};
pub use types::{
    Appointment, AppointmentFilter, AppointmentStatus, BookError, BookRequest, Slot, SlotRequest,
};

use hours::{Calendar, Preferences, WeekHours};
use store::{AppointmentRow, BusyRow, Dialect, ListFilter, NewAppointment, Store};

/// Runs `$body` inside a transaction on whichever pool `$db` holds, with `$conn` bound to
/// the transaction's connection (`&mut SqliteConnection` or `&mut PgConnection`); commits
/// when the body returns `Ok`, rolls back otherwise. `$write`: take the write lock at once
/// (SQLite `BEGIN IMMEDIATE`).
macro_rules! in_transaction {
    ($db:expr, $write:expr, |$conn:ident| $body:expr) => {
        match $db {
            Database::Sqlite(pool) => {
                let d = Dialect(pmi_sinks::sql::Backend::Sqlite);
                let begin = if $write { d.begin_write() } else { "BEGIN" };
                let mut tx = pool.begin_with(begin).await.map_err(sql("begin"))?;
                let $conn: &mut sqlx::SqliteConnection = &mut *tx;
                let result = $body;
                finish(tx, result).await
            }
            Database::Postgres(pool) => {
                let mut tx = pool.begin().await.map_err(sql("begin"))?;
                let $conn: &mut sqlx::PgConnection = &mut *tx;
                let result = $body;
                finish(tx, result).await
            }
        }
    };
}

/// Commits `tx` when `result` is `Ok`, rolls it back otherwise.
async fn finish<DB: sqlx::Database, T>(
    tx: sqlx::Transaction<'_, DB>,
    result: Result<T, BookError>,
) -> Result<T, BookError> {
    match result {
        Ok(value) => {
            tx.commit().await.map_err(sql("commit"))?;
            Ok(value)
        }
        Err(e) => {
            // A failed rollback leaves the connection to the pool, which rolls back.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

fn sql(context: &'static str) -> impl Fn(sqlx::Error) -> BookError {
    move |source| BookError::Sql {
        context: context.to_owned(),
        source,
    }
}

fn is_unique_violation(e: &BookError) -> bool {
    matches!(e, BookError::Sql { source: sqlx::Error::Database(db), .. } if db.is_unique_violation())
}

const MINUTE_MS: i64 = 60_000;

/// Rounds of "find slots, try to book them" before giving up with
/// [`BookError::NoSlot`] (others keep taking the offered slots).
const BOOKING_ROUNDS: usize = 3;

/// A centre as the scheduler needs it.
#[derive(Clone, Debug)]
struct Center {
    center_id: String,
    tz: Tz,
    week: WeekHours,
    bays: u32,
}

/// A technician: id and skills.
#[derive(Clone, Debug)]
struct Tech {
    id: String,
    skills: Vec<Component>,
}

impl Tech {
    fn can_do(&self, component: Option<Component>) -> bool {
        component.is_none_or(|c| self.skills.contains(&c))
    }
}

/// An open appointment blocking time.
#[derive(Clone, Debug)]
struct Busy {
    center_id: String,
    bay: u32,
    technician: Option<String>,
    start: i64,
    end: i64,
}

impl Busy {
    fn overlaps(&self, start: i64, end: i64) -> bool {
        self.start < end && start < self.end
    }
}

/// What a booking transaction writes: a new appointment, or an existing one moved.
enum Target<'a> {
    New(&'a BookRequest),
    Move { appointment_id: i64, slot: &'a Slot },
}

/// The scheduling agent over a [`Database`].
#[derive(Clone, Debug)]
pub struct Scheduler {
    db: Database,
    config: SchedulingConfig,
    default_week: WeekHours,
}

impl Scheduler {
    /// A scheduler over `db` (migrated) with `config` (checked).
    pub fn new(db: Database, config: SchedulingConfig) -> Result<Scheduler, ConfigError> {
        config.validate()?;
        let default_week = WeekHours::parse(&config.default_hours, "default_hours")
            .map_err(|(field, message)| ConfigError::new(format!("scheduling.{field}"), message))?;
        Ok(Scheduler {
            db,
            config,
            default_week,
        })
    }

    /// The settings.
    pub fn config(&self) -> &SchedulingConfig {
        &self.config
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Free slots for `request`, best first (preferred times, then earliest), at most
    /// [`SchedulingConfig::max_offers`]. Empty when nothing is free in the window.
    pub async fn find_slots(&self, request: &SlotRequest) -> Result<Vec<Slot>, BookError> {
        in_transaction!(&self.db, false, |conn| self
            .offers(conn, request, None)
            .await)
    }

    /// Books `request.slot` (status `proposed`), re-checking it in a transaction that
    /// serialises bookings per centre. With an alert that already has an open appointment,
    /// returns that appointment and books nothing.
    pub async fn book(&self, request: BookRequest) -> Result<Appointment, BookError> {
        let booked = in_transaction!(&self.db, true, |conn| self
            .write_booking(conn, Target::New(&request))
            .await);
        let id = match booked {
            Ok((id, false)) => {
                tracing::debug!(appointment_id = id, alert_id = ?request.alert_id, "alert already booked");
                id
            }
            Ok((id, true)) => {
                tracing::info!(
                    appointment_id = id,
                    vehicle_id = %request.vehicle_id,
                    center_id = %request.slot.center_id,
                    bay = request.slot.bay,
                    starts_at = %request.slot.starts_at.to_rfc3339(),
                    alert_id = ?request.alert_id,
                    "appointment booked"
                );
                id
            }
            // Lost a race the per-centre lock does not cover (the same vehicle or alert
            // booked at another centre at the same moment): say what won.
            Err(e) if is_unique_violation(&e) => {
                if let Some(alert) = request.alert_id {
                    if let Some(existing) = self.open_for_alert(alert).await? {
                        return Ok(existing);
                    }
                }
                return Err(self
                    .conflict(&request.vehicle_id, None, &request.slot)
                    .await?);
            }
            Err(e) => return Err(e),
        };
        self.appointment(id)
            .await?
            .ok_or(BookError::UnknownAppointment { appointment_id: id })
    }

    /// Finds slots for `request` and books the first that is still free, asking again when
    /// others took them (up to three rounds); [`BookError::NoSlot`] when none is left.
    pub async fn book_first_free(
        &self,
        request: &SlotRequest,
        alert_id: Option<i64>,
        booked_by: &str,
        notes: Option<&str>,
    ) -> Result<Appointment, BookError> {
        for _ in 0..BOOKING_ROUNDS {
            let offers = self.find_slots(request).await?;
            if offers.is_empty() {
                break;
            }
            for slot in offers {
                let booking = BookRequest {
                    slot,
                    vehicle_id: request.vehicle_id.clone(),
                    alert_id,
                    component: request.component,
                    booked_by: booked_by.to_owned(),
                    notes: notes.map(str::to_owned),
                };
                match self.book(booking).await {
                    Err(e) if is_taken(&e) => continue,
                    other => return other,
                }
            }
        }
        Err(BookError::NoSlot {
            vehicle_id: request.vehicle_id.clone(),
        })
    }

    /// Confirms a proposed appointment (a confirmed one is returned as it is).
    pub async fn confirm(&self, appointment_id: i64) -> Result<Appointment, BookError> {
        self.transition(appointment_id, "confirm", None, |s| match s {
            AppointmentStatus::Proposed => Some(Some(AppointmentStatus::Confirmed)),
            AppointmentStatus::Confirmed => Some(None),
            _ => None,
        })
        .await
    }

    /// Cancels a proposed or confirmed appointment, appending `reason` to its notes (a
    /// cancelled one is returned as it is). Frees its bay and technician.
    pub async fn cancel(
        &self,
        appointment_id: i64,
        reason: &str,
    ) -> Result<Appointment, BookError> {
        let note = format!("cancelled: {reason}");
        self.transition(appointment_id, "cancel", Some(&note), |s| match s {
            AppointmentStatus::Proposed | AppointmentStatus::Confirmed => {
                Some(Some(AppointmentStatus::Cancelled))
            }
            AppointmentStatus::Cancelled => Some(None),
            _ => None,
        })
        .await
    }

    /// Moves an appointment to `slot`, keeping its id, with the same checks as
    /// [`Scheduler::book`] (its own old slot does not count as taken). A proposed or
    /// confirmed appointment keeps its status; a no-show is booked again as confirmed.
    pub async fn reschedule(
        &self,
        appointment_id: i64,
        slot: Slot,
    ) -> Result<Appointment, BookError> {
        let moved = in_transaction!(&self.db, true, |conn| self
            .write_booking(
                conn,
                Target::Move {
                    appointment_id,
                    slot: &slot,
                }
            )
            .await);
        match moved {
            Ok(_) => tracing::info!(
                appointment_id,
                center_id = %slot.center_id,
                bay = slot.bay,
                starts_at = %slot.starts_at.to_rfc3339(),
                "appointment rescheduled"
            ),
            Err(e) if is_unique_violation(&e) => {
                let vehicle = self
                    .appointment(appointment_id)
                    .await?
                    .ok_or(BookError::UnknownAppointment { appointment_id })?
                    .vehicle_id;
                return Err(self.conflict(&vehicle, Some(appointment_id), &slot).await?);
            }
            Err(e) => return Err(e),
        }
        self.appointment(appointment_id)
            .await?
            .ok_or(BookError::UnknownAppointment { appointment_id })
    }

    /// Moves an appointment to the first free slot (of the same length, at the same
    /// centre, another start) in `[earliest, deadline]`, preferred times first.
    pub async fn reschedule_next(
        &self,
        appointment_id: i64,
        earliest: EventTime,
        deadline: EventTime,
    ) -> Result<Appointment, BookError> {
        let current = self
            .appointment(appointment_id)
            .await?
            .ok_or(BookError::UnknownAppointment { appointment_id })?;
        reschedulable(&current)?;
        let duration = (current.ends_at.0 - current.starts_at.0) / MINUTE_MS;
        let request = SlotRequest {
            vehicle_id: current.vehicle_id.clone(),
            center_id: Some(current.center_id.clone()),
            component: current.component,
            duration_minutes: u32::try_from(duration).unwrap_or(u32::MAX),
            earliest,
            deadline,
            preferred: None,
        };
        for _ in 0..BOOKING_ROUNDS {
            let offers = in_transaction!(&self.db, false, |conn| self
                .offers(conn, &request, Some(&current))
                .await)?;
            if offers.is_empty() {
                break;
            }
            for slot in offers {
                match self.reschedule(appointment_id, slot).await {
                    Err(e) if is_taken(&e) => continue,
                    other => return other,
                }
            }
        }
        Err(BookError::NoSlot {
            vehicle_id: current.vehicle_id,
        })
    }

    /// One appointment.
    pub async fn appointment(&self, appointment_id: i64) -> Result<Option<Appointment>, BookError> {
        let row = in_transaction!(&self.db, false, |conn| conn
            .appointment(appointment_id, false)
            .await
            .map_err(sql("reading appointment")))?;
        row.map(appointment_from_row).transpose()
    }

    /// Appointments matching `filter`, by start.
    pub async fn appointments(
        &self,
        filter: &AppointmentFilter,
    ) -> Result<Vec<Appointment>, BookError> {
        self.list(ListFilter {
            status: filter.status.map(AppointmentStatus::name),
            vehicle_id: filter.vehicle_id.as_deref(),
            center_id: filter.center_id.as_deref(),
            open_only: false,
        })
        .await
    }

    /// Makes an open appointment cover `component` too: one that names another component
    /// is widened to the whole vehicle (its component cleared, a note appended), so that
    /// it answers every alert of the vehicle; one that already covers it (the same
    /// component, or the whole vehicle) is left as it is. Returns the appointment after.
    pub async fn cover(
        &self,
        appointment_id: i64,
        component: Option<Component>,
        reason: &str,
    ) -> Result<Appointment, BookError> {
        in_transaction!(&self.db, true, |conn| async {
            let current = locked_appointment(conn, appointment_id).await?;
            if !current.status.is_open() {
                return Err(BookError::InvalidStatus {
                    appointment_id,
                    status: current.status,
                    action: "cover",
                });
            }
            match current.component {
                Some(booked) if Some(booked) != component => {
                    let note = format!("widened to the whole vehicle: {reason}");
                    conn.cover_vehicle(appointment_id, &note)
                        .await
                        .map_err(sql("updating appointment"))?;
                    tracing::info!(
                        appointment_id,
                        from = booked.name(),
                        "appointment widened to the whole vehicle"
                    );
                    Ok(())
                }
                _ => Ok(()),
            }
        }
        .await)?;
        self.appointment(appointment_id)
            .await?
            .ok_or(BookError::UnknownAppointment { appointment_id })
    }

    /// The vehicle's open (proposed, confirmed or in-progress) appointment.
    pub async fn open_appointment(
        &self,
        vehicle_id: &str,
    ) -> Result<Option<Appointment>, BookError> {
        let open = self
            .list(ListFilter {
                status: None,
                vehicle_id: Some(vehicle_id),
                center_id: None,
                open_only: true,
            })
            .await?;
        Ok(open.into_iter().next())
    }

    async fn list(&self, filter: ListFilter<'_>) -> Result<Vec<Appointment>, BookError> {
        let rows = in_transaction!(&self.db, false, |conn| conn
            .list(&filter)
            .await
            .map_err(sql("listing appointments")))?;
        rows.into_iter().map(appointment_from_row).collect()
    }

    async fn open_for_alert(&self, alert_id: i64) -> Result<Option<Appointment>, BookError> {
        let id = in_transaction!(&self.db, false, |conn| conn
            .open_by_alert(alert_id)
            .await
            .map_err(sql("reading appointments")))?;
        match id {
            Some(id) => self.appointment(id).await,
            None => Ok(None),
        }
    }

    /// After a unique-index violation: the vehicle's open appointment, or a taken slot.
    async fn conflict(
        &self,
        vehicle_id: &str,
        exclude: Option<i64>,
        slot: &Slot,
    ) -> Result<BookError, BookError> {
        let open = in_transaction!(&self.db, false, |conn| conn
            .open_by_vehicle(vehicle_id, exclude.unwrap_or(-1))
            .await
            .map_err(sql("reading appointments")))?;
        Ok(match open {
            Some(appointment_id) => BookError::VehicleHasOpenAppointment { appointment_id },
            None => BookError::SlotTaken {
                center_id: slot.center_id.clone(),
                bay: slot.bay,
                starts_at: slot.starts_at,
            },
        })
    }

    /// Changes an appointment's status as `next` says (`None`: not allowed from this
    /// status; `Some(None)`: already there, nothing to do).
    async fn transition(
        &self,
        appointment_id: i64,
        action: &'static str,
        note: Option<&str>,
        next: impl Fn(AppointmentStatus) -> Option<Option<AppointmentStatus>>,
    ) -> Result<Appointment, BookError> {
        in_transaction!(&self.db, true, |conn| async {
            let current = locked_appointment(conn, appointment_id).await?;
            match next(current.status) {
                None => Err(BookError::InvalidStatus {
                    appointment_id,
                    status: current.status,
                    action,
                }),
                Some(None) => Ok(()),
                Some(Some(status)) => {
                    conn.set_status(appointment_id, status.name(), note)
                        .await
                        .map_err(sql("updating appointment"))?;
                    tracing::info!(
                        appointment_id,
                        status = status.name(),
                        action,
                        "appointment status changed"
                    );
                    Ok(())
                }
            }
        }
        .await)?;
        self.appointment(appointment_id)
            .await?
            .ok_or(BookError::UnknownAppointment { appointment_id })
    }

    // -----------------------------------------------------------------------------------
    // Inside a transaction

    async fn load_center<C: Store>(
        &self,
        conn: &mut C,
        center_id: &str,
        lock: bool,
    ) -> Result<Center, BookError> {
        let (center_id, zone, hours, bays) = conn
            .center(center_id, lock)
            .await
            .map_err(sql("reading service centre"))?
            .ok_or_else(|| BookError::UnknownCenter {
                center_id: center_id.to_owned(),
            })?;
        let bad = |field: &str, message: String| BookError::InvalidCenter {
            center_id: center_id.clone(),
            field: field.to_owned(),
            message,
        };
        let tz: Tz = zone
            .parse()
            .map_err(|_| bad("time_zone", format!("`{zone}` is not an IANA time zone")))?;
        let hours: Vec<OpeningHours> =
            serde_json::from_str(&hours).map_err(|e| bad("business_hours", e.to_string()))?;
        let week = WeekHours::parse(&hours, "business_hours")
            .map_err(|(field, message)| bad(&field, message))?;
        let week = if week.is_empty() {
            self.default_week.clone()
        } else {
            week
        };
        let bays = u32::try_from(bays).map_err(|_| bad("bays", format!("{bays}")))?;
        Ok(Center {
            center_id,
            tz,
            week,
            bays,
        })
    }

    async fn calendar<C: Store>(
        &self,
        conn: &mut C,
        center: &Center,
        from: i64,
        to: i64,
    ) -> Result<Calendar, BookError> {
        let probe = Calendar::new(center.tz, center.week.clone(), BTreeSet::new());
        let closed = match probe.local_dates(from, to) {
            Some((first, last)) => conn
                .closures(&center.center_id, first, last)
                .await
                .map_err(sql("reading closures"))?
                .into_iter()
                .collect(),
            None => BTreeSet::new(),
        };
        Ok(Calendar::new(center.tz, center.week.clone(), closed))
    }

    async fn technicians<C: Store>(
        &self,
        conn: &mut C,
        center_id: &str,
    ) -> Result<Vec<Tech>, BookError> {
        let rows = conn
            .technicians(center_id)
            .await
            .map_err(sql("reading technicians"))?;
        rows.into_iter()
            .map(|(id, skills)| {
                let skills: Vec<Component> =
                    serde_json::from_str(&skills).map_err(|e| BookError::Corrupt {
                        context: format!("technicians `{id}`: skills"),
                        message: e.to_string(),
                    })?;
                Ok(Tech { id, skills })
            })
            .collect()
    }

    async fn busy<C: Store>(
        &self,
        conn: &mut C,
        center_id: &str,
        from: i64,
        to: i64,
        exclude: Option<i64>,
    ) -> Result<Vec<Busy>, BookError> {
        let rows: Vec<BusyRow> = conn
            .busy(center_id, from, to, exclude.unwrap_or(-1))
            .await
            .map_err(sql("reading appointments"))?;
        Ok(rows
            .into_iter()
            .map(|(_, center_id, bay, technician, start, end)| Busy {
                center_id,
                bay: u32::try_from(bay).unwrap_or(0),
                technician,
                start,
                end,
            })
            .collect())
    }

    /// The offers for `request`; `moving`: an appointment being rescheduled (its own time
    /// is not busy, and its current start is not offered).
    async fn offers<C: Store>(
        &self,
        conn: &mut C,
        request: &SlotRequest,
        moving: Option<&Appointment>,
    ) -> Result<Vec<Slot>, BookError> {
        let (earliest, deadline) = (request.earliest.0, request.deadline.0);
        let duration = i64::from(request.duration_minutes) * MINUTE_MS;
        if request.vehicle_id.is_empty() {
            return Err(BookError::invalid("vehicle_id", "must not be empty"));
        }
        if request.duration_minutes == 0 || request.duration_minutes > hours::DAY_MINUTES {
            return Err(BookError::invalid(
                "duration_minutes",
                "must be in 1 ..= 1440",
            ));
        }
        if deadline < earliest.saturating_add(duration) {
            return Err(BookError::invalid(
                "deadline",
                "must leave at least `duration_minutes` after `earliest`",
            ));
        }
        if deadline.saturating_sub(earliest) > i64::from(self.config.max_window_days) * 86_400_000 {
            return Err(BookError::invalid(
                "deadline",
                format!(
                    "the window is longer than scheduling.max_window_days ({})",
                    self.config.max_window_days
                ),
            ));
        }
        let (home, customer_times) = conn
            .vehicle(&request.vehicle_id)
            .await
            .map_err(sql("reading vehicle"))?
            .ok_or_else(|| BookError::UnknownVehicle {
                vehicle_id: request.vehicle_id.clone(),
            })?;
        let center_id = request
            .center_id
            .clone()
            .or(home)
            .ok_or_else(|| BookError::NoCenter {
                vehicle_id: request.vehicle_id.clone(),
            })?;
        let preferences = match &request.preferred {
            Some(times) => Preferences::parse(times, "preferred")
                .map_err(|(field, message)| BookError::InvalidRequest { field, message })?,
            None => customer_preferences(&request.vehicle_id, customer_times.as_deref())?,
        };
        let center = self.load_center(conn, &center_id, false).await?;
        let calendar = self.calendar(conn, &center, earliest, deadline).await?;
        let all_techs = self.technicians(conn, &center_id).await?;
        let techs: Vec<&Tech> = all_techs
            .iter()
            .filter(|t| t.can_do(request.component))
            .collect();
        if !all_techs.is_empty() && techs.is_empty() {
            return Ok(Vec::new());
        }
        let busy = self
            .busy(
                conn,
                &center_id,
                earliest,
                deadline,
                moving.map(|a| a.appointment_id),
            )
            .await?;
        let slot_ms = i64::from(self.config.slot_minutes) * MINUTE_MS;
        let mut free: Vec<(bool, Slot)> = Vec::new();
        for (open, close) in calendar.spans(earliest, deadline) {
            // The first start on the span's grid at or after `earliest`.
            let skip = (earliest - open).max(0);
            let mut start = open + (skip + slot_ms - 1) / slot_ms * slot_ms;
            while start + duration <= close.min(deadline) {
                let end = start + duration;
                if moving.is_some_and(|a| a.starts_at.0 == start) {
                    start += slot_ms;
                    continue;
                }
                let bay = (1..=center.bays).find(|&bay| {
                    !busy
                        .iter()
                        .any(|b| b.center_id == center_id && b.bay == bay && b.overlaps(start, end))
                });
                let technician = if all_techs.is_empty() {
                    Some(None)
                } else {
                    techs
                        .iter()
                        .find(|t| {
                            !busy.iter().any(|b| {
                                b.technician.as_deref() == Some(t.id.as_str())
                                    && b.overlaps(start, end)
                            })
                        })
                        .map(|t| Some(t.id.clone()))
                };
                if let (Some(bay), Some(technician)) = (bay, technician) {
                    let preferred = preferences.matches(&calendar, start, end);
                    free.push((
                        preferred,
                        Slot {
                            center_id: center_id.clone(),
                            bay,
                            technician,
                            starts_at: EventTime(start),
                            ends_at: EventTime(end),
                        },
                    ));
                }
                start += slot_ms;
            }
        }
        // Preferred first, then earliest (spans come in time order; the sort is stable).
        free.sort_by_key(|(preferred, slot)| (!preferred, slot.starts_at));
        Ok(spread(
            free.into_iter().map(|(_, s)| s).collect(),
            self.config.max_offers,
        ))
    }

    /// Checks and writes a booking inside a transaction that holds the centre's lock;
    /// returns the appointment's id and whether it was written (`false`: the alert's open
    /// appointment, found).
    async fn write_booking<C: Store>(
        &self,
        conn: &mut C,
        target: Target<'_>,
    ) -> Result<(i64, bool), BookError> {
        let slot = match &target {
            Target::New(request) => &request.slot,
            Target::Move { slot, .. } => *slot,
        };
        let center = self.load_center(conn, &slot.center_id, true).await?;
        // Who and what is being booked; for a move, the appointment's own.
        let (vehicle_id, component, exclude, status) = match &target {
            Target::New(request) => {
                if let Some(alert) = request.alert_id {
                    let open = conn
                        .open_by_alert(alert)
                        .await
                        .map_err(sql("reading appointments"))?;
                    if let Some(id) = open {
                        return Ok((id, false));
                    }
                }
                let known = conn
                    .vehicle(&request.vehicle_id)
                    .await
                    .map_err(sql("reading vehicle"))?;
                if known.is_none() {
                    return Err(BookError::UnknownVehicle {
                        vehicle_id: request.vehicle_id.clone(),
                    });
                }
                (
                    request.vehicle_id.clone(),
                    request.component,
                    None,
                    AppointmentStatus::Proposed,
                )
            }
            Target::Move { appointment_id, .. } => {
                let row = conn
                    .appointment(*appointment_id, true)
                    .await
                    .map_err(sql("reading appointment"))?
                    .ok_or(BookError::UnknownAppointment {
                        appointment_id: *appointment_id,
                    })?;
                let current = appointment_from_row(row)?;
                let status = reschedulable(&current)?;
                (
                    current.vehicle_id,
                    current.component,
                    Some(*appointment_id),
                    status,
                )
            }
        };
        if let Some(appointment_id) = conn
            .open_by_vehicle(&vehicle_id, exclude.unwrap_or(-1))
            .await
            .map_err(sql("reading appointments"))?
        {
            return Err(BookError::VehicleHasOpenAppointment { appointment_id });
        }
        let (start, end) = (slot.starts_at.0, slot.ends_at.0);
        if end <= start {
            return Err(BookError::invalid(
                "slot.ends_at",
                "must be after slot.starts_at",
            ));
        }
        if slot.bay == 0 || slot.bay > center.bays {
            return Err(BookError::UnknownBay {
                center_id: center.center_id,
                bay: slot.bay,
                bays: center.bays,
            });
        }
        let calendar = self.calendar(conn, &center, start, end).await?;
        if !calendar.contains(start, end) {
            return Err(BookError::OutsideHours {
                center_id: center.center_id,
                starts_at: slot.starts_at,
                ends_at: slot.ends_at,
            });
        }
        let busy = self
            .busy(conn, &center.center_id, start, end, exclude)
            .await?;
        if busy
            .iter()
            .any(|b| b.center_id == center.center_id && b.bay == slot.bay)
        {
            return Err(BookError::SlotTaken {
                center_id: center.center_id,
                bay: slot.bay,
                starts_at: slot.starts_at,
            });
        }
        let techs = self.technicians(conn, &center.center_id).await?;
        let is_busy = |t: &str| busy.iter().any(|b| b.technician.as_deref() == Some(t));
        let technician = match &slot.technician {
            Some(t) => {
                if !techs.is_empty() && !techs.iter().any(|x| &x.id == t && x.can_do(component)) {
                    return Err(BookError::TechnicianNotQualified {
                        technician: t.clone(),
                        component,
                    });
                }
                if is_busy(t) {
                    return Err(BookError::TechnicianBusy {
                        technician: t.clone(),
                        starts_at: slot.starts_at,
                    });
                }
                Some(t.clone())
            }
            None if techs.is_empty() => None,
            None => Some(
                techs
                    .iter()
                    .find(|t| t.can_do(component) && !is_busy(&t.id))
                    .ok_or_else(|| BookError::NoTechnician {
                        center_id: center.center_id.clone(),
                        component,
                        starts_at: slot.starts_at,
                    })?
                    .id
                    .clone(),
            ),
        };
        let id = match target {
            Target::New(request) => conn
                .insert(&NewAppointment {
                    vehicle_id: &vehicle_id,
                    center_id: &center.center_id,
                    bay: i64::from(slot.bay),
                    technician: technician.as_deref(),
                    alert_id: request.alert_id,
                    starts_at: start,
                    ends_at: end,
                    status: status.name(),
                    component: component.map(Component::name),
                    booked_by: &request.booked_by,
                    notes: request.notes.as_deref(),
                })
                .await
                .map_err(sql("inserting appointment")),
            Target::Move { appointment_id, .. } => conn
                .move_to(
                    appointment_id,
                    &center.center_id,
                    i64::from(slot.bay),
                    technician.as_deref(),
                    start,
                    end,
                    status.name(),
                )
                .await
                .map(|()| appointment_id)
                .map_err(sql("moving appointment")),
        }?;
        Ok((id, true))
    }
}

/// Whether `e` means "someone else has this slot now": try another.
fn is_taken(e: &BookError) -> bool {
    matches!(
        e,
        BookError::SlotTaken { .. }
            | BookError::TechnicianBusy { .. }
            | BookError::NoTechnician { .. }
    )
}

/// The status a rescheduled appointment gets, or why it cannot be rescheduled.
fn reschedulable(a: &Appointment) -> Result<AppointmentStatus, BookError> {
    match a.status {
        AppointmentStatus::Proposed | AppointmentStatus::Confirmed => Ok(a.status),
        AppointmentStatus::NoShow => Ok(AppointmentStatus::Confirmed),
        status => Err(BookError::InvalidStatus {
            appointment_id: a.appointment_id,
            status,
            action: "reschedule",
        }),
    }
}

/// Up to `max` of `slots` (best first), first those that overlap no earlier pick, then
/// the rest in order: alternatives at different times before the same time in another bay.
fn spread(slots: Vec<Slot>, max: usize) -> Vec<Slot> {
    let mut picked: Vec<usize> = Vec::with_capacity(max);
    for (i, s) in slots.iter().enumerate() {
        if picked.len() == max {
            break;
        }
        let overlaps = picked.iter().any(|&j| {
            let p = &slots[j];
            p.starts_at < s.ends_at && s.starts_at < p.ends_at
        });
        if !overlaps {
            picked.push(i);
        }
    }
    for i in 0..slots.len() {
        if picked.len() >= max {
            break;
        }
        if !picked.contains(&i) {
            picked.push(i);
        }
    }
    let mut slots: Vec<Option<Slot>> = slots.into_iter().map(Some).collect();
    picked.into_iter().filter_map(|i| slots[i].take()).collect()
}

fn customer_preferences(vehicle_id: &str, json: Option<&str>) -> Result<Preferences, BookError> {
    let Some(json) = json else {
        return Ok(Preferences::default());
    };
    let corrupt = |message: String| BookError::Corrupt {
        context: format!("customers.preferred_times of the owner of `{vehicle_id}`"),
        message,
    };
    let times: Vec<PreferredTime> =
        serde_json::from_str(json).map_err(|e| corrupt(e.to_string()))?;
    Preferences::parse(&times, "preferred_times")
        .map_err(|(field, message)| corrupt(format!("{field}: {message}")))
}

/// An appointment, locked for the rest of the transaction.
async fn locked_appointment<C: Store>(
    conn: &mut C,
    appointment_id: i64,
) -> Result<Appointment, BookError> {
    let row = conn
        .appointment(appointment_id, true)
        .await
        .map_err(sql("reading appointment"))?
        .ok_or(BookError::UnknownAppointment { appointment_id })?;
    appointment_from_row(row)
}

fn appointment_from_row(row: AppointmentRow) -> Result<Appointment, BookError> {
    let (id, vehicle_id, center_id, bay, technician, alert_id, starts, ends, status, component) = (
        row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8, row.9,
    );
    let corrupt = |message: String| BookError::Corrupt {
        context: format!("appointments {id}"),
        message,
    };
    Ok(Appointment {
        appointment_id: id,
        vehicle_id,
        center_id,
        bay: u32::try_from(bay).map_err(|_| corrupt(format!("bay {bay}")))?,
        technician,
        alert_id,
        starts_at: EventTime(starts),
        ends_at: EventTime(ends),
        status: AppointmentStatus::from_name(&status)
            .ok_or_else(|| corrupt(format!("unknown status `{status}`")))?,
        component: component
            .map(|c| {
                Component::from_name(&c).ok_or_else(|| corrupt(format!("unknown component `{c}`")))
            })
            .transpose()?,
        booked_by: row.10,
        notes: row.11,
        created_at: EventTime(row.12),
        updated_at: EventTime(row.13),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(start_min: i64, len_min: i64, bay: u32) -> Slot {
        Slot {
            center_id: "C".into(),
            bay,
            technician: None,
            starts_at: EventTime(start_min * MINUTE_MS),
            ends_at: EventTime((start_min + len_min) * MINUTE_MS),
        }
    }

    #[test]
    fn offers_are_alternatives_before_repeats() {
        let all = vec![
            slot(0, 60, 1),
            slot(0, 60, 2),
            slot(30, 60, 1),
            slot(60, 60, 1),
            slot(120, 60, 1),
        ];
        let picked = spread(all.clone(), 3);
        assert_eq!(picked, vec![all[0].clone(), all[3].clone(), all[4].clone()]);
        let picked = spread(all[..3].to_vec(), 3);
        assert_eq!(picked, vec![all[0].clone(), all[1].clone(), all[2].clone()]);
        assert!(spread(Vec::new(), 3).is_empty());
    }
}

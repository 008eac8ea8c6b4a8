//! The scheduler's SQL, once for both dialects: a small trait over a connection
//! ([`Store`]), implemented for SQLite's and PostgreSQL's by one macro, so the booking logic
//! above it is written once and runs inside a transaction of either.
//!
//! Timestamps cross the boundary as integer milliseconds (UTC): SQLite stores them so;
//! PostgreSQL's TIMESTAMPTZ is converted in SQL (`epoch + n * 1 ms` in, `EXTRACT(EPOCH)` out),
//! exactly. JSON columns are read as text.

use chrono::NaiveDate;
use pmi_sinks::sql::Backend;

/// Statuses that hold a bay, as an SQL list.
pub(crate) const OPEN: &str = "('proposed', 'confirmed', 'in_progress')";

/// The SQL fragments that differ between the dialects.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Dialect(pub(crate) Backend);

impl Dialect {
    /// Column `col` (a timestamp) as ms since the epoch.
    pub(crate) fn ms(self, col: &str) -> String {
        match self.0 {
            Backend::Postgres => format!("(EXTRACT(EPOCH FROM {col}) * 1000)::int8"),
            Backend::Sqlite => col.to_owned(),
        }
    }

    /// Parameter `p` (ms since the epoch) as a timestamp.
    pub(crate) fn ts(self, p: &str) -> String {
        match self.0 {
            Backend::Postgres => {
                format!("(TIMESTAMPTZ 'epoch' + {p}::int8 * INTERVAL '1 millisecond')")
            }
            Backend::Sqlite => p.to_owned(),
        }
    }

    /// JSON column `col` as text.
    pub(crate) fn json(self, col: &str) -> String {
        match self.0 {
            Backend::Postgres => format!("{col}::text"),
            Backend::Sqlite => col.to_owned(),
        }
    }

    /// The current time, as the column default writes it.
    pub(crate) fn now(self) -> &'static str {
        match self.0 {
            Backend::Postgres => "now()",
            Backend::Sqlite => {
                "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)"
            }
        }
    }

    /// Row lock suffix of a `SELECT` inside a writing transaction (SQLite's `BEGIN
    /// IMMEDIATE` already holds the database's write lock).
    pub(crate) fn lock(self) -> &'static str {
        match self.0 {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        }
    }

    /// The statement opening a transaction that writes: SQLite takes the write lock at
    /// once (a deferred transaction that reads and then writes can fail with "database is
    /// locked" instead of waiting).
    pub(crate) fn begin_write(self) -> &'static str {
        match self.0 {
            Backend::Postgres => "BEGIN",
            Backend::Sqlite => "BEGIN IMMEDIATE",
        }
    }

    fn appointment_columns(self) -> String {
        format!(
            "appointment_id, vehicle_id, center_id, CAST(bay AS BIGINT), technician, alert_id, \
             {}, {}, status, component, booked_by, notes, {}, {}",
            self.ms("starts_at"),
            self.ms("ends_at"),
            self.ms("created_at"),
            self.ms("updated_at"),
        )
    }
}

/// `service_centers`: id, time zone, business hours (JSON), bays.
pub(crate) type CenterRow = (String, String, String, i64);
/// A vehicle: home centre and its owner's preferred times (JSON).
pub(crate) type VehicleRow = (Option<String>, Option<String>);
/// An open appointment that blocks time: id, centre, bay, technician, start, end.
pub(crate) type BusyRow = (i64, String, i64, Option<String>, i64, i64);
/// `appointments`, every column (see [`Dialect::appointment_columns`]).
pub(crate) type AppointmentRow = (
    i64,
    String,
    String,
    i64,
    Option<String>,
    Option<i64>,
    i64,
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    i64,
);

/// A new appointment's values.
pub(crate) struct NewAppointment<'a> {
    pub(crate) vehicle_id: &'a str,
    pub(crate) center_id: &'a str,
    pub(crate) bay: i64,
    pub(crate) technician: Option<&'a str>,
    pub(crate) alert_id: Option<i64>,
    pub(crate) starts_at: i64,
    pub(crate) ends_at: i64,
    pub(crate) status: &'a str,
    pub(crate) component: Option<&'a str>,
    pub(crate) booked_by: &'a str,
    pub(crate) notes: Option<&'a str>,
}

/// Filters of [`Store::list`]; `None` matches all.
pub(crate) struct ListFilter<'a> {
    pub(crate) status: Option<&'a str>,
    pub(crate) vehicle_id: Option<&'a str>,
    pub(crate) center_id: Option<&'a str>,
    pub(crate) open_only: bool,
}

/// The scheduler's statements on one connection (or transaction).
pub(crate) trait Store {
    /// The dialect of this connection.
    fn dialect(&self) -> Dialect;
    /// A centre (locked for the rest of the transaction when `lock`).
    async fn center(&mut self, id: &str, lock: bool) -> Result<Option<CenterRow>, sqlx::Error>;
    /// A centre's closed days within `first ..= last`.
    async fn closures(
        &mut self,
        center_id: &str,
        first: NaiveDate,
        last: NaiveDate,
    ) -> Result<Vec<NaiveDate>, sqlx::Error>;
    /// A centre's active technicians and their skills (JSON), by id.
    async fn technicians(&mut self, center_id: &str) -> Result<Vec<(String, String)>, sqlx::Error>;
    /// Open appointments overlapping `[from, to)` at the centre or of its technicians,
    /// except `exclude`.
    async fn busy(
        &mut self,
        center_id: &str,
        from: i64,
        to: i64,
        exclude: i64,
    ) -> Result<Vec<BusyRow>, sqlx::Error>;
    /// A registered vehicle.
    async fn vehicle(&mut self, vehicle_id: &str) -> Result<Option<VehicleRow>, sqlx::Error>;
    /// The open appointment of an alert.
    async fn open_by_alert(&mut self, alert_id: i64) -> Result<Option<i64>, sqlx::Error>;
    /// The open appointment of a vehicle, except `exclude`.
    async fn open_by_vehicle(
        &mut self,
        vehicle_id: &str,
        exclude: i64,
    ) -> Result<Option<i64>, sqlx::Error>;
    /// An appointment (locked for the rest of the transaction when `lock`).
    async fn appointment(
        &mut self,
        id: i64,
        lock: bool,
    ) -> Result<Option<AppointmentRow>, sqlx::Error>;
    /// Appointments matching `filter`, by start.
    async fn list(&mut self, filter: &ListFilter<'_>) -> Result<Vec<AppointmentRow>, sqlx::Error>;
    /// Inserts an appointment; returns its id.
    async fn insert(&mut self, a: &NewAppointment<'_>) -> Result<i64, sqlx::Error>;
    /// Moves an appointment to another slot and sets its status.
    #[allow(clippy::too_many_arguments)]
    async fn move_to(
        &mut self,
        id: i64,
        center_id: &str,
        bay: i64,
        technician: Option<&str>,
        starts_at: i64,
        ends_at: i64,
        status: &str,
    ) -> Result<(), sqlx::Error>;
    /// Sets an appointment's status, appending `note` to its notes when given.
    async fn set_status(
        &mut self,
        id: i64,
        status: &str,
        note: Option<&str>,
    ) -> Result<(), sqlx::Error>;
    /// Makes an appointment cover the whole vehicle (no component), appending `note`.
    async fn cover_vehicle(&mut self, id: i64, note: &str) -> Result<(), sqlx::Error>;
}

macro_rules! impl_store {
    ($conn:ty, $backend:expr) => {
        impl Store for $conn {
            fn dialect(&self) -> Dialect {
                Dialect($backend)
            }

            async fn center(
                &mut self,
                id: &str,
                lock: bool,
            ) -> Result<Option<CenterRow>, sqlx::Error> {
                let d = self.dialect();
                let sql = format!(
                    "SELECT center_id, time_zone, {}, CAST(bays AS BIGINT) FROM service_centers \
                     WHERE center_id = $1{}",
                    d.json("business_hours"),
                    if lock { d.lock() } else { "" }
                );
                sqlx::query_as(&sql).bind(id).fetch_optional(&mut *self).await
            }

            async fn closures(
                &mut self,
                center_id: &str,
                first: NaiveDate,
                last: NaiveDate,
            ) -> Result<Vec<NaiveDate>, sqlx::Error> {
                sqlx::query_scalar(
                    "SELECT day FROM service_center_closures \
                     WHERE center_id = $1 AND day >= $2 AND day <= $3",
                )
                .bind(center_id)
                .bind(first)
                .bind(last)
                .fetch_all(&mut *self)
                .await
            }

            async fn technicians(
                &mut self,
                center_id: &str,
            ) -> Result<Vec<(String, String)>, sqlx::Error> {
                let sql = format!(
                    "SELECT technician_id, {} FROM technicians \
                     WHERE center_id = $1 AND active ORDER BY technician_id",
                    self.dialect().json("skills")
                );
                sqlx::query_as(&sql).bind(center_id).fetch_all(&mut *self).await
            }

            async fn busy(
                &mut self,
                center_id: &str,
                from: i64,
                to: i64,
                exclude: i64,
            ) -> Result<Vec<BusyRow>, sqlx::Error> {
                let d = self.dialect();
                let sql = format!(
                    "SELECT appointment_id, center_id, CAST(bay AS BIGINT), technician, {}, {} \
                     FROM appointments \
                     WHERE status IN {OPEN} AND starts_at < {} AND ends_at > {} \
                       AND appointment_id <> $4 \
                       AND (center_id = $1 OR technician IN \
                            (SELECT technician_id FROM technicians WHERE center_id = $1)) \
                     ORDER BY starts_at",
                    d.ms("starts_at"),
                    d.ms("ends_at"),
                    d.ts("$3"),
                    d.ts("$2"),
                );
                sqlx::query_as(&sql)
                    .bind(center_id)
                    .bind(from)
                    .bind(to)
                    .bind(exclude)
                    .fetch_all(&mut *self)
                    .await
            }

            async fn vehicle(
                &mut self,
                vehicle_id: &str,
            ) -> Result<Option<VehicleRow>, sqlx::Error> {
                let sql = format!(
                    "SELECT v.home_center_id, {} FROM vehicles v \
                     LEFT JOIN customers c ON c.customer_id = v.customer_id \
                     WHERE v.vehicle_id = $1",
                    self.dialect().json("c.preferred_times")
                );
                sqlx::query_as(&sql).bind(vehicle_id).fetch_optional(&mut *self).await
            }

            async fn open_by_alert(&mut self, alert_id: i64) -> Result<Option<i64>, sqlx::Error> {
                let sql = format!(
                    "SELECT appointment_id FROM appointments \
                     WHERE alert_id = $1 AND status IN {OPEN}"
                );
                sqlx::query_scalar(&sql).bind(alert_id).fetch_optional(&mut *self).await
            }

            async fn open_by_vehicle(
                &mut self,
                vehicle_id: &str,
                exclude: i64,
            ) -> Result<Option<i64>, sqlx::Error> {
                let sql = format!(
                    "SELECT appointment_id FROM appointments \
                     WHERE vehicle_id = $1 AND appointment_id <> $2 AND status IN {OPEN}"
                );
                sqlx::query_scalar(&sql)
                    .bind(vehicle_id)
                    .bind(exclude)
                    .fetch_optional(&mut *self)
                    .await
            }

            async fn appointment(
                &mut self,
                id: i64,
                lock: bool,
            ) -> Result<Option<AppointmentRow>, sqlx::Error> {
                let d = self.dialect();
                let sql = format!(
                    "SELECT {} FROM appointments WHERE appointment_id = $1{}",
                    d.appointment_columns(),
                    if lock { d.lock() } else { "" }
                );
                sqlx::query_as(&sql).bind(id).fetch_optional(&mut *self).await
            }

            async fn list(
                &mut self,
                f: &ListFilter<'_>,
            ) -> Result<Vec<AppointmentRow>, sqlx::Error> {
                let d = self.dialect();
                let open = if f.open_only {
                    format!(" AND status IN {OPEN}")
                } else {
                    String::new()
                };
                let sql = format!(
                    "SELECT {} FROM appointments \
                     WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR vehicle_id = $2) \
                       AND ($3 IS NULL OR center_id = $3){open} \
                     ORDER BY starts_at, appointment_id",
                    d.appointment_columns(),
                );
                sqlx::query_as(&sql)
                    .bind(f.status)
                    .bind(f.vehicle_id)
                    .bind(f.center_id)
                    .fetch_all(&mut *self)
                    .await
            }

            async fn insert(&mut self, a: &NewAppointment<'_>) -> Result<i64, sqlx::Error> {
                let d = self.dialect();
                let sql = format!(
                    "INSERT INTO appointments (vehicle_id, center_id, bay, technician, alert_id, \
                       starts_at, ends_at, status, component, booked_by, notes) \
                     VALUES ($1, $2, $3, $4, $5, {}, {}, $8, $9, $10, $11) \
                     RETURNING appointment_id",
                    d.ts("$6"),
                    d.ts("$7"),
                );
                sqlx::query_scalar(&sql)
                    .bind(a.vehicle_id)
                    .bind(a.center_id)
                    .bind(a.bay as i32)
                    .bind(a.technician)
                    .bind(a.alert_id)
                    .bind(a.starts_at)
                    .bind(a.ends_at)
                    .bind(a.status)
                    .bind(a.component)
                    .bind(a.booked_by)
                    .bind(a.notes)
                    .fetch_one(&mut *self)
                    .await
            }

            async fn move_to(
                &mut self,
                id: i64,
                center_id: &str,
                bay: i64,
                technician: Option<&str>,
                starts_at: i64,
                ends_at: i64,
                status: &str,
            ) -> Result<(), sqlx::Error> {
                let d = self.dialect();
                let sql = format!(
                    "UPDATE appointments SET center_id = $2, bay = $3, technician = $4, \
                       starts_at = {}, ends_at = {}, status = $7, updated_at = {} \
                     WHERE appointment_id = $1",
                    d.ts("$5"),
                    d.ts("$6"),
                    d.now(),
                );
                sqlx::query(&sql)
                    .bind(id)
                    .bind(center_id)
                    .bind(bay as i32)
                    .bind(technician)
                    .bind(starts_at)
                    .bind(ends_at)
                    .bind(status)
                    .execute(&mut *self)
                    .await
                    .map(drop)
            }

            async fn set_status(
                &mut self,
                id: i64,
                status: &str,
                note: Option<&str>,
            ) -> Result<(), sqlx::Error> {
                let sql = format!(
                    "UPDATE appointments SET status = $2, \
                       notes = CASE WHEN $3 IS NULL THEN notes \
                                    ELSE COALESCE(notes || '; ', '') || $3 END, \
                       updated_at = {} \
                     WHERE appointment_id = $1",
                    self.dialect().now(),
                );
                sqlx::query(&sql)
                    .bind(id)
                    .bind(status)
                    .bind(note)
                    .execute(&mut *self)
                    .await
                    .map(drop)
            }

            async fn cover_vehicle(&mut self, id: i64, note: &str) -> Result<(), sqlx::Error> {
                let sql = format!(
                    "UPDATE appointments SET component = NULL, \
                       notes = COALESCE(notes || '; ', '') || $2, updated_at = {} \
                     WHERE appointment_id = $1",
                    self.dialect().now(),
                );
                sqlx::query(&sql)
                    .bind(id)
                    .bind(note)
                    .execute(&mut *self)
                    .await
                    .map(drop)
            }
        }
    };
}

impl_store!(sqlx::SqliteConnection, Backend::Sqlite);
impl_store!(sqlx::PgConnection, Backend::Postgres);

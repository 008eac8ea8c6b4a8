//! The vehicle registry: customers, service centres, vehicles, technicians and closed days,
//! upserted by id (seeding, the simulator, an import, the HTTP API). Small tables: one
//! statement per row in one transaction.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use pmi_core::Component;

use super::{on_pool, Backend, Database};
use crate::SinkError;

/// How a customer prefers to be contacted.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ContactChannel {
    /// E-mail (the default).
    #[default]
    Email,
    /// Text message.
    Sms,
    /// Phone call.
    Phone,
    /// App push notification.
    Push,
    /// Do not contact.
    None,
}

impl ContactChannel {
    /// The stored name.
    pub const fn name(self) -> &'static str {
        match self {
            ContactChannel::Email => "email",
            ContactChannel::Sms => "sms",
            ContactChannel::Phone => "phone",
            ContactChannel::Push => "push",
            ContactChannel::None => "none",
        }
    }
}

/// A vehicle owner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    /// Id, e.g. `CUST_0001`.
    pub customer_id: String,
    /// Name.
    pub name: String,
    /// E-mail address.
    pub email: Option<String>,
    /// Phone number (E.164).
    pub phone: Option<String>,
    /// How they prefer to be contacted.
    pub preferred_channel: ContactChannel,
    /// Whether they agreed to be contacted about maintenance. `consent_updated_at` is set
    /// whenever this changes.
    pub contact_consent: bool,
    /// Language for messages, e.g. `de-DE`.
    pub locale: Option<String>,
    /// When they like to bring the vehicle in (local time of the centre); `None`: no
    /// preference.
    #[serde(default)]
    pub preferred_times: Option<Vec<PreferredTime>>,
}

/// A time of the week a customer prefers for appointments, local time of the centre.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreferredTime {
    /// ISO weekday: 1 Monday … 7 Sunday.
    pub weekday: u8,
    /// From, `HH:MM`.
    pub from: String,
    /// To, `HH:MM` (`24:00` for the end of the day).
    pub to: String,
}

/// A technician of a service centre.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Technician {
    /// Id, e.g. `TECH_BER_01`.
    pub technician_id: String,
    /// The centre they work at.
    pub center_id: String,
    /// Name.
    pub name: String,
    /// Components they may work on.
    pub skills: Vec<Component>,
    /// Whether they are scheduled (on leave, left: `false`).
    pub active: bool,
}

/// A day a service centre is closed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closure {
    /// The centre.
    pub center_id: String,
    /// The centre's local date.
    pub day: NaiveDate,
    /// Why (holiday, stocktaking, …).
    pub reason: Option<String>,
}

/// One opening span of a service centre, local time of its time zone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpeningHours {
    /// ISO weekday: 1 Monday … 7 Sunday.
    pub weekday: u8,
    /// Opening time, `HH:MM`.
    pub open: String,
    /// Closing time, `HH:MM`.
    pub close: String,
}

/// A workshop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceCenter {
    /// Id, e.g. `SC_BER_01`.
    pub center_id: String,
    /// Name.
    pub name: String,
    /// IANA time zone, e.g. `Europe/Berlin`.
    pub time_zone: String,
    /// When it is open (several spans per day allowed).
    pub business_hours: Vec<OpeningHours>,
    /// Service bays (appointments run in parallel up to this).
    pub bays: u32,
    /// Technicians on staff.
    pub technicians: u32,
    /// Postal address.
    pub address: Option<String>,
    /// Phone number.
    pub phone: Option<String>,
    /// Latitude, degrees.
    pub latitude: Option<f64>,
    /// Longitude, degrees.
    pub longitude: Option<f64>,
}

/// A registered vehicle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Vehicle {
    /// Id, as in telemetry (`VEH_000042`).
    pub vehicle_id: String,
    /// Owner.
    pub customer_id: Option<String>,
    /// Home service centre.
    pub home_center_id: Option<String>,
    /// Vehicle identification number (unique).
    pub vin: Option<String>,
    /// Make.
    pub make: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Model year.
    pub model_year: Option<i32>,
}

fn err(table: &str) -> impl Fn(sqlx::Error) -> SinkError + '_ {
    move |e| SinkError::Sql {
        context: format!("table `{table}`"),
        message: e.to_string(),
    }
}

impl Database {
    fn now_sql(&self) -> &'static str {
        match self.backend() {
            Backend::Postgres => "now()",
            Backend::Sqlite => {
                "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)"
            }
        }
    }
}

/// Inserts or updates `customers` by id. Returns the number of rows written.
pub async fn upsert_customers(db: &Database, customers: &[Customer]) -> Result<u64, SinkError> {
    let now = db.now_sql();
    let times = match db.backend() {
        Backend::Postgres => "$8::jsonb",
        Backend::Sqlite => "$8",
    };
    let sql = format!(
        "INSERT INTO customers (customer_id, name, email, phone, preferred_channel, \
           contact_consent, consent_updated_at, locale, preferred_times) \
         VALUES ($1, $2, $3, $4, $5, $6, {now}, $7, {times}) \
         ON CONFLICT (customer_id) DO UPDATE SET name = excluded.name, email = excluded.email, \
           phone = excluded.phone, preferred_channel = excluded.preferred_channel, \
           consent_updated_at = CASE WHEN customers.contact_consent = excluded.contact_consent \
             THEN customers.consent_updated_at ELSE {now} END, \
           contact_consent = excluded.contact_consent, locale = excluded.locale, \
           preferred_times = excluded.preferred_times, updated_at = {now}"
    );
    let written = on_pool!(db, |pool| async {
        let mut tx = pool.begin().await?;
        for c in customers {
            let times = c
                .preferred_times
                .as_ref()
                .map(|t| serde_json::to_string(t).expect("preferred times serialise"));
            sqlx::query(&sql)
                .bind(&c.customer_id)
                .bind(&c.name)
                .bind(&c.email)
                .bind(&c.phone)
                .bind(c.preferred_channel.name())
                .bind(c.contact_consent)
                .bind(&c.locale)
                .bind(times)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }
    .await);
    written.map_err(err("customers"))?;
    Ok(customers.len() as u64)
}

/// Inserts or updates `centers` by id. Returns the number of rows written.
pub async fn upsert_service_centers(
    db: &Database,
    centers: &[ServiceCenter],
) -> Result<u64, SinkError> {
    let now = db.now_sql();
    let hours = match db.backend() {
        Backend::Postgres => "$4::jsonb",
        Backend::Sqlite => "$4",
    };
    let sql = format!(
        "INSERT INTO service_centers (center_id, name, time_zone, business_hours, bays, \
           technicians, address, phone, latitude, longitude) \
         VALUES ($1, $2, $3, {hours}, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (center_id) DO UPDATE SET name = excluded.name, \
           time_zone = excluded.time_zone, business_hours = excluded.business_hours, \
           bays = excluded.bays, technicians = excluded.technicians, \
           address = excluded.address, phone = excluded.phone, \
           latitude = excluded.latitude, longitude = excluded.longitude, updated_at = {now}"
    );
    let written = on_pool!(db, |pool| async {
        let mut tx = pool.begin().await?;
        for c in centers {
            let hours = serde_json::to_string(&c.business_hours).expect("opening hours serialise");
            sqlx::query(&sql)
                .bind(&c.center_id)
                .bind(&c.name)
                .bind(&c.time_zone)
                .bind(hours)
                .bind(i64::from(c.bays))
                .bind(i64::from(c.technicians))
                .bind(&c.address)
                .bind(&c.phone)
                .bind(c.latitude)
                .bind(c.longitude)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }
    .await);
    written.map_err(err("service_centers"))?;
    Ok(centers.len() as u64)
}

/// Inserts or updates `vehicles` by id (their customer and home centre must exist).
/// Returns the number of rows written.
pub async fn upsert_vehicles(db: &Database, vehicles: &[Vehicle]) -> Result<u64, SinkError> {
    let now = db.now_sql();
    let sql = format!(
        "INSERT INTO vehicles (vehicle_id, customer_id, home_center_id, vin, make, model, \
           model_year) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (vehicle_id) DO UPDATE SET customer_id = excluded.customer_id, \
           home_center_id = excluded.home_center_id, vin = excluded.vin, \
           make = excluded.make, model = excluded.model, model_year = excluded.model_year, \
           updated_at = {now}"
    );
    let written = on_pool!(db, |pool| async {
        let mut tx = pool.begin().await?;
        for v in vehicles {
            sqlx::query(&sql)
                .bind(&v.vehicle_id)
                .bind(&v.customer_id)
                .bind(&v.home_center_id)
                .bind(&v.vin)
                .bind(&v.make)
                .bind(&v.model)
                .bind(v.model_year)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }
    .await);
    written.map_err(err("vehicles"))?;
    Ok(vehicles.len() as u64)
}

/// Inserts or updates `technicians` by id (their centre must exist). Returns the number of
/// rows written.
pub async fn upsert_technicians(
    db: &Database,
    technicians: &[Technician],
) -> Result<u64, SinkError> {
    let now = db.now_sql();
    let skills = match db.backend() {
        Backend::Postgres => "$4::jsonb",
        Backend::Sqlite => "$4",
    };
    let sql = format!(
        "INSERT INTO technicians (technician_id, center_id, name, skills, active) \
         VALUES ($1, $2, $3, {skills}, $5) \
         ON CONFLICT (technician_id) DO UPDATE SET center_id = excluded.center_id, \
           name = excluded.name, skills = excluded.skills, active = excluded.active, \
           updated_at = {now}"
    );
    let written = on_pool!(db, |pool| async {
        let mut tx = pool.begin().await?;
        for t in technicians {
            let skills = serde_json::to_string(&t.skills).expect("components serialise");
            sqlx::query(&sql)
                .bind(&t.technician_id)
                .bind(&t.center_id)
                .bind(&t.name)
                .bind(skills)
                .bind(t.active)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }
    .await);
    written.map_err(err("technicians"))?;
    Ok(technicians.len() as u64)
}

/// Inserts or updates closed days by `(center_id, day)` (their centre must exist). Returns
/// the number of rows written.
pub async fn upsert_closures(db: &Database, closures: &[Closure]) -> Result<u64, SinkError> {
    let sql = "INSERT INTO service_center_closures (center_id, day, reason) VALUES ($1, $2, $3) \
               ON CONFLICT (center_id, day) DO UPDATE SET reason = excluded.reason";
    let written = on_pool!(db, |pool| async {
        let mut tx = pool.begin().await?;
        for c in closures {
            sqlx::query(sql)
                .bind(&c.center_id)
                .bind(c.day)
                .bind(&c.reason)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }
    .await);
    written.map_err(err("service_center_closures"))?;
    Ok(closures.len() as u64)
}

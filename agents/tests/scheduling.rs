//! The scheduling agent end to end, against SQLite (a temporary file) and PostgreSQL (a
//! fresh database per test on the server of `PMI_DATABASE_URL`, dropped afterwards): slot
//! generation (time zones and a DST change, closed days, several opening spans a day,
//! technicians' skills, preferred times), booking checks, idempotent booking per alert,
//! confirm / cancel / reschedule, and property tests of many concurrent bookings.
//!
//! Run: `bash scripts/test.sh -p pmi-agents --test scheduling`, or `eval "$(bash
//! scripts/services.sh up)"` then `cargo test -p pmi-agents --test scheduling`. Without
//! `PMI_DATABASE_URL` the PostgreSQL tests fail (they never skip).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;

use pmi_agents::scheduling::{
    AppointmentFilter, AppointmentStatus, BookError, BookRequest, Scheduler, SchedulingConfig,
    Slot, SlotRequest,
};
use pmi_core::{Component, EventTime};
use pmi_sinks::sql::registry::{
    self, Closure, ContactChannel, Customer, OpeningHours, PreferredTime, ServiceCenter,
    Technician, Vehicle,
};
use pmi_sinks::sql::{admin, Backend, Database, SqlConfig};

// ---------------------------------------------------------------------------------------
// Test databases (as in sinks/tests/sql.rs)

enum Target {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin_url: String, name: String },
}

/// A fresh, migrated database for one test (or one property-test case).
struct TestDb {
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

impl TestDb {
    async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}/pmi.sqlite", dir.path().display());
                TestDb::open(SqlConfig::new(&url), Target::Sqlite(dir)).await
            }
            Backend::Postgres => {
                let admin_url = database_url();
                let name = admin::unique_name("pmi_sched");
                admin::create_database(&admin_url, &name).await.unwrap();
                let config = SqlConfig::new(&admin::with_database(&admin_url, &name));
                TestDb::open(config, Target::Postgres { admin_url, name }).await
            }
        }
    }

    async fn open(mut config: SqlConfig, target: Target) -> TestDb {
        config.max_connections = 8;
        config.connect_timeout_ms = 20_000;
        let db = Database::connect(&config).await.unwrap();
        db.migrate().await.unwrap();
        TestDb { db, target }
    }

    fn scheduler(&self, config: SchedulingConfig) -> Scheduler {
        Scheduler::new(self.db.clone(), config).unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Target::Postgres { admin_url, name } = &self.target {
            let (admin_url, name, db) = (admin_url.clone(), name.clone(), self.db.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(db.close());
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
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::TestDb::new(pmi_sinks::sql::Backend::Sqlite).await).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::TestDb::new(pmi_sinks::sql::Backend::Postgres).await).await
                }
            )*
        }
    };
}

both!(
    slots_follow_local_business_hours_across_a_dst_change,
    closed_days_and_several_spans_a_day,
    empty_business_hours_mean_the_default_weekday_hours,
    technicians_skills_and_time_limit_slots,
    preferred_times_come_first,
    booking_rechecks_hours_bays_and_open_appointments,
    booking_again_for_an_alert_returns_its_appointment,
    confirm_cancel_and_reschedule_keep_the_id,
    concurrent_bookings_of_one_slot_book_it_once,
);

// ---------------------------------------------------------------------------------------
// Fixtures

fn hours(spans: &[(u8, &str, &str)]) -> Vec<OpeningHours> {
    spans
        .iter()
        .map(|&(weekday, open, close)| OpeningHours {
            weekday,
            open: open.into(),
            close: close.into(),
        })
        .collect()
}

fn every_day(open: &str, close: &str) -> Vec<OpeningHours> {
    (1..=7)
        .map(|d| (d, open, close))
        .map(|(d, o, c)| hours(&[(d, o, c)]).remove(0))
        .collect()
}

fn center(id: &str, tz: &str, business_hours: Vec<OpeningHours>, bays: u32) -> ServiceCenter {
    ServiceCenter {
        center_id: id.into(),
        name: format!("centre {id}"),
        time_zone: tz.into(),
        business_hours,
        bays,
        technicians: 0,
        address: None,
        phone: None,
        latitude: None,
        longitude: None,
    }
}

fn vehicle_id(i: usize) -> String {
    format!("VEH_{i:06}")
}

/// Registers `centers` and `vehicles` vehicles (VEH_000000 …) whose home is the first
/// centre, each owned by a customer of its own with `preferred` times.
async fn seed(
    db: &Database,
    centers: &[ServiceCenter],
    vehicles: usize,
    preferred: Option<Vec<PreferredTime>>,
) {
    registry::upsert_service_centers(db, centers).await.unwrap();
    let customers: Vec<Customer> = (0..vehicles)
        .map(|i| Customer {
            customer_id: format!("CUST_{i}"),
            name: format!("customer {i}"),
            email: None,
            phone: None,
            preferred_channel: ContactChannel::Email,
            contact_consent: true,
            locale: None,
            preferred_times: preferred.clone(),
        })
        .collect();
    registry::upsert_customers(db, &customers).await.unwrap();
    let vehicles: Vec<Vehicle> = (0..vehicles)
        .map(|i| Vehicle {
            vehicle_id: vehicle_id(i),
            customer_id: Some(format!("CUST_{i}")),
            home_center_id: Some(centers[0].center_id.clone()),
            vin: None,
            make: None,
            model: None,
            model_year: None,
        })
        .collect();
    registry::upsert_vehicles(db, &vehicles).await.unwrap();
}

/// Inserts an alert for `vehicle`; returns its id.
async fn alert(db: &Database, vehicle: &str, pane_end: i64) -> i64 {
    let sql = "INSERT INTO alerts (vehicle_id, pane_end, severity, severity_rank, risk, model) \
               VALUES ($1, PANE, 'high', 3, 0.9, 'test') RETURNING alert_id";
    match db {
        Database::Sqlite(pool) => sqlx::query_scalar(&sql.replace("PANE", "$2"))
            .bind(vehicle)
            .bind(pane_end)
            .fetch_one(pool)
            .await
            .unwrap(),
        Database::Postgres(pool) => sqlx::query_scalar(&sql.replace(
            "PANE",
            "TIMESTAMPTZ 'epoch' + $2::int8 * INTERVAL '1 millisecond'",
        ))
        .bind(vehicle)
        .bind(pane_end)
        .fetch_one(pool)
        .await
        .unwrap(),
    }
}

fn at(rfc3339: &str) -> EventTime {
    EventTime(
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .timestamp_millis(),
    )
}

fn local(tz: Tz, t: EventTime) -> DateTime<Tz> {
    Utc.timestamp_millis_opt(t.0).unwrap().with_timezone(&tz)
}

fn local_ms(tz: Tz, y: i32, m: u32, d: u32, h: u32, min: u32) -> EventTime {
    let naive = NaiveDate::from_ymd_opt(y, m, d)
        .unwrap()
        .and_hms_opt(h, min, 0)
        .unwrap();
    EventTime(tz.from_local_datetime(&naive).unwrap().timestamp_millis())
}

fn request(vehicle: usize, minutes: u32, earliest: EventTime, deadline: EventTime) -> SlotRequest {
    SlotRequest {
        vehicle_id: vehicle_id(vehicle),
        center_id: None,
        component: None,
        duration_minutes: minutes,
        earliest,
        deadline,
        preferred: None,
    }
}

fn many_offers() -> SchedulingConfig {
    SchedulingConfig {
        max_offers: 1000,
        ..SchedulingConfig::default()
    }
}

fn booking(slot: Slot, vehicle: usize, alert_id: Option<i64>) -> BookRequest {
    BookRequest {
        slot,
        vehicle_id: vehicle_id(vehicle),
        alert_id,
        component: None,
        booked_by: "test".into(),
        notes: None,
    }
}

fn starts(slots: &[Slot]) -> BTreeSet<i64> {
    slots.iter().map(|s| s.starts_at.0).collect()
}

// ---------------------------------------------------------------------------------------
// Slot generation

async fn slots_follow_local_business_hours_across_a_dst_change(t: TestDb) {
    // Berlin moves from UTC+1 to UTC+2 on Sunday 2026-03-29 at 02:00 local.
    let tz = chrono_tz::Europe::Berlin;
    seed(
        &t.db,
        &[center(
            "BER",
            "Europe/Berlin",
            every_day("08:00", "12:00"),
            1,
        )],
        1,
        None,
    )
    .await;
    let s = t.scheduler(many_offers());
    let slots = s
        .find_slots(&request(
            0,
            60,
            at("2026-03-28T00:00:00Z"),
            at("2026-03-31T00:00:00Z"),
        ))
        .await
        .unwrap();
    let mut expected = BTreeSet::new();
    for day in [28, 29, 30] {
        for half_hours in 0..7 {
            expected
                .insert(local_ms(tz, 2026, 3, day, 8 + half_hours / 2, 30 * (half_hours % 2)).0);
        }
    }
    assert_eq!(starts(&slots), expected);
    // 08:00 local is 07:00 UTC before the change and 06:00 UTC after it.
    assert!(starts(&slots).contains(&at("2026-03-28T07:00:00Z").0));
    assert!(starts(&slots).contains(&at("2026-03-29T06:00:00Z").0));
    for slot in &slots {
        assert_eq!(slot.ends_at.0 - slot.starts_at.0, 3_600_000);
        assert!(local(tz, slot.ends_at).hour() <= 12);
        assert_eq!(slot.center_id, "BER");
        assert_eq!(slot.bay, 1);
        assert_eq!(slot.technician, None);
    }
    // A span across the gap: 00:00 to 06:00 on the change day lasts five hours.
    registry::upsert_service_centers(
        &t.db,
        &[center(
            "NIGHT",
            "Europe/Berlin",
            hours(&[(7, "00:00", "06:00")]),
            1,
        )],
    )
    .await
    .unwrap();
    let mut r = request(
        0,
        60,
        at("2026-03-28T00:00:00Z"),
        at("2026-03-30T00:00:00Z"),
    );
    r.center_id = Some("NIGHT".into());
    let slots = s.find_slots(&r).await.unwrap();
    assert_eq!(slots.len(), 9, "{slots:?}");
    let last = slots.iter().map(|s| s.ends_at).max().unwrap();
    assert_eq!(last, at("2026-03-29T04:00:00Z"));
    // A zone far from UTC: Kolkata (UTC+05:30), on the local date.
    registry::upsert_service_centers(
        &t.db,
        &[center(
            "KOL",
            "Asia/Kolkata",
            hours(&[(1, "09:00", "10:00")]),
            1,
        )],
    )
    .await
    .unwrap();
    let mut r = request(
        0,
        60,
        at("2026-06-01T00:00:00Z"),
        at("2026-06-08T00:00:00Z"),
    );
    r.center_id = Some("KOL".into());
    let slots = s.find_slots(&r).await.unwrap();
    assert_eq!(starts(&slots), [at("2026-06-01T03:30:00Z").0].into());
}

async fn closed_days_and_several_spans_a_day(t: TestDb) {
    let spans = hours(&[(1, "08:00", "12:00"), (1, "13:00", "17:00")]);
    seed(&t.db, &[center("LON", "Europe/London", spans, 1)], 1, None).await;
    registry::upsert_closures(
        &t.db,
        &[Closure {
            center_id: "LON".into(),
            day: NaiveDate::from_ymd_opt(2026, 6, 8).unwrap(),
            reason: Some("holiday".into()),
        }],
    )
    .await
    .unwrap();
    let s = t.scheduler(many_offers());
    // Two Mondays, 2026-06-01 and 2026-06-08 (closed).
    let slots = s
        .find_slots(&request(
            0,
            120,
            at("2026-05-31T00:00:00Z"),
            at("2026-06-10T00:00:00Z"),
        ))
        .await
        .unwrap();
    let tz = chrono_tz::Europe::London;
    let expected: BTreeSet<i64> = [
        (8, 0),
        (8, 30),
        (9, 0),
        (9, 30),
        (10, 0),
        (13, 0),
        (13, 30),
        (14, 0),
        (14, 30),
        (15, 0),
    ]
    .into_iter()
    .map(|(h, m)| local_ms(tz, 2026, 6, 1, h, m).0)
    .collect();
    assert_eq!(starts(&slots), expected);
    // The window cuts slots: none may start before `earliest` or end after `deadline`.
    let earliest = local_ms(tz, 2026, 6, 1, 9, 10);
    let deadline = local_ms(tz, 2026, 6, 1, 14, 0);
    let slots = s
        .find_slots(&request(0, 60, earliest, deadline))
        .await
        .unwrap();
    let expected: BTreeSet<i64> = [(9, 30), (10, 0), (10, 30), (11, 0), (13, 0)]
        .into_iter()
        .map(|(h, m)| local_ms(tz, 2026, 6, 1, h, m).0)
        .collect();
    assert_eq!(starts(&slots), expected);
    // A window that cannot hold the job is the request's fault, named.
    let e = s
        .find_slots(&request(0, 600, earliest, deadline))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, BookError::InvalidRequest { field, .. } if field == "deadline"),
        "{e}"
    );
}

async fn empty_business_hours_mean_the_default_weekday_hours(t: TestDb) {
    seed(
        &t.db,
        &[center("NYC", "America/New_York", vec![], 2)],
        1,
        None,
    )
    .await;
    let s = t.scheduler(many_offers());
    // Friday 2026-06-05 to Sunday 2026-06-07: Friday only, 08:00–18:00 EDT.
    let slots = s
        .find_slots(&request(
            0,
            30,
            at("2026-06-05T00:00:00Z"),
            at("2026-06-08T00:00:00Z"),
        ))
        .await
        .unwrap();
    assert_eq!(starts(&slots).len(), 20);
    let tz = chrono_tz::America::New_York;
    for slot in &slots {
        let l = local(tz, slot.starts_at);
        assert_eq!(l.weekday(), chrono::Weekday::Fri);
        assert!((8..18).contains(&l.hour()), "{l}");
    }
    // Both bays free: the same start is offered in bay 1 only (offers are alternatives).
    assert!(slots.iter().all(|s| s.bay == 1));
    // The default offer count is three, at different times.
    let s = t.scheduler(SchedulingConfig::default());
    let offers = s
        .find_slots(&request(
            0,
            60,
            at("2026-06-05T00:00:00Z"),
            at("2026-06-08T00:00:00Z"),
        ))
        .await
        .unwrap();
    assert_eq!(offers.len(), 3);
    assert_eq!(starts(&offers).len(), 3);
    assert_eq!(offers[0].starts_at, local_ms(tz, 2026, 6, 5, 8, 0));
}

async fn technicians_skills_and_time_limit_slots(t: TestDb) {
    seed(
        &t.db,
        &[center(
            "MUC",
            "Europe/Berlin",
            every_day("08:00", "10:00"),
            2,
        )],
        4,
        None,
    )
    .await;
    registry::upsert_technicians(
        &t.db,
        &[
            Technician {
                technician_id: "T_BAT".into(),
                center_id: "MUC".into(),
                name: "battery".into(),
                skills: vec![Component::Battery],
                active: true,
            },
            Technician {
                technician_id: "T_COOL".into(),
                center_id: "MUC".into(),
                name: "cooling".into(),
                skills: vec![Component::Thermostat, Component::Radiator],
                active: true,
            },
            Technician {
                technician_id: "T_GONE".into(),
                center_id: "MUC".into(),
                name: "left".into(),
                skills: Component::ALL.to_vec(),
                active: false,
            },
        ],
    )
    .await
    .unwrap();
    let s = t.scheduler(many_offers());
    let tz = chrono_tz::Europe::Berlin;
    let (earliest, deadline) = (
        local_ms(tz, 2026, 6, 1, 0, 0),
        local_ms(tz, 2026, 6, 2, 0, 0),
    );
    let mut battery = request(0, 120, earliest, deadline);
    battery.component = Some(Component::Battery);
    let slots = s.find_slots(&battery).await.unwrap();
    assert_eq!(slots.len(), 1);
    assert_eq!(slots[0].technician.as_deref(), Some("T_BAT"));
    let mut req = booking(slots[0].clone(), 0, None);
    req.component = Some(Component::Battery);
    s.book(req).await.unwrap();
    // Bay 2 is free but the only battery technician is not.
    let mut other = battery.clone();
    other.vehicle_id = vehicle_id(1);
    assert!(s.find_slots(&other).await.unwrap().is_empty());
    // A cooling job gets the other technician in the other bay.
    let mut cooling = request(1, 120, earliest, deadline);
    cooling.component = Some(Component::Thermostat);
    let slots = s.find_slots(&cooling).await.unwrap();
    assert_eq!(slots.len(), 1);
    assert_eq!(
        (slots[0].bay, slots[0].technician.as_deref()),
        (2, Some("T_COOL"))
    );
    // Nobody (active) can do fuel pumps.
    let mut fuel = request(2, 60, earliest, deadline);
    fuel.component = Some(Component::FuelPump);
    assert!(s.find_slots(&fuel).await.unwrap().is_empty());
    // Booking a technician without the skill is refused, naming them.
    let mut wrong = booking(slots[0].clone(), 1, None);
    wrong.component = Some(Component::Battery);
    wrong.slot.technician = Some("T_COOL".into());
    let e = s.book(wrong).await.unwrap_err();
    assert!(
        matches!(&e, BookError::TechnicianNotQualified { technician, .. } if technician == "T_COOL"),
        "{e}"
    );
    // Without a technician named, a free qualified one is assigned.
    let mut unnamed = booking(slots[0].clone(), 1, None);
    unnamed.component = Some(Component::Thermostat);
    unnamed.slot.technician = None;
    let a = s.book(unnamed).await.unwrap();
    assert_eq!(a.technician.as_deref(), Some("T_COOL"));
    // The next day: a busy technician is refused even when a bay is free.
    let day2 = |bay: u32, h: u32, m: u32, technician: Option<&str>| Slot {
        center_id: "MUC".into(),
        bay,
        technician: technician.map(str::to_owned),
        starts_at: local_ms(tz, 2026, 6, 2, h, m),
        ends_at: EventTime(local_ms(tz, 2026, 6, 2, h, m).0 + 3_600_000),
    };
    let mut first = booking(day2(1, 8, 0, Some("T_BAT")), 2, None);
    first.component = Some(Component::Battery);
    s.book(first).await.unwrap();
    let mut busy = booking(day2(2, 8, 30, Some("T_BAT")), 3, None);
    busy.component = Some(Component::Battery);
    let e = s.book(busy.clone()).await.unwrap_err();
    assert!(
        matches!(&e, BookError::TechnicianBusy { technician, .. } if technician == "T_BAT"),
        "{e}"
    );
    busy.slot.technician = None;
    let e = s.book(busy.clone()).await.unwrap_err();
    assert!(matches!(e, BookError::NoTechnician { .. }), "{e}");
    busy.component = Some(Component::Radiator);
    let a = s.book(busy).await.unwrap();
    assert_eq!((a.bay, a.technician.as_deref()), (2, Some("T_COOL")));
}

async fn preferred_times_come_first(t: TestDb) {
    // The customer prefers Wednesdays 14:00–16:00.
    let preferred = vec![PreferredTime {
        weekday: 3,
        from: "14:00".into(),
        to: "16:00".into(),
    }];
    seed(
        &t.db,
        &[center("PAR", "Europe/Paris", vec![], 1)],
        1,
        Some(preferred),
    )
    .await;
    let s = t.scheduler(SchedulingConfig::default());
    let tz = chrono_tz::Europe::Paris;
    // Monday 2026-06-01 to Friday 2026-06-05.
    let r = request(
        0,
        60,
        local_ms(tz, 2026, 6, 1, 0, 0),
        local_ms(tz, 2026, 6, 6, 0, 0),
    );
    let offers = s.find_slots(&r).await.unwrap();
    assert_eq!(offers.len(), 3);
    assert_eq!(offers[0].starts_at, local_ms(tz, 2026, 6, 3, 14, 0));
    assert_eq!(offers[1].starts_at, local_ms(tz, 2026, 6, 3, 15, 0));
    // Then the earliest non-overlapping.
    assert_eq!(offers[2].starts_at, local_ms(tz, 2026, 6, 1, 8, 0));
    // Preferences in the request replace the customer's.
    let mut r2 = r.clone();
    r2.preferred = Some(vec![PreferredTime {
        weekday: 5,
        from: "17:00".into(),
        to: "18:00".into(),
    }]);
    let offers = s.find_slots(&r2).await.unwrap();
    assert_eq!(offers[0].starts_at, local_ms(tz, 2026, 6, 5, 17, 0));
    r2.preferred = Some(vec![PreferredTime {
        weekday: 9,
        from: "17:00".into(),
        to: "18:00".into(),
    }]);
    let e = s.find_slots(&r2).await.unwrap_err();
    assert!(
        matches!(&e, BookError::InvalidRequest { field, .. } if field == "preferred[0].weekday"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------
// Booking

async fn booking_rechecks_hours_bays_and_open_appointments(t: TestDb) {
    seed(&t.db, &[center("ROM", "Europe/Rome", vec![], 2)], 3, None).await;
    let s = t.scheduler(SchedulingConfig::default());
    let tz = chrono_tz::Europe::Rome;
    let slot = |bay: u32, h: u32, m: u32, minutes: i64| Slot {
        center_id: "ROM".into(),
        bay,
        technician: None,
        starts_at: local_ms(tz, 2026, 6, 1, h, m),
        ends_at: EventTime(local_ms(tz, 2026, 6, 1, h, m).0 + minutes * 60_000),
    };
    let a = s.book(booking(slot(1, 8, 0, 120), 0, None)).await.unwrap();
    assert_eq!(a.status, AppointmentStatus::Proposed);
    assert_eq!((a.bay, a.starts_at), (1, local_ms(tz, 2026, 6, 1, 8, 0)));
    // Another start overlapping in the same bay.
    let e = s
        .book(booking(slot(1, 9, 0, 60), 1, None))
        .await
        .unwrap_err();
    assert!(matches!(e, BookError::SlotTaken { bay: 1, .. }), "{e}");
    // The other bay is free.
    s.book(booking(slot(2, 9, 0, 60), 1, None)).await.unwrap();
    // The first vehicle already has an open appointment.
    let e = s
        .book(booking(slot(1, 14, 0, 60), 0, None))
        .await
        .unwrap_err();
    assert!(
        matches!(e, BookError::VehicleHasOpenAppointment { appointment_id } if appointment_id == a.appointment_id),
        "{e}"
    );
    // Outside hours: past closing, before opening, on a Sunday.
    for bad in [slot(1, 17, 30, 60), slot(1, 7, 30, 60)] {
        let e = s.book(booking(bad, 2, None)).await.unwrap_err();
        assert!(matches!(e, BookError::OutsideHours { .. }), "{e}");
    }
    let mut sunday = slot(1, 10, 0, 60);
    sunday.starts_at = local_ms(tz, 2026, 6, 7, 10, 0);
    sunday.ends_at = local_ms(tz, 2026, 6, 7, 11, 0);
    let e = s.book(booking(sunday, 2, None)).await.unwrap_err();
    assert!(matches!(e, BookError::OutsideHours { .. }), "{e}");
    let e = s
        .book(booking(slot(3, 10, 0, 60), 2, None))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            BookError::UnknownBay {
                bay: 3,
                bays: 2,
                ..
            }
        ),
        "{e}"
    );
    let mut nowhere = slot(1, 10, 0, 60);
    nowhere.center_id = "NOWHERE".into();
    let e = s.book(booking(nowhere, 2, None)).await.unwrap_err();
    assert!(matches!(e, BookError::UnknownCenter { .. }), "{e}");
    let e = s
        .book(booking(slot(1, 12, 0, 60), 99, None))
        .await
        .unwrap_err();
    assert!(matches!(e, BookError::UnknownVehicle { .. }), "{e}");
    // Back to back is not an overlap.
    s.book(booking(slot(1, 10, 0, 60), 2, None)).await.unwrap();
    let open = s
        .appointments(&AppointmentFilter {
            center_id: Some("ROM".into()),
            ..AppointmentFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(open.len(), 3);
}

async fn booking_again_for_an_alert_returns_its_appointment(t: TestDb) {
    seed(
        &t.db,
        &[center("AMS", "Europe/Amsterdam", vec![], 2)],
        1,
        None,
    )
    .await;
    let s = t.scheduler(SchedulingConfig::default());
    let alert_id = alert(&t.db, &vehicle_id(0), 1_780_000_000_000).await;
    let r = request(
        0,
        60,
        at("2026-06-01T00:00:00Z"),
        at("2026-06-03T00:00:00Z"),
    );
    let offers = s.find_slots(&r).await.unwrap();
    let first = s
        .book(booking(offers[0].clone(), 0, Some(alert_id)))
        .await
        .unwrap();
    assert_eq!(first.alert_id, Some(alert_id));
    // A restarted workflow books again, even for another slot: the same appointment.
    let again = s
        .book(booking(offers[1].clone(), 0, Some(alert_id)))
        .await
        .unwrap();
    assert_eq!(again, first);
    let all = s.appointments(&AppointmentFilter::default()).await.unwrap();
    assert_eq!(all.len(), 1);
    // Once cancelled, the alert can be booked again.
    s.cancel(first.appointment_id, "customer asked")
        .await
        .unwrap();
    let second = s
        .book(booking(offers[1].clone(), 0, Some(alert_id)))
        .await
        .unwrap();
    assert_ne!(second.appointment_id, first.appointment_id);
    // Concurrent retries of one booking still give one appointment.
    s.cancel(second.appointment_id, "retry test").await.unwrap();
    let s = Arc::new(s);
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let s = Arc::clone(&s);
            let slot = offers[i % offers.len()].clone();
            tokio::spawn(async move { s.book(booking(slot, 0, Some(alert_id))).await })
        })
        .collect();
    let mut ids = BTreeSet::new();
    for task in tasks {
        ids.insert(task.await.unwrap().unwrap().appointment_id);
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
}

async fn confirm_cancel_and_reschedule_keep_the_id(t: TestDb) {
    seed(&t.db, &[center("VIE", "Europe/Vienna", vec![], 1)], 2, None).await;
    let s = t.scheduler(many_offers());
    let tz = chrono_tz::Europe::Vienna;
    let r = request(
        0,
        60,
        local_ms(tz, 2026, 6, 1, 0, 0),
        local_ms(tz, 2026, 6, 2, 0, 0),
    );
    let offers = s.find_slots(&r).await.unwrap();
    let a = s.book(booking(offers[0].clone(), 0, None)).await.unwrap();
    let a = s.confirm(a.appointment_id).await.unwrap();
    assert_eq!(a.status, AppointmentStatus::Confirmed);
    assert_eq!(
        s.confirm(a.appointment_id).await.unwrap().status,
        AppointmentStatus::Confirmed
    );
    // Another vehicle holds 10:00.
    let ten = offers
        .iter()
        .find(|o| o.starts_at == local_ms(tz, 2026, 6, 1, 10, 0))
        .unwrap();
    let b = s.book(booking(ten.clone(), 1, None)).await.unwrap();
    // Moving onto it is refused; onto 12:00 works, same id, still confirmed.
    let e = s
        .reschedule(a.appointment_id, ten.clone())
        .await
        .unwrap_err();
    assert!(matches!(e, BookError::SlotTaken { .. }), "{e}");
    let noon = offers
        .iter()
        .find(|o| o.starts_at == local_ms(tz, 2026, 6, 1, 12, 0))
        .unwrap();
    let moved = s.reschedule(a.appointment_id, noon.clone()).await.unwrap();
    assert_eq!(
        (moved.appointment_id, moved.status),
        (a.appointment_id, AppointmentStatus::Confirmed)
    );
    assert_eq!(moved.starts_at, noon.starts_at);
    // A shift within its own slot is not a conflict with itself.
    let mut later = noon.clone();
    later.starts_at.0 += 30 * 60_000;
    later.ends_at.0 += 30 * 60_000;
    s.reschedule(a.appointment_id, later).await.unwrap();
    // The old 08:00 is free again for the other vehicle's next booking.
    let free = s
        .find_slots(&request(1, 60, r.earliest, r.deadline))
        .await
        .unwrap();
    assert!(free.iter().any(|f| f.starts_at == offers[0].starts_at));
    // The next free slot after 08:00: 08:00 itself (free, not its current start).
    let next = s
        .reschedule_next(a.appointment_id, r.earliest, r.deadline)
        .await
        .unwrap();
    assert_eq!(next.starts_at, offers[0].starts_at);
    assert_eq!(next.appointment_id, a.appointment_id);
    // Lists and the open appointment.
    assert_eq!(
        s.open_appointment(&vehicle_id(0))
            .await
            .unwrap()
            .unwrap()
            .appointment_id,
        a.appointment_id
    );
    let confirmed = s
        .appointments(&AppointmentFilter {
            status: Some(AppointmentStatus::Confirmed),
            ..AppointmentFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(confirmed.len(), 1);
    // Cancel: reason kept, idempotent, no longer open; then no confirm or reschedule.
    let c = s.cancel(a.appointment_id, "car sold").await.unwrap();
    assert_eq!(c.status, AppointmentStatus::Cancelled);
    assert!(c.notes.as_deref().unwrap_or_default().contains("car sold"));
    assert_eq!(
        s.cancel(a.appointment_id, "again").await.unwrap().status,
        AppointmentStatus::Cancelled
    );
    assert!(s.open_appointment(&vehicle_id(0)).await.unwrap().is_none());
    let e = s.confirm(a.appointment_id).await.unwrap_err();
    assert!(
        matches!(
            e,
            BookError::InvalidStatus {
                action: "confirm",
                ..
            }
        ),
        "{e}"
    );
    let e = s
        .reschedule(a.appointment_id, noon.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            BookError::InvalidStatus {
                action: "reschedule",
                ..
            }
        ),
        "{e}"
    );
    let e = s.cancel(9999, "x").await.unwrap_err();
    assert!(
        matches!(
            e,
            BookError::UnknownAppointment {
                appointment_id: 9999
            }
        ),
        "{e}"
    );
    assert_eq!(s.appointment(b.appointment_id).await.unwrap().unwrap(), b);
}

async fn concurrent_bookings_of_one_slot_book_it_once(t: TestDb) {
    seed(&t.db, &[center("OSL", "Europe/Oslo", vec![], 1)], 8, None).await;
    let s = Arc::new(t.scheduler(SchedulingConfig::default()));
    let offers = s
        .find_slots(&request(
            0,
            60,
            at("2026-06-01T00:00:00Z"),
            at("2026-06-02T00:00:00Z"),
        ))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|v| {
            let (s, slot) = (Arc::clone(&s), offers[0].clone());
            tokio::spawn(async move { s.book(booking(slot, v, None)).await })
        })
        .collect();
    let mut booked = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => booked += 1,
            Err(BookError::SlotTaken { .. }) => {}
            Err(e) => panic!("untyped failure: {e}"),
        }
    }
    assert_eq!(booked, 1);
}

// ---------------------------------------------------------------------------------------
// Property tests: many concurrent requests on random centres

const ZONES: [&str; 5] = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Sydney",
    "Asia/Kolkata",
];

/// Window starts near DST changes (Europe and the US in March, Sydney in October).
const BASES: [&str; 3] = [
    "2026-03-26T00:00:00Z",
    "2026-10-01T00:00:00Z",
    "2026-03-06T00:00:00Z",
];

#[derive(Clone, Debug)]
struct World {
    zone: usize,
    base: usize,
    bays: u32,
    /// Per weekday (index 0 = Monday): opening spans `(open hour, length in hours)`,
    /// between 06:00 and 22:00 (clear of DST changes, so a wall-clock oracle applies).
    week: Vec<Vec<(u32, u32)>>,
    /// Technicians' skills (indexes into `Component::ALL`); empty: no technicians.
    technicians: Vec<Vec<usize>>,
    /// Closed days, as offsets from the base date.
    closed: Vec<u32>,
    /// Per vehicle: window start offset and length in hours, and whether it has an alert.
    vehicles: Vec<(u32, u32, bool)>,
    /// Requests: vehicle, component, duration in slots.
    requests: Vec<(usize, Option<usize>, u32)>,
}

fn world() -> impl Strategy<Value = World> {
    let span = (6u32..18, 1u32..7);
    let day = prop::collection::vec(span, 0..3);
    (
        0..ZONES.len(),
        0..BASES.len(),
        1u32..4,
        prop::collection::vec(day, 7),
        prop::collection::vec(prop::collection::vec(0..4usize, 1..3), 0..4),
        prop::collection::vec(0u32..8, 0..3),
        prop::collection::vec((0u32..48, 12u32..96, any::<bool>()), 3..12),
    )
        .prop_flat_map(|(zone, base, bays, week, technicians, closed, vehicles)| {
            let n = vehicles.len();
            let requests =
                prop::collection::vec((0..n, prop::option::of(0..4usize), 1u32..7), 6..24);
            (
                Just((zone, base, bays, week, technicians, closed, vehicles)),
                requests,
            )
        })
        .prop_map(
            |((zone, base, bays, week, technicians, closed, vehicles), requests)| World {
                zone,
                base,
                bays,
                week,
                technicians,
                closed,
                vehicles,
                requests,
            },
        )
}

/// What one concurrent request ended with.
type Outcome = (usize, Result<pmi_agents::Appointment, BookError>);

async fn run_world(backend: Backend, w: World) {
    let t = TestDb::new(backend).await;
    let tz: Tz = ZONES[w.zone].parse().unwrap();
    let base = at(BASES[w.base]);
    let base_date = Utc.timestamp_millis_opt(base.0).unwrap().date_naive();
    let business_hours: Vec<OpeningHours> = w
        .week
        .iter()
        .enumerate()
        .flat_map(|(d, spans)| {
            spans.iter().map(move |&(open, len)| OpeningHours {
                weekday: d as u8 + 1,
                open: format!("{open:02}:00"),
                close: format!("{:02}:00", (open + len).min(22)),
            })
        })
        .collect();
    // An empty week would mean the default hours: keep it explicit.
    let business_hours = if business_hours.is_empty() {
        hours(&[(1, "09:00", "10:00")])
    } else {
        business_hours
    };
    seed(
        &t.db,
        &[center(
            "PROP",
            ZONES[w.zone],
            business_hours.clone(),
            w.bays,
        )],
        w.vehicles.len(),
        None,
    )
    .await;
    let technicians: Vec<Technician> = w
        .technicians
        .iter()
        .enumerate()
        .map(|(i, skills)| Technician {
            technician_id: format!("T{i}"),
            center_id: "PROP".into(),
            name: format!("tech {i}"),
            skills: skills.iter().map(|&c| Component::ALL[c]).collect(),
            active: true,
        })
        .collect();
    registry::upsert_technicians(&t.db, &technicians)
        .await
        .unwrap();
    let closed: BTreeSet<NaiveDate> = w
        .closed
        .iter()
        .map(|&d| base_date + chrono::Days::new(u64::from(d)))
        .collect();
    let closures: Vec<Closure> = closed
        .iter()
        .map(|&day| Closure {
            center_id: "PROP".into(),
            day,
            reason: None,
        })
        .collect();
    registry::upsert_closures(&t.db, &closures).await.unwrap();
    let mut alerts = BTreeMap::new();
    let mut windows = Vec::new();
    for (v, &(from, len, has_alert)) in w.vehicles.iter().enumerate() {
        if has_alert {
            alerts.insert(
                v,
                alert(&t.db, &vehicle_id(v), base.0 + i64::from(v as u32)).await,
            );
        }
        let earliest = EventTime(base.0 + i64::from(from) * 3_600_000);
        windows.push((earliest, EventTime(earliest.0 + i64::from(len) * 3_600_000)));
    }

    let s = Arc::new(t.scheduler(SchedulingConfig::default()));
    let tasks: Vec<_> = w
        .requests
        .iter()
        .enumerate()
        .map(|(i, &(v, component, slots))| {
            let s = Arc::clone(&s);
            let request = SlotRequest {
                vehicle_id: vehicle_id(v),
                center_id: None,
                component: component.map(|c| Component::ALL[c]),
                duration_minutes: 30 * slots,
                earliest: windows[v].0,
                deadline: windows[v].1,
                preferred: None,
            };
            let alert_id = alerts.get(&v).copied();
            // Half the requests take the first offer themselves, half use book_first_free.
            tokio::spawn(async move {
                let result = if i % 2 == 0 {
                    s.book_first_free(&request, alert_id, "prop", None).await
                } else {
                    match s.find_slots(&request).await {
                        Ok(offers) => match offers.into_iter().next() {
                            Some(slot) => {
                                s.book(BookRequest {
                                    slot,
                                    vehicle_id: request.vehicle_id.clone(),
                                    alert_id,
                                    component: request.component,
                                    booked_by: "prop".into(),
                                    notes: None,
                                })
                                .await
                            }
                            None => Err(BookError::NoSlot {
                                vehicle_id: request.vehicle_id.clone(),
                            }),
                        },
                        Err(e) => Err(e),
                    }
                };
                // Then some move their appointment to the next free slot, and some cancel
                // it, while the others are still booking.
                let result = match result {
                    Ok(a) if i % 3 == 2 => {
                        match s
                            .reschedule_next(a.appointment_id, request.earliest, request.deadline)
                            .await
                        {
                            Err(BookError::NoSlot { .. }) => Ok(a),
                            other => other,
                        }
                    }
                    Ok(a) if i % 5 == 4 => s.cancel(a.appointment_id, "prop").await,
                    other => other,
                };
                (v, result)
            })
        })
        .collect();
    let mut outcomes: Vec<Outcome> = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }

    // Every failure has a typed reason that concurrency or the world explains.
    for (v, result) in &outcomes {
        if let Err(e) = result {
            assert!(
                matches!(
                    e,
                    BookError::NoSlot { .. }
                        | BookError::SlotTaken { .. }
                        | BookError::TechnicianBusy { .. }
                        | BookError::NoTechnician { .. }
                        | BookError::VehicleHasOpenAppointment { .. }
                        // Two requests of one alert share an appointment: one may cancel it
                        // while the other moves it.
                        | BookError::InvalidStatus { .. }
                ),
                "vehicle {v}: {e:?}"
            );
        }
    }
    let all = s.appointments(&AppointmentFilter::default()).await.unwrap();
    let open: Vec<_> = all.iter().filter(|a| a.status.is_open()).collect();
    for a in &all {
        assert!(
            a.status.is_open() || a.status == AppointmentStatus::Cancelled,
            "{a:?}"
        );
    }
    // Each successful request got an appointment of its own vehicle, and one per alert.
    for (v, result) in &outcomes {
        if let Ok(a) = result {
            assert_eq!(a.vehicle_id, vehicle_id(*v));
            assert!(all.iter().any(|b| b.appointment_id == a.appointment_id));
        }
        if let Err(BookError::VehicleHasOpenAppointment { appointment_id }) = result {
            let held = all
                .iter()
                .find(|b| b.appointment_id == *appointment_id)
                .unwrap();
            assert_eq!(held.vehicle_id, vehicle_id(*v));
        }
    }
    let mut per_vehicle = BTreeMap::new();
    for a in &open {
        *per_vehicle.entry(a.vehicle_id.clone()).or_insert(0) += 1;
    }
    assert!(per_vehicle.values().all(|&n| n == 1), "{per_vehicle:?}");
    // No overlaps per bay or per technician.
    for (i, a) in open.iter().enumerate() {
        for b in &open[i + 1..] {
            let overlap = a.starts_at < b.ends_at && b.starts_at < a.ends_at;
            assert!(!(overlap && a.bay == b.bay), "bay {}: {a:?} / {b:?}", a.bay);
            assert!(
                !(overlap && a.technician.is_some() && a.technician == b.technician),
                "technician: {a:?} / {b:?}"
            );
        }
    }
    // Inside business hours (wall clock, independent of the scheduler's arithmetic), not on
    // a closed day, inside the vehicle's window, with a qualified technician when the
    // centre has technicians.
    for a in &open {
        let (start, end) = (local(tz, a.starts_at), local(tz, a.ends_at));
        assert_eq!(start.date_naive(), end.date_naive(), "{a:?}");
        assert!(!closed.contains(&start.date_naive()), "closed day: {a:?}");
        let weekday = start.weekday().number_from_monday() as u8;
        let (s_min, e_min) = (
            start.hour() * 60 + start.minute(),
            end.hour() * 60 + end.minute(),
        );
        let inside = business_hours.iter().any(|h| {
            let open = h.open[..2].parse::<u32>().unwrap() * 60;
            let close = h.close[..2].parse::<u32>().unwrap() * 60;
            h.weekday == weekday && open <= s_min && e_min <= close
        });
        // Spans of one day may touch (merged by the scheduler): accept a slot inside their
        // union.
        let inside = inside || {
            let mut minute = s_min;
            while minute < e_min
                && business_hours.iter().any(|h| {
                    let open = h.open[..2].parse::<u32>().unwrap() * 60;
                    let close = h.close[..2].parse::<u32>().unwrap() * 60;
                    h.weekday == weekday && open <= minute && minute < close
                })
            {
                minute += 1;
            }
            minute == e_min
        };
        assert!(inside, "outside hours: {a:?} ({start} .. {end})");
        let v: usize = a.vehicle_id[4..].parse().unwrap();
        let (earliest, deadline) = windows[v];
        assert!(
            earliest <= a.starts_at && a.ends_at <= deadline,
            "window: {a:?}"
        );
        if !technicians.is_empty() {
            let t = a.technician.as_deref().expect("a technician is assigned");
            let tech = technicians.iter().find(|x| x.technician_id == t).unwrap();
            if let Some(c) = a.component {
                assert!(tech.skills.contains(&c), "{a:?}");
            }
        }
        if let Some(&alert_id) = alerts.get(&v) {
            assert_eq!(a.alert_id, Some(alert_id));
        }
    }
    // The offers at the end equal a from-scratch oracle's free starts (wall clock, minute
    // by minute), for every request: nothing free is missed, nothing taken is offered.
    let everything = Scheduler::new(
        t.db.clone(),
        SchedulingConfig {
            max_offers: 100_000,
            ..SchedulingConfig::default()
        },
    )
    .unwrap();
    let distinct: BTreeSet<(usize, Option<usize>, u32)> = w.requests.iter().copied().collect();
    for (v, component, slots) in distinct {
        let component = component.map(|c| Component::ALL[c]);
        let duration = 30 * slots;
        let request = SlotRequest {
            vehicle_id: vehicle_id(v),
            center_id: None,
            component,
            duration_minutes: duration,
            earliest: windows[v].0,
            deadline: windows[v].1,
            preferred: None,
        };
        let offered = starts(&everything.find_slots(&request).await.unwrap());
        let oracle = Oracle {
            tz,
            hours: &business_hours,
            closed: &closed,
            bays: w.bays,
            technicians: &technicians,
            open: &open,
        };
        let expected = oracle.free_starts(component, duration, windows[v]);
        assert_eq!(
            offered, expected,
            "vehicle {v}, {component:?}, {duration} min"
        );
    }
    drop(s);
    drop(everything);
    drop(t);
}

/// Free starts computed from scratch: every :00 and :30 of the window's local days whose
/// whole job lies in opening minutes, with a free bay and a free qualified technician.
struct Oracle<'a> {
    tz: Tz,
    hours: &'a [OpeningHours],
    closed: &'a BTreeSet<NaiveDate>,
    bays: u32,
    technicians: &'a [Technician],
    open: &'a [&'a pmi_agents::Appointment],
}

impl Oracle<'_> {
    fn is_open(&self, weekday: u8, minute: u32) -> bool {
        self.hours.iter().any(|h| {
            let open = h.open[..2].parse::<u32>().unwrap() * 60;
            let close = h.close[..2].parse::<u32>().unwrap() * 60;
            h.weekday == weekday && open <= minute && minute < close
        })
    }

    fn free_starts(
        &self,
        component: Option<Component>,
        duration: u32,
        (earliest, deadline): (EventTime, EventTime),
    ) -> BTreeSet<i64> {
        let mut out = BTreeSet::new();
        let first = local(self.tz, earliest).date_naive();
        let last = local(self.tz, deadline).date_naive();
        for day in first.iter_days().take_while(|d| *d <= last) {
            if self.closed.contains(&day) {
                continue;
            }
            let weekday = day.weekday().number_from_monday() as u8;
            for start in (0..24 * 60 - duration).step_by(30) {
                if !(start..start + duration).all(|m| self.is_open(weekday, m)) {
                    continue;
                }
                let naive = day.and_hms_opt(start / 60, start % 60, 0).unwrap();
                let s = self
                    .tz
                    .from_local_datetime(&naive)
                    .single()
                    .unwrap()
                    .timestamp_millis();
                let e = s + i64::from(duration) * 60_000;
                if s < earliest.0 || e > deadline.0 {
                    continue;
                }
                let overlaps = |a: &pmi_agents::Appointment| a.starts_at.0 < e && s < a.ends_at.0;
                let bay_free = (1..=self.bays)
                    .any(|bay| !self.open.iter().any(|a| a.bay == bay && overlaps(a)));
                let tech_free = self.technicians.is_empty()
                    || self.technicians.iter().any(|t| {
                        component.is_none_or(|c| t.skills.contains(&c))
                            && !self.open.iter().any(|a| {
                                a.technician.as_deref() == Some(t.technician_id.as_str())
                                    && overlaps(a)
                            })
                    });
                if bay_free && tech_free {
                    out.insert(s);
                }
            }
        }
        out
    }
}

fn run_blocking(backend: Backend, w: World) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run_world(backend, w));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn sqlite_concurrent_bookings_never_overlap_and_stay_in_hours(w in world()) {
        run_blocking(Backend::Sqlite, w);
    }

    #[test]
    fn postgres_concurrent_bookings_never_overlap_and_stay_in_hours(w in world()) {
        run_blocking(Backend::Postgres, w);
    }
}

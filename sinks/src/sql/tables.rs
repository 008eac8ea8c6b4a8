//! The tables the alert collection is checked against, read from SQL: the registry
//! (`vehicles`, `customers` and `service_centers`), open appointments and
//! recent repairs, as [`TableRow`]s. A [`TableWatcher`]
//! polls them and sends the differences to the graph, so a booking made by an agent (or by
//! anyone, in any process) retracts its alert incrementally.
//!
//! Polling, not change-data capture: the tables are small (one row per vehicle, a few per
//! open appointment) and SQLite has no change feed; a full read every second or so costs
//! little and works the same on both databases.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use sqlx::Row;

use pmi_core::{
    Component, CustomerRecord, EventTime, ServiceCenterRecord, TableRow, TableUpdate, VehicleId,
    VehicleRecord,
};

use super::{on_pool, runtime, Backend, Database, SqlConfig};
use crate::SinkError;

/// Appointment statuses that count as open (they hold the vehicle's alerts back).
pub const OPEN_APPOINTMENT: [&str; 3] = ["proposed", "confirmed", "in_progress"];

fn err(table: &str) -> impl Fn(sqlx::Error) -> SinkError + '_ {
    move |e| SinkError::Sql {
        context: format!("table `{table}`"),
        message: e.to_string(),
    }
}

impl Database {
    /// The alert collection's table rows now: every vehicle, customer and service centre
    /// row (the graph joins them, so a change to a customer changes their vehicles'
    /// alerts), every open
    /// appointment (its component, or the whole vehicle when it names none or one PMI does
    /// not know), and every repair (`work_type` repair or replacement of a known component)
    /// performed within `recent` before `now`. Rows of vehicles whose id is not a valid
    /// vehicle id are skipped (they cannot match telemetry).
    pub async fn alert_table_rows(
        &self,
        now: EventTime,
        recent: Duration,
    ) -> Result<BTreeSet<TableRow>, SinkError> {
        let mut rows = BTreeSet::new();
        let vehicles = on_pool!(self, |pool| {
            sqlx::query("SELECT vehicle_id, customer_id, home_center_id, model FROM vehicles")
                .fetch_all(pool)
                .await
                .map_err(err("vehicles"))?
                .iter()
                .map(|r| {
                    Ok::<_, sqlx::Error>((
                        r.try_get::<String, _>(0)?,
                        VehicleRecord {
                            customer_id: r.try_get(1)?,
                            service_center_id: r.try_get(2)?,
                            model: r.try_get(3)?,
                        },
                    ))
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(err("vehicles"))?
        });
        for (v, row) in vehicles {
            if let Ok(v) = VehicleId::parse(&v) {
                rows.insert(TableRow::Vehicle(v, row));
            }
        }
        let consent = match self.backend() {
            Backend::Postgres => "contact_consent",
            Backend::Sqlite => {
                "CASE WHEN contact_consent IS NULL THEN NULL ELSE contact_consent = 1 END"
            }
        };
        let sql = format!("SELECT customer_id, name, preferred_channel, {consent} FROM customers");
        let customers = on_pool!(self, |pool| {
            sqlx::query(&sql)
                .fetch_all(pool)
                .await
                .map_err(err("customers"))?
                .iter()
                .map(|r| {
                    Ok::<_, sqlx::Error>(TableRow::Customer(
                        r.try_get(0)?,
                        CustomerRecord {
                            name: r.try_get(1)?,
                            preferred_channel: r.try_get(2)?,
                            contact_consent: r.try_get(3)?,
                        },
                    ))
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(err("customers"))?
        });
        rows.extend(customers);
        let centers = on_pool!(self, |pool| {
            sqlx::query("SELECT center_id, name, time_zone FROM service_centers")
                .fetch_all(pool)
                .await
                .map_err(err("service_centers"))?
                .iter()
                .map(|r| {
                    Ok::<_, sqlx::Error>(TableRow::ServiceCenter(
                        r.try_get(0)?,
                        ServiceCenterRecord {
                            name: r.try_get(1)?,
                            time_zone: r.try_get(2)?,
                        },
                    ))
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(err("service_centers"))?
        });
        rows.extend(centers);
        let open = OPEN_APPOINTMENT
            .iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql =
            format!("SELECT vehicle_id, component FROM appointments WHERE status IN ({open})");
        let appointments = on_pool!(self, |pool| {
            sqlx::query(&sql)
                .fetch_all(pool)
                .await
                .map_err(err("appointments"))?
                .iter()
                .map(|r| {
                    Ok((
                        r.try_get::<String, _>(0)?,
                        r.try_get::<Option<String>, _>(1)?,
                    ))
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(err("appointments"))?
        });
        for (v, c) in appointments {
            if let Ok(v) = VehicleId::parse(&v) {
                let component = c.as_deref().and_then(Component::from_name);
                rows.insert(TableRow::Appointment(v, component));
            }
        }
        let since = now.0 - recent.as_millis() as i64;
        let sql = match self.backend() {
            Backend::Postgres => {
                "SELECT vehicle_id, component FROM maintenance_records \
                 WHERE work_type IN ('repair', 'replacement') AND component IS NOT NULL \
                   AND performed_at >= to_timestamp($1::float8 / 1000.0)"
            }
            Backend::Sqlite => {
                "SELECT vehicle_id, component FROM maintenance_records \
                 WHERE work_type IN ('repair', 'replacement') AND component IS NOT NULL \
                   AND performed_at >= $1"
            }
        };
        let repairs = on_pool!(self, |pool| {
            sqlx::query(sql)
                .bind(since)
                .fetch_all(pool)
                .await
                .map_err(err("maintenance_records"))?
                .iter()
                .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(err("maintenance_records"))?
        });
        for (v, c) in repairs {
            if let (Ok(v), Some(c)) = (VehicleId::parse(&v), Component::from_name(&c)) {
                rows.insert(TableRow::Maintenance(v, c));
            }
        }
        Ok(rows)
    }
}

/// The updates that turn `old` into `new`: `−1` for rows gone, `+1` for rows new.
pub fn diff(old: &BTreeSet<TableRow>, new: &BTreeSet<TableRow>) -> Vec<TableUpdate> {
    old.difference(new)
        .map(|r| (r.clone(), -1))
        .chain(new.difference(old).map(|r| (r.clone(), 1)))
        .collect()
}

/// Polls the alert collection's tables on a thread of its own and sends what changed.
/// Dropping it stops the thread.
pub struct TableWatcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// What [`TableWatcher::start`] hands the graph.
pub struct WatchedTables {
    /// The rows at start (insert them before the first prediction).
    pub initial: Vec<TableUpdate>,
    /// The differences after that, one message per poll that found any.
    pub updates: Receiver<Vec<TableUpdate>>,
    /// The watcher (keep it alive as long as the updates are wanted).
    pub watcher: TableWatcher,
}

impl TableWatcher {
    /// Reads the tables once (so the graph starts from them; a database that cannot be
    /// read fails here), then polls every `every`, counting repairs within `recent` as
    /// recent. A failing poll is logged and retried at the next tick: alerts then lag
    /// the database, nothing is lost.
    pub fn start(
        config: &SqlConfig,
        every: Duration,
        recent: Duration,
    ) -> Result<WatchedTables, SinkError> {
        let rt = runtime()?;
        let db = rt.block_on(async {
            let db = Database::connect_lazy(config, 1)?;
            Ok::<_, SinkError>(db)
        })?;
        let first = rt.block_on(db.alert_table_rows(EventTime::now(), recent))?;
        let initial = first.iter().map(|r| (r.clone(), 1)).collect();
        let (tx, rx) = crossbeam_channel::bounded(64);
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("pmi-alert-tables".into())
            .spawn(move || watch(rt, db, first, every, recent, tx, &thread_stop))
            .map_err(|source| SinkError::Io {
                path: "alert table watcher thread".into(),
                source,
            })?;
        Ok(WatchedTables {
            initial,
            updates: rx,
            watcher: TableWatcher {
                stop,
                thread: Some(thread),
            },
        })
    }
}

fn watch(
    rt: tokio::runtime::Runtime,
    db: Database,
    mut last: BTreeSet<TableRow>,
    every: Duration,
    recent: Duration,
    tx: Sender<Vec<TableUpdate>>,
    stop: &AtomicBool,
) {
    let tick = Duration::from_millis(20).min(every);
    let mut waited = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(tick);
        waited += tick;
        if waited < every {
            continue;
        }
        waited = Duration::ZERO;
        match rt.block_on(db.alert_table_rows(EventTime::now(), recent)) {
            Ok(now) => {
                let changes = diff(&last, &now);
                if !changes.is_empty() {
                    if tx.send(changes).is_err() {
                        return; // the graph is gone
                    }
                    last = now;
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the alert tables failed; retrying"),
        }
    }
    rt.block_on(db.close());
}

impl Drop for TableWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_removes_and_adds() {
        let v = |s: &str| VehicleId::parse(s).unwrap();
        let a = TableRow::Appointment(v("V1"), None);
        let b = TableRow::Maintenance(v("V1"), Component::Battery);
        let c = TableRow::Vehicle(v("V2"), VehicleRecord::default());
        let old = BTreeSet::from([a.clone(), b.clone()]);
        let new = BTreeSet::from([b, c.clone()]);
        assert_eq!(diff(&old, &new), vec![(a, -1), (c, 1)]);
        assert!(diff(&new, &new).is_empty());
    }
}

//! Reading back: counts, the latest prediction per vehicle, alerts and their status, and
//! the schema's keys (for the HTTP API, the agents and the tests).

use serde::{Deserialize, Serialize};
use sqlx::Row;

use pmi_core::{Component, EventTime, Prediction, Sensor, SensorValues, Severity, Telemetry};
use pmi_core::{VehicleId, SENSOR_COUNT};

use super::{on_pool, Backend, Database, TABLES};
use crate::SinkError;

/// Where an alert's handling is. Only agents change it; the alerts sink never does (it
/// writes whether the alert is still active, [`StoredAlert::active`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// Raised, nobody acted yet.
    Open,
    /// An agent took it in hand (e.g. an appointment is being booked).
    Acknowledged,
    /// Done (serviced, dismissed as false alarm, …).
    Resolved,
}

impl AlertStatus {
    /// The stored name.
    pub const fn name(self) -> &'static str {
        match self {
            AlertStatus::Open => "open",
            AlertStatus::Acknowledged => "acknowledged",
            AlertStatus::Resolved => "resolved",
        }
    }
    /// Looks a status up by its stored name.
    pub fn from_name(name: &str) -> Option<AlertStatus> {
        [
            AlertStatus::Open,
            AlertStatus::Acknowledged,
            AlertStatus::Resolved,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }
}

/// A row of `alerts`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredAlert {
    /// Surrogate id (what appointments and the audit log refer to).
    pub alert_id: i64,
    /// The prediction the alert was raised from (vehicle, pane, risk, severity, …).
    pub prediction: Prediction,
    /// Open, acknowledged or resolved (the agents' view).
    pub status: AlertStatus,
    /// Whether the alert is in the dataflow's alert collection now.
    pub active: bool,
    /// Why it left the collection (`booked`, `repaired`, `unregistered`, `recovered`,
    /// `superseded`), when it did.
    pub retraction: Option<String>,
    /// The feature values it was raised on (name, value), by name.
    pub features: Vec<(String, f64)>,
    /// When the response is due (pane end + the severity's SLA), ms since the epoch.
    pub sla_due_at: Option<i64>,
    /// When the row was first written, ms since the epoch.
    pub raised_at: i64,
    /// When the sink last changed it, ms since the epoch.
    pub updated_at: i64,
}

/// A foreign key of a table: `column` references `references(references_column)`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ForeignKey {
    /// The referencing column.
    pub column: String,
    /// The referenced table.
    pub references: String,
    /// The referenced column.
    pub references_column: String,
}

fn err(context: &str) -> impl Fn(sqlx::Error) -> SinkError + '_ {
    move |e| SinkError::Sql {
        context: context.to_owned(),
        message: e.to_string(),
    }
}

fn corrupt(context: &str, message: String) -> SinkError {
    SinkError::Sql {
        context: context.to_owned(),
        message,
    }
}

/// A JSON object of feature values, sorted by name (nulls skipped).
fn parse_features(context: &str, text: &str) -> Result<Vec<(String, f64)>, SinkError> {
    let map: std::collections::BTreeMap<String, Option<f64>> = serde_json::from_str(text)
        .map_err(|e| corrupt(context, format!("features `{text}`: {e}")))?;
    Ok(map.into_iter().filter_map(|(n, v)| Some((n, v?))).collect())
}

impl Database {
    /// `col` as integer ms since the epoch (UTC).
    fn ms(&self, col: &str) -> String {
        match self.backend() {
            Backend::Postgres => format!("(EXTRACT(EPOCH FROM {col}) * 1000)::int8"),
            Backend::Sqlite => col.to_owned(),
        }
    }

    /// `col` (JSON) as text.
    fn json(&self, col: &str) -> String {
        match self.backend() {
            Backend::Postgres => format!("{col}::text"),
            Backend::Sqlite => col.to_owned(),
        }
    }

    /// Rows in `table` (one of [`TABLES`]).
    pub async fn count(&self, table: &str) -> Result<u64, SinkError> {
        if !TABLES.contains(&table) {
            return Err(corrupt(
                "count",
                format!("`{table}` is not a table of the schema"),
            ));
        }
        let sql = format!("SELECT COUNT(*) FROM {table}");
        let n: i64 = on_pool!(self, |pool| sqlx::query_scalar(&sql).fetch_one(pool).await)
            .map_err(err(table))?;
        Ok(n as u64)
    }

    fn prediction_columns(&self) -> String {
        format!(
            "vehicle_id, {}, risk, severity, component, model, {}",
            self.ms("pane_end"),
            self.json("explanation")
        )
    }

    /// The latest prediction of every vehicle (largest `pane_end`), by vehicle id.
    pub async fn latest_predictions(&self) -> Result<Vec<Prediction>, SinkError> {
        let sql = format!(
            "SELECT {} FROM failure_predictions p WHERE pane_end = \
               (SELECT MAX(q.pane_end) FROM failure_predictions q WHERE q.vehicle_id = p.vehicle_id) \
             ORDER BY vehicle_id",
            self.prediction_columns()
        );
        self.fetch_predictions(&sql, None).await
    }

    /// Predictions (of one vehicle, or all), by vehicle and pane.
    pub async fn predictions(
        &self,
        vehicle_id: Option<&str>,
    ) -> Result<Vec<Prediction>, SinkError> {
        let sql = format!(
            "SELECT {} FROM failure_predictions WHERE ($1 IS NULL OR vehicle_id = $1) \
             ORDER BY vehicle_id, pane_end",
            self.prediction_columns()
        );
        self.fetch_predictions(&sql, vehicle_id).await
    }

    async fn fetch_predictions(
        &self,
        sql: &str,
        vehicle_id: Option<&str>,
    ) -> Result<Vec<Prediction>, SinkError> {
        const CONTEXT: &str = "table `failure_predictions`";
        let rows = on_pool!(self, |pool| {
            let mut q = sqlx::query(sql);
            if sql.contains("$1") {
                q = q.bind(vehicle_id);
            }
            q.fetch_all(pool)
                .await
                .map_err(err(CONTEXT))?
                .iter()
                .map(|r| {
                    Ok::<_, sqlx::Error>((
                        r.try_get::<String, _>(0)?,
                        r.try_get::<i64, _>(1)?,
                        r.try_get::<f64, _>(2)?,
                        r.try_get::<String, _>(3)?,
                        r.try_get::<Option<String>, _>(4)?,
                        r.try_get::<String, _>(5)?,
                        r.try_get::<String, _>(6)?,
                    ))
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(err(CONTEXT))?
        });
        rows.into_iter()
            .map(|(v, t, risk, sev, comp, model, expl)| {
                prediction(CONTEXT, &v, t, risk, &sev, comp.as_deref(), model, &expl)
            })
            .collect()
    }

    /// Telemetry readings (of one vehicle, or all), by vehicle and time.
    pub async fn telemetry(&self, vehicle_id: Option<&str>) -> Result<Vec<Telemetry>, SinkError> {
        const CONTEXT: &str = "table `vehicle_telemetry`";
        let sensors: Vec<&str> = Sensor::ALL.iter().map(|s| s.name()).collect();
        let sql = format!(
            "SELECT vehicle_id, {}, {} FROM vehicle_telemetry \
             WHERE ($1 IS NULL OR vehicle_id = $1) ORDER BY vehicle_id, ts",
            self.ms("ts"),
            sensors.join(", ")
        );
        let rows = on_pool!(self, |pool| {
            sqlx::query(&sql)
                .bind(vehicle_id)
                .fetch_all(pool)
                .await
                .map_err(err(CONTEXT))?
                .iter()
                .map(|r| {
                    let mut values = [None; SENSOR_COUNT];
                    for (i, v) in values.iter_mut().enumerate() {
                        *v = r.try_get::<Option<f64>, _>(i + 2)?;
                    }
                    Ok::<_, sqlx::Error>((
                        r.try_get::<String, _>(0)?,
                        r.try_get::<i64, _>(1)?,
                        values,
                    ))
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(err(CONTEXT))?
        });
        rows.into_iter()
            .map(|(v, ts, values)| {
                Ok(Telemetry {
                    vehicle_id: vehicle(CONTEXT, &v)?,
                    ts: EventTime(ts),
                    values: SensorValues::new(values).ok_or_else(|| {
                        corrupt(CONTEXT, format!("{v} at {ts}: a value outside its range"))
                    })?,
                })
            })
            .collect()
    }

    /// Alerts (with `status`, or all), most urgent first (severity, then pane end).
    pub async fn alerts(&self, status: Option<AlertStatus>) -> Result<Vec<StoredAlert>, SinkError> {
        let sql = format!(
            "SELECT vehicle_id, {}, risk, severity, component, model, {}, alert_id, status, \
                    {}, {}, {}, active, retraction, {} \
             FROM alerts WHERE ($1 IS NULL OR status = $1) \
             ORDER BY severity_rank DESC, pane_end, vehicle_id",
            self.ms("pane_end"),
            self.json("explanation"),
            self.ms("sla_due_at"),
            self.ms("raised_at"),
            self.ms("updated_at"),
            self.json("features"),
        );
        self.fetch_alerts(&sql, status.map(|s| s.name())).await
    }

    /// Active alerts not resolved with severity at least `min`, most urgent first: the
    /// agents' work queue.
    pub async fn open_alerts(&self, min: Severity) -> Result<Vec<StoredAlert>, SinkError> {
        let mut all = self.alerts(None).await?;
        all.retain(|a| {
            a.active && a.status != AlertStatus::Resolved && a.prediction.severity >= min
        });
        Ok(all)
    }

    async fn fetch_alerts(
        &self,
        sql: &str,
        status: Option<&str>,
    ) -> Result<Vec<StoredAlert>, SinkError> {
        const CONTEXT: &str = "table `alerts`";
        let rows = on_pool!(self, |pool| {
            sqlx::query(sql)
                .bind(status)
                .fetch_all(pool)
                .await
                .map_err(err(CONTEXT))?
                .iter()
                .map(|r| {
                    Ok::<_, sqlx::Error>((
                        (
                            r.try_get::<String, _>(0)?,
                            r.try_get::<i64, _>(1)?,
                            r.try_get::<f64, _>(2)?,
                            r.try_get::<String, _>(3)?,
                            r.try_get::<Option<String>, _>(4)?,
                            r.try_get::<String, _>(5)?,
                            r.try_get::<String, _>(6)?,
                        ),
                        r.try_get::<i64, _>(7)?,
                        r.try_get::<String, _>(8)?,
                        r.try_get::<Option<i64>, _>(9)?,
                        r.try_get::<i64, _>(10)?,
                        r.try_get::<i64, _>(11)?,
                        (
                            r.try_get::<bool, _>(12)?,
                            r.try_get::<Option<String>, _>(13)?,
                            r.try_get::<String, _>(14)?,
                        ),
                    ))
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(err(CONTEXT))?
        });
        rows.into_iter()
            .map(
                |(
                    (v, t, risk, sev, comp, model, expl),
                    id,
                    status,
                    sla,
                    raised,
                    updated,
                    (active, retraction, features),
                )| {
                    Ok(StoredAlert {
                        alert_id: id,
                        prediction: prediction(
                            CONTEXT,
                            &v,
                            t,
                            risk,
                            &sev,
                            comp.as_deref(),
                            model,
                            &expl,
                        )?,
                        status: AlertStatus::from_name(&status).ok_or_else(|| {
                            corrupt(CONTEXT, format!("unknown status `{status}`"))
                        })?,
                        active,
                        retraction,
                        features: parse_features(CONTEXT, &features)?,
                        sla_due_at: sla,
                        raised_at: raised,
                        updated_at: updated,
                    })
                },
            )
            .collect()
    }

    /// Sets an alert's status (and `acknowledged_at` / `resolved_at`, plus `resolution` when
    /// given). Returns whether the alert exists.
    pub async fn set_alert_status(
        &self,
        alert_id: i64,
        status: AlertStatus,
        resolution: Option<&str>,
    ) -> Result<bool, SinkError> {
        let now = EventTime::now().0;
        let stamp = match self.backend() {
            Backend::Postgres => "to_timestamp($3::float8 / 1000.0)",
            Backend::Sqlite => "$3",
        };
        let sql = format!(
            "UPDATE alerts SET status = $2, \
               acknowledged_at = CASE WHEN $2 = 'acknowledged' THEN {stamp} ELSE acknowledged_at END, \
               resolved_at = CASE WHEN $2 = 'resolved' THEN {stamp} ELSE resolved_at END, \
               resolution = COALESCE($4, resolution) \
             WHERE alert_id = $1"
        );
        let done = on_pool!(self, |pool| sqlx::query(&sql)
            .bind(alert_id)
            .bind(status.name())
            .bind(now)
            .bind(resolution)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))
        .map_err(err("table `alerts`"))?;
        Ok(done > 0)
    }

    /// The tables of the database's main schema (without sqlx's bookkeeping), sorted.
    pub async fn tables(&self) -> Result<Vec<String>, SinkError> {
        let sql = match self.backend() {
            Backend::Postgres => {
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' \
                   AND table_name NOT LIKE '\\_sqlx%' ORDER BY 1"
            }
            Backend::Sqlite => {
                "SELECT name FROM sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite%' AND name NOT LIKE '\\_sqlx%' ESCAPE '\\' ORDER BY 1"
            }
        };
        on_pool!(self, |pool| sqlx::query_scalar::<_, String>(sql)
            .fetch_all(pool)
            .await)
        .map_err(err("schema"))
    }

    /// The primary key columns of `table`, in key order.
    pub async fn primary_key(&self, table: &str) -> Result<Vec<String>, SinkError> {
        let sql = match self.backend() {
            Backend::Postgres => {
                "SELECT a.attname::text FROM pg_index i \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                 WHERE i.indrelid = $1::text::regclass AND i.indisprimary \
                 ORDER BY array_position(i.indkey, a.attnum)"
            }
            Backend::Sqlite => "SELECT name FROM pragma_table_info($1) WHERE pk > 0 ORDER BY pk",
        };
        on_pool!(self, |pool| sqlx::query_scalar::<_, String>(sql)
            .bind(table)
            .fetch_all(pool)
            .await)
        .map_err(err(table))
    }

    /// The foreign keys of `table` (single-column ones), sorted.
    pub async fn foreign_keys(&self, table: &str) -> Result<Vec<ForeignKey>, SinkError> {
        let sql = match self.backend() {
            Backend::Postgres => {
                "SELECT a.attname::text, c.confrelid::regclass::text, b.attname::text \
                 FROM pg_constraint c \
                 JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] \
                 JOIN pg_attribute b ON b.attrelid = c.confrelid AND b.attnum = c.confkey[1] \
                 WHERE c.contype = 'f' AND c.conrelid = $1::text::regclass ORDER BY 1, 2"
            }
            Backend::Sqlite => {
                "SELECT \"from\", \"table\", \"to\" FROM pragma_foreign_key_list($1) ORDER BY 1, 2"
            }
        };
        let rows: Vec<(String, String, String)> = on_pool!(self, |pool| sqlx::query_as(sql)
            .bind(table)
            .fetch_all(pool)
            .await)
        .map_err(err(table))?;
        Ok(rows
            .into_iter()
            .map(|(column, references, references_column)| ForeignKey {
                column,
                references,
                references_column,
            })
            .collect())
    }
}

fn vehicle(context: &str, v: &str) -> Result<VehicleId, SinkError> {
    VehicleId::parse(v).map_err(|e| corrupt(context, format!("vehicle id `{v}`: {e}")))
}

#[allow(clippy::too_many_arguments)]
fn prediction(
    context: &str,
    v: &str,
    pane_end: i64,
    risk: f64,
    severity: &str,
    component: Option<&str>,
    model: String,
    explanation: &str,
) -> Result<Prediction, SinkError> {
    Ok(Prediction {
        vehicle_id: vehicle(context, v)?,
        pane_end: EventTime(pane_end),
        risk,
        severity: Severity::from_name(severity)
            .ok_or_else(|| corrupt(context, format!("unknown severity `{severity}`")))?,
        component: component
            .map(|c| {
                Component::from_name(c)
                    .ok_or_else(|| corrupt(context, format!("unknown component `{c}`")))
            })
            .transpose()?,
        model: model.into(),
        explanation: serde_json::from_str(explanation)
            .map_err(|e| corrupt(context, format!("explanation: {e}")))?,
    })
}

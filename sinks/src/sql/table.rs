//! How records become rows: a [`TableSpec`] per streaming table (columns, natural key, what
//! an upsert may change), the [`SqlTable`] trait that fills columnar batches, and the batched
//! upsert statements of each dialect.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use pmi_core::{Alert, AlertChange, EventTime, Prediction, RetractReason, Sensor, Telemetry};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, SqliteConnection};

/// A column's type, as the writer binds it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ColumnType {
    /// Text (`TEXT`).
    Text,
    /// A UTC instant in ms since the epoch (`TIMESTAMPTZ` / `INTEGER` ms).
    Timestamp,
    /// A float (`DOUBLE PRECISION` / `REAL`).
    Float,
    /// An integer (`BIGINT`, `SMALLINT` / `INTEGER`).
    Integer,
    /// JSON text (`JSONB` / `TEXT` checked by `json_valid`).
    Json,
    /// A boolean (`BOOLEAN` / `INTEGER` 0-1).
    Bool,
}

impl ColumnType {
    fn pg_array(self) -> &'static str {
        match self {
            ColumnType::Text | ColumnType::Json => "text[]",
            ColumnType::Timestamp => "timestamptz[]",
            ColumnType::Float => "float8[]",
            ColumnType::Integer => "int8[]",
            ColumnType::Bool => "bool[]",
        }
    }
}

/// The layout of a table a sink writes.
#[derive(Debug)]
pub struct TableSpec {
    /// The table.
    pub table: &'static str,
    /// Columns the sink writes, in binding order.
    pub columns: &'static [(&'static str, ColumnType)],
    /// The natural key (the `ON CONFLICT` target).
    pub key: &'static [&'static str],
    /// Columns an upsert overwrites, and only when one of them differs.
    pub update: &'static [&'static str],
    /// Columns an upsert sets too when it changes anything (e.g. `updated_at`).
    pub touch: &'static [&'static str],
}

/// One column of a batch.
#[derive(Debug)]
pub(crate) enum Column {
    Text(Vec<Option<String>>),
    Timestamp(Vec<Option<i64>>),
    Float(Vec<Option<f64>>),
    Integer(Vec<Option<i64>>),
    Bool(Vec<Option<bool>>),
}

/// A batch in columns, in [`TableSpec::columns`] order.
#[derive(Debug)]
pub struct Columns {
    cols: Vec<Column>,
    rows: usize,
}

impl Columns {
    fn new(spec: &TableSpec, capacity: usize) -> Self {
        let cols = spec
            .columns
            .iter()
            .map(|(_, t)| match t {
                ColumnType::Text | ColumnType::Json => Column::Text(Vec::with_capacity(capacity)),
                ColumnType::Timestamp => Column::Timestamp(Vec::with_capacity(capacity)),
                ColumnType::Float => Column::Float(Vec::with_capacity(capacity)),
                ColumnType::Integer => Column::Integer(Vec::with_capacity(capacity)),
                ColumnType::Bool => Column::Bool(Vec::with_capacity(capacity)),
            })
            .collect();
        Columns { cols, rows: 0 }
    }

    /// Appends text to column `i` (a text or JSON column).
    pub fn text(&mut self, i: usize, v: Option<String>) {
        match &mut self.cols[i] {
            Column::Text(c) => c.push(v),
            other => panic!("column {i} is not text: {other:?}"),
        }
    }
    /// Appends a timestamp (ms since the epoch, UTC) to column `i`.
    pub fn timestamp(&mut self, i: usize, v: Option<i64>) {
        match &mut self.cols[i] {
            Column::Timestamp(c) => c.push(v),
            other => panic!("column {i} is not a timestamp: {other:?}"),
        }
    }
    /// Appends a float to column `i`.
    pub fn float(&mut self, i: usize, v: Option<f64>) {
        match &mut self.cols[i] {
            Column::Float(c) => c.push(v),
            other => panic!("column {i} is not a float: {other:?}"),
        }
    }
    /// Appends an integer to column `i`.
    pub fn integer(&mut self, i: usize, v: Option<i64>) {
        match &mut self.cols[i] {
            Column::Integer(c) => c.push(v),
            other => panic!("column {i} is not an integer: {other:?}"),
        }
    }
    /// Appends a boolean to column `i`.
    pub fn boolean(&mut self, i: usize, v: Option<bool>) {
        match &mut self.cols[i] {
            Column::Bool(c) => c.push(v),
            other => panic!("column {i} is not a boolean: {other:?}"),
        }
    }
}

/// A streaming table an [`super::SqlSink`] writes: what records it takes and how each
/// becomes a row.
pub trait SqlTable: Send + 'static {
    /// The records written (what the sink's `send` takes).
    type Record: Send + 'static;
    /// The table's layout.
    const SPEC: TableSpec;
    /// The natural key of `record` (vehicle and time in ms): records of one batch with the
    /// same key are written once, the last one winning.
    fn key(record: &Self::Record) -> (&str, i64);
    /// Appends `record` as one row; `now_ms` is the batch's wall-clock time.
    fn push(record: &Self::Record, now_ms: i64, columns: &mut Columns);
}

/// Telemetry readings into `vehicle_telemetry`, keyed by `(vehicle_id, ts)`; absent sensor
/// values are NULL.
pub struct TelemetryTable;

const TELEMETRY_COLUMNS: [(&str, ColumnType); 16] = {
    let mut c = [("", ColumnType::Float); 16];
    c[0] = ("vehicle_id", ColumnType::Text);
    c[1] = ("ts", ColumnType::Timestamp);
    let mut i = 0;
    while i < Sensor::ALL.len() {
        c[i + 2] = (Sensor::ALL[i].name(), ColumnType::Float);
        i += 1;
    }
    c
};

const TELEMETRY_UPDATE: [&str; 14] = {
    let mut c = [""; 14];
    let mut i = 0;
    while i < Sensor::ALL.len() {
        c[i] = Sensor::ALL[i].name();
        i += 1;
    }
    c
};

impl SqlTable for TelemetryTable {
    type Record = Telemetry;
    const SPEC: TableSpec = TableSpec {
        table: "vehicle_telemetry",
        columns: &TELEMETRY_COLUMNS,
        key: &["vehicle_id", "ts"],
        update: &TELEMETRY_UPDATE,
        touch: &[],
    };
    fn key(r: &Telemetry) -> (&str, i64) {
        (r.vehicle_id.as_str(), r.ts.0)
    }
    fn push(r: &Telemetry, _now_ms: i64, c: &mut Columns) {
        c.text(0, Some(r.vehicle_id.to_string()));
        c.timestamp(1, Some(r.ts.0));
        for (i, v) in r.values.as_nan_array().iter().enumerate() {
            c.float(i + 2, (!v.is_nan()).then_some(*v));
        }
        c.rows += 1;
    }
}

/// Predictions into `failure_predictions`, keyed by `(vehicle_id, pane_end)`; the
/// explanation is a JSON array of strings.
pub struct PredictionTable;

impl SqlTable for PredictionTable {
    type Record = Prediction;
    const SPEC: TableSpec = TableSpec {
        table: "failure_predictions",
        columns: &[
            ("vehicle_id", ColumnType::Text),
            ("pane_end", ColumnType::Timestamp),
            ("risk", ColumnType::Float),
            ("severity", ColumnType::Text),
            ("component", ColumnType::Text),
            ("model", ColumnType::Text),
            ("explanation", ColumnType::Json),
        ],
        key: &["vehicle_id", "pane_end"],
        update: &["risk", "severity", "component", "model", "explanation"],
        touch: &[],
    };
    fn key(r: &Prediction) -> (&str, i64) {
        (r.vehicle_id.as_str(), r.pane_end.0)
    }
    fn push(r: &Prediction, _now_ms: i64, c: &mut Columns) {
        c.text(0, Some(r.vehicle_id.to_string()));
        c.timestamp(1, Some(r.pane_end.0));
        c.float(2, Some(r.risk));
        c.text(3, Some(r.severity.name().to_owned()));
        c.text(4, r.component.map(|x| x.name().to_owned()));
        c.text(5, Some(r.model.to_string()));
        c.text(6, Some(explanation_json(&r.explanation)));
        c.rows += 1;
    }
}

/// One row of `alerts` as the alert-change sink writes it: an alert and whether it is in
/// the dataflow's alert collection now (and if not, why it left).
#[derive(Clone, Debug, PartialEq)]
pub struct AlertRow {
    /// The alert (its `(vehicle_id, pane_end)` is the row's natural key).
    pub alert: Alert,
    /// `None`: active; `Some(why)`: retracted.
    pub retraction: Option<Retraction>,
}

/// Why an alert left the collection, as `alerts.retraction` stores it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Retraction {
    /// Retracted by the dataflow ([`RetractReason`]).
    Retracted(RetractReason),
    /// Replaced by a newer alert of the same vehicle (a changed severity, component or
    /// registry row is a new row; the old one is superseded).
    Superseded,
}

impl Retraction {
    /// The stored name.
    pub const fn name(self) -> &'static str {
        match self {
            Retraction::Retracted(RetractReason::Booked) => "booked",
            Retraction::Retracted(RetractReason::Repaired) => "repaired",
            Retraction::Retracted(RetractReason::Unregistered) => "unregistered",
            Retraction::Retracted(RetractReason::Recovered) => "recovered",
            Retraction::Superseded => "superseded",
        }
    }
}

impl AlertRow {
    /// The rows an alert change writes, in order: `Raised` its alert (active), `Changed`
    /// the old alert (superseded) and the new (active), `Retracted` the alert with why.
    pub fn of(change: &AlertChange) -> Vec<AlertRow> {
        let row = |alert: &Alert, retraction| AlertRow {
            alert: alert.clone(),
            retraction,
        };
        match change {
            AlertChange::Raised(a) => vec![row(a, None)],
            AlertChange::Changed { from, to } => {
                if (&from.vehicle_id, from.pane_end) == (&to.vehicle_id, to.pane_end) {
                    // Same row (e.g. a registry change): it stays active.
                    vec![row(to, None)]
                } else {
                    vec![row(from, Some(Retraction::Superseded)), row(to, None)]
                }
            }
            AlertChange::Retracted { alert, reason } => {
                vec![row(alert, Some(Retraction::Retracted(*reason)))]
            }
        }
    }
}

/// Alert changes into `alerts`, one row per alert, keyed by `(vehicle_id, pane_end)` (the
/// pane of the prediction that set the alert's level). A raised alert is inserted `open`
/// and `active`; a retraction or a superseding change clears `active` and records why and
/// when (`retraction`, `retracted_at`). Writing a row again (a replay) changes nothing
/// unless a value differs, and never touches `status`: that is the agents' (an alert an
/// agent resolved stays resolved).
pub struct AlertTable;

impl SqlTable for AlertTable {
    type Record = AlertRow;
    const SPEC: TableSpec = TableSpec {
        table: "alerts",
        columns: &[
            ("vehicle_id", ColumnType::Text),
            ("pane_end", ColumnType::Timestamp),
            ("severity", ColumnType::Text),
            ("severity_rank", ColumnType::Integer),
            ("component", ColumnType::Text),
            ("risk", ColumnType::Float),
            ("model", ColumnType::Text),
            ("explanation", ColumnType::Json),
            ("sla_due_at", ColumnType::Timestamp),
            ("active", ColumnType::Bool),
            ("retraction", ColumnType::Text),
            ("retracted_at", ColumnType::Timestamp),
            ("features", ColumnType::Json),
            ("raised_at", ColumnType::Timestamp),
            ("updated_at", ColumnType::Timestamp),
        ],
        key: &["vehicle_id", "pane_end"],
        update: &[
            "severity",
            "severity_rank",
            "component",
            "risk",
            "model",
            "explanation",
            "sla_due_at",
            "active",
            "retraction",
            "features",
        ],
        touch: &["retracted_at", "updated_at"],
    };
    fn key(r: &AlertRow) -> (&str, i64) {
        (r.alert.vehicle_id.as_str(), r.alert.pane_end.0)
    }
    fn push(r: &AlertRow, now_ms: i64, c: &mut Columns) {
        let a = &r.alert;
        c.text(0, Some(a.vehicle_id.to_string()));
        c.timestamp(1, Some(a.pane_end.0));
        c.text(2, Some(a.severity.name().to_owned()));
        c.integer(3, Some(a.severity as i64));
        c.text(4, a.component.map(|x| x.name().to_owned()));
        c.float(5, Some(a.risk));
        c.text(6, Some(a.model.clone()));
        c.text(7, Some(explanation_json(&a.explanation)));
        c.timestamp(8, a.sla_due().map(|t| t.0));
        c.boolean(9, Some(r.retraction.is_none()));
        c.text(10, r.retraction.map(|x| x.name().to_owned()));
        c.timestamp(11, r.retraction.map(|_| now_ms));
        c.text(12, Some(features_json(&a.features)));
        c.timestamp(13, Some(now_ms));
        c.timestamp(14, Some(now_ms));
        c.rows += 1;
    }
}

/// Features as a JSON object (name → value; non-finite values as null).
pub(crate) fn features_json(features: &[(String, f64)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = features
        .iter()
        .map(|(n, v)| {
            let value =
                serde_json::Number::from_f64(*v).map_or(serde_json::Value::Null, Into::into);
            (n.clone(), value)
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

fn explanation_json(reasons: &[String]) -> String {
    serde_json::to_string(reasons).expect("strings always serialise")
}

/// Builds the columns of `records`, keeping the last record of each key.
pub(crate) fn columns<T: SqlTable>(records: &[T::Record], now_ms: i64) -> Columns {
    let mut last: HashMap<(&str, i64), usize> = HashMap::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        last.insert(T::key(r), i);
    }
    let mut c = Columns::new(&T::SPEC, last.len());
    for (i, r) in records.iter().enumerate() {
        if last.get(&T::key(r)) == Some(&i) {
            T::push(r, now_ms, &mut c);
        }
    }
    c
}

fn conflict_clause(spec: &TableSpec, excluded: &str, distinct: &str) -> String {
    let set: Vec<String> = spec
        .update
        .iter()
        .chain(spec.touch)
        .map(|c| format!("{c} = {excluded}.{c}"))
        .collect();
    let changed: Vec<String> = spec
        .update
        .iter()
        .map(|c| format!("{}.{c} {distinct} {excluded}.{c}", spec.table))
        .collect();
    format!(
        " ON CONFLICT ({}) DO UPDATE SET {} WHERE {}",
        spec.key.join(", "),
        set.join(", "),
        changed.join(" OR ")
    )
}

/// The PostgreSQL batch upsert: one array parameter per column, unnested.
pub(crate) fn pg_upsert_sql(spec: &TableSpec) -> String {
    let names: Vec<&str> = spec.columns.iter().map(|(n, _)| *n).collect();
    let arrays: Vec<String> = spec
        .columns
        .iter()
        .enumerate()
        .map(|(i, (_, t))| format!("${}::{}", i + 1, t.pg_array()))
        .collect();
    let select: Vec<String> = spec
        .columns
        .iter()
        .map(|(n, t)| match t {
            ColumnType::Json => format!("u.{n}::jsonb"),
            _ => format!("u.{n}"),
        })
        .collect();
    format!(
        "INSERT INTO {table} ({cols}) SELECT {select} FROM UNNEST({arrays}) AS u({cols}){conflict}",
        table = spec.table,
        cols = names.join(", "),
        select = select.join(", "),
        arrays = arrays.join(", "),
        conflict = conflict_clause(spec, "EXCLUDED", "IS DISTINCT FROM"),
    )
}

/// The SQLite multi-row upsert for `rows` rows. Its parameters are anonymous (`?`), bound
/// in the order they appear: sqlx looks a numbered parameter's name up at every bind, and
/// SQLite finds it by a scan of all the statement's names, which made binding a 50-row
/// statement quadratic (8 % of a backfill's instructions went to it).
pub(crate) fn sqlite_upsert_sql(spec: &TableSpec, rows: usize) -> String {
    let names: Vec<&str> = spec.columns.iter().map(|(n, _)| *n).collect();
    let width = spec.columns.len();
    let mut sql = format!("INSERT INTO {} ({}) VALUES ", spec.table, names.join(", "));
    let row = format!("({})", vec!["?"; width].join(", "));
    sql.push_str(&vec![row; rows].join(", "));
    sql.push_str(&conflict_clause(spec, "excluded", "IS NOT"));
    sql
}

/// SQLite's default limit of bound parameters per statement (SQLITE_MAX_VARIABLE_NUMBER
/// since 3.32).
const SQLITE_MAX_PARAMS: usize = 32_766;
/// Rows per SQLite statement at most (the parameter limit lowers it for wide tables).
/// Measured (`sql_bench`, 200,000 predictions, one writer, batches of 5000, alternating runs)
/// with anonymous parameters: 10 rows per statement 28k rows/s, 50 rows 37–45k, 250 rows
/// 39–42k, 500 rows 43–45k, 1000 rows 45–56k. (With numbered parameters 500 rows had
/// measured 13k rows/s against 43k for 50: their quadratic name lookup, see
/// [`sqlite_upsert_sql`], then cost more than the statements it saved.)
const SQLITE_MAX_ROWS: usize = 1024;

/// Rows per SQLite statement for `spec` at most: a power of two, so that the statements of
/// any batch (see [`sqlite_statement_rows`]) come in a handful of sizes, each prepared once
/// per connection.
pub(crate) fn sqlite_rows_per_statement(spec: &TableSpec) -> usize {
    let most = (SQLITE_MAX_PARAMS / spec.columns.len()).clamp(1, SQLITE_MAX_ROWS);
    1 << most.ilog2()
}

/// Rows of the next statement with `remaining` rows to write, at most `per` (a power of
/// two): the largest power of two that fits, so a batch of any size takes at most
/// `log2(per) + 1` statement texts, not one per remainder.
pub(crate) fn sqlite_statement_rows(per: usize, remaining: usize) -> usize {
    1 << per.min(remaining).max(1).ilog2()
}

fn to_utc(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).expect("event times are within chrono's range")
}

/// Writes `batch` with one statement (atomic on its own).
pub(crate) async fn write_pg(
    conn: &mut PgConnection,
    sql: &str,
    batch: &Columns,
) -> Result<(), sqlx::Error> {
    let mut q = sqlx::query(sql);
    for col in &batch.cols {
        q = match col {
            Column::Text(v) => q.bind(v),
            Column::Timestamp(v) => q.bind(v.iter().map(|t| t.map(to_utc)).collect::<Vec<_>>()),
            Column::Float(v) => q.bind(v),
            Column::Integer(v) => q.bind(v),
            Column::Bool(v) => q.bind(v),
        };
    }
    q.execute(conn).await.map(drop)
}

/// Writes `batch` in one transaction of multi-row statements.
pub(crate) async fn write_sqlite(
    conn: &mut SqliteConnection,
    spec: &TableSpec,
    statements: &mut HashMap<usize, String>,
    batch: &Columns,
) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let per = sqlite_rows_per_statement(spec);
    let mut tx = conn.begin().await?;
    let mut start = 0;
    while start < batch.rows {
        let n = sqlite_statement_rows(per, batch.rows - start);
        let sql = statements
            .entry(n)
            .or_insert_with(|| sqlite_upsert_sql(spec, n));
        let mut q = sqlx::query(sql.as_str());
        for r in start..start + n {
            for col in &batch.cols {
                q = match col {
                    Column::Text(v) => q.bind(v[r].clone()),
                    Column::Timestamp(v) => q.bind(v[r]),
                    Column::Float(v) => q.bind(v[r]),
                    Column::Integer(v) => q.bind(v[r]),
                    Column::Bool(v) => q.bind(v[r]),
                };
            }
        }
        q.execute(&mut *tx).await?;
        start += n;
    }
    tx.commit().await
}

/// Milliseconds since the epoch, now.
pub(crate) fn now_ms() -> i64 {
    EventTime::now().0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_name_every_column_and_keep_status_out_of_alert_updates() {
        let pg = pg_upsert_sql(&AlertTable::SPEC);
        assert!(pg.starts_with("INSERT INTO alerts (vehicle_id, pane_end, severity"));
        assert!(pg.contains("$15::timestamptz[]") && pg.contains("u.explanation::jsonb"));
        assert!(pg.contains("$10::bool[]"));
        assert!(pg.contains("ON CONFLICT (vehicle_id, pane_end) DO UPDATE SET"));
        assert!(!pg.contains("status"));
        assert!(pg.contains("updated_at = EXCLUDED.updated_at"));
        assert!(!pg.contains("raised_at = "));
        let lite = sqlite_upsert_sql(&TelemetryTable::SPEC, 2);
        let width = TelemetryTable::SPEC.columns.len();
        assert_eq!(lite.matches('?').count(), 2 * width);
        assert!(lite.contains("?), (?, ?"));
        assert!(!lite.contains('$'));
        assert!(lite.ends_with("vehicle_telemetry.throttle_pct IS NOT excluded.throttle_pct"));
        let rows = sqlite_rows_per_statement(&TelemetryTable::SPEC);
        assert!(rows.is_power_of_two() && rows * width <= SQLITE_MAX_PARAMS);
        assert!(
            rows <= SQLITE_MAX_ROWS && 2 * rows > SQLITE_MAX_ROWS.min(SQLITE_MAX_PARAMS / width)
        );
        // Any batch in few statement sizes, every row written once.
        let mut sizes = std::collections::BTreeSet::new();
        for total in [1, 2, 3, 50, 1023, 1024, 1025, 4321, 5000] {
            let (mut done, mut statements) = (0, 0);
            while done < total {
                let n = sqlite_statement_rows(rows, total - done);
                assert!(n >= 1 && n <= rows && n <= total - done && n.is_power_of_two());
                sizes.insert(n);
                done += n;
                statements += 1;
            }
            assert_eq!(done, total);
            assert!(statements <= total / rows + rows.ilog2() as usize + 1);
        }
        assert!(sizes.len() <= rows.ilog2() as usize + 1);
    }

    #[test]
    fn a_batch_keeps_the_last_record_of_each_key() {
        let p = |risk: f64| Prediction {
            vehicle_id: pmi_core::VehicleId::parse("V1").unwrap(),
            pane_end: EventTime(10_000),
            risk,
            severity: pmi_core::Severity::Low,
            component: None,
            model: "m".into(),
            explanation: vec![],
        };
        let c = columns::<PredictionTable>(&[p(0.1), p(0.2)], 0);
        assert_eq!(c.rows, 1);
        match &c.cols[2] {
            Column::Float(v) => assert_eq!(v, &vec![Some(0.2)]),
            other => panic!("{other:?}"),
        }
    }
}

//! SQL storage: SQLite (the embedded default) and PostgreSQL (TimescaleDB when present).
//!
//! What lives here and why it is shaped this way:
//!
//! - **Schema** ([`Database::migrate`]): sqlx migrations embedded in the binary, one folder
//!   per dialect (`sinks/migrations/{sqlite,postgres}`, documented in
//!   `sinks/migrations/README.md`). Column names are identical in both, so one code base
//!   queries both; only types differ (TIMESTAMPTZ / JSONB / BOOLEAN in PostgreSQL, integer
//!   milliseconds / JSON text / 0-1 in SQLite). On PostgreSQL the migration then turns the
//!   time-series tables into TimescaleDB hypertables if, and only if, the extension is
//!   available and preloaded ([`Timescale`]).
//! - **Two pools, not `sqlx::Any`**: [`Database`] is an enum over `SqlitePool` and `PgPool`.
//!   `Any` cannot bind arrays (the PostgreSQL fast path) nor decode timestamps uniformly, and
//!   the dialects differ in exactly the places that matter for speed, so each statement is
//!   built per dialect and the rest of the code is shared.
//! - **Sinks** ([`SqlSink`]): one writer thread per sink with its own single-threaded tokio
//!   runtime and its own one-connection pool, fed through a bounded channel. `send` only
//!   enqueues; when the writer falls behind (or the database is away) the channel fills and
//!   the timely worker feels backpressure, never a growing buffer. The writer groups what is
//!   queued into batches of up to [`SqlConfig::batch_rows`] rows and writes as soon as the
//!   queue is empty, so batches grow with load and latency stays low when the stream is
//!   quiet.
//! - **Batched upserts keyed naturally** ([`SqlTable`]): PostgreSQL gets one statement per
//!   batch, `INSERT … SELECT … FROM UNNEST($1::text[], $2::timestamptz[], …) ON CONFLICT (key)
//!   DO UPDATE …`: a fixed statement text (prepared once per connection, whatever the batch
//!   size), one array parameter per column, no parameter limit, one round trip, atomic on
//!   its own. `COPY` into a temporary table followed by an upsert from it (the
//!   `sql_copy_vs_unnest` example) measured the same within noise (2 writers, batches of
//!   5000: 110k vs 108k rows/s on a loaded 2-core machine) while needing three statements,
//!   per-session state and a text encoding of every value, so UNNEST stays. SQLite gets
//!   multi-row `INSERT … VALUES (?, …), (…) ON CONFLICT DO UPDATE` statements (up to 1000 rows
//!   each: measured fastest; always under SQLite's bound-parameter limit) within one transaction
//!   per batch. Updates only happen when a value differs (`IS DISTINCT FROM` /
//!   `IS NOT`), so a replay rewrites nothing.
//! - **Retries** ([`is_retryable`]): a batch that fails for a reason that may pass (connection
//!   refused or reset, pool timeout, server shutting down or starting up, serialization
//!   failure, SQLite busy) is retried with capped exponential backoff, forever or until
//!   [`SqlConfig::retry_deadline_ms`]; it is never dropped. Anything else (constraint, syntax,
//!   missing table) fails the sink with [`SinkError::Sql`] naming the table.
//! - **Durability**: [`crate::ChunkSink::durable`] returns the last checkpoint token whose
//!   preceding rows are all committed, as the Kafka sink does.
//! - **Helpers** for the HTTP API, the agents and the tests: [`Database::count`],
//!   [`Database::latest_predictions`], alert status changes, and the registry upserts in
//!   [`registry`].

pub mod admin;
pub mod bench;
mod query;
pub mod registry;
mod sink;
mod table;
pub mod tables;

use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::SqliteSynchronous;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use crate::SinkError;

pub use query::{AlertStatus, ForeignKey, StoredAlert};
pub use sink::SqlSink;
pub use table::{
    AlertRow, AlertTable, PredictionTable, Retraction, SqlTable, TableSpec, TelemetryTable,
};

/// The tables of the schema, in creation order.
pub const TABLES: [&str; 13] = [
    "customers",
    "service_centers",
    "vehicles",
    "vehicle_telemetry",
    "failure_predictions",
    "alerts",
    "appointments",
    "rca_capa_records",
    "maintenance_records",
    "agent_audit_log",
    "technicians",
    "service_center_closures",
    "agent_workflows",
];

/// The tables that become TimescaleDB hypertables, with their time column.
pub const HYPERTABLES: [(&str, &str); 3] = [
    ("vehicle_telemetry", "ts"),
    ("failure_predictions", "pane_end"),
    ("agent_audit_log", "at"),
];

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// How PMI reaches its SQL database. The `[sql]` section of the configuration file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqlConfig {
    /// The database: `sqlite://path/to/file.sqlite` (the file and its folder are created if
    /// missing; `sqlite:///abs/path` for an absolute path) or
    /// `postgres://user[:password]@host[:port]/database`. Default
    /// `sqlite://pmi-data/pmi.sqlite`.
    pub url: String,
    /// Rows per write batch (one statement on PostgreSQL, one transaction on SQLite).
    /// Default 5000 (the fastest of 500 … 10000 in `sql_bench`).
    pub batch_rows: usize,
    /// Connections of a [`Database`] pool (query helpers, HTTP API). Each sink uses one
    /// connection of its own. Default 5.
    pub max_connections: u32,
    /// How long one attempt to get a connection may take before it counts as failed, in ms.
    /// Default 5000.
    pub connect_timeout_ms: u64,
    /// First delay before retrying a failed batch, in ms; doubled after each failure.
    /// Default 100.
    pub retry_initial_ms: u64,
    /// Longest delay between retries, in ms. Default 10000.
    pub retry_max_ms: u64,
    /// How long one batch may keep failing before the sink gives up with an error, in ms.
    /// `None` (the default): retry forever; the stream waits (backpressure) and nothing is
    /// dropped.
    pub retry_deadline_ms: Option<u64>,
    /// Chunks queued between a worker and its sink's writer thread. A full queue is
    /// backpressure. Default 16.
    pub queue_chunks: usize,
}

impl Default for SqlConfig {
    fn default() -> Self {
        SqlConfig {
            url: "sqlite://pmi-data/pmi.sqlite".into(),
            batch_rows: 5000,
            max_connections: 5,
            connect_timeout_ms: 5000,
            retry_initial_ms: 100,
            retry_max_ms: 10_000,
            retry_deadline_ms: None,
            queue_chunks: 16,
        }
    }
}

impl SqlConfig {
    /// Defaults with `url`.
    pub fn new(url: &str) -> Self {
        SqlConfig {
            url: url.to_owned(),
            ..SqlConfig::default()
        }
    }

    /// Checks the settings (names the one at fault).
    pub fn validate(&self) -> Result<(), pmi_core::ConfigError> {
        let bad = |setting: &str, message: &str| {
            Err(pmi_core::ConfigError::new(
                format!("sql.{setting}"),
                message,
            ))
        };
        if Backend::from_url(&self.url).is_none() {
            return bad("url", "must start with sqlite:// or postgres://");
        }
        if self.batch_rows == 0 {
            return bad("batch_rows", "must be at least 1");
        }
        if self.max_connections == 0 {
            return bad("max_connections", "must be at least 1");
        }
        if self.queue_chunks == 0 {
            return bad("queue_chunks", "must be at least 1");
        }
        if self.retry_initial_ms == 0 || self.retry_initial_ms > self.retry_max_ms {
            return bad("retry_initial_ms", "must be in 1 ..= retry_max_ms");
        }
        Ok(())
    }

    fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms.max(1))
    }
}

/// Which database a URL names.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite (embedded, one file).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Backend {
    /// The backend of `url` (`sqlite:` or `postgres:`/`postgresql:`), if known.
    pub fn from_url(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }
}

/// Whether TimescaleDB serves the time-series tables.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Timescale {
    /// Not PostgreSQL.
    NotApplicable,
    /// The extension is not installed on the server (`pg_available_extensions`).
    Absent,
    /// Installed but not in `shared_preload_libraries`: plain tables are used (warned).
    NotPreloaded,
    /// Installed and loadable, not yet created in this database.
    Available,
    /// Created; [`HYPERTABLES`] are hypertables.
    Enabled,
}

/// A connection pool to SQLite or PostgreSQL.
#[derive(Clone, Debug)]
pub enum Database {
    /// SQLite.
    Sqlite(SqlitePool),
    /// PostgreSQL.
    Postgres(PgPool),
}

/// Runs the same code on whichever pool `$db` holds (`$pool` bound to it). Each arm is type
/// checked on its own, so generic sqlx calls work for both.
macro_rules! on_pool {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::sql::Database::Sqlite($pool) => $body,
            $crate::sql::Database::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

impl Database {
    /// Connects with up to [`SqlConfig::max_connections`] connections (one connection is
    /// made now, so a wrong URL or an absent server is reported here).
    pub async fn connect(config: &SqlConfig) -> Result<Database, SinkError> {
        let db = Database::connect_lazy(config, config.max_connections)?;
        let check = on_pool!(&db, |pool| pool.acquire().await.map(drop));
        check.map_err(|e| connect_err(&config.url, e))?;
        Ok(db)
    }

    /// A pool of at most `max_connections` that connects on first use.
    pub(crate) fn connect_lazy(
        config: &SqlConfig,
        max_connections: u32,
    ) -> Result<Database, SinkError> {
        match Backend::from_url(&config.url) {
            Some(Backend::Sqlite) => {
                let options = SqliteConnectOptions::from_str(&config.url)
                    .map_err(|e| connect_err(&config.url, e))?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(config.connect_timeout())
                    .foreign_keys(true);
                let file = options.get_filename();
                if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|source| SinkError::Io {
                        path: parent.display().to_string(),
                        source,
                    })?;
                }
                let pool = SqlitePoolOptions::new()
                    .max_connections(max_connections.max(1))
                    .acquire_timeout(config.connect_timeout())
                    .connect_lazy_with(options);
                Ok(Database::Sqlite(pool))
            }
            Some(Backend::Postgres) => {
                let options = PgConnectOptions::from_str(&config.url)
                    .map_err(|e| connect_err(&config.url, e))?
                    .application_name("pmi");
                let pool = PgPoolOptions::new()
                    .max_connections(max_connections.max(1))
                    .acquire_timeout(config.connect_timeout())
                    .connect_lazy_with(options);
                Ok(Database::Postgres(pool))
            }
            None => Err(SinkError::Sql {
                context: format!("url `{}`", redact(&config.url)),
                message: "must start with sqlite:// or postgres://".into(),
            }),
        }
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        match self {
            Database::Sqlite(_) => Backend::Sqlite,
            Database::Postgres(_) => Backend::Postgres,
        }
    }

    /// Applies the embedded migrations (idempotent: applied ones are skipped; concurrent
    /// callers are serialised by sqlx's migration lock), then, on PostgreSQL with
    /// TimescaleDB available, creates the extension and the [`HYPERTABLES`].
    pub async fn migrate(&self) -> Result<Timescale, SinkError> {
        let migrated = match self {
            Database::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await,
            Database::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await,
        };
        migrated.map_err(|e| SinkError::Sql {
            context: "migrations".into(),
            message: e.to_string(),
        })?;
        let Database::Postgres(pool) = self else {
            return Ok(Timescale::NotApplicable);
        };
        match self.timescale().await? {
            Timescale::Available | Timescale::Enabled => {}
            other => return Ok(other),
        }
        let err = |what: &str, e: sqlx::Error| SinkError::Sql {
            context: what.to_owned(),
            message: e.to_string(),
        };
        sqlx::query("CREATE EXTENSION IF NOT EXISTS timescaledb")
            .execute(pool)
            .await
            .map_err(|e| err("creating extension timescaledb", e))?;
        for (table, column) in HYPERTABLES {
            sqlx::query(
                "SELECT create_hypertable($1::text::regclass, $2::text::name, \
                 if_not_exists => TRUE, migrate_data => TRUE)",
            )
            .bind(table)
            .bind(column)
            .execute(pool)
            .await
            .map_err(|e| err(&format!("hypertable `{table}`"), e))?;
        }
        tracing::info!(tables = HYPERTABLES.len(), "timescaledb hypertables ready");
        Ok(Timescale::Enabled)
    }

    /// Whether TimescaleDB is usable here (changes nothing).
    pub async fn timescale(&self) -> Result<Timescale, SinkError> {
        let Database::Postgres(pool) = self else {
            return Ok(Timescale::NotApplicable);
        };
        let err = |e: sqlx::Error| SinkError::Sql {
            context: "detecting timescaledb".into(),
            message: e.to_string(),
        };
        let (available, created): (bool, bool) = sqlx::query_as(
            "SELECT \
               EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'), \
               EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')",
        )
        .fetch_one(pool)
        .await
        .map_err(err)?;
        if created {
            return Ok(Timescale::Enabled);
        }
        if !available {
            return Ok(Timescale::Absent);
        }
        let preload: String =
            sqlx::query_scalar("SELECT current_setting('shared_preload_libraries')")
                .fetch_one(pool)
                .await
                .map_err(err)?;
        if preload.split(',').any(|l| l.trim() == "timescaledb") {
            Ok(Timescale::Available)
        } else {
            tracing::warn!(
                "timescaledb is installed but not in shared_preload_libraries: plain tables"
            );
            Ok(Timescale::NotPreloaded)
        }
    }

    /// Closes the pool (waits for connections in use to come back).
    pub async fn close(&self) {
        on_pool!(self, |pool| pool.close().await)
    }
}

/// Connects to `config`, applies the migrations (and TimescaleDB where available), then
/// disconnects: the synchronous set-up step before starting sinks (which do not migrate).
/// Must not be called from inside a tokio runtime (it runs its own).
pub fn prepare(config: &SqlConfig) -> Result<Timescale, SinkError> {
    let runtime = runtime()?;
    runtime.block_on(async {
        let db = Database::connect(config).await?;
        let timescale = db.migrate().await;
        db.close().await;
        timescale
    })
}

/// A single-threaded tokio runtime (for a sink's writer thread and the blocking helpers).
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, SinkError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| SinkError::Io {
            path: "tokio runtime".into(),
            source,
        })
}

/// Whether retrying the operation that failed with `e` may succeed: the connection or the
/// server was away or busy (refused, reset, pool timeout, shutting down, starting up, too
/// many connections, serialization failure or deadlock, SQLite busy or locked). Constraint
/// violations, syntax errors, missing tables and bad configuration are permanent.
pub fn is_retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => true,
        // A connection broken mid-message shows up as a protocol error.
        sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            match db.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
                // SQLITE_BUSY (5), SQLITE_LOCKED (6) and their extended codes (low byte).
                Some(_) => code
                    .parse::<i32>()
                    .map(|c| matches!(c & 0xff, 5 | 6))
                    .unwrap_or(false),
                // PostgreSQL SQLSTATE: connection exception (08), insufficient resources
                // (53), operator intervention (57P01 admin shutdown, 57P02 crash shutdown,
                // 57P03 cannot connect now), serialization failure, deadlock.
                None => {
                    code.starts_with("08")
                        || code.starts_with("53")
                        || matches!(&*code, "57P01" | "57P02" | "57P03" | "40001" | "40P01")
                }
            }
        }
        _ => false,
    }
}

fn connect_err(url: &str, e: sqlx::Error) -> SinkError {
    SinkError::Sql {
        context: format!("connecting to `{}`", redact(url)),
        message: e.to_string(),
    }
}

/// `url` without its password (for logs and errors).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or_default();
            format!("{scheme}://{name}:***@{host}{path}")
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_validate_and_parse_from_toml_like_json() {
        let c = SqlConfig::default();
        assert!(c.validate().is_ok());
        let c: SqlConfig =
            serde_json::from_str(r#"{"url": "postgres://u@h/db", "batch_rows": 10}"#).unwrap();
        assert_eq!(c.batch_rows, 10);
        assert_eq!(c.queue_chunks, 16);
        let bad = SqlConfig {
            url: "mysql://x".into(),
            ..SqlConfig::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("sql.url"));
        let bad = SqlConfig {
            batch_rows: 0,
            ..SqlConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("batch_rows"));
    }

    #[test]
    fn backends_and_redaction() {
        assert_eq!(Backend::from_url("sqlite://a.db"), Some(Backend::Sqlite));
        assert_eq!(
            Backend::from_url("postgresql://h/d"),
            Some(Backend::Postgres)
        );
        assert_eq!(Backend::from_url("http://h"), None);
        assert_eq!(
            redact("postgres://pmi:secret@db:5432/pmi?sslmode=disable"),
            "postgres://pmi:***@db:5432/pmi?sslmode=disable"
        );
        assert_eq!(redact("postgres://pmi@db/pmi"), "postgres://pmi@db/pmi");
    }

    #[test]
    fn retryable_errors_are_the_transient_ones() {
        let refused = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(is_retryable(&refused));
        assert!(is_retryable(&sqlx::Error::PoolTimedOut));
        assert!(!is_retryable(&sqlx::Error::PoolClosed));
        assert!(!is_retryable(&sqlx::Error::RowNotFound));
    }
}

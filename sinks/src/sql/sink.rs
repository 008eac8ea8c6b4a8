//! [`SqlSink`]: batched, retried, idempotent writes of one streaming table on a thread of
//! its own.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::table::{self, SqlTable};
use super::{is_retryable, runtime, Database, SqlConfig};
use crate::{ChunkSink, SinkError, SinkStats};

/// What the writer thread shares with the sink's owner.
#[derive(Default)]
struct Shared {
    /// Records committed so far (in the order they were sent).
    committed: AtomicU64,
    /// The error the writer stopped with: `(context, message)`.
    failure: Mutex<Option<(String, String)>>,
}

/// Writes the records of one streaming table ([`super::TelemetryTable`],
/// [`super::PredictionTable`], [`super::AlertTable`]) to SQLite or PostgreSQL.
///
/// `send` hands the chunk to the writer thread through a bounded channel of
/// [`SqlConfig::queue_chunks`] chunks and returns; it blocks only while the channel is full
/// (backpressure). The thread writes batches of up to [`SqlConfig::batch_rows`] rows as
/// upserts on the table's natural key, retrying transient failures with capped exponential
/// backoff. The schema must exist ([`super::prepare`] or [`Database::migrate`]): sinks do
/// not migrate.
pub struct SqlSink<K: SqlTable> {
    table: &'static str,
    tx: Option<SyncSender<Vec<K::Record>>>,
    thread: Option<JoinHandle<Result<SinkStats, SinkError>>>,
    shared: Arc<Shared>,
    /// Records sent so far.
    sent: u64,
    /// Checkpoints not yet known durable: `(token, records sent before it)`.
    checkpoints: VecDeque<(u64, u64)>,
    /// The last checkpoint known durable (0: none).
    durable: u64,
}

impl<K: SqlTable> SqlSink<K> {
    /// Starts the writer thread (named after the table and `writer`, e.g. the worker index).
    /// Connecting is lazy: a database that is away at start is retried like a failed batch.
    pub fn start(config: &SqlConfig, writer: &str) -> Result<Self, SinkError> {
        config.validate().map_err(|e| SinkError::Sql {
            context: format!("table `{}`", K::SPEC.table),
            message: e.to_string(),
        })?;
        let (tx, rx) = sync_channel::<Vec<K::Record>>(config.queue_chunks);
        let shared = Arc::new(Shared::default());
        let thread_shared = shared.clone();
        let config = config.clone();
        let table = K::SPEC.table;
        let thread = std::thread::Builder::new()
            .name(format!("pmi-sql-{table}-{writer}"))
            .spawn(move || {
                let result = run::<K>(&config, rx, &thread_shared);
                if let Err(SinkError::Sql { context, message }) = &result {
                    *thread_shared.failure.lock().expect("sql sink lock") =
                        Some((context.clone(), message.clone()));
                }
                result
            })
            .map_err(|source| SinkError::Io {
                path: format!("thread of sql sink `{table}`"),
                source,
            })?;
        Ok(SqlSink {
            table,
            tx: Some(tx),
            thread: Some(thread),
            shared,
            sent: 0,
            checkpoints: VecDeque::new(),
            durable: 0,
        })
    }

    /// Records committed so far.
    pub fn committed(&self) -> u64 {
        self.shared.committed.load(Ordering::Acquire)
    }

    fn failed(&self) -> Option<SinkError> {
        let failure = self.shared.failure.lock().expect("sql sink lock").clone();
        if let Some((context, message)) = failure {
            return Some(SinkError::Sql { context, message });
        }
        if self.thread.as_ref().is_none_or(|t| t.is_finished()) {
            return Some(SinkError::Stopped(self.table.to_owned()));
        }
        None
    }

    /// The thread ended early: its error.
    fn failure(&mut self) -> SinkError {
        match self.join() {
            Err(e) => e,
            Ok(_) => SinkError::Stopped(self.table.to_owned()),
        }
    }

    fn join(&mut self) -> Result<SinkStats, SinkError> {
        self.tx = None;
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| SinkError::Stopped(self.table.to_owned()))?,
            None => Err(SinkError::Stopped(self.table.to_owned())),
        }
    }
}

impl<K: SqlTable> ChunkSink<K::Record> for SqlSink<K> {
    fn send(&mut self, chunk: Vec<K::Record>) -> Result<(), SinkError> {
        if chunk.is_empty() {
            return Ok(());
        }
        let n = chunk.len() as u64;
        let Some(tx) = self.tx.as_ref() else {
            return Err(SinkError::Stopped(self.table.to_owned()));
        };
        if tx.send(chunk).is_err() {
            return Err(self.failure());
        }
        self.sent += n;
        Ok(())
    }

    fn checkpoint(&mut self, token: u64) -> Result<(), SinkError> {
        if let Some(e) = self.failed() {
            return Err(e);
        }
        // Forget the checkpoints already durable, remembering the last of them.
        let committed = self.committed();
        while let Some(&(t, before)) = self.checkpoints.front() {
            if before > committed {
                break;
            }
            self.durable = t;
            self.checkpoints.pop_front();
        }
        self.checkpoints.push_back((token, self.sent));
        Ok(())
    }

    fn durable(&self) -> Result<Option<u64>, SinkError> {
        if let Some(e) = self.failed() {
            return Err(e);
        }
        let committed = self.committed();
        let last = self
            .checkpoints
            .iter()
            .take_while(|(_, before)| *before <= committed)
            .last()
            .map_or(self.durable, |(t, _)| *t);
        Ok(Some(last))
    }

    fn close(mut self: Box<Self>) -> Result<SinkStats, SinkError> {
        self.join()
    }
}

/// The writer thread: batches what is queued, writes it, until the channel closes.
fn run<K: SqlTable>(
    config: &SqlConfig,
    rx: Receiver<Vec<K::Record>>,
    shared: &Shared,
) -> Result<SinkStats, SinkError> {
    let rt = runtime()?;
    let db = {
        let _context = rt.enter();
        Database::connect_lazy(config, 1)?
    };
    let mut writer = Writer::<K> {
        db,
        config,
        pg_sql: table::pg_upsert_sql(&K::SPEC),
        sqlite_sql: HashMap::new(),
        _table: std::marker::PhantomData,
    };
    let batch_rows = config.batch_rows;
    let mut pending: Vec<K::Record> = Vec::new();
    let mut rows = 0u64;
    loop {
        // Wait for work when idle; otherwise take what is queued and write as soon as the
        // queue is empty, so that batches grow with load and nothing waits when it is quiet.
        let next = if pending.is_empty() {
            rx.recv().ok()
        } else {
            match rx.try_recv() {
                Ok(chunk) => Some(chunk),
                Err(TryRecvError::Empty) => {
                    rows += writer.write(&rt, std::mem::take(&mut pending), shared)?;
                    continue;
                }
                Err(TryRecvError::Disconnected) => None,
            }
        };
        let Some(chunk) = next else { break };
        pending.extend(chunk);
        while pending.len() >= batch_rows {
            let rest = pending.split_off(batch_rows);
            rows += writer.write(&rt, std::mem::replace(&mut pending, rest), shared)?;
        }
    }
    if !pending.is_empty() {
        rows += writer.write(&rt, pending, shared)?;
    }
    rt.block_on(writer.db.close());
    Ok(SinkStats {
        rows,
        files: 0,
        bytes: 0,
    })
}

struct Writer<'a, K> {
    db: Database,
    config: &'a SqlConfig,
    pg_sql: String,
    /// SQLite statements by rows per statement.
    sqlite_sql: HashMap<usize, String>,
    _table: std::marker::PhantomData<fn(K)>,
}

impl<K: SqlTable> Writer<'_, K> {
    /// Writes `records` (retrying what may pass) and counts them committed.
    fn write(
        &mut self,
        rt: &tokio::runtime::Runtime,
        records: Vec<K::Record>,
        shared: &Shared,
    ) -> Result<u64, SinkError> {
        let n = records.len() as u64;
        let batch = table::columns::<K>(&records, table::now_ms());
        drop(records);
        rt.block_on(self.write_with_retry(&batch))?;
        shared.committed.fetch_add(n, Ordering::Release);
        Ok(n)
    }

    async fn write_with_retry(&mut self, batch: &table::Columns) -> Result<(), SinkError> {
        let table = K::SPEC.table;
        let started = Instant::now();
        let deadline = self.config.retry_deadline_ms.map(Duration::from_millis);
        let mut delay = Duration::from_millis(self.config.retry_initial_ms);
        let max_delay = Duration::from_millis(self.config.retry_max_ms);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = match &self.db {
                Database::Postgres(pool) => match pool.acquire().await {
                    Ok(mut conn) => table::write_pg(&mut conn, &self.pg_sql, batch).await,
                    Err(e) => Err(e),
                },
                Database::Sqlite(pool) => match pool.acquire().await {
                    Ok(mut conn) => {
                        table::write_sqlite(&mut conn, &K::SPEC, &mut self.sqlite_sql, batch).await
                    }
                    Err(e) => Err(e),
                },
            };
            let e = match result {
                Ok(()) => {
                    if attempt > 1 {
                        tracing::info!(table, attempt, "sql batch written after retries");
                    }
                    return Ok(());
                }
                Err(e) => e,
            };
            if !is_retryable(&e) {
                tracing::error!(table, error = %e, "sql batch failed permanently");
                return Err(SinkError::Sql {
                    context: format!("table `{table}`"),
                    message: e.to_string(),
                });
            }
            let elapsed = started.elapsed();
            if deadline.is_some_and(|d| elapsed >= d) {
                tracing::error!(table, attempt, error = %e, "sql retries exhausted");
                return Err(SinkError::Sql {
                    context: format!("table `{table}`"),
                    message: format!(
                        "gave up after {attempt} attempts in {:.1} s: {e}",
                        elapsed.as_secs_f64()
                    ),
                });
            }
            tracing::warn!(
                table,
                attempt,
                retry_in_ms = delay.as_millis() as u64,
                error = %e,
                "sql batch failed, retrying"
            );
            let wait = match deadline {
                Some(d) => delay.min(d.saturating_sub(elapsed)),
                None => delay,
            };
            tokio::time::sleep(wait).await;
            delay = (delay * 2).min(max_delay);
        }
    }
}

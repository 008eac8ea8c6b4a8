//! PostgreSQL database administration for tests, benchmarks and first-time set-up: derive a
//! URL for another database on the same server, create and drop databases.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::Connection;

use crate::SinkError;

/// `url` with its database replaced by `database` (query parameters kept).
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let (scheme, rest) = base.split_once("://").unwrap_or(("postgres", base));
    let authority = rest.split('/').next().unwrap_or_default();
    let mut out = format!("{scheme}://{authority}/{database}");
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A database name unique to this process and moment: `{prefix}_{pid}_{nanos}_{n}`.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{nanos}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn check_name(name: &str) -> Result<(), SinkError> {
    if name.is_empty()
        || name.len() > 63
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(SinkError::Sql {
            context: format!("database name `{name}`"),
            message: "use 1 to 63 lowercase letters, digits and underscores".into(),
        });
    }
    Ok(())
}

async fn admin(url: &str) -> Result<PgConnection, SinkError> {
    let options = PgConnectOptions::from_str(url).map_err(|e| SinkError::Sql {
        context: format!("url `{}`", super::redact(url)),
        message: e.to_string(),
    })?;
    PgConnection::connect_with(&options)
        .await
        .map_err(|e| SinkError::Sql {
            context: format!("connecting to `{}`", super::redact(url)),
            message: e.to_string(),
        })
}

/// Creates database `name` on the server of `url` (connecting to `url`'s database).
pub async fn create_database(url: &str, name: &str) -> Result<(), SinkError> {
    check_name(name)?;
    let mut conn = admin(url).await?;
    let result = sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await;
    let _ = conn.close().await;
    result.map(drop).map_err(|e| SinkError::Sql {
        context: format!("creating database `{name}`"),
        message: e.to_string(),
    })
}

/// Drops database `name` on the server of `url` if it exists, disconnecting its sessions.
pub async fn drop_database(url: &str, name: &str) -> Result<(), SinkError> {
    check_name(name)?;
    let mut conn = admin(url).await?;
    let result = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await;
    let _ = conn.close().await;
    result.map(drop).map_err(|e| SinkError::Sql {
        context: format!("dropping database `{name}`"),
        message: e.to_string(),
    })
}

/// A fresh PostgreSQL database on a server, dropped (sessions disconnected) when the value
/// goes: for tests and benchmarks that must not see each other's rows. Made and dropped
/// from synchronous code (a small runtime of its own), so it works in plain `#[test]`s,
/// tokio tests and CLI commands alike.
#[derive(Debug)]
pub struct ScratchDatabase {
    server: String,
    name: String,
    url: String,
}

impl ScratchDatabase {
    /// Creates `{prefix}_{unique}` on the server of `server` (a `postgres://` URL).
    pub fn create(server: &str, prefix: &str) -> Result<ScratchDatabase, SinkError> {
        let name = unique_name(prefix);
        block_on(|rt| rt.block_on(create_database(server, &name)))??;
        Ok(ScratchDatabase {
            url: with_database(server, &name),
            server: server.to_owned(),
            name,
        })
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        match block_on(|rt| rt.block_on(drop_database(&self.server, &self.name))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) | Err(e) => tracing::warn!(error = %e, "scratch database left behind"),
        }
    }
}

/// Runs `f` with a runtime of its own, on a thread of its own (so that it may be called
/// from inside another runtime).
fn block_on<T: Send>(f: impl FnOnce(&tokio::runtime::Runtime) -> T + Send) -> Result<T, SinkError> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| super::runtime().map(|rt| f(&rt)))
            .join()
            .map_err(|_| SinkError::Stopped("scratch database admin".into()))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_another_database() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:15432/pmi", "x"),
            "postgres://postgres@127.0.0.1:15432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "y"),
            "postgres://u:p@h/y?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h:5", "z"), "postgres://h:5/z");
        assert!(unique_name("pmi_test").starts_with("pmi_test_"));
        assert!(check_name("Robert'); DROP").is_err());
    }
}

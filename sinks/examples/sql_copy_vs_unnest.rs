//! Experiment behind the PostgreSQL write path of `pmi_sinks::sql`: the same predictions
//! written with `COPY` into a temporary table followed by one upsert from it, against the
//! sink (multi-row `INSERT … SELECT FROM UNNEST(arrays) ON CONFLICT`).
//!
//! ```text
//! eval "$(bash scripts/services.sh up)"
//! cargo run --release -p pmi-sinks --example sql_copy_vs_unnest -- [WRITERS] [ROWS] [BATCH_ROWS]
//! ```

use std::fmt::Write as _;
use std::time::Instant;

use pmi_core::Prediction;
use pmi_sinks::sql::{admin, bench, Database, SqlConfig};

fn copy_text(rows: &[Prediction]) -> String {
    // COPY text format: tab-separated, \N for NULL, backslash escapes.
    let esc = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('\t', "\\t")
            .replace('\n', "\\n")
    };
    let mut out = String::with_capacity(rows.len() * 160);
    for p in rows {
        let ts = chrono::DateTime::from_timestamp_millis(p.pane_end.0).unwrap();
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            esc(p.vehicle_id.as_str()),
            ts.format("%Y-%m-%d %H:%M:%S%.3f+00"),
            p.risk,
            p.severity.name(),
            p.component
                .map_or("\\N".to_string(), |c| c.name().to_string()),
            esc(&p.model),
            esc(&serde_json::to_string(&p.explanation).unwrap()),
        );
    }
    out
}

fn main() {
    let mut args = std::env::args().skip(1);
    let writers: usize = args.next().map_or(2, |a| a.parse().unwrap());
    let rows: usize = args.next().map_or(1_000_000, |a| a.parse().unwrap());
    let batch: usize = args.next().map_or(5000, |a| a.parse().unwrap());
    let url = std::env::var("PMI_DATABASE_URL").expect("PMI_DATABASE_URL");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let name = admin::unique_name("pmi_copy_bench");
    rt.block_on(admin::create_database(&url, &name)).unwrap();
    let db_url = admin::with_database(&url, &name);
    let report = rt.block_on(async {
        let db = Database::connect(&SqlConfig::new(&db_url)).await.unwrap();
        db.migrate().await.unwrap();
        let per = rows / writers;
        let inputs: Vec<Vec<Prediction>> = (0..writers)
            .map(|w| {
                bench::generate(&format!("C{w}"), per, 1000)
                    .into_iter()
                    .flatten()
                    .collect()
            })
            .collect();
        let started = Instant::now();
        let tasks: Vec<_> = inputs
            .into_iter()
            .map(|input| {
                let db_url = db_url.clone();
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async move {
                    use sqlx::Connection;
                    let mut conn = sqlx::PgConnection::connect(&db_url).await.unwrap();
                    sqlx::raw_sql(
                        "CREATE TEMP TABLE stage (LIKE failure_predictions INCLUDING DEFAULTS)",
                    )
                    .execute(&mut conn)
                    .await
                    .unwrap();
                    for chunk in input.chunks(batch) {
                        let text = copy_text(chunk);
                        let mut copy = conn
                            .copy_in_raw(
                                "COPY stage (vehicle_id, pane_end, risk, severity, component, \
                                 model, explanation) FROM STDIN",
                            )
                            .await
                            .unwrap();
                        copy.send(text.as_bytes()).await.unwrap();
                        copy.finish().await.unwrap();
                        sqlx::raw_sql(
                            "INSERT INTO failure_predictions SELECT * FROM stage \
                             ON CONFLICT (vehicle_id, pane_end) DO UPDATE SET \
                             risk = EXCLUDED.risk, severity = EXCLUDED.severity, \
                             component = EXCLUDED.component, model = EXCLUDED.model, \
                             explanation = EXCLUDED.explanation; TRUNCATE stage",
                        )
                        .execute(&mut conn)
                        .await
                        .unwrap();
                    }
                    })
                })
            })
            .collect();
        for t in tasks {
            t.join().unwrap();
        }
        let seconds = started.elapsed().as_secs_f64();
        let n = db.count("failure_predictions").await.unwrap();
        assert_eq!(n as usize, per * writers);
        db.close().await;
        format!(
            "COPY + upsert: {n} rows with {writers} writer(s), batches of {batch}, in {seconds:.2} s: {:.0} rows/s",
            n as f64 / seconds
        )
    });
    rt.block_on(admin::drop_database(&url, &name)).unwrap();
    println!("{report}");
}

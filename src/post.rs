//! `pmi simulate --to http://HOST:PORT`: the simulated fleet posts its readings to a running
//! `pmi serve` (`POST /ingest/batch`) instead of writing Parquet.
//!
//! Readings travel exactly as the vehicles send them, bad ones included (encoded with
//! [`pmi_core::wire::encode_raw`]), in time order: one request per tick at real-time pace,
//! batches of up to `batch` readings at full speed, each request waiting for the previous
//! answer. A `429` (queue full) is retried with growing pauses (up to the server's
//! `Retry-After`) until the batch is taken, so no reading is lost; a `503` (the graph is
//! stopping) ends the run with an error.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Deserialize;

use pmi_core::{wire, EventTime, RawReading};
use pmi_sources::fleet::{Fleet, SimulatorConfig};

/// What to post, where, how fast.
#[derive(Clone, Debug)]
pub struct PostJob {
    /// Base URL of `pmi serve` (`http://127.0.0.1:8080`).
    pub to: String,
    /// The fleet.
    pub fleet: SimulatorConfig,
    /// Stop before this tick; `None`: until Ctrl-C.
    pub end: Option<EventTime>,
    /// One tick per interval of wall-clock time (else as fast as the server takes them).
    pub realtime: bool,
    /// Most readings per request.
    pub batch: usize,
}

/// What a [`post`] run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PostSummary {
    /// Readings sent (and taken by the server).
    pub sent: u64,
    /// Of which the server accepted.
    pub accepted: u64,
    /// Of which it rejected (kept in its dead-letter output).
    pub rejected: u64,
    /// Requests sent again after a `429`.
    pub retries: u64,
    /// Requests that went through.
    pub requests: u64,
}

#[derive(Deserialize)]
struct BatchReply {
    accepted: u64,
    rejected: Vec<serde_json::Value>,
}

/// Runs a [`PostJob`].
pub async fn post(job: &PostJob) -> anyhow::Result<PostSummary> {
    let mut fleet = Fleet::new(job.fleet.clone())?;
    let url = format!("{}/ingest/batch", job.to.trim_end_matches('/'));
    let client = reqwest::Client::new();
    let batch = job.batch.max(1);
    let mut summary = PostSummary::default();
    let (started, start) = (Instant::now(), fleet.next_tick());
    let mut pending: Vec<RawReading> = Vec::new();
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        let tick = fleet.next_tick();
        if job.end.is_some_and(|end| tick >= end) {
            break;
        }
        if job.realtime {
            let due = started + Duration::from_millis((tick.0 - start.0).max(0) as u64);
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => {}
                _ = &mut stop => break,
            }
        }
        fleet.tick(&mut pending);
        // At real-time pace every tick goes at once; at full speed only full batches, the
        // rest waits for the next tick.
        let ready = if job.realtime {
            pending.len()
        } else {
            pending.len() / batch * batch
        };
        for chunk in pending[..ready].chunks(batch) {
            send(&client, &url, chunk, &mut summary).await?;
        }
        pending.drain(..ready);
    }
    for chunk in pending.chunks(batch) {
        send(&client, &url, chunk, &mut summary).await?;
    }
    Ok(summary)
}

/// Posts one batch until the server takes it.
async fn send(
    client: &reqwest::Client,
    url: &str,
    readings: &[RawReading],
    summary: &mut PostSummary,
) -> anyhow::Result<()> {
    let mut body = String::with_capacity(readings.len() * 330 + 16);
    body.push_str("{\"readings\":[");
    for (i, r) in readings.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&wire::encode_raw(r));
    }
    body.push_str("]}");
    let mut pause = Duration::from_millis(20);
    let mut connect_failures = 0;
    loop {
        let res = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await;
        let res = match res {
            Ok(r) => r,
            // The server may still be starting: a few tries before giving up.
            Err(e) if e.is_connect() && connect_failures < 20 => {
                connect_failures += 1;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("POST {url}")),
        };
        let status = res.status().as_u16();
        match status {
            202 | 422 => {
                let text = res.text().await.context("reading the reply")?;
                let reply: BatchReply = serde_json::from_str(&text)
                    .with_context(|| format!("POST {url}: {status} {text}"))?;
                summary.sent += readings.len() as u64;
                summary.accepted += reply.accepted;
                summary.rejected += reply.rejected.len() as u64;
                summary.requests += 1;
                return Ok(());
            }
            429 => {
                let retry_after = res
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map_or(Duration::from_secs(1), Duration::from_secs);
                summary.retries += 1;
                tokio::time::sleep(pause.min(retry_after)).await;
                pause = (pause * 2).min(retry_after);
            }
            _ => {
                let text = res.text().await.unwrap_or_default();
                anyhow::bail!("POST {url}: {status} {text}");
            }
        }
    }
}

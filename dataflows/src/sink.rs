//! The seam between the graph and its outputs: a [`ChunkSink`] takes chunks of records from
//! one worker, and [`write_to`] is the timely operator that feeds it.
//!
//! Implementations must not block the worker for long: file and network writers run on
//! their own threads behind bounded channels (a full channel is backpressure).
//!
//! # Durability (at-least-once with replayable sources)
//! Each record has a *stamp*, a graph time (by default the time it travels at; the raw
//! telemetry archive uses the reading's own key). [`write_to`] holds records back until the
//! operator's input frontier has passed their stamp, so a sink receives stamps in complete
//! steps: when the frontier is at `F`, the sink has every record stamped below `F` and none
//! other. Every [`WriteOptions::checkpoint_every`] it asks the sink to make everything
//! received durable as checkpoint `F` ([`ChunkSink::checkpoint`]), and when the sink says
//! it is ([`ChunkSink::durable`]) the operator's output capability moves to `F`. The
//! frontier of all these outputs together (a probe) is the time below which every output
//! of every worker is durable: a Kafka source commits offsets behind it.
//!
//! After a restart the source replays from the committed offsets, which cover the longest
//! window, so the windows are rebuilt; records stamped below the sink's last durable
//! checkpoint ([`WriteOptions::resume`]) were written before and are dropped, so a replay
//! writes nothing twice. Outputs whose stamp depends on arrival (late and rejected readings)
//! are not suppressed: they are at-least-once, and carry their origin for deduplication.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::Stream;

pub use pmi_sinks::{ChunkSink, SinkError, SinkStats};

/// A shared, closable handle to a worker's sink.
pub type SharedSink<T> = Rc<RefCell<Option<Box<dyn ChunkSink<T>>>>>;

/// Wraps a sink for sharing between the graph and the worker that closes it.
pub fn shared<T>(sink: Box<dyn ChunkSink<T>>) -> SharedSink<T> {
    Rc::new(RefCell::new(Some(sink)))
}

/// How [`write_to`] stamps, checkpoints and resumes.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// Take a checkpoint this often (wall clock); `None`: only at the end (close).
    pub checkpoint_every: Option<Duration>,
    /// Drop records stamped below this: a replay of what an earlier run made durable.
    pub resume: Option<u64>,
}

/// Records dropped as replays of durable output, per worker (for reports and tests).
pub type Suppressed = Rc<RefCell<u64>>;

/// A record's stamp from the record and the time it travels at; must be at least that time.
pub type Stamp<T> = Rc<dyn Fn(&T, u64) -> u64>;

/// Sends every record of `stream` to `sink` in stamp order of completion (see the module
/// docs), checkpointing as `options` says. Returns the acknowledgement stream: no data, its
/// frontier is the durable checkpoint. The first error is kept in `errors` and the sink is
/// dropped (the run then fails; nothing is reported as written that was not).
pub fn write_to<'scope, T: Clone + pmi_core::Rows + 'static>(
    stream: Stream<'scope, u64, Vec<T>>,
    name: &str,
    sink: SharedSink<T>,
    errors: Arc<Mutex<Vec<String>>>,
    stamp: Stamp<T>,
    options: WriteOptions,
    suppressed: Suppressed,
) -> Stream<'scope, u64, Vec<()>> {
    let name = name.to_owned();
    let scope = stream.scope();
    stream.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
        Pipeline,
        &format!("Write({name})"),
        move |cap, info| {
            let activator = scope.activator_for(info.address);
            let mut ack = Some(cap);
            let mut stash: BTreeMap<u64, Vec<T>> = BTreeMap::new();
            // The checkpoint in flight, and whether it is the last (end of input).
            let mut in_flight: Option<(u64, bool)> = None;
            let mut last_stamp: Option<u64> = None;
            let mut last_checkpoint = Instant::now();
            let fail = move |errors: &Arc<Mutex<Vec<String>>>, e: SinkError, name: &str| {
                errors
                    .lock()
                    .expect("errors lock")
                    .push(format!("sink `{name}`: {e}"));
            };
            move |(input, frontier), _output| {
                input.for_each(|cap, data| {
                    // Records sent under no capability claim no time: the earliest possible.
                    let time = cap.least().copied().unwrap_or(0);
                    for record in data.drain(..) {
                        stash.entry(stamp(&record, time)).or_default().push(record);
                    }
                });
                let mut guard = sink.borrow_mut();
                let Some(s) = guard.as_mut() else {
                    stash.clear();
                    ack = None;
                    return;
                };
                // Hand over every stamp the frontier has passed.
                let complete = frontier.frontier().first().copied().unwrap_or(u64::MAX);
                while let Some(entry) = stash.first_entry() {
                    if *entry.key() >= complete {
                        break;
                    }
                    let (key, chunk) = entry.remove_entry();
                    last_stamp = Some(key);
                    if options.resume.is_some_and(|r| key < r) {
                        *suppressed.borrow_mut() +=
                            chunk.iter().map(pmi_core::Rows::rows).sum::<usize>() as u64;
                        continue;
                    }
                    if let Err(e) = s.send(chunk) {
                        fail(&errors, e, &name);
                        *guard = None;
                        ack = None;
                        return;
                    }
                }
                let Some(cap) = ack.as_mut() else { return };
                // A checkpoint in flight: is it durable?
                if let Some((token, last)) = in_flight {
                    match s.durable() {
                        Ok(Some(d)) if d < token => {
                            activator.activate_after(Duration::from_millis(5));
                            return;
                        }
                        Ok(_) => {
                            in_flight = None;
                            if last {
                                ack = None;
                                return;
                            }
                            cap.downgrade(&token);
                        }
                        Err(e) => {
                            fail(&errors, e, &name);
                            *guard = None;
                            ack = None;
                            return;
                        }
                    }
                }
                let at = *cap.time();
                if complete <= at {
                    return;
                }
                let due = match options.checkpoint_every {
                    // Without checkpoints the sink is durable at close; acknowledge nothing
                    // until then, except the end of the input.
                    None => complete == u64::MAX,
                    Some(every) => {
                        let elapsed = last_checkpoint.elapsed();
                        if complete < u64::MAX && elapsed < every {
                            activator.activate_after(every - elapsed);
                        }
                        complete == u64::MAX || elapsed >= every
                    }
                };
                if !due {
                    return;
                }
                if options.checkpoint_every.is_none() {
                    ack = None;
                    return;
                }
                // At the end of the input the last checkpoint is just past the last stamp: a
                // later run over more input resumes from there.
                let last = complete == u64::MAX;
                let token = if last {
                    last_stamp.map_or(at, |l| l.saturating_add(1).max(at))
                } else {
                    complete
                }
                // Never below what an earlier run made durable.
                .max(options.resume.unwrap_or(0));
                if let Err(e) = s.checkpoint(token) {
                    fail(&errors, e, &name);
                    *guard = None;
                    ack = None;
                    return;
                }
                last_checkpoint = Instant::now();
                in_flight = Some((token, last));
                activator.activate();
            }
        },
    )
}

/// The default stamp: the time a record travels at.
pub fn at_time<T>() -> Stamp<T> {
    Rc::new(|_, time| time)
}

/// Closes a shared sink, if it is still open.
pub fn close<T>(sink: &SharedSink<T>) -> Result<SinkStats, SinkError> {
    match sink.borrow_mut().take() {
        Some(s) => s.close(),
        None => Ok(SinkStats::default()),
    }
}

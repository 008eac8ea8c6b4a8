//! The seam between the graph and its outputs: a [`ChunkSink`] takes chunks of records from
//! one worker, and [`write_to`] is the timely operator that feeds it.
//!
//! Implementations must not block the worker for long: file and network writers run on
//! their own threads behind bounded channels (a full channel is backpressure).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;

pub use pmi_sinks::{ChunkSink, SinkError, SinkStats};

/// A shared, closable handle to a worker's sink.
pub type SharedSink<T> = Rc<RefCell<Option<Box<dyn ChunkSink<T>>>>>;

/// Wraps a sink for sharing between the graph and the worker that closes it.
pub fn shared<T>(sink: Box<dyn ChunkSink<T>>) -> SharedSink<T> {
    Rc::new(RefCell::new(Some(sink)))
}

/// Sends every chunk of `stream` to `sink`. The first error is kept in `errors` and later
/// chunks are discarded (the run then fails; nothing is reported as written that was not).
pub fn write_to<T: Clone + 'static>(
    stream: Stream<'_, u64, Vec<T>>,
    name: &str,
    sink: SharedSink<T>,
    errors: Arc<Mutex<Vec<String>>>,
) {
    let name = name.to_owned();
    stream.sink(
        Pipeline,
        &format!("Write({name})"),
        move |(input, _frontier)| {
            input.for_each(|_cap, data| {
                if data.is_empty() {
                    return;
                }
                let mut guard = sink.borrow_mut();
                let Some(s) = guard.as_mut() else { return };
                if let Err(e) = s.send(std::mem::take(data)) {
                    errors
                        .lock()
                        .expect("errors lock")
                        .push(format!("sink `{name}`: {e}"));
                    *guard = None;
                }
            });
        },
    );
}

/// Closes a shared sink, if it is still open.
pub fn close<T>(sink: &SharedSink<T>) -> Result<SinkStats, SinkError> {
    match sink.borrow_mut().take() {
        Some(s) => s.close(),
        None => Ok(SinkStats::default()),
    }
}

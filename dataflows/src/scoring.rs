//! The scoring step of the graph: the registry's current model, reloaded without a restart.
//!
//! [`ModelScorer::start`] loads the current version of a registry at start (or, with none,
//! scores with the domain rules alone and says so) and starts a watcher thread that reads
//! the registry's `CURRENT` marker every `poll` interval. When it names a new version, the
//! watcher loads and checks it (file format, feature schema) off the timely workers and
//! swaps it in; the next vector is scored by it. A version that cannot be used (corrupt,
//! another schema) is logged and the running model stays. Every prediction records the
//! model version that made it (`ensemble-v0003`, or the rules' name).
//!
//! Workers never touch the file system: they score under a read lock of the current model,
//! which the watcher takes for writing only for the moment of a swap.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use pmi_core::{FeatureRow, FeatureSchema, Prediction};
use pmi_models::ensemble::Ensemble;
use pmi_models::registry::Registry;
use pmi_models::RuleScorer;

use crate::graph::ScoreFn;
use crate::DataflowError;

/// What scores: a registry model, or the rules when the registry has none.
enum Current {
    Model(Arc<Ensemble>),
    Rules(Arc<RuleScorer>),
}

/// The graph's scorer with hot reload. Dropping it stops the watcher.
pub struct ModelScorer {
    current: Arc<RwLock<Current>>,
    /// Dropped to stop the watcher: its wait for the next poll ends at once.
    stop: Option<std::sync::mpsc::Sender<()>>,
    watcher: Option<JoinHandle<()>>,
}

impl ModelScorer {
    /// Scores with the current model of `registry` (checked against `schema`), falling back
    /// to `rules` while the registry has no current model; watches for new versions every
    /// `poll`.
    pub fn start(
        registry: PathBuf,
        schema: &FeatureSchema,
        rules: RuleScorer,
        poll: Duration,
    ) -> Result<ModelScorer, DataflowError> {
        let reg = Registry::new(&registry);
        let err = |e: pmi_models::ModelError| DataflowError::Input(e.to_string());
        let (initial, version) = match reg.current().map_err(err)? {
            Some(v) => {
                let model = reg.load(&v).map_err(err)?;
                model.check_schema(schema).map_err(|e| {
                    DataflowError::Input(format!(
                        "model {v} in {}: {e}; retrain it for this pipeline's windows and \
                         channels, or mark another version current",
                        registry.display()
                    ))
                })?;
                tracing::info!(version = %v, registry = %registry.display(), "scoring with the ensemble");
                (Current::Model(Arc::new(model)), Some(v))
            }
            None => {
                tracing::warn!(
                    registry = %registry.display(),
                    "no current model in the registry: scoring with the domain rules alone until one is published (pmi train)"
                );
                (Current::Rules(Arc::new(rules)), None)
            }
        };
        let current = Arc::new(RwLock::new(initial));
        let (stop, stopped) = std::sync::mpsc::channel();
        let watcher = {
            let (current, schema) = (current.clone(), schema.clone());
            std::thread::Builder::new()
                .name("pmi-model-watch".into())
                .spawn(move || watch(reg, schema, version, current, stopped, poll))
                .map_err(|e| DataflowError::Input(format!("starting the model watcher: {e}")))?
        };
        Ok(ModelScorer {
            current,
            stop: Some(stop),
            watcher: Some(watcher),
        })
    }

    /// The score function for the graph.
    pub fn score_fn(&self) -> ScoreFn {
        let current = self.current.clone();
        Arc::new(move |v: FeatureRow<'_>| -> Prediction { score(&current, v, false) })
    }

    /// The model scoring now (`None`: the rules).
    pub fn model(&self) -> Option<Arc<Ensemble>> {
        match &*self.current.read().expect("model lock") {
            Current::Model(m) => Some(m.clone()),
            Current::Rules(_) => None,
        }
    }

    /// Scores one vector with whatever scores now.
    pub fn score<'v>(&self, v: impl Into<FeatureRow<'v>>) -> Prediction {
        score(&self.current, v.into(), false)
    }

    /// Scores one vector with the likeliest component and the reasons even when normal.
    pub fn score_explained<'v>(&self, v: impl Into<FeatureRow<'v>>) -> Prediction {
        score(&self.current, v.into(), true)
    }

    /// The name predictions record now (`ensemble-v0003`, or the rules' model name).
    pub fn model_name(&self) -> String {
        match &*self.current.read().expect("model lock") {
            Current::Model(m) => m.model_name().to_owned(),
            Current::Rules(r) => r.model_name().to_owned(),
        }
    }

    /// The version scoring now (`None`: the rules).
    pub fn version(&self) -> Option<String> {
        match &*self.current.read().expect("model lock") {
            Current::Model(m) => Some(m.meta.version.clone()),
            Current::Rules(_) => None,
        }
    }
}

impl Drop for ModelScorer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
    }
}

/// Scores `v` with whatever scores now; `explain`: the component and reasons even when
/// normal.
fn score(current: &RwLock<Current>, v: FeatureRow<'_>, explain: bool) -> Prediction {
    let p = match &*current.read().expect("model lock") {
        Current::Model(m) if explain => m.predict_explained(v),
        Current::Model(m) => m.predict(v),
        Current::Rules(r) => return r.score(v),
    };
    p.expect("the model's schema was checked against the pipeline's")
}

fn watch(
    reg: Registry,
    schema: FeatureSchema,
    mut version: Option<String>,
    current: Arc<RwLock<Current>>,
    stopped: std::sync::mpsc::Receiver<()>,
    poll: Duration,
) {
    let mut refused: Option<String> = None;
    // Nothing is ever sent: the wait ends with the poll interval, or at once when the
    // scorer is dropped (the sender with it).
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(poll) {
        let next = match reg.current() {
            Ok(Some(v)) => v,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "model registry unreadable; keeping the running model");
                continue;
            }
        };
        if Some(&next) == version.as_ref() || Some(&next) == refused.as_ref() {
            continue;
        }
        match reg
            .load(&next)
            .and_then(|m| m.check_schema(&schema).map(|()| m))
        {
            Ok(model) => {
                tracing::info!(from = ?version, to = %next, "model reloaded");
                *current.write().expect("model lock") = Current::Model(Arc::new(model));
                version = Some(next);
                refused = None;
            }
            Err(e) => {
                tracing::error!(version = %next, error = %e, "new model refused; keeping the running model");
                refused = Some(next);
            }
        }
    }
}

//! The severity level operator: per vehicle, its predictions in pane-end order through a
//! hysteresis rule, as a differential collection holding each vehicle's current [`Level`].
//!
//! # The rule
//!
//! A vehicle's state is its current level `C` (a [`Severity`], `Normal` before its first
//! prediction) and the prediction that set it (the [`Level`]'s evidence). For each counting
//! prediction `p` (see below), with `raw = thresholds.classify(p.risk)`:
//!
//! - **rise**: if `raw > C`, the level becomes `raw` (at once: worsening is never delayed);
//! - **hold / fall**: otherwise, if `p` is in service, its *target* is the highest
//!   `L ≤ C` with `p.risk ≥ threshold(L) − margin` (`threshold(Normal)` = −∞), which is at
//!   least `raw`. A target equal to `C` holds the level (and ends any wait to fall). A
//!   target below `C` starts a wait at `p`'s pane end if none is running; once `p`'s pane
//!   end is at least [`AlertConfig::fall_after_ms`] after the wait's start, the level drops
//!   to `p`'s target and the wait ends. So a level entered at `risk ≥ threshold` is left
//!   only when the in-service risk stays below `threshold − margin` for the fall delay
//!   (with a delay of 0: at the first such prediction);
//! - **parked**: a prediction that is not in service never lowers the level (it can raise
//!   it) and neither starts nor ends a wait; a rise ends the wait;
//! - the evidence (`risk`, `pane_end`, `component`) is replaced by `p`'s when the level
//!   changes, and also, at the same level above `Normal`, when an in-service `p` names a
//!   component other than the current one with a higher risk than the current evidence
//!   (the strongest evidence at a level wins, so two components scoring alike do not take
//!   turns); otherwise it stays (so the record, and every alert built on it, changes only
//!   on level or component changes, not on every prediction).
//!
//! A vehicle's first prediction sets its level to `raw` (not in service: to `raw` as well;
//! there is nothing to lower).
//!
//! # Order and determinism
//!
//! Predictions are exchanged by [`VehicleId::route_hash`], so each vehicle's state lives on
//! one worker. The operator holds predictions until the input frontier passes their
//! timestamp, then processes the ready timestamps in increasing order and, within one
//! timestamp, each vehicle's predictions by ascending pane end (ties: highest risk first,
//! then in service first). A prediction whose pane end is not after the last one applied
//! for its vehicle is stale (or a duplicate) and ignored: the latest pane end wins. The
//! output therefore depends only on the multiset of `(timestamp, prediction)` inputs, not on
//! the number of workers or the arrival order within a timestamp.
//!
//! # Output
//!
//! The collection `(vehicle, Level)` holds one record per vehicle seen: at the timestamp of
//! the prediction that changed it, `−1` for the old level and `+1` for the new one.
//!
//! # Parked vehicles
//!
//! Neither [`pmi_core::Prediction`] nor its feature vector says on its own whether the
//! vehicle was driving (the feature vector has per-channel reading counts, but the
//! prediction does not carry them), so the caller says so: [`ScoredPane::in_service`]
//! (e.g. "the pane's vector counted readings in its shortest window").

use std::cmp::Ordering;
use std::collections::HashMap;

use differential_dataflow::{AsCollection, VecCollection};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use pmi_core::{AlertConfig, Component, EventTime, Prediction, Severity, VehicleId};

/// A prediction as the alert collection takes it: with whether the vehicle was in service
/// (had readings) during the pane. Predictions of parked vehicles score near the base rate;
/// they must not clear an alert.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoredPane {
    /// The prediction.
    pub prediction: Prediction,
    /// Whether the vehicle was in service during the pane; `false` predictions never lower
    /// the level.
    pub in_service: bool,
    /// Feature values the agents diagnose from (`name`, value), carried into the level and
    /// the alert when this prediction sets them. The caller chooses which (usually the
    /// diagnosis catalogue's) and may leave it empty for predictions that cannot set an
    /// alert's level.
    pub features: Vec<(String, f64)>,
}

impl ScoredPane {
    /// A prediction of a vehicle in service, without features.
    pub fn in_service(prediction: Prediction) -> Self {
        ScoredPane {
            prediction,
            in_service: true,
            features: Vec::new(),
        }
    }
}

/// A vehicle's severity level and the prediction that set it (see the module docs).
///
/// Equality, order and hash compare `risk` by its bits ([`f64::total_cmp`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Level {
    /// The level.
    pub severity: Severity,
    /// The component the setting prediction implicated.
    pub component: Option<Component>,
    /// The setting prediction's risk.
    pub risk: f64,
    /// The setting prediction's pane end.
    pub pane_end: EventTime,
    /// The setting prediction's model.
    pub model: String,
    /// The setting prediction's reasons.
    pub explanation: Vec<String>,
    /// The setting prediction's features ([`ScoredPane::features`]).
    pub features: Vec<(String, f64)>,
}

impl Level {
    /// The level `severity` set by scored prediction `p` (its evidence).
    pub fn of(severity: Severity, p: &ScoredPane) -> Level {
        let pred = &p.prediction;
        Level {
            severity,
            component: pred.component,
            risk: pred.risk,
            pane_end: pred.pane_end,
            model: pred.model.to_string(),
            explanation: pred.explanation.clone(),
            features: p.features.clone(),
        }
    }
}

pmi_core::eq_and_partial_ord_from_ord!(Level);

/// By severity, component, pane end, model, explanation, then risk and features (floats by
/// [`f64::total_cmp`]).
impl Ord for Level {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key()
            .cmp(&other.key())
            .then_with(|| self.risk.total_cmp(&other.risk))
            .then_with(|| pmi_core::alert::cmp_features(&self.features, &other.features))
    }
}

impl std::hash::Hash for Level {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
        self.risk.to_bits().hash(state);
        pmi_core::alert::hash_features(&self.features, state);
    }
}

impl Level {
    #[allow(clippy::type_complexity)]
    fn key(&self) -> (Severity, Option<Component>, EventTime, &str, &[String]) {
        (
            self.severity,
            self.component,
            self.pane_end,
            &self.model,
            &self.explanation,
        )
    }
}

/// The threshold of `level` (−∞ for `Normal`).
fn threshold(config: &AlertConfig, level: Severity) -> f64 {
    config.thresholds.of(level)
}

fn below(level: Severity) -> Severity {
    match level {
        Severity::Normal | Severity::Low => Severity::Normal,
        Severity::Medium => Severity::Low,
        Severity::High => Severity::Medium,
        Severity::Critical => Severity::High,
    }
}

/// One step of the hysteresis rule of the module docs: the level after `current` (`None`
/// before the vehicle's first prediction) sees `p`, or `None` when the level record stays
/// as it is. `falling_since` is the start of the running wait to fall (the vehicle's state
/// beside its level; `None` at first). Does not check pane-end order (the operator does).
pub fn next_level(
    config: &AlertConfig,
    current: Option<&Level>,
    falling_since: &mut Option<EventTime>,
    p: &ScoredPane,
) -> Option<Level> {
    let pred = &p.prediction;
    let raw = config.thresholds.classify(pred.risk);
    let Some(current) = current else {
        *falling_since = None;
        return Some(Level::of(raw, p));
    };
    let level = if raw > current.severity {
        *falling_since = None;
        raw
    } else if !p.in_service {
        current.severity
    } else {
        let mut target = current.severity;
        while target > Severity::Normal && pred.risk < threshold(config, target) - config.margin {
            target = below(target);
        }
        if target == current.severity {
            *falling_since = None;
            target
        } else {
            let since = *falling_since.get_or_insert(pred.pane_end);
            if pred.pane_end.0 - since.0 >= config.fall_after_ms as i64 {
                *falling_since = None;
                target
            } else {
                current.severity
            }
        }
    };
    let new_component = p.in_service
        && level > Severity::Normal
        && pred.component.is_some()
        && pred.component != current.component
        && pred.risk > current.risk;
    (level != current.severity || new_component).then(|| Level::of(level, p))
}

/// Per-vehicle state of the operator.
struct VehicleState {
    last_pane: EventTime,
    level: Level,
    falling_since: Option<EventTime>,
}

/// Extension trait: per-vehicle severity levels with hysteresis from a stream of predictions.
pub trait SeverityLevels<'scope, T: Timestamp> {
    /// The collection of each vehicle's current [`Level`] (see the module docs).
    fn severity_levels(self, config: &AlertConfig) -> VecCollection<'scope, T, (VehicleId, Level)>;
}

/// Sort order within one timestamp: vehicle, pane end, highest risk, in service first.
fn arrival_order(a: &ScoredPane, b: &ScoredPane) -> Ordering {
    let (pa, pb) = (&a.prediction, &b.prediction);
    (&pa.vehicle_id, pa.pane_end)
        .cmp(&(&pb.vehicle_id, pb.pane_end))
        .then_with(|| pb.risk.total_cmp(&pa.risk))
        .then_with(|| b.in_service.cmp(&a.in_service))
}

impl<'scope, T> SeverityLevels<'scope, T> for Stream<'scope, T, Vec<ScoredPane>>
where
    T: Timestamp + TotalOrder,
{
    fn severity_levels(self, config: &AlertConfig) -> VecCollection<'scope, T, (VehicleId, Level)> {
        let config = *config;
        let pact = Exchange::new(|p: &ScoredPane| p.prediction.vehicle_id.route_hash());
        self.unary_frontier(pact, "SeverityLevels", move |_cap, _info| {
            let mut states: HashMap<VehicleId, VehicleState> = HashMap::new();
            // Predictions waiting for the frontier, under a capability for their time.
            let mut stash: Vec<(Capability<T>, Vec<ScoredPane>)> = Vec::new();
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    // Timely inputs and operators stamp every message with its time; a message
                    // with an empty stamp could not be placed in time order.
                    let cap = cap
                        .retain_least(output.output_index())
                        .expect("a prediction message has a timestamp");
                    let batch: Vec<ScoredPane> = data.flat_map(|d| d.drain(..)).collect();
                    match stash.iter_mut().find(|(c, _)| c.time() == cap.time()) {
                        Some((_, pending)) => pending.extend(batch),
                        None => stash.push((cap, batch)),
                    }
                });
                let frontier = frontier.frontier();
                let (mut ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut stash)
                    .into_iter()
                    .partition(|(cap, _)| !frontier.less_equal(cap.time()));
                stash = waiting;
                ready.sort_by(|(a, _), (b, _)| a.time().cmp(b.time()));
                for (cap, mut batch) in ready {
                    batch.sort_by(arrival_order);
                    let mut session = output.session(&cap);
                    for p in &batch {
                        let vehicle = &p.prediction.vehicle_id;
                        let pane = p.prediction.pane_end;
                        match states.get_mut(vehicle) {
                            None => {
                                let mut falling_since = None;
                                let level = next_level(&config, None, &mut falling_since, p)
                                    .expect("a first prediction sets a level");
                                session.give((
                                    (vehicle.clone(), level.clone()),
                                    cap.time().clone(),
                                    1,
                                ));
                                states.insert(
                                    vehicle.clone(),
                                    VehicleState {
                                        last_pane: pane,
                                        level,
                                        falling_since,
                                    },
                                );
                            }
                            Some(state) if pane > state.last_pane => {
                                state.last_pane = pane;
                                let next = next_level(
                                    &config,
                                    Some(&state.level),
                                    &mut state.falling_since,
                                    p,
                                );
                                if let Some(level) = next {
                                    let old = std::mem::replace(&mut state.level, level.clone());
                                    session.give((
                                        (vehicle.clone(), old),
                                        cap.time().clone(),
                                        -1isize,
                                    ));
                                    session.give(((vehicle.clone(), level), cap.time().clone(), 1));
                                }
                            }
                            Some(_) => {} // stale or duplicate pane: the latest pane end wins
                        }
                    }
                }
            }
        })
        .as_collection()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(risk: f64, component: Option<Component>, in_service: bool) -> ScoredPane {
        ScoredPane {
            prediction: Prediction {
                vehicle_id: VehicleId::parse("V").unwrap(),
                pane_end: EventTime(0),
                risk,
                severity: Severity::Normal,
                component,
                model: "test".into(),
                explanation: vec![],
            },
            in_service,
            features: vec![],
        }
    }

    /// Levels after each prediction of a sequence of risks, one pane (10 s) apart.
    fn levels(config: &AlertConfig, risks: &[(f64, bool)]) -> Vec<Severity> {
        let mut current: Option<Level> = None;
        let mut falling = None;
        risks
            .iter()
            .enumerate()
            .map(|(i, &(r, in_service))| {
                let mut p = scored(r, Some(Component::Battery), in_service);
                p.prediction.pane_end = EventTime(i as i64 * 10_000);
                if let Some(l) = next_level(config, current.as_ref(), &mut falling, &p) {
                    current = Some(l);
                }
                current.as_ref().unwrap().severity
            })
            .collect()
    }

    /// The defaults without a fall delay.
    fn immediate() -> AlertConfig {
        AlertConfig {
            fall_after_ms: 0,
            ..AlertConfig::default()
        }
    }

    #[test]
    fn falls_wait_for_the_delay_and_a_held_level_restarts_it() {
        use Severity::*;
        let c = AlertConfig {
            fall_after_ms: 30_000, // three panes
            ..AlertConfig::default()
        };
        // High, then lower for 0, 10, 20 s (waiting), at 30 s it falls.
        assert_eq!(
            levels(
                &c,
                &[
                    (0.8, true),
                    (0.6, true),
                    (0.6, true),
                    (0.6, true),
                    (0.6, true)
                ]
            ),
            vec![High, High, High, High, Medium]
        );
        // A prediction holding the level restarts the wait; a parked one does not.
        assert_eq!(
            levels(
                &c,
                &[
                    (0.8, true),
                    (0.6, true),
                    (0.6, true),
                    (0.76, true),
                    (0.6, true),
                    (0.6, false),
                    (0.6, true),
                    (0.6, true)
                ]
            ),
            vec![High, High, High, High, High, High, High, Medium]
        );
    }

    #[test]
    fn rises_at_once_and_falls_only_below_the_margin() {
        use Severity::*;
        let c = immediate(); // medium 0.5, high 0.75, critical 0.9, margin 0.05
        assert_eq!(
            levels(
                &c,
                &[
                    (0.2, true),
                    (0.51, true),
                    (0.49, true),
                    (0.46, true),
                    (0.44, true)
                ]
            ),
            vec![Normal, Medium, Medium, Medium, Low]
        );
        // Critical falls straight to the level its risk holds (0.72 ≥ 0.75 − 0.05: high).
        assert_eq!(
            levels(&c, &[(0.95, true), (0.72, true), (0.1, true)]),
            vec![Critical, High, Normal]
        );
        // Without margin, hovering flaps.
        let no_margin = AlertConfig { margin: 0.0, ..c };
        assert_eq!(
            levels(&no_margin, &[(0.51, true), (0.49, true), (0.51, true)]),
            vec![Medium, Low, Medium]
        );
    }

    #[test]
    fn parked_predictions_never_lower_but_may_raise() {
        use Severity::*;
        let c = immediate();
        assert_eq!(
            levels(
                &c,
                &[
                    (0.8, true),
                    (0.05, false),
                    (0.95, false),
                    (0.05, false),
                    (0.05, true)
                ]
            ),
            vec![High, High, Critical, Critical, Normal]
        );
    }

    #[test]
    fn evidence_changes_only_with_level_or_component() {
        let c = AlertConfig::default();
        let mut f = None;
        let first = next_level(
            &c,
            None,
            &mut f,
            &scored(0.8, Some(Component::Battery), true),
        )
        .unwrap();
        // Same level, same component, other risk: no change.
        assert!(next_level(
            &c,
            Some(&first),
            &mut f,
            &scored(0.85, Some(Component::Battery), true)
        )
        .is_none());
        // No component named: no change.
        assert!(next_level(&c, Some(&first), &mut f, &scored(0.85, None, true)).is_none());
        // Another component while parked: no change.
        assert!(next_level(
            &c,
            Some(&first),
            &mut f,
            &scored(0.85, Some(Component::FuelPump), false)
        )
        .is_none());
        // Another component in service, but weaker evidence: no change.
        assert!(next_level(
            &c,
            Some(&first),
            &mut f,
            &scored(0.78, Some(Component::FuelPump), true)
        )
        .is_none());
        // Another component in service with stronger evidence: the evidence moves.
        let moved = next_level(
            &c,
            Some(&first),
            &mut f,
            &scored(0.85, Some(Component::FuelPump), true),
        )
        .unwrap();
        assert_eq!(
            (moved.severity, moved.component, moved.risk),
            (Severity::High, Some(Component::FuelPump), 0.85)
        );
    }
}

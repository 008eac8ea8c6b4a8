//! How a backfill's input is laid out, found from its `(vehicle_id, ts)` columns alone.
//!
//! A backfill must give the same features whatever the row order, and keep memory bounded
//! by window state for the common layouts. The graph's watermark makes that possible when
//! the rows come in time order (within the allowed lateness), or when they come grouped by
//! vehicle with each group in time order: then each vehicle gets an ordinal *group* and the
//! graph's time is `(group, ts)` ([`pmi_core::EventKey`]), so a vehicle's windows close when
//! the input moves on to the next vehicle. Any other order is sorted first (in memory).

use std::collections::HashMap;

/// The input's order, as far as the window operator is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Non-decreasing `ts` within the allowed lateness: read as it is, group 0.
    TimeOrdered,
    /// Each vehicle's rows contiguous, in time order within the allowed lateness.
    GroupedByVehicle,
    /// Anything else: sort by time before reading.
    Unordered,
}

/// The keys of one stretch of the input (a row group, say), summarised so that stretches
/// read apart (in parallel) and merged in input order give the verdict one pass over all
/// the rows would: see [`LayoutDetector::merge`].
#[derive(Debug)]
pub struct KeyStretch {
    rows: u64,
    /// Smallest and largest `ts` (`None` before the first row).
    span: Option<(i64, i64)>,
    /// Largest `max ts so far − ts` within the stretch.
    time_disorder: i64,
    /// The stretch's runs of one vehicle, in order; `None` once a vehicle came back after
    /// another one (the input is then not grouped by vehicle).
    runs: Option<Vec<Run>>,
    /// Vehicles of `runs`, to tell a vehicle coming back.
    seen: std::collections::HashSet<String>,
}

/// Consecutive rows of one vehicle.
#[derive(Debug)]
struct Run {
    vehicle: String,
    min_ts: i64,
    max_ts: i64,
    /// Largest `max ts so far − ts` within the run.
    disorder: i64,
}

impl Default for KeyStretch {
    fn default() -> Self {
        KeyStretch {
            rows: 0,
            span: None,
            time_disorder: 0,
            runs: Some(Vec::new()),
            seen: Default::default(),
        }
    }
}

impl KeyStretch {
    /// An empty stretch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sees the stretch's next row.
    pub fn push(&mut self, vehicle: &str, ts: i64) {
        self.rows += 1;
        let (min, max) = self.span.unwrap_or((ts, ts));
        self.time_disorder = self.time_disorder.max(max.saturating_sub(ts));
        self.span = Some((min.min(ts), max.max(ts)));
        let Some(runs) = self.runs.as_mut() else {
            return;
        };
        match runs.last_mut() {
            Some(run) if run.vehicle == vehicle => {
                run.disorder = run.disorder.max(run.max_ts.saturating_sub(ts));
                run.min_ts = run.min_ts.min(ts);
                run.max_ts = run.max_ts.max(ts);
            }
            _ if self.seen.contains(vehicle) => {
                // The vehicle came back: not grouped, and its runs are of no use any more.
                self.runs = None;
                self.seen = Default::default();
            }
            _ => {
                self.seen.insert(vehicle.to_owned());
                runs.push(Run {
                    vehicle: vehicle.to_owned(),
                    min_ts: ts,
                    max_ts: ts,
                    disorder: 0,
                });
            }
        }
    }
}

/// Tells the [`Layout`] of an input from its `(vehicle, ts)` in input order, row by row
/// ([`Self::push`]) or stretch by stretch ([`Self::merge`]).
#[derive(Debug)]
pub struct LayoutDetector {
    lateness_ms: i64,
    rows: u64,
    max_ts: i64,
    grouped: bool,
    ordinals: HashMap<String, u32>,
    /// The latest run: its vehicle's ordinal and largest `ts`.
    current: Option<(u32, i64)>,
    current_name: String,
    /// Largest `max_ts − ts` seen (how far rows run back in time).
    time_disorder: i64,
    /// Largest `max_ts − ts` within one vehicle's run.
    group_disorder: i64,
    /// Rows pushed one by one, not yet merged.
    pending: KeyStretch,
}

/// The detector's verdict.
#[derive(Debug)]
pub struct LayoutPlan {
    /// The layout.
    pub layout: Layout,
    /// For [`Layout::GroupedByVehicle`]: each vehicle's group ordinal, in order of appearance.
    pub groups: HashMap<String, u32>,
    /// Rows seen.
    pub rows: u64,
    /// How far, in ms, a row comes after a later-stamped row of its ordering group (0 when
    /// the input is strictly in order; at most the allowed lateness). Reading in this order,
    /// every row still to come has `ts ≥ largest ts so far − disorder_ms`: the backfill's
    /// watermark is exact, not padded by the allowed lateness.
    pub disorder_ms: i64,
}

impl LayoutDetector {
    /// A detector for the given allowed lateness.
    pub fn new(lateness_ms: i64) -> Self {
        LayoutDetector {
            lateness_ms,
            rows: 0,
            max_ts: i64::MIN,
            grouped: true,
            ordinals: HashMap::new(),
            current: None,
            current_name: String::new(),
            time_disorder: 0,
            group_disorder: 0,
            pending: KeyStretch::new(),
        }
    }

    /// Sees the next row.
    pub fn push(&mut self, vehicle: &str, ts: i64) {
        self.pending.push(vehicle, ts);
    }

    /// Sees the next stretch of rows (after any pushed one by one).
    pub fn merge(&mut self, stretch: KeyStretch) {
        let pending = std::mem::replace(&mut self.pending, KeyStretch::new());
        self.absorb(pending);
        self.absorb(stretch);
    }

    fn absorb(&mut self, stretch: KeyStretch) {
        let Some((min_ts, max_ts)) = stretch.span else {
            return;
        };
        self.rows += stretch.rows;
        // Every row of the stretch comes after every row before it.
        self.time_disorder = self
            .time_disorder
            .max(stretch.time_disorder)
            .max(self.max_ts.saturating_sub(min_ts));
        self.max_ts = self.max_ts.max(max_ts);
        if !self.grouped {
            return;
        }
        let Some(runs) = stretch.runs else {
            self.grouped = false;
            return;
        };
        for run in runs {
            if let Some((g, max)) = self.current.filter(|_| self.current_name == run.vehicle) {
                // The previous stretch's last run goes on.
                let disorder = run.disorder.max(max.saturating_sub(run.min_ts));
                self.group_disorder = self.group_disorder.max(disorder);
                self.current = Some((g, max.max(run.max_ts)));
                continue;
            }
            if self.ordinals.contains_key(&run.vehicle)
                || self.ordinals.len() as u32 >= pmi_core::EventKey::MAX_GROUP
            {
                self.grouped = false; // the vehicle came back: not grouped
                return;
            }
            let g = self.ordinals.len() as u32;
            self.group_disorder = self.group_disorder.max(run.disorder);
            self.current = Some((g, run.max_ts));
            self.current_name.clone_from(&run.vehicle);
            self.ordinals.insert(run.vehicle, g);
        }
    }

    /// The verdict. Time order wins when both hold (it parallelises best).
    pub fn finish(mut self) -> LayoutPlan {
        let pending = std::mem::take(&mut self.pending);
        self.absorb(pending);
        // A row more than the allowed lateness behind an earlier one breaks either order.
        let time_ordered = self.time_disorder <= self.lateness_ms;
        let grouped = self.grouped && self.group_disorder <= self.lateness_ms;
        let layout = if time_ordered {
            Layout::TimeOrdered
        } else if grouped {
            Layout::GroupedByVehicle
        } else {
            Layout::Unordered
        };
        let groups = if layout == Layout::GroupedByVehicle {
            self.ordinals
        } else {
            HashMap::new()
        };
        let disorder_ms = match layout {
            Layout::TimeOrdered => self.time_disorder,
            Layout::GroupedByVehicle => self.group_disorder,
            // Sorted in memory before it is read: strictly in order.
            Layout::Unordered => 0,
        };
        LayoutPlan {
            layout,
            groups,
            rows: self.rows,
            disorder_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect(rows: &[(&str, i64)]) -> LayoutPlan {
        let mut d = LayoutDetector::new(30_000);
        for (v, t) in rows {
            d.push(v, *t);
        }
        d.finish()
    }

    #[test]
    fn recognises_the_three_layouts() {
        let by_time = [("A", 0), ("B", 500), ("A", 1000), ("B", 1500), ("A", 1200)];
        assert_eq!(
            detect(&by_time).layout,
            Layout::TimeOrdered,
            "disorder within lateness is fine"
        );
        assert_eq!(
            detect(&by_time).disorder_ms,
            300,
            "A at 1200 after B at 1500"
        );
        let by_vehicle = [
            ("A", 0),
            ("A", 1_000_000),
            ("B", 0),
            ("B", 2_000_000),
            ("C", 5),
        ];
        let plan = detect(&by_vehicle);
        assert_eq!(plan.layout, Layout::GroupedByVehicle);
        assert_eq!(plan.groups["A"], 0);
        assert_eq!(plan.groups["C"], 2);
        assert_eq!(plan.disorder_ms, 0, "each vehicle in time order");
        let vehicle_returns = [("A", 0), ("A", 1_000_000), ("B", 0), ("A", 2_000_000)];
        assert_eq!(detect(&vehicle_returns).layout, Layout::Unordered);
        let shuffled_within_vehicle = [("A", 1_000_000), ("A", 0), ("B", 0)];
        assert_eq!(detect(&shuffled_within_vehicle).layout, Layout::Unordered);
    }

    /// The definitions, checked row by row over the whole input: time order within the
    /// lateness; or each vehicle's rows contiguous and in time order within the lateness.
    fn oracle(rows: &[(String, i64)], lateness: i64) -> (Layout, i64, Vec<String>) {
        let disorder = |ts: &mut dyn Iterator<Item = i64>| {
            let (mut max, mut worst) = (i64::MIN, 0i64);
            for t in ts {
                worst = worst.max(max.saturating_sub(t));
                max = max.max(t);
            }
            worst
        };
        let time = disorder(&mut rows.iter().map(|r| r.1));
        let mut order: Vec<String> = Vec::new();
        let mut runs: Vec<Vec<i64>> = Vec::new();
        for (v, t) in rows {
            if order.last() == Some(v) {
                runs.last_mut().expect("a run").push(*t);
            } else {
                order.push(v.clone());
                runs.push(vec![*t]);
            }
        }
        let contiguous =
            order.len() == order.iter().collect::<std::collections::HashSet<_>>().len();
        let group = runs
            .iter()
            .map(|r| disorder(&mut r.iter().copied()))
            .max()
            .unwrap_or(0);
        if time <= lateness {
            (Layout::TimeOrdered, time, Vec::new())
        } else if contiguous && group <= lateness {
            (Layout::GroupedByVehicle, group, order)
        } else {
            (Layout::Unordered, 0, Vec::new())
        }
    }

    use proptest::prelude::*;

    proptest! {
        /// Stretches merged in order give the verdict of the definitions, however the
        /// input is cut into stretches (as the backfill's parallel key scan cuts it).
        #[test]
        fn stretches_merged_in_order_give_the_definitions_verdict(
            steps in prop::collection::vec((0usize..4, -40i64..60, any::<bool>()), 0..60),
            cuts in prop::collection::vec(0usize..60, 0..6),
            grouped in any::<bool>(),
        ) {
            // Times mostly rising with some disorder; vehicles either interleaved or in
            // contiguous groups (so that every layout comes up).
            let mut t = 0i64;
            let mut rows: Vec<(String, i64)> = steps
                .iter()
                .map(|&(v, dt, jump)| {
                    t += if jump { dt * 3 } else { dt.abs() };
                    (format!("V{v}"), t)
                })
                .collect();
            if grouped {
                rows.sort_by(|a, b| a.0.cmp(&b.0));
            }
            let lateness = 50;
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(rows.len())).collect();
            cuts.sort_unstable();
            let mut detector = LayoutDetector::new(lateness);
            let mut from = 0;
            for cut in cuts.into_iter().chain([rows.len()]) {
                let mut stretch = KeyStretch::new();
                for (v, t) in &rows[from..cut] {
                    stretch.push(v, *t);
                }
                detector.merge(stretch);
                from = cut;
            }
            let plan = detector.finish();
            let (layout, disorder, order) = oracle(&rows, lateness);
            prop_assert_eq!(plan.layout, layout);
            prop_assert_eq!(plan.disorder_ms, disorder);
            prop_assert_eq!(plan.rows, rows.len() as u64);
            let mut groups: Vec<(&String, &u32)> = plan.groups.iter().collect();
            groups.sort_by_key(|(_, g)| **g);
            let groups: Vec<String> = groups.into_iter().map(|(v, _)| v.clone()).collect();
            prop_assert_eq!(groups, order);
        }
    }
}

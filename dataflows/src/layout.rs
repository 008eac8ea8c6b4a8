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

/// Watches `(vehicle, ts)` in input order and tells the [`Layout`].
#[derive(Debug)]
pub struct LayoutDetector {
    lateness_ms: i64,
    max_ts: i64,
    time_ordered: bool,
    grouped: bool,
    ordinals: HashMap<String, u32>,
    current: Option<(u32, i64)>,
    current_name: String,
    rows: u64,
    /// Largest `max_ts − ts` seen (how far rows run back in time).
    time_disorder: i64,
    /// Largest `max_ts − ts` within one vehicle's run.
    group_disorder: i64,
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
            max_ts: i64::MIN,
            time_ordered: true,
            grouped: true,
            ordinals: HashMap::new(),
            current: None,
            current_name: String::new(),
            rows: 0,
            time_disorder: 0,
            group_disorder: 0,
        }
    }

    /// Sees the next row.
    pub fn push(&mut self, vehicle: &str, ts: i64) {
        self.rows += 1;
        if self.time_ordered && ts < self.max_ts.saturating_sub(self.lateness_ms) {
            self.time_ordered = false;
        }
        self.time_disorder = self.time_disorder.max(self.max_ts.saturating_sub(ts));
        self.max_ts = self.max_ts.max(ts);
        if !self.grouped {
            return;
        }
        if self.current.is_some() && self.current_name == vehicle {
            let (g, max) = self.current.expect("checked");
            if ts < max.saturating_sub(self.lateness_ms) {
                self.grouped = false;
            }
            self.group_disorder = self.group_disorder.max(max.saturating_sub(ts));
            self.current = Some((g, max.max(ts)));
            return;
        }
        if self.ordinals.contains_key(vehicle)
            || self.ordinals.len() as u32 >= pmi_core::EventKey::MAX_GROUP
        {
            self.grouped = false; // the vehicle came back: not grouped
            return;
        }
        let g = self.ordinals.len() as u32;
        self.ordinals.insert(vehicle.to_owned(), g);
        self.current = Some((g, ts));
        self.current_name.clear();
        self.current_name.push_str(vehicle);
    }

    /// The verdict. Time order wins when both hold (it parallelises best).
    pub fn finish(self) -> LayoutPlan {
        let layout = if self.time_ordered {
            Layout::TimeOrdered
        } else if self.grouped {
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
}

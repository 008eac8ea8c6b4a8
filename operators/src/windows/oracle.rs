//! The reference implementation of DESIGN.md's feature semantics: recomputes every statistic
//! from the raw readings of a window, two-pass and without panes. Slow and obviously
//! correct; the incremental operator is tested against it.

use std::collections::BTreeMap;

use pmi_core::{Channel, EventTime, SensorValues, WindowConfig};

/// Readings of one vehicle, deduplicated the way the operator does it: sorted by time, then
/// by value bits; of equal times the first is kept.
pub fn dedup(mut readings: Vec<(EventTime, SensorValues)>) -> Vec<(EventTime, SensorValues)> {
    readings.sort_by(|a, b| {
        a.0.cmp(&b.0).then_with(|| {
            let (x, y) = (a.1.as_nan_array(), b.1.as_nan_array());
            x.iter()
                .zip(y)
                .map(|(p, q)| p.total_cmp(q))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        })
    });
    readings.dedup_by(|b, a| a.0 == b.0);
    readings
}

/// Feature values at boundary `b` (schema order), from deduplicated readings.
pub fn features_at(
    config: &WindowConfig,
    channels: &[Channel],
    readings: &[(EventTime, SensorValues)],
    b: EventTime,
) -> Vec<f64> {
    let mut out = Vec::new();
    for channel in channels {
        for w in &config.windows_s {
            let lo = b.0 - *w as i64 * 1000;
            let pts: Vec<(f64, f64)> = readings
                .iter()
                .filter(|(t, _)| t.0 > lo && t.0 <= b.0)
                .filter_map(|(t, v)| channel.value(v).map(|x| ((t.0 - b.0) as f64 / 1000.0, x)))
                .collect();
            let n = pts.len() as f64;
            out.push(n);
            if pts.is_empty() {
                out.extend([f64::NAN; 6]);
                continue;
            }
            let mean = pts.iter().map(|p| p.1).sum::<f64>() / n;
            let var = pts.iter().map(|p| (p.1 - mean).powi(2)).sum::<f64>() / n;
            let min = pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
            let max = pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
            let last = pts.last().unwrap().1;
            let tbar = pts.iter().map(|p| p.0).sum::<f64>() / n;
            let stt = pts.iter().map(|p| (p.0 - tbar).powi(2)).sum::<f64>();
            let stv = pts.iter().map(|p| (p.0 - tbar) * (p.1 - mean)).sum::<f64>();
            let slope = if pts.len() < 2 { 0.0 } else { stv / stt };
            out.extend([mean, var.sqrt(), min, max, last, slope]);
        }
    }
    out
}

/// Every `(pane end, values)` one vehicle emits: each pane end with at least one reading in
/// `(b − max W, b]`.
pub fn vehicle_vectors(
    config: &WindowConfig,
    channels: &[Channel],
    readings: Vec<(EventTime, SensorValues)>,
) -> BTreeMap<EventTime, Vec<f64>> {
    let readings = dedup(readings);
    let p = config.pane_ms();
    let max_w = *config.windows_s.last().unwrap() as i64 * 1000;
    let mut ends = std::collections::BTreeSet::new();
    for (t, _) in &readings {
        let first = -((-t.0).div_euclid(p)) * p; // pane end holding t
        let mut b = first;
        while b - max_w < t.0 {
            ends.insert(b);
            b += p;
        }
    }
    ends.into_iter()
        .map(|b| {
            (
                EventTime(b),
                features_at(config, channels, &readings, EventTime(b)),
            )
        })
        .collect()
}

/// Whether two feature values agree: equal nulls, or relative difference within `rel` of
/// the larger magnitude or of `scale` (for values that should be near zero).
pub fn close(a: f64, b: f64, rel: f64, scale: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(scale)
}

//! Per-vehicle window state: open panes of raw readings, a ring of sealed pane summaries, and
//! the computation of every window's statistics at a pane end.
//!
//! This is plain code with no dataflow in it, so that it can be tested against the naive
//! [`super::oracle`] directly; the timely operator in [`super::PaneWindows`] drives it.
//!
//! # Time and panes
//! Pane `k` covers event times `((k−1)·P, k·P]`; its end `b = k·P` is the boundary at which
//! the windows `(b − W, b]` are evaluated. Readings wait in the *open* buffer until their
//! pane is sealed (the watermark passed its end). Sealing sorts the pane's readings by time,
//! drops duplicate times (reported back to the caller), and folds them into a summary per
//! channel. Sealing in time order makes results independent of arrival order and of the
//! number of workers.
//!
//! # State per vehicle
//! Sealed panes are summarised per channel, in struct-of-arrays form to keep state small:
//! `n` (u16), `Σt` (u32) and `Σt²` (f64) of the reading times in ms back from the pane end
//! (exact integers), and mean, M2 and the time–value co-moment (f64): 38 bytes per channel
//! and pane. Minimum and maximum come from a monotone deque per channel over pane minima and
//! maxima (one deque serves every window, since windows are suffixes of the longest one).
//! `last` needs only the latest value per channel.
//!
//! # Numerics
//! Window statistics combine pane summaries as sums shifted to a reference: the channel's
//! latest reading, in value and in time. Nothing is ever subtracted out of a running sum, so
//! a window of equal values has a standard deviation of exactly 0, and cancellation is
//! bounded by how far the data lie from their own latest reading. Time sums are integers
//! (exact), and `Σ(t − t̄)²` is formed exactly. Windows are recomputed from the panes at
//! every boundary, in one pass over the longest window that snapshots the shorter ones
//! (they are its suffixes). See `super::oracle` for the definitions checked against.

use std::collections::VecDeque;
use std::sync::Arc;

use pmi_core::{Channel, ConfigError, EventTime, FeatureSchema, SensorValues, Stat, WindowConfig};

/// Most readings of one vehicle that one pane can hold (`n` is a u16). Readings beyond
/// it are returned to the caller as rejected, never dropped.
pub const MAX_READINGS_PER_PANE: usize = u16::MAX as usize;

/// The compiled window configuration shared by all vehicles of an operator.
#[derive(Clone, Debug)]
pub struct WindowSpec {
    pane_ms: i64,
    window_panes: Vec<usize>,
    max_panes: usize,
    channels: Vec<Channel>,
    schema: Arc<FeatureSchema>,
    fingerprint: u64,
}

impl WindowSpec {
    /// Compiles a configuration.
    pub fn new(config: &WindowConfig) -> Result<Self, ConfigError> {
        let schema = config.schema()?;
        let window_panes: Vec<usize> = config
            .windows_s
            .iter()
            .map(|w| (w / config.pane_s) as usize)
            .collect();
        let max_panes = *window_panes.last().expect("validated: at least one window");
        Ok(WindowSpec {
            pane_ms: config.pane_ms(),
            window_panes,
            max_panes,
            channels: schema.channels.clone(),
            fingerprint: schema.fingerprint(),
            schema: Arc::new(schema),
        })
    }

    /// Pane length in ms.
    pub fn pane_ms(&self) -> i64 {
        self.pane_ms
    }

    /// Index `k` of the pane holding `ts`: the pane `((k−1)·P, k·P]`.
    #[inline]
    pub fn pane_of(&self, ts: EventTime) -> i64 {
        // ceil(ts / P) for any sign.
        -((-ts.0).div_euclid(self.pane_ms))
    }

    /// End time of pane `k`.
    #[inline]
    pub fn pane_end(&self, k: i64) -> EventTime {
        EventTime(k * self.pane_ms)
    }

    /// The feature schema the vectors follow.
    pub fn schema(&self) -> &Arc<FeatureSchema> {
        &self.schema
    }

    /// Fingerprint of the schema.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Number of panes in the longest window.
    pub fn max_panes(&self) -> usize {
        self.max_panes
    }

    /// Channels aggregated.
    pub fn channels(&self) -> &[Channel] {
        &self.channels
    }
}

/// A reading refused by [`VehicleWindows::insert`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertError {
    /// Its pane is already sealed: the reading is late.
    Late,
    /// Its pane already holds [`MAX_READINGS_PER_PANE`] readings of this vehicle.
    PaneFull,
}

/// Sealed pane summaries for all channels, struct-of-arrays, indexed `slot · C + channel`
/// with `slot = pane mod max_panes`.
#[derive(Clone, Debug)]
struct PaneRing {
    n: Vec<u16>,
    /// `−Σ(t − pane end)` in ms (non-negative, exact).
    neg_tau1: Vec<u32>,
    /// `Σ(t − pane end)²` in ms² (exact: below 2^53 for any pane ≤ 60 s).
    tau2: Vec<f64>,
    mean: Vec<f64>,
    m2: Vec<f64>,
    /// `Σ(t − t̄)(v − v̄)` with t in ms.
    co: Vec<f64>,
}

impl PaneRing {
    fn new(slots: usize) -> Self {
        PaneRing {
            n: vec![0; slots],
            neg_tau1: vec![0; slots],
            tau2: vec![0.0; slots],
            mean: vec![0.0; slots],
            m2: vec![0.0; slots],
            co: vec![0.0; slots],
        }
    }

    /// Empties a slot: every field zero, so that empty channels add exact zeros.
    fn clear_slot(&mut self, base: usize, channels: usize) {
        let r = base..base + channels;
        self.n[r.clone()].fill(0);
        self.neg_tau1[r.clone()].fill(0);
        self.tau2[r.clone()].fill(0.0);
        self.mean[r.clone()].fill(0.0);
        self.m2[r.clone()].fill(0.0);
        self.co[r].fill(0.0);
    }

    fn heap_bytes(&self) -> usize {
        self.n.capacity() * 2
            + self.neg_tau1.capacity() * 4
            + self.tau2.capacity() * 8
            + (self.mean.capacity() + self.m2.capacity() + self.co.capacity()) * 8
    }
}

/// A monotone deque of `(pane, value)`: values strictly improving from back to front, so the
/// front is the extreme of the panes it covers.
#[derive(Clone, Debug, Default)]
struct Extremes {
    min: VecDeque<(i64, f64)>,
    max: VecDeque<(i64, f64)>,
}

impl Extremes {
    fn push(&mut self, pane: i64, lo: f64, hi: f64) {
        while self.min.back().is_some_and(|&(_, v)| v >= lo) {
            self.min.pop_back();
        }
        self.min.push_back((pane, lo));
        while self.max.back().is_some_and(|&(_, v)| v <= hi) {
            self.max.pop_back();
        }
        self.max.push_back((pane, hi));
    }

    fn evict_through(&mut self, pane: i64) {
        while self.min.front().is_some_and(|&(p, _)| p <= pane) {
            self.min.pop_front();
        }
        while self.max.front().is_some_and(|&(p, _)| p <= pane) {
            self.max.pop_front();
        }
    }

    /// (min, max) over panes `>= first`.
    fn query(&self, first: i64) -> (f64, f64) {
        let lo = self
            .min
            .iter()
            .find(|(p, _)| *p >= first)
            .map_or(f64::NAN, |x| x.1);
        let hi = self
            .max
            .iter()
            .find(|(p, _)| *p >= first)
            .map_or(f64::NAN, |x| x.1);
        (lo, hi)
    }

    fn heap_bytes(&self) -> usize {
        (self.min.capacity() + self.max.capacity()) * std::mem::size_of::<(i64, f64)>()
    }
}

/// The window state of one vehicle.
#[derive(Clone, Debug)]
pub struct VehicleWindows {
    /// Readings of panes not yet sealed; sorted lazily at seal time.
    open: Vec<(EventTime, SensorValues)>,
    open_sorted: bool,
    /// The last pane sealed, `None` before the first.
    sealed_through: Option<i64>,
    /// Pane of the latest reading sealed (any channel present or not).
    last_reading_pane: i64,
    ring: PaneRing,
    extremes: Vec<Extremes>,
    /// Latest (ts, value) per channel among sealed readings.
    last: Vec<(i64, f64)>,
}

/// Scratch buffers reused across calls, owned by the operator (not per vehicle).
#[derive(Debug, Default)]
pub struct Scratch {
    readings: Vec<(EventTime, SensorValues)>,
    acc: Acc,
    reference: Vec<f64>,
    ref_time: Vec<f64>,
}

/// Window sums per channel (struct of arrays, so the pane loop vectorises across
/// channels), relative to the channel's latest reading `(t_r, r)`: `n`, `Σ(t−t_r)`,
/// `Σ(t−t_r)²` (integers in ms, exact in f64 below 2^53), `Σ(v−r)`, `Σ(v−r)²` (with
/// within-pane M2) and `Σ(t−t_r)(v−r)` (with within-pane co-moments).
#[derive(Debug, Default)]
struct Acc {
    n: Vec<f64>,
    t1: Vec<f64>,
    t2: Vec<f64>,
    s1: Vec<f64>,
    s2: Vec<f64>,
    x: Vec<f64>,
}

impl Acc {
    fn reset(&mut self, channels: usize) {
        for v in [
            &mut self.n,
            &mut self.t1,
            &mut self.t2,
            &mut self.s1,
            &mut self.s2,
            &mut self.x,
        ] {
            v.clear();
            v.resize(channels, 0.0);
        }
    }
}

impl VehicleWindows {
    /// Empty state for `spec`.
    pub fn new(spec: &WindowSpec) -> Self {
        let c = spec.channels.len();
        VehicleWindows {
            open: Vec::new(),
            open_sorted: true,
            sealed_through: None,
            last_reading_pane: i64::MIN,
            ring: PaneRing::new(spec.max_panes * c),
            extremes: vec![Extremes::default(); c],
            last: vec![(i64::MIN, f64::NAN); c],
        }
    }

    /// Buffers a reading for its pane. Fails with [`InsertError::Late`] when that pane is
    /// already sealed.
    pub fn insert(
        &mut self,
        spec: &WindowSpec,
        ts: EventTime,
        values: SensorValues,
    ) -> Result<(), InsertError> {
        let pane = spec.pane_of(ts);
        if self.sealed_through.is_some_and(|s| pane <= s) {
            return Err(InsertError::Late);
        }
        if self.open.len() >= MAX_READINGS_PER_PANE
            && self
                .open
                .iter()
                .filter(|(t, _)| spec.pane_of(*t) == pane)
                .count()
                >= MAX_READINGS_PER_PANE
        {
            return Err(InsertError::PaneFull);
        }
        if self.open_sorted {
            if let Some((last_ts, _)) = self.open.last() {
                // Equal times count as unsorted: the sort orders duplicates by value.
                self.open_sorted = *last_ts < ts;
            }
        }
        self.open.push((ts, values));
        Ok(())
    }

    /// The pane whose end is the next boundary this vehicle must be evaluated at, or `None`
    /// when the vehicle is idle (nothing buffered, no reading within the longest window):
    /// its state can then be dropped.
    pub fn next_boundary(&self, spec: &WindowSpec) -> Option<i64> {
        let next_in_range = self
            .sealed_through
            .map(|s| s + 1)
            .filter(|k| k - self.last_reading_pane < spec.max_panes as i64);
        let first_open = self.open.iter().map(|(t, _)| spec.pane_of(*t)).min();
        match (next_in_range, first_open) {
            (Some(k), _) => Some(k),
            (None, open) => open,
        }
    }

    /// Seals every pane up to and including `k` and, when the vehicle has a reading within
    /// the longest window ending at pane `k`, writes the feature values for that boundary
    /// into `out` (cleared first) and returns true. Readings whose `(ts)` repeats an earlier
    /// reading of the same pane are moved to `duplicates` (the first in time-then-value
    /// order is kept).
    pub fn evaluate(
        &mut self,
        spec: &WindowSpec,
        k: i64,
        scratch: &mut Scratch,
        out: &mut Vec<f64>,
        duplicates: &mut Vec<(EventTime, SensorValues)>,
    ) -> bool {
        self.seal_through(spec, k, scratch, duplicates);
        out.clear();
        if k - self.last_reading_pane >= spec.max_panes as i64 {
            return false;
        }
        self.compute(spec, k, scratch, out);
        true
    }

    fn seal_through(
        &mut self,
        spec: &WindowSpec,
        k: i64,
        scratch: &mut Scratch,
        duplicates: &mut Vec<(EventTime, SensorValues)>,
    ) {
        if self.sealed_through.is_some_and(|s| s >= k) {
            return;
        }
        if !self.open_sorted {
            // Time, then the value bits, so that which duplicate is kept is deterministic.
            self.open.sort_by(|a, b| {
                a.0.cmp(&b.0).then_with(|| {
                    let (x, y) = (a.1.as_nan_array(), b.1.as_nan_array());
                    x.iter()
                        .zip(y)
                        .map(|(p, q)| p.total_cmp(q))
                        .find(|o| o.is_ne())
                        .unwrap_or(std::cmp::Ordering::Equal)
                })
            });
            self.open_sorted = true;
        }
        let first = match self.sealed_through {
            Some(s) => s + 1,
            None => self
                .open
                .first()
                .map_or(k, |(t, _)| spec.pane_of(*t).min(k)),
        };
        let cap = spec.max_panes as i64;
        let c = spec.channels.len();
        // Panes before `k − cap + 1` would be overwritten anyway: clear their slots once.
        let start = first.max(k - cap + 1);
        if first < start {
            // Panes older than every window ending at `k` or later: their readings only
            // update `last` and activity, so fold them all at once.
            self.fold_pane(spec, start - 1, scratch, duplicates, false);
        }
        for pane in start..=k {
            let base = (pane.rem_euclid(cap) as usize) * c;
            self.ring.clear_slot(base, c);
            self.fold_pane(spec, pane, scratch, duplicates, true);
            for e in &mut self.extremes {
                e.evict_through(pane - cap);
            }
        }
        self.sealed_through = Some(k);
    }

    /// Takes pane `pane`'s readings off the open buffer and folds them into its slot.
    fn fold_pane(
        &mut self,
        spec: &WindowSpec,
        pane: i64,
        scratch: &mut Scratch,
        duplicates: &mut Vec<(EventTime, SensorValues)>,
        into_ring: bool,
    ) {
        let end = self.open.partition_point(|(t, _)| spec.pane_of(*t) <= pane);
        if end == 0 {
            return;
        }
        // Deduplicate equal timestamps, keeping the first.
        let mut readings = std::mem::take(&mut scratch.readings);
        readings.clear();
        readings.extend(self.open.drain(..end));
        let mut w = 0;
        for r in 0..readings.len() {
            if w > 0 && readings[w - 1].0 == readings[r].0 {
                duplicates.push(readings[r]);
            } else {
                readings[w] = readings[r];
                w += 1;
            }
        }
        readings.truncate(w);
        let newest = readings.last().map_or(i64::MIN, |(t, _)| spec.pane_of(*t));
        self.last_reading_pane = self.last_reading_pane.max(newest);

        if !into_ring {
            for (ci, channel) in spec.channels.iter().enumerate() {
                if let Some((ts, v)) = readings
                    .iter()
                    .rev()
                    .find_map(|(t, vs)| channel.value(vs).map(|v| (t.0, v)))
                {
                    self.last[ci] = (ts, v);
                }
            }
            scratch.readings = readings;
            return;
        }
        let c_count = spec.channels.len();
        let pane_start = (pane - 1) * spec.pane_ms;
        let pane_end = pane * spec.pane_ms;
        let cap = spec.max_panes as i64;
        let base = (pane.rem_euclid(cap) as usize) * c_count;
        for (ci, channel) in spec.channels.iter().enumerate() {
            let mut n: u32 = 0;
            let (mut neg_tau1, mut tau2) = (0u64, 0u64);
            let (mut mean_t, mut mean, mut m2, mut co) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            let mut last = (i64::MIN, f64::NAN);
            for (ts, values) in &readings {
                let Some(v) = channel.value(values) else {
                    continue;
                };
                let tr = (ts.0 - pane_start) as u64;
                let back = (pane_end - ts.0) as u64; // in [0, P)
                n += 1;
                neg_tau1 += back;
                tau2 += back * back;
                let nf = n as f64;
                let dt = tr as f64 - mean_t;
                mean_t += dt / nf;
                let dv = v - mean;
                mean += dv / nf;
                m2 += dv * (v - mean);
                co += dt * (v - mean);
                lo = lo.min(v);
                hi = hi.max(v);
                last = (ts.0, v);
            }
            if n == 0 {
                continue;
            }
            self.last[ci] = last;
            let i = base + ci;
            self.ring.n[i] = n as u16;
            self.ring.neg_tau1[i] = neg_tau1 as u32;
            self.ring.tau2[i] = tau2 as f64;
            self.ring.mean[i] = mean;
            self.ring.m2[i] = m2;
            self.ring.co[i] = co;
            self.extremes[ci].push(pane, lo, hi);
        }
        scratch.readings = readings;
    }

    fn compute(&self, spec: &WindowSpec, k: i64, scratch: &mut Scratch, out: &mut Vec<f64>) {
        let c = spec.channels.len();
        let cap = spec.max_panes as i64;
        let windows = &spec.window_panes;
        out.resize(c * windows.len() * Stat::ALL.len(), f64::NAN);
        let acc = &mut scratch.acc;
        acc.reset(c);
        // References: each channel's latest reading, in value and in time (ms from the
        // boundary), so that sums stay small where the data are and cancellation is bounded.
        let boundary = k * spec.pane_ms;
        let (reference, ref_time) = (&mut scratch.reference, &mut scratch.ref_time);
        reference.clear();
        ref_time.clear();
        for &(t, v) in &self.last {
            let known = !v.is_nan();
            reference.push(if known { v } else { 0.0 });
            ref_time.push(if known { (t - boundary) as f64 } else { 0.0 });
        }
        let ring = &self.ring;
        let mut next_window = 0;
        for depth in 0..spec.max_panes {
            let pane = k - depth as i64;
            let base = (pane.rem_euclid(cap) as usize) * c;
            // This pane ends `delta` ms before the boundary (≤ 0).
            let delta = -(depth as f64) * spec.pane_ms as f64;
            let r = base..base + c;
            // Every slice has length `c`, so the loop below has no bounds checks and no
            // branches (empty slots are all zeros and add exact zeros): it vectorises.
            let (n, nt1, t2) = (
                &ring.n[r.clone()],
                &ring.neg_tau1[r.clone()],
                &ring.tau2[r.clone()],
            );
            let (mean, m2, co) = (&ring.mean[r.clone()], &ring.m2[r.clone()], &ring.co[r]);
            let (rv, rt) = (&reference[..c], &ref_time[..c]);
            let (an, at1, at2) = (&mut acc.n[..c], &mut acc.t1[..c], &mut acc.t2[..c]);
            let (as1, as2, ax) = (&mut acc.s1[..c], &mut acc.s2[..c], &mut acc.x[..c]);
            for ci in 0..c {
                let nf = n[ci] as f64;
                let tau1 = -(nt1[ci] as f64);
                let d = mean[ci] - rv[ci];
                let dc = delta - rt[ci]; // pane end − reference time
                let tsum = tau1 + nf * dc; // Σ(t − t_ref) over the pane, exact
                an[ci] += nf;
                at1[ci] += tsum;
                at2[ci] += t2[ci] + 2.0 * dc * tau1 + nf * dc * dc;
                as1[ci] += nf * d;
                as2[ci] += m2[ci] + nf * d * d;
                ax[ci] += co[ci] + tsum * d;
            }
            while next_window < windows.len() && depth + 1 == windows[next_window] {
                self.write_window(spec, k, next_window, acc, reference, out);
                next_window += 1;
            }
        }
    }

    fn write_window(
        &self,
        spec: &WindowSpec,
        k: i64,
        w: usize,
        acc: &Acc,
        reference: &[f64],
        out: &mut [f64],
    ) {
        let wcount = spec.window_panes.len();
        let first_pane = k - spec.window_panes[w] as i64 + 1;
        for (ci, r) in reference.iter().enumerate() {
            let o = (ci * wcount + w) * Stat::ALL.len();
            let slot = &mut out[o..o + Stat::ALL.len()];
            let n = acc.n[ci];
            slot[0] = n;
            if n == 0.0 {
                slot[1..].fill(f64::NAN);
                continue;
            }
            let (s1, t1) = (acc.s1[ci], acc.t1[ci]);
            let m2 = (acc.s2[ci] - s1 * s1 / n).max(0.0);
            // Σ(t − t̄)² = (n·Σt² − (Σt)²) / n, numerator exact in integers: exactly 0 with
            // fewer than two distinct times.
            let num = (n as i128) * (acc.t2[ci] as i128) - (t1 as i128) * (t1 as i128);
            let (lo, hi) = self.extremes[ci].query(first_pane);
            let slope = if num <= 0 {
                0.0
            } else {
                (acc.x[ci] - t1 * s1 / n) / (num as f64 / n) * 1000.0
            };
            slot[1] = r + s1 / n;
            slot[2] = (m2 / n).sqrt();
            slot[3] = lo;
            slot[4] = hi;
            slot[5] = self.last[ci].1;
            slot[6] = slope;
        }
    }

    /// Bytes of heap and inline state this vehicle holds (for `pmi bench`).
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.open.capacity() * std::mem::size_of::<(EventTime, SensorValues)>()
            + self.ring.heap_bytes()
            + self
                .extremes
                .iter()
                .map(|e| e.heap_bytes() + std::mem::size_of::<Extremes>())
                .sum::<usize>()
            + self.last.capacity() * 16
    }

    /// Readings waiting in open panes.
    pub fn open_len(&self) -> usize {
        self.open.len()
    }
}

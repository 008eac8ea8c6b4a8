//! A vehicle's pane minima and maxima over the longest window: one monotone deque per
//! channel and side, all of them rings in one buffer.
//!
//! A deque holds each pane of the longest window whose minimum (or maximum) no later pane
//! beats, oldest first, so its front is the extreme of the longest window and each shorter
//! window's extreme is the first entry young enough for it (they are suffixes of the
//! longest). Over noisy values a deque keeps a few entries; a steady trend keeps every pane.
//!
//! Why one buffer and not a `VecDeque` per deque: an evaluation reads every deque of the
//! vehicle, and separate allocations put each deque's header and entries on lines of their
//! own, scattered over the heap (two dozen cache misses per evaluation at 8 channels, and a
//! malloc header and slack per deque). Here the rings' headers share two cache lines and
//! the usual entries a few more, next to each other. A ring that fills up, or kept much
//! more room than it used at its fullest over the last [`REVIEW_EVERY`] evaluations, has
//! the buffer laid out again (rare: the room follows the peaks of the data's trends and
//! oscillations, which change slowly).

use super::prefetch;

/// One entry of a deque: a pane's extreme and the pane (mod 2¹⁶), packed into 10 bytes
/// (aligned, the pair would take 16).
#[derive(Clone, Copy, Default)]
#[repr(C, packed(2))]
struct Extreme {
    value: f64,
    pane: u16,
}

impl std::fmt::Debug for Extreme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (pane, value) = (self.pane, self.value);
        write!(f, "({pane}, {value})")
    }
}

/// Where one deque lives in the buffer: `cap` slots from `start`, its oldest entry at
/// `start + head`, `len` entries wrapping around within the `cap` slots; `peak`, the most
/// entries it held since the last review of the rooms (see [`Extremes::expire`]).
#[derive(Clone, Copy, Debug, Default)]
struct Ring {
    start: u32,
    cap: u16,
    head: u16,
    len: u16,
    peak: u16,
}

/// Evaluations between two reviews of the deques' spare room (see [`Extremes::expire`]).
const REVIEW_EVERY: u8 = 64;

impl Ring {
    /// Buffer index of the ring's `j`-th oldest entry (`j < cap`).
    #[inline(always)]
    fn at(&self, j: usize) -> usize {
        let (head, cap) = (self.head as usize, self.cap as usize);
        let i = head + j;
        self.start as usize + if i >= cap { i - cap } else { i }
    }
}

/// A vehicle's extreme deques (see the module docs), numbered from 0. Pane numbers are kept
/// mod 2¹⁶: entries are less than two longest windows (≤ 2 · 4096 panes) old, see
/// `VehicleWindows::evaluate`, so ages are exact in wrapping arithmetic.
#[derive(Clone, Debug)]
pub(super) struct Extremes {
    entries: Vec<Extreme>,
    rings: Box<[Ring]>,
    /// Calls of [`Self::expire`] since the last review of the rooms.
    since_review: u8,
    /// Times the buffer was laid out again.
    #[cfg(test)]
    relayouts: usize,
}

impl Extremes {
    /// `deques` empty deques.
    pub(super) fn new(deques: usize) -> Self {
        Extremes {
            entries: Vec::new(),
            rings: vec![Ring::default(); deques].into_boxed_slice(),
            since_review: 0,
            #[cfg(test)]
            relayouts: 0,
        }
    }

    /// Entries of deque `d`.
    #[cfg(test)]
    pub(super) fn len(&self, d: usize) -> usize {
        self.rings[d].len as usize
    }

    /// Deque `d`'s entries, oldest first, as the two runs of its ring.
    #[inline]
    fn slices(&self, d: usize) -> (&[Extreme], &[Extreme]) {
        let r = self.rings[d];
        let (start, head, len, cap) = (
            r.start as usize,
            r.head as usize,
            r.len as usize,
            r.cap as usize,
        );
        let first = len.min(cap - head);
        (
            &self.entries[start + head..start + head + first],
            &self.entries[start..start + len - first],
        )
    }

    /// The rings' sizes, in slots.
    fn caps(&self) -> Vec<usize> {
        self.rings.iter().map(|r| r.cap as usize).collect()
    }

    /// Lays the buffer out again with deque `d` given `cap` slots (at least its length).
    fn relayout(&mut self, d: usize, cap: usize) {
        let mut caps = self.caps();
        caps[d] = cap;
        self.relayout_to(&caps);
    }

    /// Lays the buffer out again with each deque given its `caps` slots (at least its
    /// length), every deque's entries first in its ring.
    fn relayout_to(&mut self, caps: &[usize]) {
        #[cfg(test)]
        {
            self.relayouts += 1;
        }
        let mut entries = Vec::with_capacity(caps.iter().sum());
        let mut rings = self.rings.clone();
        for (i, ring) in rings.iter_mut().enumerate() {
            let (a, b) = self.slices(i);
            let start = entries.len();
            entries.extend_from_slice(a);
            entries.extend_from_slice(b);
            entries.resize(start + caps[i], Extreme::default());
            *ring = Ring {
                start: u32::try_from(start).expect("extreme deques fit 2³² entries"),
                cap: u16::try_from(caps[i]).expect("a deque's ring fits 2¹⁶ entries"),
                head: 0,
                len: ring.len,
                peak: ring.peak,
            };
        }
        self.entries = entries;
        self.rings = rings;
    }

    /// Appends pane `pane`'s extreme `v` to deque `d`, dropping the entries it dominates
    /// (`dominated(old, v)`).
    #[inline]
    pub(super) fn push(
        &mut self,
        d: usize,
        pane: i64,
        v: f64,
        dominated: impl Fn(f64, f64) -> bool,
    ) {
        let mut r = self.rings[d];
        while r.len > 0 && dominated(self.entries[r.at(r.len as usize - 1)].value, v) {
            r.len -= 1;
        }
        self.rings[d] = r;
        if r.len == r.cap {
            // Grow by an eighth, not double: slack is a large share of window state.
            let len = r.len as usize;
            self.relayout(d, len + len / 8 + 2);
            r = self.rings[d];
        }
        let at = r.at(r.len as usize);
        self.entries[at] = Extreme {
            value: v,
            pane: pane as u16,
        };
        let r = &mut self.rings[d];
        r.len += 1;
        r.peak = r.peak.max(r.len);
    }

    /// Drops from every deque the entries at least `max_age` panes older than pane `k`; every
    /// [`REVIEW_EVERY`] calls, also the spare room of deques that held far fewer entries
    /// than their room since the last review.
    ///
    /// The room follows each deque's peak over the review period, not its length now: a
    /// deque whose length rises and falls with the data (pane extremes of a slowly
    /// oscillating signal, such as a thermostat's cycle) keeps the room of its peaks, where
    /// shrinking it at every fall had the buffer laid out again (an allocation and a copy of
    /// every deque) several times per cycle, to grow it again on the next rise.
    pub(super) fn expire(&mut self, k: i64, max_age: usize) {
        let k = k as u16;
        for d in 0..self.rings.len() {
            let mut r = self.rings[d];
            while r.len > 0 && k.wrapping_sub(self.entries[r.at(0)].pane) as usize >= max_age {
                r.head = if r.head + 1 == r.cap { 0 } else { r.head + 1 };
                r.len -= 1;
            }
            self.rings[d] = r;
        }
        self.since_review += 1;
        if self.since_review < REVIEW_EVERY {
            return;
        }
        self.since_review = 0;
        let mut caps = None;
        for d in 0..self.rings.len() {
            let Ring { peak, cap, len, .. } = self.rings[d];
            let (peak, cap) = (peak as usize, cap as usize);
            if cap > peak + peak / 2 + 6 {
                // At least the length: the peak is never below it.
                caps.get_or_insert_with(|| self.caps())[d] = peak + peak / 4 + 2;
            }
            self.rings[d].peak = len;
        }
        if let Some(caps) = caps {
            self.relayout_to(&caps);
        }
    }

    /// The extreme of deque `d` over the `panes` panes ending at pane `k` (NaN when it has
    /// none).
    #[inline]
    pub(super) fn within(&self, d: usize, k: i64, panes: usize) -> f64 {
        let k = k as u16;
        let old = |e: &Extreme| k.wrapping_sub(e.pane) as usize >= panes;
        let r = self.rings[d];
        let len = r.len as usize;
        let entry = |j: usize| &self.entries[r.at(j)];
        // The oldest entry is the answer when it is in the window: always so for the
        // longest window, which `expire` keeps the deque within.
        if len == 0 {
            return f64::NAN;
        }
        if !old(entry(0)) {
            return entry(0).value;
        }
        // Entries are of distinct panes, the newest at most `k`: all but the last `panes`
        // are old, so only those are searched (a few cache lines, not the whole deque)
        // for the first young one.
        let (mut lo, mut hi) = (len.saturating_sub(panes), len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if old(entry(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo < len {
            entry(lo).value
        } else {
            f64::NAN
        }
    }

    /// [`Self::within`] for each of `windows` (in panes, ascending) into `out`. The answers
    /// are the first entries younger than each window, in the deque's order for the longest
    /// window first: a short deque (the usual one) is walked once for all of them; a long
    /// one (a steady trend) is searched.
    #[inline]
    pub(super) fn within_each(&self, d: usize, k: i64, windows: &[usize], out: &mut [f64]) {
        let r = self.rings[d];
        if r.len > 24 {
            for (o, &panes) in out.iter_mut().zip(windows) {
                *o = self.within(d, k, panes);
            }
            return;
        }
        let k = k as u16;
        let mut j = 0;
        for (o, &panes) in out.iter_mut().zip(windows).rev() {
            while j < r.len as usize && k.wrapping_sub(self.entries[r.at(j)].pane) as usize >= panes
            {
                j += 1;
            }
            *o = if j < r.len as usize {
                self.entries[r.at(j)].value
            } else {
                f64::NAN
            };
        }
    }

    /// Empties every deque (keeping the room: `expire` gives spare room back).
    pub(super) fn clear(&mut self) {
        for r in self.rings.iter_mut() {
            r.len = 0;
            r.head = 0;
        }
    }

    /// Bytes on the heap.
    pub(super) fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Extreme>()
            + std::mem::size_of_val(&*self.rings)
    }

    /// Starts loading the rings' headers (the step before [`Self::prefetch_ends`]).
    pub(super) fn prefetch_headers(&self) {
        prefetch::slice(&self.rings);
    }

    /// Starts loading both ends of every deque: sealing a pane pushes at the back, an
    /// evaluation reads from the front.
    pub(super) fn prefetch_ends(&self) {
        for r in self.rings.iter().filter(|r| r.len > 0) {
            prefetch::value(&self.entries[r.at(0)]);
            prefetch::value(&self.entries[r.at(r.len as usize - 1)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(seed: &mut u64) -> f64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed % 1000) as f64
    }

    /// `within_each` and `within` against the plain minimum (maximum) of the last `p`
    /// panes, for short deques (noisy values, walked) and long ones (a trend keeps every
    /// pane, searched), across the u16 wrap of pane numbers; with several deques sharing the
    /// buffer and growing, shrinking and wrapping their rings independently.
    #[test]
    fn extremes_of_every_window_match_a_naive_extreme() {
        let windows = [6, 30, 90];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for start in [0i64, 65_400] {
            // Deque 0: noise; 1: a rise, then noise; 2: noise, then a fall (maxima); 3: a
            // rise throughout.
            let mut deques = Extremes::new(4);
            let mut history: Vec<[f64; 4]> = Vec::new();
            for k in start..start + 600 {
                let i = (k - start) as f64;
                let v = [
                    noise(&mut seed),
                    if i < 200.0 {
                        10_000.0 * i
                    } else {
                        noise(&mut seed)
                    },
                    if i < 300.0 {
                        noise(&mut seed)
                    } else {
                        -10_000.0 * i
                    },
                    10_000.0 * i + noise(&mut seed),
                ];
                for (d, &v) in v.iter().enumerate() {
                    if d == 2 {
                        deques.push(d, k, v, |old, v| old <= v);
                    } else {
                        deques.push(d, k, v, |old, v| old >= v);
                    }
                }
                deques.expire(k, 90);
                history.push(v);
                for d in 0..4 {
                    let mut got = [0.0; 3];
                    deques.within_each(d, k, &windows, &mut got);
                    for (w, &p) in windows.iter().enumerate() {
                        let recent = history.iter().rev().take(p).map(|v| v[d]);
                        let want = if d == 2 {
                            recent.fold(f64::NEG_INFINITY, f64::max)
                        } else {
                            recent.fold(f64::INFINITY, f64::min)
                        };
                        assert_eq!(got[w], want, "deque {d}, pane {k}, window {p}");
                        assert_eq!(
                            deques.within(d, k, p),
                            want,
                            "deque {d}, pane {k}, window {p}"
                        );
                    }
                }
            }
            assert_eq!(deques.len(3), 90, "a rising trend keeps every pane");
            assert_eq!(
                deques.len(2),
                90,
                "a falling trend keeps every pane's maximum"
            );
            assert!(deques.len(1) < 24, "a trend's entries go once it ends");
            assert!(
                deques.rings[1].cap < 40,
                "its room is given back: {:?}",
                deques.rings[1]
            );
            let room: usize = deques.rings.iter().map(|r| r.cap as usize).sum();
            assert_eq!(
                deques.entries.len(),
                room,
                "the buffer is the rings, no more"
            );
        }
    }

    /// Deques whose pane extremes rise and fall with a slowly oscillating signal keep the
    /// room of their peaks: once the first cycles have sized them, the buffer is not laid
    /// out again (shrinking each deque at every fall did so several times a cycle), and
    /// the extremes stay right. When the oscillation stops, the room is given back.
    #[test]
    fn oscillating_extremes_keep_their_room() {
        let windows = [6, 30, 90];
        let period = 40.0; // panes
        let mut deques = Extremes::new(2);
        let mut history = Vec::new();
        let mut settled = None;
        for k in 0..3000i64 {
            let v = if k < 2000 {
                (k as f64 * std::f64::consts::TAU / period).sin()
            } else {
                0.0 // flat: every deque holds one entry
            };
            deques.push(0, k, v, |old, v| old >= v);
            deques.push(1, k, v, |old, v| old <= v);
            deques.expire(k, 90);
            history.push(v);
            if k == 1000 {
                settled = Some(deques.relayouts);
                assert!(deques.len(0) + deques.len(1) > 0);
            }
            let mut got = [0.0; 3];
            deques.within_each(0, k, &windows, &mut got);
            let want = history
                .iter()
                .rev()
                .take(90)
                .copied()
                .fold(f64::INFINITY, f64::min);
            assert_eq!(got[2], want, "pane {k}");
            if k == 1999 {
                assert_eq!(
                    Some(deques.relayouts),
                    settled,
                    "the oscillation's deques were laid out again after they were sized"
                );
            }
        }
        let room: usize = deques.rings.iter().map(|r| r.cap as usize).sum();
        assert!(
            room <= 2 * 8,
            "the peaks' room is given back once flat: {room} slots"
        );
    }

    /// Cleared deques are empty (NaN everywhere) and fill again.
    #[test]
    fn cleared_deques_are_empty_and_refill() {
        let mut deques = Extremes::new(2);
        for k in 0..50 {
            deques.push(0, k, k as f64, |old, v| old >= v);
            deques.push(1, k, -(k as f64), |old, v| old >= v);
        }
        deques.clear();
        assert!(deques.within(0, 50, 90).is_nan() && deques.within(1, 50, 90).is_nan());
        deques.push(1, 51, 7.0, |old, v| old >= v);
        assert_eq!(deques.within(1, 51, 6), 7.0);
        assert!(deques.within(0, 51, 6).is_nan());
    }
}

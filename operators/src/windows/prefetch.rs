//! Software prefetch: a hint, never a fault, so calling it on any address is sound.

/// Bytes in a cache line.
const LINE: usize = 64;

/// Hints every cache line `s` touches (see [`lines`]).
#[inline]
pub(crate) fn slice<T>(s: &[T]) {
    lines(s).for_each(line);
}

/// The start of every cache line `s` touches: from the line its first byte is in (`s` need
/// not start at a line) to the line of its last byte.
#[inline]
fn lines<T>(s: &[T]) -> impl Iterator<Item = *const u8> {
    let start = s.as_ptr().cast::<u8>();
    let end = start as usize + std::mem::size_of_val(s);
    let first = start.wrapping_sub(start as usize % LINE);
    (0..)
        .map(move |i| first.wrapping_add(i * LINE))
        .take_while(move |at| (*at as usize) < end)
}

/// Hints every cache line of `v`, without reading it.
#[inline]
pub(crate) fn value<T>(v: &T) {
    slice(std::slice::from_ref(v));
}

#[inline(always)]
#[allow(unsafe_code)]
fn line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` only hints the cache; it never faults or reads into a
    // register, whatever the address; SSE is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line a slice touches is hinted, once, whatever the slice's alignment; no other.
    #[test]
    fn lines_cover_the_slice_at_any_alignment() {
        let buffer = vec![0u8; 4 * 1024];
        let base = buffer.as_ptr() as usize;
        let skip = (LINE - base % LINE) % LINE; // to a line start within the buffer
        for offset in 0..LINE {
            for len in 0..300 {
                let s = &buffer[skip + offset..skip + offset + len];
                let got: Vec<usize> = lines(s).map(|p| p as usize).collect();
                let start = s.as_ptr() as usize;
                let want: Vec<usize> =
                    (start..start + len)
                        .map(|a| a - a % LINE)
                        .fold(Vec::new(), |mut v, l| {
                            if v.last() != Some(&l) {
                                v.push(l);
                            }
                            v
                        });
                if len == 0 {
                    assert!(got.len() <= 1, "an empty slice: at most its start's line");
                } else {
                    assert_eq!(got, want, "offset {offset}, len {len}");
                }
            }
        }
    }
}

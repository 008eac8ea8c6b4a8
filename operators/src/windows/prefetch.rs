//! Software prefetch: a hint, never a fault, so calling it on any address is sound.

/// Hints every cache line of `s`.
#[inline]
pub(crate) fn slice<T>(s: &[T]) {
    let bytes = std::mem::size_of_val(s);
    let start = s.as_ptr().cast::<u8>();
    let mut offset = 0;
    while offset < bytes {
        line(start.wrapping_add(offset));
        offset += 64;
    }
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

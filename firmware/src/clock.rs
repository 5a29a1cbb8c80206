//! Time for the speed report: the generic timer, which EL1 may read.

use core::arch::asm;

/// Microseconds on the generic timer's virtual counter.
pub fn micros() -> u64 {
    let (ticks, hz): (u64, u64);
    // SAFETY: reads of the counter and its frequency, which EL1 may make;
    // `isb` keeps the read from moving before earlier instructions.
    unsafe {
        asm!(
            "isb",
            "mrs {t}, cntvct_el0",
            "mrs {f}, cntfrq_el0",
            t = out(reg) ticks,
            f = out(reg) hz,
            options(nomem, nostack, preserves_flags),
        );
    }
    (u128::from(ticks) * 1_000_000)
        .checked_div(u128::from(hz))
        .map_or(0, |us| us as u64)
}

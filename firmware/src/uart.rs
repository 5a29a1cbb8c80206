//! Output on the PL011 UART of QEMU's `virt` machine. QEMU's model sends
//! without any setup; the registers are mapped as Device memory by `boot`.

use core::fmt;
use core::ptr::{read_volatile, write_volatile};

/// The PL011's registers on `virt`.
const BASE: usize = 0x0900_0000;
/// Data register: a write sends one byte.
const DR: *mut u32 = BASE as *mut u32;
/// Flag register.
const FR: *const u32 = (BASE + 0x18) as *const u32;
/// FR: the transmit FIFO is full.
const TXFF: u32 = 1 << 5;

/// The UART as a [`fmt::Write`] sink. It has no state, so the panic handler
/// can make its own.
pub struct Uart;

impl Uart {
    /// What `write!` calls: the UART cannot fail, so there is no
    /// `fmt::Result` to ignore at every call (inherent methods win over
    /// [`fmt::Write::write_fmt`]).
    pub fn write_fmt(&mut self, args: fmt::Arguments<'_>) {
        let _ = fmt::Write::write_fmt(self, args);
    }

    fn byte(b: u8) {
        // SAFETY: FR and DR are the PL011's registers on `virt`, mapped as
        // Device memory; reading FR and writing DR has no effect beyond
        // the UART, and one core is running.
        unsafe {
            while read_volatile(FR) & TXFF != 0 {}
            write_volatile(DR, u32::from(b));
        }
    }
}

impl fmt::Write for Uart {
    /// Sends `s`, each `\n` as `\r\n` for serial terminals.
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                Uart::byte(b'\r');
            }
            Uart::byte(b);
        }
        Ok(())
    }
}

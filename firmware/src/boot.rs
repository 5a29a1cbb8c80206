//! From reset to Rust and back out: the entry point, exception vectors,
//! power-off and the panic handler.
//!
//! QEMU's `virt` starts the image at its ELF entry on one core, at EL1
//! (EL2 with `virtualization=on`; EL3 with `secure=on`, which is not
//! supported: `_start` parks there), with the MMU off. `_start` then:
//! 1. at EL2, stops trapping FP/SIMD there and drops to EL1;
//! 2. installs the exception vectors, so a fault is reported, not a hang;
//! 3. enables FP/SIMD at EL1 (`CPACR_EL1.FPEN`): compiled Rust, not only
//!    the core's NEON kernels, uses the vector registers;
//! 4. turns the MMU on with an identity map: with it off every access is
//!    Device memory, uncached and faulting when unaligned;
//! 5. zeroes `.bss`, sets the stack and calls [`firmware_main`].

use core::arch::{asm, global_asm};
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::uart::Uart;

/// Bytes of stack (in `.bss`); the core keeps its data in the arena.
const STACK_BYTES: usize = 256 * 1024;

/// MAIR_EL1: attribute 0 Device-nGnRnE, attribute 1 Normal write-back.
const MAIR: u64 = 0xff << 8;
/// TCR_EL1: 4 GiB of TTBR0 addresses (T0SZ 32, so walks start at level 1
/// with 1 GiB blocks), 4 KiB granule, inner shareable write-back walks,
/// TTBR1 walks off (EPD1), 32-bit physical addresses.
const TCR: u64 = 32 | (1 << 8) | (1 << 10) | (3 << 12) | (1 << 23);
/// SCTLR_EL1: the RES1 bits, MMU, data and instruction caches on;
/// alignment checks off (the core reads weights at any offset).
const SCTLR: u64 = 0x30d0_0800 | (1 << 12) | (1 << 2) | 1;
/// Level 1 block attributes: valid block, access flag, AttrIndx.
const BLOCK: u64 = (1 << 10) | 1;
/// Device memory, never executable (UXN, PXN).
const DEVICE: u64 = BLOCK | (1 << 54) | (1 << 53);
/// Normal memory, inner shareable.
const NORMAL: u64 = BLOCK | (3 << 8) | (1 << 2);

global_asm!(
    r#"
    .section .text._start, "ax"
    .global _start
_start:
    mrs     x19, CurrentEL
    ubfx    x19, x19, #2, #2
    cmp     x19, #2
    b.hi    .Lpark
    b.lo    .Lel1
    // EL2: no FP/SIMD traps (CPTR_EL2 with only its RES1 bits set), EL1
    // is AArch64 (HCR_EL2.RW), then enter EL1h with interrupts masked.
    mov     x0, #0x33ff
    msr     cptr_el2, x0
    mov     x0, #(1 << 31)
    msr     hcr_el2, x0
    mov     x0, #0x3c5
    msr     spsr_el2, x0
    adr     x0, .Lel1
    msr     elr_el2, x0
    eret
.Lel1:
    adrp    x0, boot_vectors
    add     x0, x0, :lo12:boot_vectors
    msr     vbar_el1, x0
    mov     x0, #(3 << 20)
    msr     cpacr_el1, x0
    ldr     x0, ={mair}
    msr     mair_el1, x0
    ldr     x0, ={tcr}
    msr     tcr_el1, x0
    adrp    x0, boot_page_table
    add     x0, x0, :lo12:boot_page_table
    msr     ttbr0_el1, x0
    isb
    tlbi    vmalle1
    dsb     nsh
    ldr     x0, ={sctlr}
    msr     sctlr_el1, x0
    isb
    // .bss: bytes before its 8-aligned start are padding; its end is
    // 8-aligned in ld's default script.
    adrp    x0, __bss_start
    add     x0, x0, :lo12:__bss_start
    add     x0, x0, #7
    and     x0, x0, #~7
    adrp    x1, __bss_end__
    add     x1, x1, :lo12:__bss_end__
1:  cmp     x0, x1
    b.hs    2f
    str     xzr, [x0], #8
    b       1b
2:  adrp    x0, boot_stack_top
    add     x0, x0, :lo12:boot_stack_top
    mov     sp, x0
    mov     x0, x19
    bl      {main}
.Lpark:
    wfe
    b       .Lpark

    // Every exception, from any level and of any kind, is reported.
    .section .text.boot_vectors, "ax"
    .balign 2048
boot_vectors:
    .rept 16
    .balign 128
    mrs     x0, esr_el1
    mrs     x1, elr_el1
    mrs     x2, far_el1
    b       {exception}
    .endr

    // Identity map of the low 4 GiB: the first GiB (the devices, the
    // UART among them) as Device memory, the rest (RAM) as Normal.
    .section .rodata.boot_page_table, "a"
    .balign 4096
boot_page_table:
    .quad   {device}
    .quad   {normal} | (1 << 30)
    .quad   {normal} | (2 << 30)
    .quad   {normal} | (3 << 30)

    .section .bss.boot_stack, "aw", %nobits
    .balign 16
    .space  {stack_bytes}
boot_stack_top:
"#,
    mair = const MAIR,
    tcr = const TCR,
    sctlr = const SCTLR,
    device = const DEVICE,
    normal = const NORMAL,
    stack_bytes = const STACK_BYTES,
    main = sym firmware_main,
    exception = sym exception,
);

/// The exception level `_start` was entered at: it picks the PSCI conduit.
static BOOT_EL: AtomicU64 = AtomicU64::new(1);

/// Rust's entry, from `_start` at EL1 with the MMU, FP/SIMD and a stack.
extern "C" fn firmware_main(boot_el: u64) -> ! {
    BOOT_EL.store(boot_el, Ordering::Relaxed);
    if let Err(e) = crate::story::tell(&mut Uart) {
        writeln!(Uart, "\nerror: {e}");
    }
    power_off()
}

/// Reached from every exception vector: there are no handlers to return to.
extern "C" fn exception(esr: u64, elr: u64, far: u64) -> ! {
    writeln!(
        Uart,
        "\nexception: ESR_EL1 {esr:#x} ELR_EL1 {elr:#x} FAR_EL1 {far:#x}"
    );
    power_off()
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    writeln!(Uart, "\npanic: {info}");
    power_off()
}

/// PSCI SYSTEM_OFF, so QEMU exits. QEMU's PSCI answers `hvc` when the
/// machine has no EL2 and `smc` when it has (an `hvc` would then reach
/// our own EL2, which has no handler).
fn power_off() -> ! {
    const SYSTEM_OFF: u64 = 0x8400_0008;
    // SAFETY: a PSCI call touches no memory of ours; when honoured it does
    // not return, and otherwise it only clobbers the caller-saved registers.
    unsafe {
        if BOOT_EL.load(Ordering::Relaxed) == 2 {
            asm!("smc #0", inout("x0") SYSTEM_OFF => _, clobber_abi("C"), options(nomem, nostack));
        } else {
            asm!("hvc #0", inout("x0") SYSTEM_OFF => _, clobber_abi("C"), options(nomem, nostack));
        }
    }
    loop {
        core::hint::spin_loop();
    }
}

//! barellama as firmware: a bare-metal image for QEMU's aarch64 `virt`
//! machine that links the core, embeds a model and tokenizer at build time
//! (`BARELLAMA_FW_MODEL`, `BARELLAMA_FW_TOKENIZER`), tells a greedy story
//! after "Once upon a time" over the PL011 UART and powers the machine off.
//!
//! Built for `aarch64-unknown-none` by `.ci/firmware`, which also boots it:
//!
//! ```sh
//! qemu-system-aarch64 -M virt -cpu cortex-a76 -nographic -kernel barellama-firmware
//! ```
//!
//! On any other target the crate is a stub, so the workspace still builds
//! and tests everywhere without the data.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod boot;
#[cfg(target_os = "none")]
mod clock;
#[cfg(target_os = "none")]
mod story;
#[cfg(target_os = "none")]
mod uart;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "barellama-firmware is a bare-metal image for aarch64-unknown-none; \
         .ci/firmware builds it and boots it under qemu-system-aarch64"
    );
    std::process::exit(2);
}

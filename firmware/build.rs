//! The image's layout comes from linker arguments, not a linker script: GNU
//! ld's default script with the first loadable segment moved into RAM.
//! Only the bare-metal build links this way; a host build is an ordinary
//! program.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        // QEMU `virt` RAM starts at 0x4000_0000 and `-kernel` loads an ELF
        // at its link address; QEMU puts the device tree at the start of
        // RAM, so the image begins 512 KiB in (where Linux's would).
        println!("cargo:rustc-link-arg-bins=-Ttext-segment=0x40080000");
        println!("cargo:rustc-link-arg-bins=--entry=_start");
    }
}

//! Invariant 3: the logits do not depend on the thread count. Work is split
//! by output rows and heads only, so every number is summed in the same
//! order whichever thread computes it — bitwise, not approximately.

use barellama_core::exec::ThreadPool;
use barellama_core::{Compute, Isa};
use barellama_tests::{data_dir, diff, read, teacher_forced, Golden};

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn same_logits_for_every_thread_count(model: &str, golden: &str, tolerance: f32) {
    let Some(dir) = data_dir() else { return };
    let image = read(&dir, &format!("models/{model}"));
    let g = Golden::read(&dir, &format!("golden/{golden}"));
    for isa in Isa::available() {
        let one = teacher_forced(&image, &g.tokens, g.steps(), Compute::single(isa));
        for threads in [2, 3, 4] {
            let pool = ThreadPool::new(threads).unwrap();
            let many = teacher_forced(&image, &g.tokens, g.steps(), Compute { isa, exec: &pool });
            assert!(
                bits(&many) == bits(&one),
                "{model} [{}]: {threads} threads differ from 1",
                isa.name()
            );
        }
        let (max, _) = diff(&one, &g.logits);
        assert!(max <= tolerance, "{model} [{}]: {max}", isa.name());
        println!(
            "{model} [{}]: 1, 2, 3, 4 threads bitwise identical",
            isa.name()
        );
    }
}

#[test]
fn stories260k_is_bitwise_identical_across_threads() {
    same_logits_for_every_thread_count("stories260K.bin", "stories260K.once.l2c.bin", 2e-3);
}

#[test]
fn synsmall_is_bitwise_identical_across_threads() {
    same_logits_for_every_thread_count("synsmall.bin", "synsmall.once.l2c.bin", 1e-2);
}

//! The scenario language's table of which kernel has which seed fix
//! (`thpsim_scenario::SEED_FIXES`) names the model's switches
//! (`thpsim_model::fixes::Fix`), seed for seed.

use thpsim_model::fixes::Fix;
use thpsim_scenario::{KernelVersion, SeedFix, SEED_FIXES};

#[test]
fn the_language_knows_every_model_fix_and_no_other() {
    assert_eq!(SEED_FIXES.len(), Fix::ALL.len());
    for fix in Fix::ALL {
        let seed = SeedFix::by_name(fix.name())
            .unwrap_or_else(|| panic!("`{fix}` is missing from SEED_FIXES"));
        assert_eq!(seed.seed, fix.seed(), "{fix}");
        // 5.8 is the model's kernel: it carries every fix.
        assert_eq!(KernelVersion::V5_8.has_fix(fix.name()), Some(true));
    }
    for seed in &SEED_FIXES {
        assert!(Fix::by_name(seed.name).is_some(), "{}", seed.name);
    }
}

#[test]
fn kernel_316_has_seeds_001_and_002() {
    let with: Vec<u32> = KernelVersion::V3_16.fixes().map(|f| f.seed).collect();
    assert_eq!(with, vec![1, 2]);
    let names: Vec<&str> = Fix::ALL
        .iter()
        .filter(|f| KernelVersion::V3_16.has_fix(f.name()) == Some(true))
        .map(|f| f.name())
        .collect();
    assert_eq!(names, ["rmap-pmd-under-ptl", "split-anon-vma-write"]);
}

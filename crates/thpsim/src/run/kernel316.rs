//! The `kernel 3.16` profile in the runner: what a 3.16 scenario may use.
//!
//! The 3.16 profile (`thpsim_model::profile::v3_16`) models anonymous THP in
//! the pre-4.5 design: faults, COW, fork, exit, munmap, mprotect, madvise
//! (dontneed, hugepage, nohugepage), `kernel: split-huge-page`, and pins
//! (get_user_pages(), with 3.16's tail-page refcounting) and `device:` steps. A feature
//! the profile leaves out is invalid input under `kernel 3.16` (exit 2, the
//! line named), as is reverting a fix 3.16 does not have from the command
//! line (the parser refuses a `revert` line of one).

use thpsim_model::fixes::Fix;
use thpsim_scenario::{Feature, KernelVersion, Op, Scenario, ScenarioError};

/// What the 3.16 profile models (see the module header).
const WHAT: &str = "the kernel 3.16 profile models anonymous THP: faults, COW, fork, exit, munmap, mprotect, madvise dontneed/hugepage/nohugepage, kernel: split-huge-page, and pins (get_user_pages(), not fast) with device: steps";

/// Refuses, under `kernel 3.16`, the features and operations the profile
/// does not model and the `--revert` fixes 3.16 does not have.
pub(super) fn check(scn: &Scenario, cli_reverts: &[Fix]) -> Result<(), ScenarioError> {
    let Some(k) = &scn.header.kernel else {
        return Ok(());
    };
    if k.value != KernelVersion::V3_16 {
        return Ok(());
    }
    let line = k.span.line;
    for f in cli_reverts {
        if KernelVersion::V3_16.has_fix(f.name()) != Some(true) {
            let have: Vec<_> = KernelVersion::V3_16.fixes().map(|f| f.name).collect();
            return Err(scn
                .error_at(
                    k.span,
                    format!(
                        "--revert {}: kernel 3.16 (line {line}) does not have this fix; it has: {}",
                        f.name(),
                        have.join(", ")
                    ),
                )
                .with_help("`thpsim fixes` shows which fixes each kernel has"));
        }
    }
    let allowed = |f: Feature| {
        matches!(
            f,
            Feature::Core
                | Feature::Kernel316
                | Feature::Nodes
                | Feature::KhugepagedLimits
                | Feature::Pin
                | Feature::PinReadOnly
                | Feature::Device
        )
    };
    // The header's, the steps' and the expectations' features, first use
    // first.
    if let Some((f, span)) = scn.features().into_iter().find(|&(f, _)| !allowed(f)) {
        return Err(scn
            .error_at(
                span,
                format!("`{f}` is not modelled under `kernel 3.16` (line {line})"),
            )
            .with_help(WHAT));
    }
    for step in scn.steps() {
        if matches!(step.op, Op::DeferredSplit) {
            return Err(scn
                .error_at(
                    step.op_span,
                    format!("3.16 has no deferred split queue: `kernel: deferred-split` is a 5.8 operation (`kernel 3.16` on line {line})"),
                )
                .with_help(WHAT));
        }
    }
    Ok(())
}

//! The `kernel: khugepaged P A[range]` step: one khugepaged scan of every
//! huge page the range overlaps (`thpsim_model::khugepaged`), with the
//! header's `khugepaged max_ptes_*` limits. It reports `ok` whether or not a
//! collapse happened, as the kernel's own work does; the note gives each
//! huge page's scan result (khugepaged's tracepoint status), and `expect`
//! shows the outcome. A collapse does not change what a process reads: the
//! memory oracle is not told.

use super::{Done, Machine};
use thpsim_model::types::VirtAddr;
use thpsim_model::{Cpu, Engine};
use thpsim_scenario::{Name, ScenarioError, Target};

impl<E: Engine> Machine<E> {
    /// `kernel: khugepaged P A[...]`.
    pub(super) fn khugepaged(
        &self,
        cpu: &Cpu<E>,
        process: &Name,
        target: &Target,
    ) -> Result<Done, ScenarioError> {
        let mm = self.proc_mm(process)?;
        let (s, e) = self.range(&process.text, target)?;
        let region_start = self.st().procs[&process.text].regions[&target.region.text].0;
        let results = cpu.khugepaged_scan_range(&mm, VirtAddr(s), VirtAddr(e));
        let hs = cpu.k.geo.pmd_size();
        let note = results
            .iter()
            .map(|(a, r)| {
                let off = a.0.wrapping_sub(region_start);
                if a.0 >= region_start && off % hs == 0 {
                    format!("+{}h: {}", off / hs, r.name())
                } else {
                    format!("{:#x}: {}", a.0, r.name())
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        Ok(Done {
            note: Some(if note.is_empty() {
                "no huge page in the range".to_string()
            } else {
                note
            }),
            ..Done::ok()
        })
    }
}

//! The reclaim steps: `kernel: reclaim P A[range]` (one aging pass of the
//! range's pages, `thpsim_model::vmscan`), `P: madvise A[range] pageout`
//! (MADV_PAGEOUT) and `P: madvise A[range] free` (MADV_FREE). Swapping out
//! changes nothing a process reads (the memory oracle is not told; a
//! swapped-out page reads back through swap-in); MADV_FREE lets reclaim
//! discard a page not written since, so the oracle accepts its old bytes or
//! zeros until an observation settles it.

use super::{errno_outcome, Done, Machine};
use std::sync::Arc;
use thpsim_model::madvise::Advice as MAdvice;
use thpsim_model::mm_types::MmStruct;
use thpsim_model::types::VirtAddr;
use thpsim_model::{Cpu, Engine};
use thpsim_scenario::{Name, ScenarioError, Target};

impl<E: Engine> Machine<E> {
    /// `kernel: reclaim P A[...]`: reports `ok` whether or not pages were
    /// reclaimed (a referenced, pinned or mlocked page stays); the note says
    /// how many were, and `expect ... swap` shows which.
    pub(super) fn reclaim(
        &self,
        cpu: &Cpu<E>,
        process: &Name,
        target: &Target,
    ) -> Result<Done, ScenarioError> {
        let mm = self.proc_mm(process)?;
        let (s, e) = self.range(&process.text, target)?;
        let n = cpu.reclaim_range(&mm, VirtAddr(s), VirtAddr(e));
        Ok(Done {
            note: Some(format!(
                "{n} page{} reclaimed",
                if n == 1 { "" } else { "s" }
            )),
            ..Done::ok()
        })
    }

    /// `P: madvise A[...] pageout`: MADV_PAGEOUT.
    pub(super) fn madvise_pageout(
        &self,
        cpu: &Cpu<E>,
        owner: &str,
        mm: &Arc<MmStruct<E>>,
        target: &Target,
    ) -> Result<Done, ScenarioError> {
        let (s, e) = self.range(owner, target)?;
        Ok(
            match cpu.do_madvise(mm, VirtAddr(s), e - s, MAdvice::Pageout) {
                Ok(()) => Done::ok(),
                Err(err) => Done::outcome(errno_outcome(err)),
            },
        )
    }

    /// `P: madvise A[...] free`: MADV_FREE.
    pub(super) fn madvise_free(
        &self,
        cpu: &Cpu<E>,
        owner: &str,
        mm: &Arc<MmStruct<E>>,
        target: &Target,
    ) -> Result<Done, ScenarioError> {
        let (s, e) = self.range(owner, target)?;
        // The oracle before the call (a reclaim on another CPU may discard a
        // page as soon as it is lazily freed, and a concurrent read see
        // zeros) and after it (a write racing with the call may land before
        // the page is cleaned, and be dropped with it).
        let ps = cpu.k.geo.page_size();
        let (s2, e2) = (s & !(ps - 1), (e + ps - 1) & !(ps - 1));
        self.st().oracle.on_lazyfree(owner, s2, e2 - s2);
        let r = cpu.do_madvise(mm, VirtAddr(s), e - s, MAdvice::Free);
        self.st().oracle.on_lazyfree(owner, s2, e2 - s2);
        Ok(match r {
            Ok(()) => Done::ok(),
            Err(err) => Done::outcome(errno_outcome(err)),
        })
    }
}

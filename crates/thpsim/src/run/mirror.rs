//! The `mirror` steps: a secondary MMU (`thpsim_model::test_hmm`, lib/test_hmm.c's
//! dmirror) over a range of a process, kept coherent by mmu notifiers.
//!
//! `P: mirror M = A[...]` registers it; `mirror: read M[...]` and
//! `mirror: write M[...] = V` access the process's memory through the
//! mirror's own entries, page by page, faulting on a miss as
//! hmm_range_fault() would. The memory oracle sees a mirror's write as a
//! write of the process (it changes the process's memory), in the same step
//! as the copy, and checks a mirror's read as it checks the process's.

use super::{errno_outcome, Done, Machine};
use std::sync::Arc;
use thpsim_model::mm_types::MmStruct;
use thpsim_model::mmu_notifier::MirrorId;
use thpsim_model::types::VirtAddr;
use thpsim_model::{Cpu, Engine};
use thpsim_scenario::{Name, ScenarioError, Target};

/// A registered mirror: its model id, whose memory it mirrors and where.
#[derive(Clone, Debug)]
pub(super) struct MirrorInfo {
    pub id: MirrorId,
    pub owner: String,
    /// The mirrored range's start, and its length.
    pub start: u64,
    pub len: u64,
}

impl<E: Engine> Machine<E> {
    /// `P: mirror M = A[...]`.
    pub(super) fn mirror(
        &self,
        cpu: &Cpu<E>,
        owner: &str,
        mm: &Arc<MmStruct<E>>,
        mirror: &Name,
        target: &Target,
    ) -> Result<Done, ScenarioError> {
        let (s, e) = self.range(owner, target)?;
        let id = cpu.dmirror_fops_open(mm, VirtAddr(s), VirtAddr(e));
        self.st().mirrors.insert(
            mirror.text.clone(),
            MirrorInfo {
                id,
                owner: owner.to_string(),
                start: s,
                len: e - s,
            },
        );
        Ok(Done::ok())
    }

    fn mirror_of(&self, target: &Target) -> Result<MirrorInfo, ScenarioError> {
        let name = &target.region.text;
        match self.st().mirrors.get(name) {
            Some(m) => Ok(m.clone()),
            None => Err(self.err(
                target.region.span,
                format!("mirror `{name}` is not registered"),
            )),
        }
    }

    /// `mirror: write M[...] = V`.
    pub(super) fn mirror_write(
        &self,
        cpu: &Cpu<E>,
        target: &Target,
        value: u8,
    ) -> Result<Done, ScenarioError> {
        let m = self.mirror_of(target)?;
        let (s, e) = self.selector_range(target, m.len)?;
        let ps = self.k.geo.page_size();
        let mut a = m.start + s;
        let end = m.start + e;
        while a < end {
            let chunk = ((a & !(ps - 1)) + ps).min(end) - a;
            let r = cpu.dmirror_write(m.id, VirtAddr(a), chunk, value, || {
                self.st().oracle.on_fill(&m.owner, a, chunk, value);
            });
            if let Err(err) = r {
                return Ok(Done::outcome(errno_outcome(err)));
            }
            a += chunk;
        }
        Ok(Done::ok())
    }

    /// `mirror: read M[...] [== V]`: checked by the oracle as a read of the
    /// process.
    pub(super) fn mirror_read(
        &self,
        cpu: &Cpu<E>,
        target: &Target,
        expect: Option<u8>,
    ) -> Result<Done, ScenarioError> {
        let m = self.mirror_of(target)?;
        let (s, e) = self.selector_range(target, m.len)?;
        let (s, e) = (m.start + s, m.start + e);
        Ok(self.read_checked(
            &m.owner,
            (s, e),
            expect,
            m.start,
            "the mirror read",
            |a, chunk| {
                cpu.dmirror_read(m.id, VirtAddr(a), chunk)
                    .map_err(errno_outcome)
            },
        ))
    }
}

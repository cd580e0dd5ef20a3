//! The `move-pages` step: move_pages(2) of every page of a range to one node
//! (`thpsim_model::migrate`), MPOL_MF_MOVE or, with `all`, MPOL_MF_MOVE_ALL.
//!
//! The call succeeds even when some pages stay where they are (move_pages(2)
//! returns how many did not move and reports each page's status); the step
//! then notes which pages stayed and why (offsets from the range's first page). Only an error of the call itself
//! (ENOMEM) is the step's outcome. `expect ... node` shows where each page is.

use super::{errno_outcome, Done, Machine};
use std::sync::Arc;
use thpsim_model::mm_types::MmStruct;
use thpsim_model::types::VirtAddr;
use thpsim_model::{Cpu, Engine};
use thpsim_scenario::{ScenarioError, Target};

impl<E: Engine> Machine<E> {
    /// `P: move-pages A[...] node=K [all]`.
    pub(super) fn move_pages(
        &self,
        cpu: &Cpu<E>,
        owner: &str,
        mm: &Arc<MmStruct<E>>,
        target: &Target,
        node: u32,
        all: bool,
    ) -> Result<Done, ScenarioError> {
        let (s, e) = self.range(owner, target)?;
        let ps = cpu.k.geo.page_size();
        // The pages array: every page of the range, as the live runner passes.
        let first = s - s % ps;
        let addrs: Vec<VirtAddr> = (first..e).step_by(ps as usize).map(VirtAddr).collect();
        let r = cpu.do_pages_move(mm, &addrs, node, all);
        let stayed: Vec<String> = addrs
            .iter()
            .zip(&r.status)
            .filter_map(|(a, st)| match st {
                Some(Ok(n)) if *n == node => None,
                Some(Ok(n)) => Some(format!("+{:#x} on node {n}", a.0 - first)),
                Some(Err(err)) => Some(format!("+{:#x} {err}", a.0 - first)),
                None => Some(format!(
                    "+{:#x} not migrated (status not written)",
                    a.0 - first
                )),
            })
            .collect();
        let mut done = match r.ret {
            Ok(_) => Done::ok(),
            Err(err) => Done::outcome(errno_outcome(err)),
        };
        if !stayed.is_empty() {
            let not_migrated = match r.ret {
                Ok(n) if n > 0 => format!(" ({n} not migrated)"),
                _ => String::new(),
            };
            done.note = Some(format!(
                "move_pages to node {node}{not_migrated}: {}",
                stayed.join(", ")
            ));
        }
        Ok(done)
    }
}

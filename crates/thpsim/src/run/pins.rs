//! The pin, unpin and `device:` steps: the scenario drives a DMA device
//! through long-term pins (`thpsim_model::dma`, the fixed buffers of
//! io_uring), and the memory oracle learns what each step did.
//!
//! A pin is taken as a driver takes it: the whole range or nothing (a partial
//! pin is released and the step reports `efault`). A `device:` access goes to
//! the pinned frames directly, page by page; each page is one device step,
//! and the oracle hears of it in the same step, so no other CPU runs between
//! the access and the oracle's view of it.

use super::{errno_outcome, Done, Machine};
use std::collections::BTreeSet;
use std::sync::Arc;
use thpsim_model::dma::DmaBuffer;
use thpsim_model::mm_types::MmStruct;
use thpsim_model::types::VirtAddr;
use thpsim_model::{Cpu, Engine};
use thpsim_scenario::{Name, Outcome, ScenarioError, Target};

impl<E: Engine> Machine<E> {
    /// `P: pin R = A[...] [write] [fast]`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn pin(
        &self,
        cpu: &Cpu<E>,
        owner: &str,
        mm: &Arc<MmStruct<E>>,
        pin: &Name,
        target: &Target,
        write: bool,
        fast: bool,
    ) -> Result<Done, ScenarioError> {
        let (s, e) = self.range(owner, target)?;
        match cpu.dma_buffer_register(mm, VirtAddr(s), e - s, write, fast) {
            Ok(buf) => {
                let frames: Vec<u64> = buf.pages.iter().map(|p| p.0).collect();
                let mut st = self.st();
                st.oracle.on_pin(&pin.text, owner, s, e - s, write, &frames);
                st.pins.insert(pin.text.clone(), buf);
                Ok(Done::ok())
            }
            Err(err) => Ok(Done::outcome(errno_outcome(err))),
        }
    }

    /// `P: unpin R`. A pin whose `pin` step failed holds nothing: there is
    /// nothing to release (as unregistering buffers that never registered).
    pub(super) fn unpin(&self, cpu: &Cpu<E>, pin: &Name) -> Result<Done, ScenarioError> {
        let held = self.st().pins.remove(&pin.text);
        let Some(held) = held else {
            return Ok(Done {
                note: Some(format!(
                    "pin {} was not taken (its pin step failed): nothing to unpin",
                    pin.text
                )),
                ..Done::ok()
            });
        };
        cpu.dma_buffer_unregister(held);
        self.st().oracle.on_unpin(&pin.text);
        Ok(Done::ok())
    }

    /// The buffer of the pin a `device:` step names.
    fn held_pin(&self, target: &Target) -> Result<DmaBuffer, ScenarioError> {
        let name = &target.region.text;
        match self.st().pins.get(name) {
            Some(buf) => Ok(buf.clone()),
            None => Err(self.err(
                target.region.span,
                format!("pin `{name}` is not held: its `pin` step did not succeed"),
            )),
        }
    }

    /// `device: write R[...] = V`: DMA into the pinned frames.
    pub(super) fn device_write(
        &self,
        cpu: &Cpu<E>,
        target: &Target,
        value: u8,
    ) -> Result<Done, ScenarioError> {
        let buf = self.held_pin(target)?;
        let (s, e) = self.selector_range(target, buf.len_bytes)?;
        let ps = self.k.geo.page_size();
        let mut off = s;
        while off < e {
            let (frame, in_page) = buf.frame_at(off, ps);
            let chunk = (ps - in_page).min(e - off);
            cpu.dma_write(frame, in_page, chunk, value);
            // Read-only pins need to know whether their process still maps
            // the frame the device wrote (read without a scheduling point).
            let mut st = self.st();
            let maps: BTreeSet<(String, u64)> = st
                .oracle
                .read_only_pins_of(frame.0)
                .into_iter()
                .filter(|(owner, page)| {
                    st.procs
                        .get(owner)
                        .filter(|o| o.alive)
                        .is_some_and(|o| cpu.frame_peek(&o.mm, VirtAddr(*page)) == Some(frame))
                })
                .collect();
            st.oracle
                .on_device_write(frame.0, in_page, chunk, value, &maps);
            drop(st);
            off += chunk;
        }
        Ok(Done::ok())
    }

    /// `device: read R[off] [== V]`: DMA from the pinned frames, checked by the
    /// oracle as it happens.
    pub(super) fn device_read(
        &self,
        cpu: &Cpu<E>,
        target: &Target,
        expect: Option<u8>,
    ) -> Result<Done, ScenarioError> {
        let buf = self.held_pin(target)?;
        let (s, e) = self.selector_range(target, buf.len_bytes)?;
        let ps = self.k.geo.page_size();
        let mut first = None;
        let mut detail = None;
        let mut off = s;
        while off < e {
            let (frame, in_page) = buf.frame_at(off, ps);
            let chunk = (ps - in_page).min(e - off);
            let bytes = cpu.dma_read(frame, in_page, chunk);
            let st = self.st();
            for (i, &b) in bytes.iter().enumerate() {
                let at = off + i as u64;
                first.get_or_insert(b);
                if let Some(v) =
                    st.oracle
                        .check_device_read(&target.region.text, buf.ubuf.0 + at, b)
                {
                    self.k.report(v);
                }
                if let Some(x) = expect {
                    if b != x && detail.is_none() {
                        detail = Some(format!(
                            "the device read {b:#04x} at offset {at:#x}, expected {x:#04x}"
                        ));
                    }
                }
            }
            drop(st);
            off += chunk;
        }
        Ok(Done {
            outcome: Outcome::Ok,
            value: first,
            detail,
            note: None,
        })
    }
}

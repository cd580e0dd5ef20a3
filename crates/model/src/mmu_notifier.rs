//! mmu notifiers: mm/mmu_notifier.c and include/linux/mmu_notifier.h.
//!
//! Models (v5.8): the interval notifiers a mirroring driver registers
//! (`mmu_interval_notifier_insert`, `mmu_interval_notifier_remove`), their
//! collision-retry read side (`mmu_interval_read_begin`,
//! `mmu_interval_read_retry`, `mmu_interval_check_retry`,
//! `mmu_interval_set_seq`), the invalidations the core mm brackets a change
//! of its page tables with (`mmu_notifier_invalidate_range_start` and `_end`:
//! `mn_itree_invalidate`, `mn_itree_inv_start_range`, `mn_itree_inv_end` with
//! its deferred inserts and removes) and `mmu_notifier_release` at exit. The
//! subscriber is test_hmm.rs's dmirror, as in lib/test_hmm.c.
//!
//! Leaves out: the hlist notifiers (`mmu_notifier_register()`, the
//! `invalidate_range_start`/`invalidate_range`/`change_pte` ops KVM uses),
//! the young callbacks, SRCU (a subscription lives as long as the machine),
//! non-blockable ranges (every modelled caller may sleep), the lockdep map
//! `__mmu_notifier_invalidate_range_start_map`.

use crate::cpu::Cpu;
use crate::engine::{Engine, Monitor};
use crate::mm_types::MmStruct;
use crate::types::{MmId, VirtAddr};
use std::sync::OnceLock;

/// A secondary MMU (test_hmm.rs), by number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct MirrorId(pub usize);

/// `enum mmu_notifier_event`: why a range is invalidated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum NotifyEvent {
    /// MMU_NOTIFY_UNMAP: the range is unmapped (munmap, exit).
    Unmap,
    /// MMU_NOTIFY_CLEAR: entries are cleared (COW, split, zap, unmap of a page).
    Clear,
    /// MMU_NOTIFY_PROTECTION_VMA: mprotect.
    ProtectionVma,
    /// MMU_NOTIFY_PROTECTION_PAGE: fork write-protects the parent's pages.
    ProtectionPage,
    /// MMU_NOTIFY_RELEASE: the mm goes away.
    Release,
}

/// `struct mmu_notifier_range`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmuNotifierRange {
    pub mm: MmId,
    pub start: VirtAddr,
    /// Exclusive.
    pub end: VirtAddr,
    pub event: NotifyEvent,
}

/// One `struct mmu_interval_notifier`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IntervalSub {
    mirror: MirrorId,
    start: u64,
    /// Exclusive.
    end: u64,
    /// `interval_sub->invalidate_seq`. DIVERGENCE: 5.8 keeps it in the
    /// subscription and writes it with WRITE_ONCE under the driver's lock
    /// (mmu_interval_set_seq()); the model keeps it with the
    /// subscriptions' state, so each read and write of it is one step under
    /// that state's lock, as read_begin() reads it.
    seq: u64,
}

/// `struct mmu_notifier_subscriptions` (what its spinlock guards).
#[derive(Clone, Debug)]
pub struct SubsState {
    /// Odd while a range an interval notifier covers is being invalidated.
    invalidate_seq: u64,
    active_invalidate_ranges: u64,
    itree: Vec<IntervalSub>,
    /// Inserts (true) and removes (false) waiting for the last inv_end.
    deferred: Vec<(IntervalSub, bool)>,
}

impl SubsState {
    /// `mirror`'s subscription: in the tree, or waiting to be inserted.
    fn sub(&self, mirror: MirrorId) -> Option<&IntervalSub> {
        self.itree
            .iter()
            .chain(self.deferred.iter().filter(|(_, ins)| *ins).map(|(i, _)| i))
            .find(|i| i.mirror == mirror)
    }

    fn sub_mut(&mut self, mirror: MirrorId) -> Option<&mut IntervalSub> {
        self.itree
            .iter_mut()
            .chain(
                self.deferred
                    .iter_mut()
                    .filter(|(_, ins)| *ins)
                    .map(|(i, _)| i),
            )
            .find(|i| i.mirror == mirror)
    }
}

/// An mm's notifier subscriptions, allocated on the first registration
/// (`mm->notifier_subscriptions`).
pub struct Subscriptions<E: Engine> {
    /// The spinlock and the state it guards, with the wait queue `wq`.
    state: E::Monitor<SubsState>,
}

impl<E: Engine> Subscriptions<E> {
    fn new() -> Self {
        Subscriptions {
            state: E::Monitor::new(SubsState {
                // __mmu_notifier_register(): "invalidate_seq = 2".
                invalidate_seq: 2,
                active_invalidate_ranges: 0,
                itree: Vec::new(),
                deferred: Vec::new(),
            }),
        }
    }

    /// A copy for a copy of the machine, made at a quiescent point (no
    /// invalidation in progress), without a scheduling point.
    pub fn snapshot(&self) -> Self {
        Subscriptions {
            state: E::Monitor::new(self.state.peek(|s| s.clone())),
        }
    }

    /// For checkers, without a scheduling point: whether an invalidation is
    /// in progress.
    pub fn peek_invalidating(&self) -> bool {
        self.state.peek(|s| s.active_invalidate_ranges > 0)
    }
}

/// The subscriptions slot of an mm (`mm->notifier_subscriptions`).
///
/// Read without a scheduling point (`mm_has_notifiers()`): a subscription
/// inserted while another CPU invalidates has no translation yet (its first
/// fault begins with mmu_interval_read_begin()), so no order of the two is
/// observable.
pub type SubscriptionsSlot<E> = OnceLock<Subscriptions<E>>;

impl<E: Engine> Cpu<E> {
    /// Models mmu_interval_notifier_insert() (__mmu_interval_notifier_insert),
    /// mm/mmu_notifier.c, v5.8: subscribe `mirror` to `[start, end)` of `mm`.
    /// During an invalidation the subscription starts at the current (odd)
    /// sequence, so its first read_begin() waits for the end; otherwise one
    /// below it.
    pub fn mmu_interval_notifier_insert(
        &self,
        mm: &MmStruct<E>,
        mirror: MirrorId,
        start: VirtAddr,
        end: VirtAddr,
    ) {
        let _f = self.func("mmu_interval_notifier_insert");
        let subs = mm.notifiers.get_or_init(Subscriptions::new);
        subs.state.update(|s| {
            let mut sub = IntervalSub {
                mirror,
                start: start.0,
                end: end.0,
                seq: 0,
            };
            if s.active_invalidate_ranges > 0 {
                if s.invalidate_seq & 1 == 1 {
                    sub.seq = s.invalidate_seq;
                    s.deferred.push((sub, true));
                } else {
                    s.invalidate_seq |= 1;
                    sub.seq = s.invalidate_seq;
                    s.itree.push(sub);
                }
            } else {
                sub.seq = s.invalidate_seq - 1;
                s.itree.push(sub);
            }
        });
    }

    /// Models mmu_interval_notifier_remove(), mm/mmu_notifier.c, v5.8:
    /// unsubscribe `mirror`, waiting out an invalidation that may still
    /// call it.
    pub fn mmu_interval_notifier_remove(&self, mm: &MmStruct<E>, mirror: MirrorId) {
        let _f = self.func("mmu_interval_notifier_remove");
        let Some(subs) = mm.notifiers.get() else {
            return;
        };
        let seq = subs.state.update(|s| {
            let pos = s.itree.iter().position(|i| i.mirror == mirror);
            if s.invalidate_seq & 1 == 1 {
                match pos {
                    // Removed at the last inv_end; wait for it.
                    Some(p) => {
                        let sub = s.itree[p];
                        s.deferred.push((sub, false));
                        Some(s.invalidate_seq)
                    }
                    // Inserted after the invalidation began: not yet in
                    // the tree.
                    None => {
                        s.deferred.retain(|(i, _)| i.mirror != mirror);
                        None
                    }
                }
            } else {
                if let Some(p) = pos {
                    s.itree.remove(p);
                }
                None
            }
        });
        if let Some(seq) = seq {
            subs.state
                .wait_until(|s| (s.invalidate_seq != seq).then_some(()));
        }
    }

    /// Models mmu_interval_read_begin(), mm/mmu_notifier.c, v5.8: the
    /// sequence a fault of `mirror` starts from; while an invalidation of
    /// its range runs, first wait for it to end.
    pub fn mmu_interval_read_begin(&self, mm: &MmStruct<E>, mirror: MirrorId) -> u64 {
        let _f = self.func("mmu_interval_read_begin");
        let subs = mm.notifiers.get().expect("a subscribed mm");
        let (seq, is_invalidating) = subs.state.update(|s| {
            let seq = s.sub(mirror).map_or(0, |i| i.seq);
            (seq, seq == s.invalidate_seq)
        });
        if is_invalidating {
            subs.state
                .wait_until(|s| (s.invalidate_seq != seq).then_some(()));
        }
        seq
    }

    /// Models mmu_interval_read_retry() (and mmu_interval_check_retry()),
    /// include/linux/mmu_notifier.h, v5.8: an invalidation collided with
    /// the read side that began at `seq`. The caller holds the driver lock
    /// the invalidate callback takes.
    pub fn mmu_interval_read_retry(&self, mm: &MmStruct<E>, mirror: MirrorId, seq: u64) -> bool {
        let subs = mm.notifiers.get().expect("a subscribed mm");
        subs.state.inspect(|s| s.sub(mirror).map_or(0, |i| i.seq)) != seq
    }

    /// Models mmu_interval_set_seq(), include/linux/mmu_notifier.h, v5.8:
    /// the invalidate callback records the invalidation's sequence, under
    /// the driver lock.
    pub fn mmu_interval_set_seq(&self, mm: &MmStruct<E>, mirror: MirrorId, cur_seq: u64) {
        let subs = mm.notifiers.get().expect("a subscribed mm");
        subs.state.update(|s| {
            if let Some(i) = s.sub_mut(mirror) {
                i.seq = cur_seq;
            }
        });
    }

    /// Models mmu_notifier_invalidate_range_start(), v5.8
    /// (__mmu_notifier_invalidate_range_start() -> mn_itree_invalidate()):
    /// every mirror whose interval overlaps the range drops its
    /// translations there, before the core mm changes the page tables.
    ///
    /// # Locking
    /// May sleep: called with no page-table lock held. The mirrors'
    /// invalidate callbacks take their driver lock (`DmirrorMutex`).
    pub fn mmu_notifier_invalidate_range_start(&self, mm: &MmStruct<E>, range: &MmuNotifierRange) {
        let Some(subs) = mm.notifiers.get() else {
            return;
        };
        let _f = self.func("mmu_notifier_invalidate_range_start");
        // mn_itree_inv_start_range()
        let (hit, cur_seq) = subs.state.update(|s| {
            s.active_invalidate_ranges += 1;
            let hit: Vec<MirrorId> = s
                .itree
                .iter()
                .filter(|i| i.start < range.end.0 && range.start.0 < i.end)
                .map(|i| i.mirror)
                .collect();
            if !hit.is_empty() {
                s.invalidate_seq |= 1;
            }
            (hit, s.invalidate_seq)
        });
        for m in hit {
            self.dmirror_interval_invalidate(mm, m, range, cur_seq);
        }
    }

    /// Models mmu_notifier_invalidate_range_end() and
    /// mmu_notifier_invalidate_range_only_end(), v5.8 (mn_itree_inv_end()):
    /// the last active range makes the sequence even again, applies the
    /// deferred inserts and removes, and wakes read_begin()'s waiters.
    pub fn mmu_notifier_invalidate_range_end(&self, mm: &MmStruct<E>) {
        let Some(subs) = mm.notifiers.get() else {
            return;
        };
        let _f = self.func("mmu_notifier_invalidate_range_end");
        subs.state.update(|s| {
            s.active_invalidate_ranges -= 1;
            if s.active_invalidate_ranges > 0 || s.invalidate_seq & 1 == 0 {
                return;
            }
            // Make invalidate_seq even
            s.invalidate_seq += 1;
            for (sub, insert) in std::mem::take(&mut s.deferred) {
                if insert {
                    s.itree.push(sub);
                } else {
                    s.itree.retain(|i| i.mirror != sub.mirror);
                }
            }
        });
    }

    /// Models mmu_notifier_release() (mn_itree_release()), v5.8: at exit,
    /// every interval notifier of the mm is invalidated over the whole
    /// address space.
    pub fn mmu_notifier_release(&self, mm: &MmStruct<E>) {
        let range = MmuNotifierRange {
            mm: mm.id,
            start: VirtAddr(0),
            end: VirtAddr(u64::MAX),
            event: NotifyEvent::Release,
        };
        self.mmu_notifier_invalidate_range_start(mm, &range);
        self.mmu_notifier_invalidate_range_end(mm);
    }

    /// `mmu_notifier_range_init()` + `mmu_notifier_invalidate_range_start()`
    /// of `[start, end)` of `mm`: the range to end.
    pub fn mmu_notifier_start(
        &self,
        mm: &MmStruct<E>,
        event: NotifyEvent,
        start: VirtAddr,
        end: VirtAddr,
    ) -> MmuNotifierRange {
        let range = MmuNotifierRange {
            mm: mm.id,
            start,
            end,
            event,
        };
        self.mmu_notifier_invalidate_range_start(mm, &range);
        range
    }
}

#[cfg(test)]
mod tests {
    use super::NotifyEvent;
    use crate::testing::machine;
    use crate::types::{Geometry, VirtAddr};
    use crate::ThpPolicy;

    /// The sequence protocol of mm/mmu_notifier.c: a subscription inserted
    /// while idle starts one below the (even) sequence; an invalidation that
    /// covers a subscription makes the sequence odd and hands it to the
    /// callback (mmu_interval_set_seq()); one inserted during such an
    /// invalidation waits on the deferred list for its end; one inserted
    /// during an invalidation that covers nobody makes the sequence odd
    /// itself. read_retry() is true exactly when the subscription's sequence
    /// moved.
    #[test]
    fn the_sequence_protocol() {
        let (cpu, mm, a) = machine(Geometry::TINY, ThpPolicy::Never);
        let ps = Geometry::TINY.page_size();
        let (s, e) = (a, a.add_bytes(4 * ps));
        let m1 = cpu.dmirror_fops_open(&mm, s, e);
        let seq_is = |m, v| !cpu.mmu_interval_read_retry(&mm, m, v);
        assert!(seq_is(m1, 1), "idle insert: invalidate_seq - 1");
        assert_eq!(cpu.mmu_interval_read_begin(&mm, m1), 1);
        // An invalidation of m1's range.
        cpu.mmu_notifier_start(&mm, NotifyEvent::Clear, s, s.add_bytes(ps));
        assert!(seq_is(m1, 3), "the callback set the odd sequence");
        let m2 = cpu.dmirror_fops_open(&mm, s, e);
        assert!(seq_is(m2, 3), "deferred, at the current sequence");
        cpu.mmu_notifier_invalidate_range_end(&mm);
        // Even again (4): neither waits now.
        assert_eq!(cpu.mmu_interval_read_begin(&mm, m1), 3);
        assert_eq!(cpu.mmu_interval_read_begin(&mm, m2), 3);
        // An invalidation that covers no subscription keeps it even ...
        let far = VirtAddr(e.0 + 64 * ps);
        cpu.mmu_notifier_start(&mm, NotifyEvent::Clear, far, far.add_bytes(ps));
        assert!(seq_is(m1, 3), "not covered: not called");
        // ... until an insert makes it odd (5).
        let m3 = cpu.dmirror_fops_open(&mm, s, e);
        assert!(seq_is(m3, 5));
        cpu.mmu_notifier_invalidate_range_end(&mm);
        assert_eq!(cpu.mmu_interval_read_begin(&mm, m3), 5);
        // Removal while idle.
        cpu.mmu_interval_notifier_remove(&mm, m3);
        cpu.mmu_notifier_start(&mm, NotifyEvent::Clear, s, e);
        assert!(seq_is(m1, 7) && seq_is(m2, 7));
        cpu.mmu_notifier_invalidate_range_end(&mm);
    }
}

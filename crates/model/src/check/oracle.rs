//! The memory oracle: a reference model of what each process may observe,
//! built only from the operations a scenario performs, never from page tables
//! or pages.
//!
//! Each process has private memory made of pages of bytes: fresh anonymous
//! memory is zero, a write sets bytes, fork copies the parent's memory to the
//! child, munmap forgets a range, MADV_DONTNEED of private memory makes it zero
//! again, exit forgets everything. The checker compares it with what the model
//! shows a process (every byte of every mapped page at a quiescent point, and
//! each read).
//!
//! Shared mappings (MAP_SHARED of a file, [`MemoryOracle::on_mmap_shared`]):
//! their pages are a shared object's, the file's, which every process
//! mapping it sees: a write by one is a write for all, fork shares it, and
//! munmap leaves it to the file.
//!
//! Pins (GUP, `P: pin R = ...`): a device reads and writes the pinned pages.
//! A FOLL_WRITE|FOLL_LONGTERM pin promises that the process and the device
//! see the same memory while the process maps the pinned addresses: a device
//! write is a write of the process's memory (it may read it back), a device
//! read must see the process's memory, and at a quiescent point the process
//! must map the pinned frame at each pinned address (MEM-PIN-COHERENT; the
//! frames are the one observation of the model the rule needs). Once the
//! process unmaps a pinned page (munmap, MADV_DONTNEED, exit), the pinned
//! page keeps what it held then, and only the device changes it. A read-only
//! pin promises less: the device sees some version of the process's page (as
//! it was when pinned, or after a later write of the process), never bytes
//! the process never had; a device write through it (a driver bug, accepted)
//! reaches the process only if the process still maps the pinned frame.

use super::{invariants as inv, Violation, ViolationKind};
use crate::hash::{FastMap, FastSet};
use std::collections::{BTreeMap, BTreeSet};

/// A page's expected bytes.
#[derive(Clone, Debug)]
enum PageData {
    /// Every byte is this value.
    Fill(u8),
    Bytes(Box<[u8]>),
}

impl PageData {
    fn byte(&self, off: usize) -> u8 {
        match self {
            PageData::Fill(v) => *v,
            PageData::Bytes(b) => b[off],
        }
    }
    fn bytes_mut(&mut self, page_size: usize) -> &mut [u8] {
        if let PageData::Fill(v) = *self {
            *self = PageData::Bytes(vec![v; page_size].into_boxed_slice());
        }
        match self {
            PageData::Bytes(b) => b,
            PageData::Fill(_) => unreachable!("just made bytes"),
        }
    }
    /// The first offset where `seen` differs.
    fn first_difference(&self, seen: &[u8]) -> Option<usize> {
        let equal = match self {
            PageData::Fill(v) => all_bytes_are(seen, *v),
            PageData::Bytes(b) => &b[..] == seen,
        };
        if equal {
            return None;
        }
        match self {
            PageData::Fill(v) => seen.iter().position(|b| b != v),
            PageData::Bytes(b) => (0..b.len()).find(|&i| seen.get(i) != Some(&b[i])),
        }
    }
}

/// Whether every byte of `bytes` is `v`: by blocks of 64 without an early
/// exit inside a block, which the compiler turns into vector instructions
/// (a 2 MiB huge page is compared at every quiescent point of a run).
fn all_bytes_are(bytes: &[u8], v: u8) -> bool {
    let mut blocks = bytes.chunks_exact(64);
    for block in &mut blocks {
        if block.iter().fold(0u8, |acc, &b| acc | (b ^ v)) != 0 {
            return false;
        }
    }
    blocks.remainder().iter().all(|&b| b == v)
}

/// One process's expected memory: page address → bytes (absent = zero).
#[derive(Clone, Debug, Default)]
struct ProcMem {
    /// Mapped ranges `[start, end)`.
    ranges: Vec<(u64, u64)>,
    /// Private pages.
    pages: BTreeMap<u64, PageData>,
    /// Shared mappings: their pages are the shared object's.
    shared: Vec<SharedRange>,
    /// Pages freed lazily (MADV_FREE): besides `pages`, the process may
    /// see one of these.
    lazy: BTreeMap<u64, LazyPage>,
}

/// A private page after MADV_FREE: until reclaim discards it, the process
/// sees its data; once discarded, zeros; a write after a discard lands on a
/// new zero page. Each alternative follows the writes, and the first
/// observation that tells them apart settles the page.
#[derive(Clone, Debug)]
struct LazyPage {
    /// What the page shows if it was discarded (before the writes since).
    alts: Vec<PageData>,
    /// Written since MADV_FREE: a dirty page is never discarded, so once
    /// the data matches it is settled.
    written: bool,
}

/// A shared mapping of a process: `[start, end)` shows the shared object
/// `obj` (a file) from its byte offset `off`.
#[derive(Clone, Debug)]
struct SharedRange {
    start: u64,
    end: u64,
    obj: String,
    off: u64,
}

impl ProcMem {
    /// The shared object and its page offset behind the page at `page`.
    fn shared_at(&self, page: u64) -> Option<(&str, u64)> {
        self.shared
            .iter()
            .find(|r| r.start <= page && page < r.end)
            .map(|r| (r.obj.as_str(), r.off + (page - r.start)))
    }
}

/// How the oracle sees one pinned page.
#[derive(Clone, Debug)]
enum PinnedPage {
    /// A write pin's page the owner still maps: the device sees the owner's
    /// memory.
    Coherent,
    /// The owner no longer maps it: the frame's content is in
    /// `MemoryOracle::left` (shared by every pin of the frame).
    Left,
    /// A read-only pin's page: the device may see any of these versions of
    /// the owner's page; `attached` while the owner maps it (its writes add
    /// versions).
    Versions {
        attached: bool,
        versions: Vec<PageData>,
    },
}

/// A pin as the oracle sees it.
#[derive(Clone, Debug)]
struct PinView {
    /// The process that pinned.
    owner: String,
    /// FOLL_WRITE|FOLL_LONGTERM: the coherence promise holds.
    write: bool,
    /// Page address (in the owner's address space) → the frame pinned there.
    frames: BTreeMap<u64, u64>,
    /// Page address → what the device may see there.
    pages: BTreeMap<u64, PinnedPage>,
}

/// The oracle for all processes, keyed by the scenario's process names.
#[derive(Clone, Debug)]
pub struct MemoryOracle {
    page_size: u64,
    procs: BTreeMap<String, ProcMem>,
    /// The pins held, by name.
    pins: BTreeMap<String, PinView>,
    /// Pinned frames no process maps where it pinned them: what they hold
    /// (frozen when left, changed only by the device since), by frame.
    left: BTreeMap<u64, PageData>,
    /// Pages whose expected content changed since the last full check, by
    /// process.
    dirty: BTreeMap<String, BTreeSet<u64>>,
    /// The frame each page showed at the last check (for incremental checks),
    /// by process.
    seen: BTreeMap<String, FastMap<u64, Option<u64>>>,
    /// The inverse of `seen`: the pages (process number, page) that showed
    /// each frame at the last check, so that a frame written since is found
    /// without looking at every page.
    /// (frame, process number, page).
    shown_by: BTreeSet<(u64, u32, u64)>,
    /// Process numbers for `shown_by`, by name.
    ids: BTreeMap<String, u32>,
    /// `shown_by` is kept (the last check was `index`ed).
    indexed: bool,
    /// Shared objects (files mapped MAP_SHARED): page offset → bytes
    /// (absent = zero), by name. Every process that maps a page of one sees
    /// the same bytes; a write by any of them, or a device through a pin of
    /// it, is everyone's.
    objects: BTreeMap<String, BTreeMap<u64, PageData>>,
}

impl MemoryOracle {
    pub fn new(page_size: u64) -> Self {
        MemoryOracle {
            page_size,
            procs: BTreeMap::new(),
            pins: BTreeMap::new(),
            left: BTreeMap::new(),
            dirty: BTreeMap::new(),
            seen: BTreeMap::new(),
            shown_by: BTreeSet::new(),
            ids: BTreeMap::new(),
            indexed: false,
            objects: BTreeMap::new(),
        }
    }

    /// A shared mapping: the process maps `[start, start + len)` of the
    /// shared object `obj` from its byte offset `off` (MAP_SHARED of a
    /// file: what it shows is the file's, and stays the file's when the
    /// mapping goes).
    pub fn on_mmap_shared(&mut self, proc_: &str, start: u64, len: u64, obj: &str, off: u64) {
        self.on_mmap(proc_, start, len);
        self.objects.entry(obj.to_string()).or_default();
        let p = self.procs.entry(proc_.to_string()).or_default();
        p.shared.push(SharedRange {
            start,
            end: start + len,
            obj: obj.to_string(),
            off,
        });
    }

    /// The data the process shows at `page`, if any was written (its own,
    /// or its shared object's).
    fn data_at(&self, proc_: &str, page: u64) -> Option<&PageData> {
        let p = self.procs.get(proc_)?;
        match p.shared_at(page) {
            Some((obj, off)) => self.objects.get(obj).and_then(|o| o.get(&off)),
            None => p.pages.get(&page),
        }
    }

    /// Changes the data the process shows at `page` (its own, or its shared
    /// object's, which every process mapping that page sees change).
    fn write_at(&mut self, proc_: &str, page: u64, f: impl FnOnce(&mut PageData)) {
        let shared = self
            .procs
            .get(proc_)
            .and_then(|p| p.shared_at(page))
            .map(|(o, off)| (o.to_string(), off));
        match shared {
            Some((obj, off)) => {
                f(self
                    .objects
                    .entry(obj.clone())
                    .or_default()
                    .entry(off)
                    .or_insert(PageData::Fill(0)));
                // Every process that maps the object there sees it change.
                let mappers: Vec<(String, u64)> = self
                    .procs
                    .iter()
                    .flat_map(|(n, p)| {
                        p.shared
                            .iter()
                            .filter(|r| {
                                r.obj == obj && r.off <= off && off < r.off + (r.end - r.start)
                            })
                            .map(|r| (n.clone(), r.start + (off - r.off)))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                for (n, a) in mappers {
                    self.mark_dirty(&n, a, 1);
                }
            }
            None => f(self
                .procs
                .entry(proc_.to_string())
                .or_default()
                .pages
                .entry(page)
                .or_insert(PageData::Fill(0))),
        }
    }

    /// A store of `value` to `[from, to)` of the private page at `page`
    /// lands on whichever version a lazily freed page has: each alternative
    /// takes it too, and the page is written (never discarded now).
    fn lazy_store(&mut self, proc_: &str, page: u64, from: u64, to: u64, value: u8) {
        let ps = self.page_size as usize;
        let Some(l) = self
            .procs
            .get_mut(proc_)
            .and_then(|p| p.lazy.get_mut(&page))
        else {
            return;
        };
        for a in &mut l.alts {
            if from == page && to == page + ps as u64 {
                *a = PageData::Fill(value);
            } else {
                let bytes = a.bytes_mut(ps);
                for x in from..to {
                    bytes[(x - page) as usize] = value;
                }
            }
        }
        l.written = true;
    }

    /// MADV_FREE of private anonymous memory: each page keeps its data
    /// until reclaim discards it (then reads zero), unless it is written
    /// first.
    pub fn on_lazyfree(&mut self, proc_: &str, start: u64, len: u64) {
        let ps = self.page_size;
        self.mark_dirty(proc_, start, len);
        let Some(p) = self.procs.get_mut(proc_) else {
            return;
        };
        let mut a = start & !(ps - 1);
        while a < start + len {
            if p.shared_at(a).is_none() {
                let l = p.lazy.entry(a).or_insert(LazyPage {
                    alts: Vec::new(),
                    written: false,
                });
                l.alts.push(PageData::Fill(0));
                l.written = false;
            }
            a += ps;
        }
    }

    fn page_of(&self, addr: u64) -> (u64, usize) {
        (
            addr & !(self.page_size - 1),
            (addr & (self.page_size - 1)) as usize,
        )
    }

    pub fn on_spawn(&mut self, proc_: &str) {
        self.procs.entry(proc_.to_string()).or_default();
    }

    pub fn on_mmap(&mut self, proc_: &str, start: u64, len: u64) {
        self.mark_dirty(proc_, start, len);
        let p = self.procs.entry(proc_.to_string()).or_default();
        p.ranges.push((start, start + len));
        p.pages.retain(|&a, _| a < start || a >= start + len);
    }

    pub fn on_munmap(&mut self, proc_: &str, start: u64, len: u64) {
        self.mark_dirty(proc_, start, len);
        self.leave_pins(proc_, start, start + len);
        let end = start + len;
        if let Some(p) = self.procs.get_mut(proc_) {
            p.pages.retain(|&a, _| a < start || a >= end);
            p.lazy.retain(|&a, _| a < start || a >= end);
            let mut kept = Vec::new();
            for r in std::mem::take(&mut p.shared) {
                if r.end <= start || r.start >= end {
                    kept.push(r);
                    continue;
                }
                if r.start < start {
                    kept.push(SharedRange {
                        end: start,
                        ..r.clone()
                    });
                }
                if r.end > end {
                    kept.push(SharedRange {
                        start: end,
                        off: r.off + (end - r.start),
                        ..r.clone()
                    });
                }
            }
            p.shared = kept;
            let mut out = Vec::new();
            for &(s, e) in &p.ranges {
                if e <= start || s >= end {
                    out.push((s, e));
                } else {
                    if s < start {
                        out.push((s, start));
                    }
                    if e > end {
                        out.push((end, e));
                    }
                }
            }
            p.ranges = out;
        }
    }

    /// MADV_DONTNEED of private anonymous memory: it reads as zero again.
    pub fn on_dontneed(&mut self, proc_: &str, start: u64, len: u64) {
        self.mark_dirty(proc_, start, len);
        self.leave_pins(proc_, start, start + len);
        if let Some(p) = self.procs.get_mut(proc_) {
            // A shared page keeps its object's bytes (the next touch maps
            // the object's page again).
            p.pages.retain(|&a, _| a < start || a >= start + len);
            p.lazy.retain(|&a, _| a < start || a >= start + len);
        }
    }

    pub fn on_fork(&mut self, parent: &str, child: &str) {
        let copy = self.procs.get(parent).cloned().unwrap_or_default();
        self.procs.insert(child.to_string(), copy);
    }

    pub fn on_exit(&mut self, proc_: &str) {
        self.leave_pins(proc_, 0, u64::MAX);
        self.procs.remove(proc_);
        self.forget_seen(proc_);
        self.dirty.remove(proc_);
    }

    fn mark_dirty(&mut self, proc_: &str, start: u64, len: u64) {
        let ps = self.page_size;
        if !self.dirty.contains_key(proc_) {
            self.dirty.insert(proc_.to_string(), BTreeSet::new());
        }
        let Some(dirty) = self.dirty.get_mut(proc_) else {
            return;
        };
        let mut a = start & !(ps - 1);
        while a < start + len {
            dirty.insert(a);
            a += ps;
        }
    }

    /// A completed write of one byte.
    pub fn on_write(&mut self, proc_: &str, addr: u64, value: u8) {
        self.on_fill(proc_, addr, 1, value);
    }

    /// A completed store of `value` to `[start, start + len)`.
    pub fn on_fill(&mut self, proc_: &str, start: u64, len: u64, value: u8) {
        self.mark_dirty(proc_, start, len);
        let ps = self.page_size;
        let mut a = start;
        while a < start + len {
            let page = a & !(ps - 1);
            let end = (page + ps).min(start + len);
            self.lazy_store(proc_, page, a, end, value);
            if a == page && end == page + ps {
                self.write_at(proc_, page, |d| *d = PageData::Fill(value));
            } else {
                self.write_at(proc_, page, |data| {
                    let bytes = data.bytes_mut(ps as usize);
                    for x in a..end {
                        bytes[(x - page) as usize] = value;
                    }
                });
            }
            a = end;
        }
        self.add_pin_versions(proc_, start, start + len);
    }

    /// Whether the process has `addr` mapped (as far as the scenario says).
    pub fn is_mapped(&self, proc_: &str, addr: u64) -> bool {
        self.procs
            .get(proc_)
            .is_some_and(|p| p.ranges.iter().any(|&(s, e)| s <= addr && addr < e))
    }

    /// The byte the process must see at `addr`.
    pub fn expected(&self, proc_: &str, addr: u64) -> u8 {
        let (page, off) = self.page_of(addr);
        self.data_at(proc_, page).map_or(0, |b| b.byte(off))
    }

    /// The mapped pages of each process (for the full check).
    pub fn mapped_pages(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for (name, p) in &self.procs {
            for &(s, e) in &p.ranges {
                let mut a = s;
                while a < e {
                    out.push((name.clone(), a));
                    a += self.page_size;
                }
            }
        }
        out
    }

    /// The owner's page data at `page` (zero if never written).
    fn page_data(&self, proc_: &str, page: u64) -> PageData {
        self.data_at(proc_, page)
            .cloned()
            .unwrap_or(PageData::Fill(0))
    }

    /// A pin `pin` of `owner`'s `[start, start + len)` was taken; `frames`
    /// are the pinned frames, one per page from the page of `start`.
    pub fn on_pin(
        &mut self,
        pin: &str,
        owner: &str,
        start: u64,
        len: u64,
        write: bool,
        frames: &[u64],
    ) {
        let ps = self.page_size;
        let first = start & !(ps - 1);
        let mut view = PinView {
            owner: owner.to_string(),
            write,
            frames: BTreeMap::new(),
            pages: BTreeMap::new(),
        };
        for (i, &f) in frames.iter().enumerate() {
            let page = first + i as u64 * ps;
            if page >= start + len {
                break;
            }
            view.frames.insert(page, f);
            let state = if write {
                PinnedPage::Coherent
            } else {
                PinnedPage::Versions {
                    attached: true,
                    versions: vec![self.page_data(owner, page)],
                }
            };
            view.pages.insert(page, state);
        }
        self.pins.insert(pin.to_string(), view);
    }

    /// The pin was released.
    pub fn on_unpin(&mut self, pin: &str) {
        self.pins.remove(pin);
        let still: BTreeSet<u64> = self
            .pins
            .values()
            .flat_map(|v| {
                v.pages
                    .iter()
                    .filter(|(_, s)| matches!(s, PinnedPage::Left))
                    .map(|(p, _)| v.frames[p])
            })
            .collect();
        self.left.retain(|f, _| still.contains(f));
    }

    /// The owner no longer maps `[start, end)`: its pinned pages there keep
    /// what they hold now.
    fn leave_pins(&mut self, proc_: &str, start: u64, end: u64) {
        let owned: Vec<(String, Vec<u64>)> = self
            .pins
            .iter()
            .filter(|(_, v)| v.owner == proc_)
            .map(|(n, v)| {
                let pages = v
                    .pages
                    .keys()
                    .copied()
                    .filter(|&p| p + self.page_size > start && p < end)
                    .collect();
                (n.clone(), pages)
            })
            .collect();
        for (name, pages) in owned {
            for page in pages {
                let now = self.page_data(proc_, page);
                let Some(v) = self.pins.get_mut(&name) else {
                    continue;
                };
                let frame = v.frames[&page];
                let Some(state) = v.pages.get_mut(&page) else {
                    continue;
                };
                match state {
                    PinnedPage::Coherent => {
                        *state = PinnedPage::Left;
                        // Another pin of the frame may have left it already.
                        self.left.entry(frame).or_insert(now);
                    }
                    PinnedPage::Versions { attached, .. } => *attached = false,
                    PinnedPage::Left => {}
                }
            }
        }
    }

    /// The owner wrote `[start, end)`: a read-only pin's device may now see
    /// the new version of those pages.
    fn add_pin_versions(&mut self, proc_: &str, start: u64, end: u64) {
        let ps = self.page_size;
        let mut updates = Vec::new();
        for (name, v) in &self.pins {
            if v.owner != proc_ || v.write {
                continue;
            }
            for &page in v.pages.keys() {
                if page + ps > start && page < end {
                    updates.push((name.clone(), page));
                }
            }
        }
        for (name, page) in updates {
            let now = self.page_data(proc_, page);
            if let Some(PinnedPage::Versions {
                attached: true,
                versions,
            }) = self
                .pins
                .get_mut(&name)
                .and_then(|v| v.pages.get_mut(&page))
            {
                versions.push(now);
            }
        }
    }

    /// The pin's view of the page of the owner's `addr` (None if the pin is
    /// not held or does not cover it).
    fn pin_page(&self, pin: &str, addr: u64) -> Option<(&PinView, u64, usize)> {
        let (page, off) = self.page_of(addr);
        let v = self.pins.get(pin)?;
        v.pages.contains_key(&page).then_some((v, page, off))
    }

    /// The pinned (process, page address) pairs whose frame is `frame` and
    /// whose read-only pin needs to know whether the process still maps the
    /// frame there (for [`MemoryOracle::on_device_write`]).
    pub fn read_only_pins_of(&self, frame: u64) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for v in self.pins.values() {
            for (&page, state) in &v.pages {
                if v.frames[&page] == frame
                    && matches!(state, PinnedPage::Versions { attached: true, .. })
                {
                    out.push((v.owner.clone(), page));
                }
            }
        }
        out
    }

    /// The device wrote `value` to bytes `[off, off + len)` of the pinned
    /// `frame`. Every pin of the frame sees it: a write pin's owner that
    /// still maps the page has its memory written (it may read it back); a
    /// frame no process maps keeps it; a read-only pin's versions all have
    /// it, and its owner sees it if it maps the frame there (`maps`, from
    /// [`MemoryOracle::read_only_pins_of`]; a read-only pin promises nothing
    /// about it).
    pub fn on_device_write(
        &mut self,
        frame: u64,
        off: u64,
        len: u64,
        value: u8,
        maps: &BTreeSet<(String, u64)>,
    ) {
        let ps = self.page_size as usize;
        let (off, len) = (off as usize, len as usize);
        let set = |d: &mut PageData| d.bytes_mut(ps)[off..off + len].fill(value);
        let mut owners = BTreeSet::new();
        for v in self.pins.values_mut() {
            for (&page, state) in v.pages.iter_mut() {
                if v.frames[&page] != frame {
                    continue;
                }
                match state {
                    PinnedPage::Coherent => {
                        owners.insert((v.owner.clone(), page));
                    }
                    PinnedPage::Left => {}
                    PinnedPage::Versions { attached, versions } => {
                        versions.iter_mut().for_each(set);
                        if *attached && maps.contains(&(v.owner.clone(), page)) {
                            owners.insert((v.owner.clone(), page));
                        }
                    }
                }
            }
        }
        if let Some(d) = self.left.get_mut(&frame) {
            set(d);
        }
        for (owner, page) in owners {
            // A write of the owner's memory, which it may read back.
            self.mark_dirty(&owner, page + off as u64, len as u64);
            self.write_at(&owner, page, set);
        }
    }

    /// Compares a byte the device read through `pin` at the owner's `addr`
    /// with what it may see.
    pub fn check_device_read(&self, pin: &str, addr: u64, seen: u8) -> Option<Violation> {
        let (v, page, off) = self.pin_page(pin, addr)?;
        let (want, id, what) = match &v.pages[&page] {
            PinnedPage::Coherent => {
                let want = self.expected(&v.owner, addr);
                (
                    want,
                    inv::MEM_PIN_COHERENT,
                    format!("process {} holds {want:#04x} there: the device and the process no longer see the same memory", v.owner),
                )
            }
            PinnedPage::Left => {
                let want = self.left.get(&v.frames[&page]).map_or(0, |d| d.byte(off));
                let (id, what) = kind_of(seen, want);
                (
                    want,
                    id,
                    format!(
                        "the pinned page held {want:#04x} when process {} left it: {what}",
                        v.owner
                    ),
                )
            }
            PinnedPage::Versions { versions, .. } => {
                if versions.iter().any(|d| d.byte(off) == seen) {
                    return None;
                }
                let want = versions.last().map_or(0, |d| d.byte(off));
                (
                    want,
                    inv::MEM_PRIVATE,
                    format!("no version of process {}'s page held it (the last held {want:#04x}): the read-only pin shows a byte the process never had", v.owner),
                )
            }
        };
        (seen != want).then(|| Violation {
            id,
            kind: ViolationKind::Memory,
            message: format!(
                "pin {pin} (process {}) at {addr:#x}: the device reads {seen:#04x}; {what}",
                v.owner
            ),
            cpu: None,
            backtrace: Vec::new(),
            page: None,
        })
    }

    /// The pin rule at a quiescent point: for each FOLL_WRITE|FOLL_LONGTERM
    /// pin, the owner maps the pinned frame at every pinned address it still
    /// maps. `frame_of(process, page address)` is the frame the process maps
    /// there.
    pub fn check_pins(&self, mut frame_of: impl FnMut(&str, u64) -> Option<u64>) -> Vec<Violation> {
        let mut out = Vec::new();
        for (name, v) in &self.pins {
            if !v.write {
                continue;
            }
            for (&page, state) in &v.pages {
                if !matches!(state, PinnedPage::Coherent) {
                    continue;
                }
                let pinned = v.frames[&page];
                let maps = frame_of(&v.owner, page);
                if maps != Some(pinned) {
                    let maps = maps.map_or("no frame".to_string(), |f| format!("frame {f}"));
                    out.push(Violation {
                        id: inv::MEM_PIN_COHERENT,
                        kind: ViolationKind::Memory,
                        message: format!(
                            "pin {name} (process {}, FOLL_WRITE|FOLL_LONGTERM) at {page:#x}: the process maps {maps}, the pin holds frame {pinned}: the process and the device no longer see the same memory",
                            v.owner
                        ),
                        cpu: None,
                        backtrace: Vec::new(),
                        page: None,
                    });
                }
            }
        }
        out
    }

    /// Compares a read the process made with what it may see.
    pub fn check_read(&self, proc_: &str, addr: u64, seen: u8) -> Option<Violation> {
        let want = self.expected(proc_, addr);
        if seen == want {
            return None;
        }
        let (page, off) = self.page_of(addr);
        let lazy_ok = self
            .procs
            .get(proc_)
            .and_then(|p| p.lazy.get(&page))
            .is_some_and(|l| l.alts.iter().any(|a| a.byte(off) == seen));
        (!lazy_ok).then(|| violation(proc_, addr, seen, want))
    }

    /// A lazily freed page whose observation `seen` matches one of its
    /// alternatives: settle it (the alternative becomes its data). A page
    /// that matches its data and was written since is settled too.
    fn settle_lazy(&mut self, name: &str, page: u64, seen: &[u8]) -> bool {
        let Some(p) = self.procs.get_mut(name) else {
            return false;
        };
        let Some(l) = p.lazy.get(&page) else {
            return false;
        };
        let primary = p.pages.get(&page).cloned().unwrap_or(PageData::Fill(0));
        if primary.first_difference(seen).is_none() {
            if l.written {
                p.lazy.remove(&page);
            }
            return true;
        }
        if let Some(a) = l
            .alts
            .iter()
            .find(|a| a.first_difference(seen).is_none())
            .cloned()
        {
            p.pages.insert(page, a);
            p.lazy.remove(&page);
            return true;
        }
        false
    }

    /// Compares every mapped page with `observe(process, page address)`, the
    /// bytes the model would show. Reports the first difference of each page.
    pub fn check_all(&self, mut observe: impl FnMut(&str, u64) -> Vec<u8>) -> Vec<Violation> {
        let mut out = Vec::new();
        for (name, page) in self.mapped_pages() {
            let seen = observe(&name, page);
            if let Some(v) = self.compare(&name, page, &seen) {
                out.push(v);
            }
        }
        out
    }

    fn compare(&self, name: &str, page: u64, seen: &[u8]) -> Option<Violation> {
        let data = self.data_at(name, page);
        let zero = PageData::Fill(0);
        let want = data.unwrap_or(&zero);
        want.first_difference(seen).map(|off| {
            violation(
                name,
                page + off as u64,
                seen.get(off).copied().unwrap_or(0),
                want.byte(off),
            )
        })
    }

    /// Forgets what the process's pages showed (it exited).
    fn forget_seen(&mut self, proc_: &str) {
        let (Some(seen), Some(&id)) = (self.seen.remove(proc_), self.ids.get(proc_)) else {
            return;
        };
        for (page, frame) in seen {
            if let Some(f) = frame {
                self.unshow(f, id, page);
            }
        }
    }

    fn unshow(&mut self, frame: u64, id: u32, page: u64) {
        self.shown_by.remove(&(frame, id, page));
    }

    fn id_of(&mut self, proc_: &str) -> u32 {
        if let Some(&id) = self.ids.get(proc_) {
            return id;
        }
        let id = self.ids.len() as u32;
        self.ids.insert(proc_.to_string(), id);
        id
    }

    /// The check, incremental (issue 13: its cost is what changed). A page
    /// is examined only if its expected content changed since the last
    /// check, its translation may have moved (`moved(process)`: the ranges
    /// `check::watch` found, `None` for all of them), the frame it showed
    /// then was written since (`touched`, the frames written since the last
    /// check), or its process was never checked. An examined page is
    /// compared again (`observe`) only if one of those holds for what it
    /// shows now: its expected content changed, it shows another frame
    /// (`frame_of`), or that frame was written. `full`: every mapped page
    /// is examined and compared (the full sweep). Without `index`, every
    /// mapped page is examined (`moved` is not asked) and the index of the
    /// pages by frame is not kept: for small worlds checked after every
    /// change anyway (an exploration's executions), where keeping it costs
    /// more than it saves; the first indexed check after one examines
    /// everything and rebuilds it.
    pub fn check_changed(
        &mut self,
        full: bool,
        index: bool,
        mut moved: impl FnMut(&str) -> Option<Vec<(u64, u64)>>,
        touched: &FastSet<u64>,
        mut frame_of: impl FnMut(&str, u64) -> Option<u64>,
        mut observe: impl FnMut(&str, u64) -> Vec<u8>,
    ) -> Vec<Violation> {
        let ps = self.page_size;
        let rebuild = index && !self.indexed;
        if rebuild || !index {
            self.shown_by.clear();
        }
        self.indexed = index;
        // The pages that showed a written frame, by process number.
        let mut written: FastMap<u32, Vec<u64>> = FastMap::default();
        for f in touched.iter().filter(|_| index && !rebuild) {
            for &(_, id, page) in self.shown_by.range((*f, 0, 0)..=(*f, u32::MAX, u64::MAX)) {
                written.entry(id).or_default().push(page);
            }
        }
        let names: Vec<String> = self.procs.keys().cloned().collect();
        let mut out = Vec::new();
        // In the order of `mapped_pages()`: by process, then by range.
        for name in names {
            let id = self.id_of(&name);
            let ranges = self.procs[&name].ranges.clone();
            let known = self.seen.contains_key(&name);
            let everything = full || !known || !index || rebuild;
            let dirty = self.dirty.remove(&name).unwrap_or_default();
            // The pages to examine (all of them: `everything`).
            let mut todo: std::collections::BTreeSet<u64> = std::collections::BTreeSet::new();
            if !everything {
                todo.extend(dirty.iter().copied());
                todo.extend(written.remove(&id).into_iter().flatten());
                match moved(&name) {
                    None => {
                        for &(s, e) in &ranges {
                            todo.extend((s..e).step_by(ps as usize));
                        }
                    }
                    Some(m) => {
                        for &(s, e) in &ranges {
                            for &(ms, me) in &m {
                                let (lo, hi) = (s.max(ms & !(ps - 1)), e.min(me));
                                let mut a = lo;
                                while a < hi {
                                    todo.insert(a);
                                    a += ps;
                                }
                            }
                        }
                    }
                }
            }
            let mut seen = self.seen.remove(&name).unwrap_or_default();
            let mut examine = |page: u64, this: &mut Self, seen: &mut FastMap<u64, Option<u64>>| {
                let frame = frame_of(&name, page);
                let old = seen.insert(page, frame);
                let same = !full
                    && !dirty.contains(&page)
                    && old == Some(frame)
                    && frame.is_none_or(|f| !touched.contains(&f));
                if index && (rebuild || old != Some(frame)) {
                    if let Some(Some(f)) = old {
                        this.unshow(f, id, page);
                    }
                    if let Some(f) = frame {
                        this.shown_by.insert((f, id, page));
                    }
                }
                if !same {
                    let bytes = observe(&name, page);
                    if let Some(v) = this.compare(&name, page, &bytes) {
                        out.push((name.clone(), page, bytes, v));
                    }
                }
            };
            for &(s, e) in &ranges {
                if everything {
                    let mut page = s;
                    while page < e {
                        examine(page, self, &mut seen);
                        page += ps;
                    }
                } else {
                    for page in todo.range(s..e).copied().collect::<Vec<_>>() {
                        examine(page, self, &mut seen);
                    }
                }
            }
            // Pages no longer mapped show nothing.
            let gone: Vec<u64> = if everything {
                seen.keys()
                    .copied()
                    .filter(|&p| !ranges.iter().any(|&(s, e)| s <= p && p < e))
                    .collect()
            } else {
                todo.iter()
                    .copied()
                    .filter(|&p| !ranges.iter().any(|&(s, e)| s <= p && p < e))
                    .collect()
            };
            for p in gone {
                if let Some(Some(f)) = seen.remove(&p) {
                    self.unshow(f, id, p);
                }
            }
            self.seen.insert(name, seen);
        }
        self.dirty.clear();
        // A lazily freed page may show another of its versions.
        let mut violations = Vec::new();
        for (name, page, bytes, v) in out {
            if !self.settle_lazy(&name, page, &bytes) {
                violations.push(v);
            }
        }
        violations
    }
}

/// Which invariant a wrong byte breaks: a zero where a write was is a lost
/// write, anything else a byte the memory should not show.
fn kind_of(seen: u8, want: u8) -> (&'static str, &'static str) {
    if seen == 0 && want != 0 {
        (inv::MEM_LOST_WRITE, "a completed write is lost")
    } else {
        (
            inv::MEM_PRIVATE,
            "private memory shows a byte this process never wrote or inherited",
        )
    }
}

fn violation(proc_: &str, addr: u64, seen: u8, want: u8) -> Violation {
    let (id, what) = kind_of(seen, want);
    Violation {
        id,
        kind: ViolationKind::Memory,
        message: format!(
            "process {proc_} at {addr:#x}: reads {seen:#04x}, expected {want:#04x}: {what}"
        ),
        cpu: None,
        backtrace: Vec::new(),
        page: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_bytes_are_finds_any_other_byte() {
        for len in [0usize, 1, 63, 64, 65, 200] {
            let mut b = vec![7u8; len];
            assert!(all_bytes_are(&b, 7));
            for i in 0..len {
                b[i] = 8;
                assert!(!all_bytes_are(&b, 7), "len {len}, byte {i}");
                b[i] = 7;
            }
        }
    }

    #[test]
    fn fork_copies_and_writes_stay_private() {
        let mut o = MemoryOracle::new(64);
        o.on_mmap("P", 0x400, 256);
        o.on_write("P", 0x401, 7);
        o.on_fork("P", "C");
        o.on_write("C", 0x401, 9);
        assert_eq!(o.expected("P", 0x401), 7);
        assert_eq!(o.expected("C", 0x401), 9);
        assert!(o.check_read("P", 0x401, 9).is_some());
        o.on_dontneed("C", 0x400, 64);
        assert_eq!(o.expected("C", 0x401), 0);
        o.on_munmap("P", 0x440, 64);
        assert!(!o.is_mapped("P", 0x450));
        assert!(o.is_mapped("P", 0x400));
        assert_eq!(o.mapped_pages().iter().filter(|(p, _)| p == "P").count(), 3);
    }

    /// A write pin: device writes are the process's writes, device reads see
    /// the process's memory, and the process must map the pinned frame.
    #[test]
    fn a_write_pin_is_coherent_with_its_process() {
        let mut o = MemoryOracle::new(64);
        o.on_mmap("P", 0x400, 256);
        o.on_write("P", 0x400, 1);
        o.on_pin("R", "P", 0x400, 256, true, &[10, 11, 12, 13]);
        o.on_device_write(11, 2, 2, 0x44, &BTreeSet::new());
        assert_eq!(o.expected("P", 0x442), 0x44);
        assert_eq!(o.expected("P", 0x441), 0);
        assert!(o.check_device_read("R", 0x400, 1).is_none());
        let v = o.check_device_read("R", 0x400, 2).expect("incoherent");
        assert_eq!(v.id, inv::MEM_PIN_COHERENT);
        let frames = |_: &str, page: u64| Some(10 + (page - 0x400) / 64);
        assert!(o.check_pins(frames).is_empty());
        let moved = |_: &str, page: u64| {
            Some(if page == 0x400 {
                99
            } else {
                10 + (page - 0x400) / 64
            })
        };
        let v = o.check_pins(moved);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].id, inv::MEM_PIN_COHERENT);
        assert!(v[0].message.contains("frame 99") && v[0].message.contains("frame 10"));
        // Once the process unmaps a page, the pinned frame keeps its bytes
        // and only the device changes them; every pin of the frame sees it.
        o.on_pin("S", "P", 0x440, 64, true, &[11]);
        o.on_munmap("P", 0x440, 64);
        assert!(o
            .check_pins(moved)
            .iter()
            .all(|v| !v.message.contains("0x440")));
        assert!(o.check_device_read("S", 0x442, 0x44).is_none());
        o.on_device_write(11, 0, 1, 0x55, &BTreeSet::new());
        assert!(o.check_device_read("R", 0x440, 0x55).is_none());
        assert!(o.check_device_read("S", 0x440, 0x55).is_none());
        let v = o.check_device_read("S", 0x440, 0).expect("lost");
        assert_eq!(v.id, inv::MEM_LOST_WRITE);
        o.on_unpin("R");
        o.on_unpin("S");
        assert!(o.left.is_empty());
    }

    /// A read-only pin: the device sees some version of the process's page,
    /// never a byte the process never had.
    #[test]
    fn a_read_only_pin_sees_a_version_of_its_process() {
        let mut o = MemoryOracle::new(64);
        o.on_mmap("P", 0x400, 64);
        o.on_write("P", 0x400, 1);
        o.on_pin("O", "P", 0x400, 64, false, &[10]);
        o.on_write("P", 0x400, 2);
        assert!(o.check_device_read("O", 0x400, 1).is_none());
        assert!(o.check_device_read("O", 0x400, 2).is_none());
        let v = o.check_device_read("O", 0x400, 3).expect("a foreign byte");
        assert_eq!(v.id, inv::MEM_PRIVATE);
        // After the process leaves the page, its writes are no versions.
        o.on_munmap("P", 0x400, 64);
        o.on_mmap("P", 0x400, 64);
        o.on_write("P", 0x400, 4);
        assert!(o.check_device_read("O", 0x400, 4).is_some());
        // A device write through it reaches the process only if the process
        // maps the frame (it does not here).
        assert_eq!(o.read_only_pins_of(10), Vec::<(String, u64)>::new());
        o.on_device_write(10, 0, 1, 7, &BTreeSet::new());
        assert!(o.check_device_read("O", 0x400, 7).is_none());
        assert_eq!(o.expected("P", 0x400), 4);
    }
}

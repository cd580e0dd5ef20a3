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

use super::{invariants as inv, Violation, ViolationKind};
use std::collections::{BTreeMap, BTreeSet, HashMap};

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
            PageData::Fill(v) => seen.iter().all(|b| b == v),
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

/// One process's expected memory: page address → bytes (absent = zero).
#[derive(Clone, Debug, Default)]
struct ProcMem {
    /// Mapped ranges `[start, end)`.
    ranges: Vec<(u64, u64)>,
    pages: BTreeMap<u64, PageData>,
}

/// The oracle for all processes, keyed by the scenario's process names.
#[derive(Clone, Debug)]
pub struct MemoryOracle {
    page_size: u64,
    procs: BTreeMap<String, ProcMem>,
    /// Pages whose expected content changed since the last full check.
    dirty: BTreeSet<(String, u64)>,
    /// The frame each page showed at the last check (for incremental checks).
    seen: HashMap<(String, u64), Option<u64>>,
}

impl MemoryOracle {
    pub fn new(page_size: u64) -> Self {
        MemoryOracle {
            page_size,
            procs: BTreeMap::new(),
            dirty: BTreeSet::new(),
            seen: HashMap::new(),
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
        let end = start + len;
        if let Some(p) = self.procs.get_mut(proc_) {
            p.pages.retain(|&a, _| a < start || a >= end);
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
        if let Some(p) = self.procs.get_mut(proc_) {
            p.pages.retain(|&a, _| a < start || a >= start + len);
        }
    }

    pub fn on_fork(&mut self, parent: &str, child: &str) {
        let copy = self.procs.get(parent).cloned().unwrap_or_default();
        self.procs.insert(child.to_string(), copy);
    }

    pub fn on_exit(&mut self, proc_: &str) {
        self.procs.remove(proc_);
        self.seen.retain(|(p, _), _| p != proc_);
        self.dirty.retain(|(p, _)| p != proc_);
    }

    fn mark_dirty(&mut self, proc_: &str, start: u64, len: u64) {
        let ps = self.page_size;
        let mut a = start & !(ps - 1);
        while a < start + len {
            self.dirty.insert((proc_.to_string(), a));
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
        let p = self.procs.entry(proc_.to_string()).or_default();
        let mut a = start;
        while a < start + len {
            let page = a & !(ps - 1);
            let end = (page + ps).min(start + len);
            if a == page && end == page + ps {
                p.pages.insert(page, PageData::Fill(value));
            } else {
                let data = p.pages.entry(page).or_insert(PageData::Fill(0));
                let bytes = data.bytes_mut(ps as usize);
                for x in a..end {
                    bytes[(x - page) as usize] = value;
                }
            }
            a = end;
        }
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
        self.procs
            .get(proc_)
            .and_then(|p| p.pages.get(&page))
            .map_or(0, |b| b.byte(off))
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

    /// Compares a read the process made with what it may see.
    pub fn check_read(&self, proc_: &str, addr: u64, seen: u8) -> Option<Violation> {
        let want = self.expected(proc_, addr);
        (seen != want).then(|| violation(proc_, addr, seen, want))
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
        let data = self.procs.get(name).and_then(|p| p.pages.get(&page));
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

    /// The same check, incremental: a page is compared again only if its
    /// expected content changed, it now shows another frame (`frame_of`), or
    /// that frame's bytes changed (`frame_changed`) since the last check.
    pub fn check_changed(
        &mut self,
        mut frame_of: impl FnMut(&str, u64) -> Option<u64>,
        mut frame_changed: impl FnMut(u64) -> bool,
        mut observe: impl FnMut(&str, u64) -> Vec<u8>,
    ) -> Vec<Violation> {
        let mut out = Vec::new();
        let mut seen_now = HashMap::new();
        for (name, page) in self.mapped_pages() {
            let key = (name.clone(), page);
            let frame = frame_of(&name, page);
            let same = !self.dirty.contains(&key)
                && self.seen.get(&key) == Some(&frame)
                && frame.is_none_or(|f| !frame_changed(f));
            if !same {
                let bytes = observe(&name, page);
                if let Some(v) = self.compare(&name, page, &bytes) {
                    out.push(v);
                }
            }
            seen_now.insert(key, frame);
        }
        self.seen = seen_now;
        self.dirty.clear();
        out
    }
}

fn violation(proc_: &str, addr: u64, seen: u8, want: u8) -> Violation {
    let (id, what) = if seen == 0 && want != 0 {
        (inv::MEM_LOST_WRITE, "a completed write is lost")
    } else {
        (
            inv::MEM_PRIVATE,
            "private memory shows a byte this process never wrote or inherited",
        )
    };
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
}

//! Every example of the contract (SCENARIO-LANGUAGE.md) parses.
//!
//! The blocks below are copied verbatim from the contract. Each block is
//! checked line by line, after a prelude that declares what the line names
//! (process `P`, child `C`, region `A`, file `F`, pin `R` and mirror `M` on region `B`), except the header
//! block and the `together` block, which are checked whole. Two bits of the
//! contract's notation are expanded: `[shared]` (optional word) gives both
//! variants, and `X / Y` (two examples on one line) gives both examples.
//! When the contract file itself is beside the repository (`../shared`), its
//! current blocks are checked the same way.

use thpsim_scenario::{parse, Item, Scenario};

const BLOCK_0: &str = r#"geometry x86_64        # x86_64 (4 KiB pages, 512 entries a table, 4 levels) | tiny (small tables, for exploration)
thp madvise            # THP policy, as /sys/kernel/mm/transparent_hugepage/enabled: always | madvise | never
zero-page on           # huge zero page on read faults: on | off
nodes 2                # NUMA nodes (default 1)
hugetlb-pool 8         # free PMD-size hugetlb pages per node (default 0)
swap 64m               # swap device size (default: none)
revert NAME            # reopen a fixed race (repeatable); `thpsim fixes` lists NAMEs
kernel 5.8             # the kernel design the model follows: 5.8 (default) | 3.16 (the pre-4.5 THP design)
khugepaged max_ptes_none=511 max_ptes_swap=64 max_ptes_shared=256   # any subset; defaults as the kernel derives them
memory 2g              # the machine's physical memory (default chosen by the runner)
"#;

const BLOCK_1: &str = r#"process P                          # declare a process (the first one needs this)
P: fork C                          # C is a new child of P, sharing P's mappings copy-on-write
P: exit
"#;

const BLOCK_2: &str = r#"P: mmap A 2h                       # anonymous private, PMD-aligned, read-write
P: mmap A 2h shared                # anonymous shared
P: mmap A 1u hugetlb [shared]      # hugetlb-backed (PMD-size pages), PUD-aligned if the size allows
P: mmap A 1u file=F shared         # map a shared memory file F (see memfd)
P: memfd F 1u hugetlb              # create a shared memory file, hugetlb-backed or not
P: munmap A[0..1p]
P: mprotect A[1h..2h] r            # r | rw | none
P: madvise A[..] hugepage          # hugepage | nohugepage | dontneed | pageout | collapse | free
P: move-pages A[0..1h] node=1      # migrate to a NUMA node (MPOL_MF_MOVE); `node=1 all` is MPOL_MF_MOVE_ALL
P: mlock A[..] / P: munlock A[..]
"#;

const BLOCK_3: &str = r#"P: write A[0..2h] = 0x11           # fill the range with a byte
P: write A[1p+17] = 0x22           # one byte
P: read A[1p] == 0x22              # assertion on the byte read
P: read A[1p]                      # read, value only reported
"#;

const BLOCK_4: &str = r#"P: pin R = A[0..1h] write          # pin_user_pages(FOLL_WRITE|FOLL_LONGTERM); R names the pin
P: pin R = A[0..1h] write fast     # the same through pin_user_pages_fast (the lockless walk first)
P: pin R = A[0..1h]                # a read-only long-term pin (FOLL_LONGTERM without FOLL_WRITE)
P: unpin R
device: write R[1p] = 0x44         # DMA into the pinned pages
device: read R[1p] == 0x44
"#;

const BLOCK_MIRROR: &str = r#"P: mirror M = A[0..1h]             # register secondary MMU M over that range of P
mirror: read M[1p] == 0x44         # access through M's own translation cache, faulting on a miss
mirror: write M[1p] = 0x45
"#;

const BLOCK_5: &str = r#"kernel: split-huge-page P A[0]     # as debugfs split_huge_pages for that address
kernel: khugepaged P A[..]         # one khugepaged scan over the range
kernel: reclaim P A[..]            # try to reclaim (swap out) those pages
kernel: deferred-split             # run the deferred-split shrinker
"#;

const BLOCK_6: &str = r#"together
  thread P: write A[1p] = 0x33; read A[1p] == 0x33
  thread C: munmap A[..]
  thread kernel: split-huge-page C A[0]
end
"#;

const BLOCK_7: &str = r#"expect P A[0] thp-pmd              # none | zero | base | thp-pmd | thp-pte | hugetlb | swap | migration
expect P A[1p] mapcount 2          # the subpage's mapcount (as /proc/kpagecount reports)
expect P A[1p] same C A[1p]        # the same physical page ...
expect P A[1p] other C A[1p]       # ... or not
expect P A[1p] node 1
show P A[0..2h]                    # report the state of each page (for conformance)
"#;

const BLOCKS: &[&str] = &[
    BLOCK_0,
    BLOCK_1,
    BLOCK_2,
    BLOCK_3,
    BLOCK_4,
    BLOCK_MIRROR,
    BLOCK_5,
    BLOCK_6,
    BLOCK_7,
];

/// Expands the contract's notation: `X / Y` and an optional `[word]`.
fn variants(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in line.split(" / ") {
        match (part.find(" [shared]"), part.find('#').or(Some(usize::MAX))) {
            (Some(i), Some(c)) if i < c => {
                out.push(part.replacen(" [shared]", "", 1));
                out.push(part.replacen(" [shared]", " shared", 1));
            }
            _ => out.push(part.to_string()),
        }
    }
    out
}

/// What a line needs declared before it (it must not redeclare what it makes).
fn prelude(line: &str) -> String {
    let mut p = String::from("process P\n");
    if line.contains("node=") {
        // A `move-pages` target must be below `nodes N`.
        p += "nodes 2\n";
    }
    if !line.contains("memfd F") {
        p += "P: memfd F 1u\n";
    }
    if !line.contains("mmap A") {
        p += "P: mmap A 1u\n";
    }
    if !line.contains("fork C") {
        p += "P: fork C\n";
    }
    p += "P: mmap B 1u\n";
    if !line.contains("pin R =") {
        p += "P: pin R = B[..] write\n";
    }
    if !line.contains("mirror M =") {
        p += "P: mirror M = B[..]\n";
    }
    p
}

fn parses(src: &str) -> Scenario {
    match parse("contract.thp", src) {
        Ok(s) => s,
        Err(e) => panic!("does not parse: {e}\n{src}"),
    }
}

/// Checks one block of the contract; returns how many statements it checked.
fn check_block(block: &str) -> usize {
    let first = block.lines().next().unwrap_or("").trim_start();
    if first.starts_with("geometry") || first.starts_with("together") {
        let src = format!(
            "{}{block}",
            if first.starts_with("together") {
                prelude("")
            } else {
                String::new()
            }
        );
        let s = parses(&src);
        assert!(!s.items.is_empty() || s.header != Default::default());
        return 1;
    }
    let mut n = 0;
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        for v in variants(line) {
            let src = if v.trim_start().starts_with("process P") {
                v.clone()
            } else {
                format!("{}{v}\n", prelude(&v))
            };
            let s = parses(&src);
            assert!(!s.items.is_empty(), "{src}");
            n += 1;
        }
    }
    n
}

#[test]
fn every_contract_example_parses() {
    let n: usize = BLOCKS.iter().map(|b| check_block(b)).sum();
    assert!(n >= 30, "only {n} examples");
}

#[test]
fn current_contract_examples_parse() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/SCENARIO-LANGUAGE.md"
    );
    let Ok(doc) = std::fs::read_to_string(path) else {
        eprintln!("{path} not found; skipped");
        return;
    };
    let mut n = 0;
    for (i, chunk) in doc.split("```").enumerate() {
        if i % 2 == 1 {
            n += check_block(chunk.strip_prefix('\n').unwrap_or(chunk));
        }
    }
    assert!(n >= 30, "only {n} examples");
}

#[test]
fn header_block_values() {
    let s = parses(BLOCK_0);
    let h = &s.header;
    assert_eq!(
        h.geometry.as_ref().map(|g| g.value),
        Some(thpsim_scenario::Geometry::X86_64)
    );
    assert_eq!(
        h.thp.as_ref().map(|g| g.value),
        Some(thpsim_scenario::ThpPolicy::Madvise)
    );
    assert_eq!(h.zero_page.as_ref().map(|g| g.value), Some(true));
    assert_eq!(h.nodes.as_ref().map(|g| g.value), Some(2));
    assert_eq!(h.hugetlb_pool.as_ref().map(|g| g.value), Some(8));
    let swap = h
        .swap
        .as_ref()
        .map(|q| q.resolve(&thpsim_scenario::UnitSizes::TINY).unwrap());
    assert_eq!(swap, Some(64 << 20));
    assert_eq!(h.reverts.len(), 1);
    assert_eq!(h.reverts[0].value, "NAME");
    assert_eq!(h.kernel(), thpsim_scenario::KernelVersion::V5_8);
    assert!(h.kernel.is_some());
    assert_eq!(
        s.khugepaged_limits(None).unwrap(),
        thpsim_scenario::KhugepagedLimits {
            max_ptes_none: 511,
            max_ptes_swap: 64,
            max_ptes_shared: 256
        }
    );
    let memory = h
        .memory
        .as_ref()
        .map(|q| q.resolve(&thpsim_scenario::UnitSizes::X86_64).unwrap());
    assert_eq!(memory, Some(2 << 30));
    assert!(s.items.is_empty());
}

#[test]
fn together_block_shape() {
    let s = parses(&format!("{}{BLOCK_6}", prelude("")));
    let t = s
        .items
        .iter()
        .find_map(|i| match i {
            Item::Together(t) => Some(t),
            _ => None,
        })
        .expect("a together block");
    assert_eq!(t.threads.len(), 3);
    assert_eq!(t.threads[0].steps.len(), 2);
    assert_eq!(
        s.text(t.threads[0].span),
        "thread P: write A[1p] = 0x33; read A[1p] == 0x33"
    );
    assert_eq!(s.text(t.threads[0].steps[1].span), "read A[1p] == 0x33");
    assert_eq!(t.threads[2].context, thpsim_scenario::Context::Kernel);
}

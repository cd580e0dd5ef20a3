//! The tree each construct parses to.

use thpsim_scenario::*;

fn one_step(prelude: &str, line: &str) -> (Scenario, Step) {
    let src = format!("{prelude}{line}");
    let s = parse("a.thp", &src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    let step = s.steps().last().cloned().expect("a step");
    assert_eq!(
        s.text(step.span),
        line.split(" #").next().unwrap_or(line).trim_end()
    );
    (s, step)
}

const P: &str = "process P\nP: mmap A 2u\nP: fork C\nP: memfd F 1u\n";

fn range(s: &Scenario, t: &Target) -> (Option<String>, Option<String>) {
    match &t.selector {
        Selector::Range { start, end } => (
            start.as_ref().map(|q| s.text(q.span).to_string()),
            end.as_ref().map(|q| s.text(q.span).to_string()),
        ),
        Selector::At(q) => panic!("a place: {q}"),
    }
}

#[test]
fn process_items() {
    let s = parse("a.thp", "thp always\nprocess P\nP: fork C\nP: exit").unwrap();
    match &s.items[0] {
        Item::Process(p) => {
            assert_eq!(p.value.text, "P");
            assert_eq!(s.text(p.span), "process P");
            assert_eq!(s.text(p.value.span), "P");
        }
        other => panic!("{other:?}"),
    }
    let steps: Vec<&Step> = s.steps().collect();
    assert!(
        matches!(&steps[0].op, Op::Fork { child } if child.text == "C" && s.text(child.span) == "C")
    );
    assert_eq!(steps[0].context.process().map(|n| n.as_str()), Some("P"));
    assert_eq!(steps[1].op, Op::Exit);
    assert_eq!(steps[1].expected(), Outcome::Ok);
    assert_eq!(s.text(steps[1].op_span), "exit");
}

#[test]
fn mmaps() {
    let (_, st) = one_step(P, "P: mmap B 2h");
    let Op::Mmap {
        region,
        backing,
        shared,
        ..
    } = &st.op
    else {
        panic!()
    };
    assert_eq!(
        (region.as_str(), &backing.value, *shared),
        ("B", &Backing::Anon, false)
    );
    assert_eq!(st.op.feature(), Feature::Core);
    let (_, st) = one_step(P, "P: mmap B 2h shared");
    assert!(matches!(
        st.op,
        Op::Mmap {
            shared: true,
            backing: Spanned {
                value: Backing::Anon,
                ..
            },
            ..
        }
    ));
    let (s, st) = one_step(P, "P: mmap B 1u hugetlb shared");
    let Op::Mmap {
        backing, shared, ..
    } = &st.op
    else {
        panic!()
    };
    assert_eq!(
        (&backing.value, *shared, s.text(backing.span)),
        (&Backing::Hugetlb, true, "hugetlb")
    );
    assert_eq!(st.op.feature(), Feature::Hugetlb);
    let (s, st) = one_step(P, "P: mmap B 1u file=F shared");
    let Op::Mmap {
        backing,
        shared: true,
        ..
    } = &st.op
    else {
        panic!()
    };
    assert!(matches!(&backing.value, Backing::File(f) if f.text == "F"));
    assert_eq!(s.text(backing.span), "file=F");
    assert_eq!(st.op.feature(), Feature::Memfd);
    let (_, st) = one_step("process P\n", "P: memfd G 1u hugetlb");
    assert!(matches!(&st.op, Op::Memfd { file, hugetlb: true, .. } if file.text == "G"));
    assert_eq!(
        st.features().iter().map(|f| f.0).collect::<Vec<_>>(),
        vec![Feature::Memfd, Feature::Hugetlb]
    );
}

#[test]
fn memory_management() {
    let (s, st) = one_step(P, "P: munmap A[0..1p]");
    let Op::Munmap { target } = &st.op else {
        panic!()
    };
    assert_eq!(target.region.text, "A");
    assert_eq!(range(&s, target), (Some("0".into()), Some("1p".into())));
    let (_, st) = one_step(P, "P: mprotect A[1h..2h] none");
    assert!(matches!(&st.op, Op::Mprotect { prot, .. } if prot.value == Protection::None));
    for (word, advice, feature) in [
        ("hugepage", Advice::Hugepage, Feature::Core),
        ("nohugepage", Advice::Nohugepage, Feature::Core),
        ("dontneed", Advice::Dontneed, Feature::Core),
        ("pageout", Advice::Pageout, Feature::Pageout),
        ("collapse", Advice::Collapse, Feature::Collapse),
        ("free", Advice::Free, Feature::Free),
    ] {
        let (_, st) = one_step(P, &format!("P: madvise A[..] {word}"));
        assert!(matches!(&st.op, Op::Madvise { advice: a, .. } if a.value == advice));
        assert_eq!(st.op.feature(), feature);
    }
    let nodes = format!("nodes 2\n{P}");
    let (s, st) = one_step(&nodes, "P: move-pages A[0..1h] node=1");
    let Op::MovePages { node, all, .. } = &st.op else {
        panic!()
    };
    assert_eq!((node.value, s.text(node.span), *all), (1, "1", false));
    assert_eq!(st.op.feature(), Feature::MovePages);
    assert_eq!(
        st.features().iter().map(|f| f.0).collect::<Vec<_>>(),
        vec![Feature::MovePages]
    );
    let (_, st) = one_step(&nodes, "P: move-pages A[0..1h] node=1 all");
    assert!(matches!(&st.op, Op::MovePages { all: true, .. }));
    assert_eq!(
        st.features().iter().map(|f| f.0).collect::<Vec<_>>(),
        vec![Feature::MovePages, Feature::MovePagesAll]
    );
    let (_, st) = one_step(P, "P: mlock A[..]");
    assert_eq!(st.op.feature(), Feature::Mlock);
    let (s, st) = one_step(P, "P: munlock A[1p..]");
    let Op::Munlock { target } = &st.op else {
        panic!()
    };
    assert_eq!(range(&s, target), (Some("1p".into()), None));
}

#[test]
fn access() {
    let (s, st) = one_step(P, "P: write A[0..2h] = 0x11");
    let Op::Write { target, value } = &st.op else {
        panic!()
    };
    assert_eq!(range(&s, target), (Some("0".into()), Some("2h".into())));
    assert_eq!((value.value, s.text(value.span)), (0x11, "0x11"));
    let (s, st) = one_step(P, "P: write A[1p+17] = 0x22");
    let Op::Write { target, .. } = &st.op else {
        panic!()
    };
    let Selector::At(q) = &target.selector else {
        panic!()
    };
    assert_eq!(s.text(q.span), "1p+17");
    let (_, st) = one_step(P, "P: read A[1p] == 0x22 => segv");
    assert!(matches!(&st.op, Op::Read { expect: Some(b), .. } if b.value == 0x22));
    assert_eq!(st.expected(), Outcome::Segv);
    let (_, st) = one_step(P, "P: read A[1p]");
    assert!(matches!(&st.op, Op::Read { expect: None, .. }));
    for (w, o) in [
        ("ok", Outcome::Ok),
        ("sigbus", Outcome::Sigbus),
        ("enomem", Outcome::Enomem),
        ("einval", Outcome::Einval),
        ("ebusy", Outcome::Ebusy),
        ("efault", Outcome::Efault),
    ] {
        let (s, st) = one_step(P, &format!("P: read A[1p] => {w}"));
        let o2 = st.outcome.as_ref().expect("outcome");
        assert_eq!((o2.value, s.text(o2.span)), (o, w));
    }
}

#[test]
fn pins_and_devices() {
    let (_, st) = one_step(P, "P: pin R = A[0..1h] write");
    assert!(matches!(&st.op, Op::Pin { pin, write: true, .. } if pin.text == "R"));
    assert_eq!(st.op.feature(), Feature::Pin);
    let pre = format!("{P}P: pin R = A[0..1h]\n");
    let (_, st) = one_step(&pre, "device: write R[1p] = 0x44");
    assert_eq!(st.context, Context::Device);
    assert!(
        matches!(&st.op, Op::DeviceWrite { target, value } if target.region.text == "R" && value.value == 0x44)
    );
    assert_eq!(st.op.feature(), Feature::Device);
    let (_, st) = one_step(&pre, "device: read R[1p] == 0x44");
    assert!(matches!(
        &st.op,
        Op::DeviceRead {
            expect: Some(_),
            ..
        }
    ));
    let (_, st) = one_step(&pre, "P: unpin R");
    assert!(matches!(&st.op, Op::Unpin { pin } if pin.text == "R"));
    assert_eq!(st.op.feature(), Feature::Pin);
}

#[test]
fn pin_flags() {
    let features = |st: &Step| st.features().iter().map(|f| f.0).collect::<Vec<_>>();
    let (s, st) = one_step(P, "P: pin R = A[0..1h] write fast");
    let Op::Pin {
        pin,
        target,
        write,
        fast,
    } = &st.op
    else {
        panic!()
    };
    assert_eq!(
        (pin.as_str(), s.text(target.span), *write, *fast),
        ("R", "A[0..1h]", true, true)
    );
    assert_eq!(features(&st), vec![Feature::Pin, Feature::PinFast]);
    let (_, st) = one_step(P, "P: pin R = A[0..1h]");
    assert!(matches!(
        &st.op,
        Op::Pin {
            write: false,
            fast: false,
            ..
        }
    ));
    assert_eq!(features(&st), vec![Feature::Pin, Feature::PinReadOnly]);
    let (_, st) = one_step(P, "P: pin R = A[..] fast write => efault");
    assert!(matches!(
        &st.op,
        Op::Pin {
            write: true,
            fast: true,
            ..
        }
    ));
    assert_eq!(st.expected(), Outcome::Efault);
    let (_, st) = one_step(P, "P: pin R = A[..] fast");
    assert_eq!(
        features(&st),
        vec![Feature::Pin, Feature::PinReadOnly, Feature::PinFast]
    );
    let (_, st) = one_step(P, "P: pin R = A[..] write");
    assert_eq!(features(&st), vec![Feature::Pin]);
    // Every feature blames the operation.
    assert!(st.features().iter().all(|f| f.1 == st.op_span));
}

#[test]
fn mirrors() {
    let (s, st) = one_step(P, "P: mirror M = A[0..1h]");
    let Op::Mirror { mirror, target } = &st.op else {
        panic!("{:?}", st.op)
    };
    assert_eq!(
        (mirror.as_str(), s.text(mirror.span), s.text(target.span)),
        ("M", "M", "A[0..1h]")
    );
    assert_eq!(
        (st.op.keyword(), st.op.feature()),
        ("mirror", Feature::Mirror)
    );
    assert_eq!(st.op.target().map(|t| t.region.as_str()), Some("A"));
    let pre = format!("{P}P: mirror M = A[0..1h]\n");
    let (s, st) = one_step(&pre, "mirror: read M[1p] == 0x44");
    assert_eq!(st.context, Context::Mirror);
    assert_eq!(st.context.to_string(), "mirror");
    let Op::MirrorRead { target, expect } = &st.op else {
        panic!("{:?}", st.op)
    };
    assert_eq!(
        (target.region.as_str(), s.text(target.selector_span)),
        ("M", "[1p]")
    );
    assert_eq!(expect.as_ref().map(|e| e.value), Some(0x44));
    assert_eq!(
        (st.op.keyword(), st.op.feature()),
        ("read", Feature::Mirror)
    );
    let (_, st) = one_step(&pre, "mirror: write M[1p] = 0x45");
    assert!(
        matches!(&st.op, Op::MirrorWrite { target, value } if target.region.text == "M" && value.value == 0x45)
    );
    assert_eq!(
        (st.op.keyword(), st.op.feature()),
        ("write", Feature::Mirror)
    );
    let (_, st) = one_step(&pre, "mirror: write M[0..1h] = 1");
    assert!(matches!(&st.op, Op::MirrorWrite { .. }));
    let (_, st) = one_step(&pre, "mirror: read M[0]");
    assert!(matches!(&st.op, Op::MirrorRead { expect: None, .. }));
    // In a thread, and registered by a thread (visible after the block).
    let s = parse(
        "m.thp",
        &format!("{pre}together\n thread mirror: write M[0] = 1; read M[0] == 1\n thread P: mirror N = A[..]\nend\nmirror: read N[1h]"),
    )
    .unwrap();
    let Some(Item::Together(t)) = s.items.iter().find(|i| matches!(i, Item::Together(_))) else {
        panic!()
    };
    assert_eq!(t.threads[0].context, Context::Mirror);
    assert_eq!(t.threads[0].steps[1].context, Context::Mirror);
    assert!(matches!(&t.threads[1].steps[0].op, Op::Mirror { mirror, .. } if mirror.text == "N"));
    let features: Vec<Feature> = s.features().into_iter().map(|f| f.0).collect();
    assert_eq!(features, vec![Feature::Memfd, Feature::Mirror]);
}

#[test]
fn kernel_work() {
    let (s, st) = one_step(P, "kernel: split-huge-page C A[0]");
    assert_eq!(st.context, Context::Kernel);
    let Op::SplitHugePage { process, target } = &st.op else {
        panic!()
    };
    assert_eq!(
        (process.as_str(), s.text(process.span), s.text(target.span)),
        ("C", "C", "A[0]")
    );
    let (_, st) = one_step(P, "kernel: khugepaged P A[..]");
    assert_eq!(st.op.feature(), Feature::Khugepaged);
    let (_, st) = one_step(P, "kernel: reclaim P A[..]");
    assert_eq!(st.op.feature(), Feature::Reclaim);
    let (_, st) = one_step(P, "kernel: deferred-split");
    assert_eq!(
        (st.op.clone(), st.op.feature()),
        (Op::DeferredSplit, Feature::Core)
    );
}

#[test]
fn expectations() {
    let s = parse(
        "e.thp",
        &format!("{P}expect P A[0] thp-pmd\nexpect P A[1p] mapcount 2\nexpect P A[1p] same C A[1p]\nexpect P A[1p] other C A[2p]\nexpect P A[1p] node 1\nshow P A[0..2h]"),
    )
    .unwrap();
    let mut it = s.items.iter().filter_map(|i| match i {
        Item::Expect(e) => Some(e),
        _ => None,
    });
    let e = it.next().unwrap();
    assert_eq!(s.text(e.span), "expect P A[0] thp-pmd");
    assert!(matches!(&e.what, Expectation::Kind(k) if k.value == PageKind::ThpPmd));
    assert!(matches!(&it.next().unwrap().what, Expectation::Mapcount(n) if n.value == 2));
    assert!(
        matches!(&it.next().unwrap().what, Expectation::Same { process, .. } if process.text == "C")
    );
    assert!(
        matches!(&it.next().unwrap().what, Expectation::Other { target, .. } if s.text(target.span) == "A[2p]")
    );
    assert!(matches!(&it.next().unwrap().what, Expectation::Node(n) if n.value == 1));
    let Some(Item::Show(sh)) = s.items.last() else {
        panic!()
    };
    assert_eq!(
        (sh.process.as_str(), s.text(sh.target.span)),
        ("P", "A[0..2h]")
    );
    for k in PageKind::ALL {
        parse("k.thp", &format!("{P}expect P A[0] {k}")).unwrap();
    }
    for (w, k) in [
        ("hugetlb", PageKind::Hugetlb),
        ("swap", PageKind::Swap),
        ("migration", PageKind::Migration),
        ("mlocked", PageKind::Mlocked),
    ] {
        let s = parse("k.thp", &format!("{P}expect P A[0] {w}")).unwrap();
        let Some(Item::Expect(e)) = s.items.last() else {
            panic!()
        };
        assert!(matches!(&e.what, Expectation::Kind(x) if x.value == k && s.text(x.span) == w));
        let want = if k == PageKind::Mlocked {
            vec![Feature::Mlock]
        } else {
            vec![]
        };
        let got: Vec<Feature> = s.features().into_iter().map(|f| f.0).collect();
        assert_eq!(got, [vec![Feature::Memfd], want.clone()].concat(), "{w}");
        let own: Vec<Feature> = e.features().into_iter().map(|f| f.0).collect();
        assert_eq!(own, want);
    }
}

#[test]
fn together_blocks() {
    let s = parse(
        "t.thp",
        &format!("{P}together # comment\n  thread P: write A[1p] = 0x33; read A[1p] == 0x33\n\n  thread kernel: deferred-split\nend\n"),
    )
    .unwrap();
    let Some(Item::Together(t)) = s.items.last() else {
        panic!()
    };
    assert_eq!(s.text(t.span), "together");
    assert_eq!(t.threads.len(), 2);
    assert_eq!(t.threads[0].steps.len(), 2);
    assert_eq!(s.text(t.threads[0].steps[0].span), "P: write A[1p] = 0x33");
    assert_eq!(t.threads[0].steps[1].context.to_string(), "P");
    assert_eq!(s.text(t.threads[1].span), "thread kernel: deferred-split");
    assert_eq!(s.steps().count(), 3 + 3);
}

#[test]
fn header_and_memory() {
    let s = parse("h.thp", "geometry tiny\nthp never\nzero-page off\nmemory 64m\nhugetlb-pool 0x10\nrevert a\nrevert b").unwrap();
    let h = &s.header;
    assert_eq!(h.geometry.as_ref().map(|g| g.value), Some(Geometry::Tiny));
    assert_eq!(h.thp.as_ref().map(|g| g.value), Some(ThpPolicy::Never));
    assert_eq!(h.zero_page.as_ref().map(|g| g.value), Some(false));
    assert_eq!(
        h.memory
            .as_ref()
            .map(|m| m.resolve(&UnitSizes::TINY).unwrap()),
        Some(64 << 20)
    );
    assert_eq!(h.hugetlb_pool.as_ref().map(|g| g.value), Some(16));
    assert_eq!(
        h.reverts
            .iter()
            .map(|r| r.value.as_str())
            .collect::<Vec<_>>(),
        vec!["a", "b"]
    );
    assert!(h.features().iter().any(|f| f.0 == Feature::Hugetlb));
}

#[test]
fn header_defaults() {
    let s = parse("d.thp", "process P").unwrap();
    let h = &s.header;
    assert_eq!(h.geometry(), Geometry::X86_64);
    assert_eq!(h.thp(), ThpPolicy::Always);
    assert!(h.zero_page());
    assert_eq!(h.nodes(), 1);
    assert_eq!(h.hugetlb_pool(), 0);
    assert!(h.swap().is_none());
    assert_eq!(h.kernel(), KernelVersion::V5_8);
    assert!(h.khugepaged.is_none() && h.kernel.is_none());
    let x86 = KhugepagedLimits {
        max_ptes_none: 511,
        max_ptes_swap: 64,
        max_ptes_shared: 256,
    };
    let tiny = KhugepagedLimits {
        max_ptes_none: 3,
        max_ptes_swap: 0,
        max_ptes_shared: 2,
    };
    assert_eq!(h.khugepaged_limits(&UnitSizes::X86_64).unwrap(), x86);
    assert_eq!(h.khugepaged_limits(&UnitSizes::TINY).unwrap(), tiny);
    assert_eq!(s.khugepaged_limits(None).unwrap(), x86);
    assert_eq!(s.khugepaged_limits(Some(Geometry::Tiny)).unwrap(), tiny);
    assert_eq!(UnitSizes::X86_64.hpage_pmd_nr(), 512);
    assert_eq!(UnitSizes::TINY.hpage_pmd_nr(), 4);
    assert!(h.features().is_empty());
    // Written values replace the defaults.
    let s = parse(
        "d.thp",
        "geometry tiny\nthp madvise\nzero-page off\nnodes 3\nhugetlb-pool 2\nswap 1m\nkernel 5.8",
    )
    .unwrap();
    let h = &s.header;
    assert_eq!(
        (
            h.geometry(),
            h.thp(),
            h.zero_page(),
            h.nodes(),
            h.hugetlb_pool()
        ),
        (Geometry::Tiny, ThpPolicy::Madvise, false, 3, 2)
    );
    assert_eq!(
        h.swap().map(|q| q.resolve(&UnitSizes::TINY).unwrap()),
        Some(1 << 20)
    );
    assert_eq!(h.kernel(), KernelVersion::V5_8);
    assert_eq!(s.text(h.kernel.as_ref().unwrap().span), "5.8");
}

#[test]
fn kernel_and_khugepaged_lines() {
    let s = parse(
        "k.thp",
        "kernel 3.16\nkhugepaged max_ptes_none=100\nrevert rmap-pmd-under-ptl\nrevert split-anon-vma-write",
    )
    .unwrap();
    let h = &s.header;
    assert_eq!(h.kernel(), KernelVersion::V3_16);
    assert_eq!(s.text(h.kernel.as_ref().unwrap().span), "3.16");
    let k = h.khugepaged.as_ref().unwrap();
    assert_eq!(s.text(k.span), "khugepaged max_ptes_none=100");
    assert_eq!(
        k.max_ptes_none.as_ref().map(|v| (v.value, s.text(v.span))),
        Some((100, "max_ptes_none=100"))
    );
    assert!(k.max_ptes_swap.is_none() && k.max_ptes_shared.is_none());
    // 3.16 has no swap or shared limits: its scan gives up on either.
    assert_eq!(
        s.khugepaged_limits(None).unwrap(),
        KhugepagedLimits {
            max_ptes_none: 100,
            max_ptes_swap: 0,
            max_ptes_shared: 0
        }
    );
    let features: Vec<(Feature, &str)> = s
        .features()
        .into_iter()
        .map(|(f, sp)| (f, s.text(sp)))
        .collect();
    assert_eq!(
        features,
        vec![
            (Feature::Kernel316, "3.16"),
            (Feature::KhugepagedLimits, "khugepaged max_ptes_none=100")
        ]
    );
    // Any subset, in any order; the rest keep their defaults.
    let s = parse("k.thp", "khugepaged max_ptes_shared=0 max_ptes_swap=8").unwrap();
    assert_eq!(
        s.khugepaged_limits(None).unwrap(),
        KhugepagedLimits {
            max_ptes_none: 511,
            max_ptes_swap: 8,
            max_ptes_shared: 0
        }
    );
    let s = parse(
        "k.thp",
        "khugepaged max_ptes_none=0x1ff max_ptes_swap=511 max_ptes_shared=511",
    )
    .unwrap();
    let k = s.header.khugepaged.as_ref().unwrap();
    let set: Vec<(&str, Option<u64>)> = k
        .settings()
        .iter()
        .map(|(key, v)| (*key, v.map(|v| v.value)))
        .collect();
    assert_eq!(
        set,
        vec![
            ("max_ptes_none", Some(511)),
            ("max_ptes_swap", Some(511)),
            ("max_ptes_shared", Some(511))
        ]
    );
    // Limits that fit x86_64 do not fit tiny (HPAGE_PMD_NR 4): an error at
    // the value when a runner overrides the geometry.
    let e = s.khugepaged_limits(Some(Geometry::Tiny)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 1, column 12: max_ptes_none=511 is above HPAGE_PMD_NR-1 = 3 in this geometry"
    );
    assert!(e.src.is_some());
    let e = s.check_geometry(Geometry::Tiny).unwrap_err();
    assert_eq!((e.line, e.column), (1, 12));
    assert!(s.check_geometry(Geometry::X86_64).is_ok());
    // The fix table.
    assert_eq!(
        KernelVersion::V3_16.has_fix("split-pmd-page-lock"),
        Some(false)
    );
    assert_eq!(
        KernelVersion::V3_16.has_fix("rmap-pmd-under-ptl"),
        Some(true)
    );
    assert_eq!(
        KernelVersion::V5_8.has_fix("migrate-unshare-hugetlb-pmd"),
        Some(true)
    );
    assert_eq!(KernelVersion::V5_8.has_fix("NAME"), None);
    assert_eq!(SEED_FIXES.len(), 5);
}

#[test]
fn pins_and_mirrors_follow_the_geometry() {
    // A 4h pin holds 8 MiB on x86_64 but 1 KiB on tiny.
    let s = parse(
        "g.thp",
        "process P\nP: mmap A 1u\nP: pin R = A[0..4h]\ndevice: read R[1k]\nP: mirror M = A[1h..]\nmirror: write M[3h..4h] = 1",
    )
    .unwrap();
    assert!(s.check_geometry(Geometry::X86_64).is_ok());
    let e = s.check_geometry(Geometry::Tiny).unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 4, column 15: `R[1k]` is outside pin `R`, which covers 1024 bytes (`A[0..4h]`, line 3)"
    );
    let s = parse(
        "g.thp",
        "process P\nP: mmap A 1u\nP: mirror M = A[1h..]\nmirror: write M[3h..4h] = 1",
    )
    .unwrap();
    let e = s.check_geometry(Geometry::Tiny).unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 4, column 16: `M[3h..4h]` is outside mirror `M`, which covers 768 bytes (`A[1h..]`, line 3)"
    );
    // hugetlb mappings round to huge pages, others to base pages.
    let tail = "P: pin R = A[..]\ndevice: read R[1h+1p]";
    for inside in [
        "P: memfd F 1h+1 hugetlb\nP: mmap A 1h+1 file=F shared",
        "P: mmap A 1h+1 hugetlb",
    ] {
        let src = format!("process P\n{inside}\n{tail}");
        parse("g.thp", &src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    }
    for outside in [
        "P: memfd F 1h+1\nP: mmap A 1h+1 file=F shared",
        "P: mmap A 1h+1",
    ] {
        let src = format!("process P\n{outside}\n{tail}");
        let e = parse("g.thp", &src).unwrap_err();
        assert!(e.message.contains("covers 2101248 bytes"), "{e}\n{src}");
    }
}

#[test]
fn serializes() {
    let s = parse(
        "j.thp",
        &format!("{P}P: madvise A[..] hugepage\nexpect P A[0] thp-pmd"),
    )
    .unwrap();
    let j = serde_json::to_value(&s).unwrap();
    let text = j.to_string();
    assert!(text.contains("\"thp-pmd\""), "{text}");
    assert!(text.contains("\"hugepage\""), "{text}");
    assert_eq!(j["items"][0]["Process"]["value"]["text"], "P");
}

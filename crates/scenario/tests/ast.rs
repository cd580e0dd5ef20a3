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

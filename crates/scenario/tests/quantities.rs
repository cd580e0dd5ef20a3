//! Quantities resolve with each geometry's unit sizes, and print back.

use thpsim_scenario::{parse, Geometry, Op, Quantity, Selector, Span, Unit, UnitSizes};

const X86: UnitSizes = UnitSizes::X86_64;
const TINY: UnitSizes = UnitSizes::TINY;

/// The size of `mmap A SIZE`.
fn size(q: &str) -> Quantity {
    let s = parse("q.thp", &format!("process P\nP: mmap A {q}")).unwrap_or_else(|e| panic!("{e}"));
    let size = match s.steps().next().map(|s| &s.op) {
        Some(Op::Mmap { size, .. }) => size.clone(),
        other => panic!("{other:?}"),
    };
    size
}

#[test]
fn unit_sizes() {
    assert_eq!(
        X86,
        UnitSizes {
            page_bytes: 4096,
            pmd_bytes: 2 << 20,
            pud_bytes: 1 << 30
        }
    );
    assert_eq!(
        TINY,
        UnitSizes {
            page_bytes: 64,
            pmd_bytes: 256,
            pud_bytes: 1024
        }
    );
    assert_eq!(Geometry::X86_64.unit_sizes(), X86);
    assert_eq!(Geometry::Tiny.unit_sizes(), TINY);
}

#[test]
fn resolve_both_geometries() {
    let cases: &[(&str, u64, u64)] = &[
        ("17", 17, 17),
        ("17b", 17, 17),
        ("0x11", 17, 17),
        ("0x1b", 27, 27),
        ("4k", 4096, 4096),
        ("64m", 64 << 20, 64 << 20),
        ("1g", 1 << 30, 1 << 30),
        ("1p", 4096, 64),
        ("1h", 2 << 20, 256),
        ("1u", 1 << 30, 1024),
        ("2h", 4 << 20, 512),
        ("0x10p", 16 * 4096, 16 * 64),
        ("1h+3p+17", (2 << 20) + 3 * 4096 + 17, 256 + 3 * 64 + 17),
        (
            "1u+1h+1p+1k+1",
            (1 << 30) + (2 << 20) + 4096 + 1024 + 1,
            1024 + 256 + 64 + 1024 + 1,
        ),
    ];
    for &(text, x86, tiny) in cases {
        let q = size(text);
        assert_eq!(q.resolve(&X86).unwrap(), x86, "{text} on x86_64");
        assert_eq!(q.resolve(&TINY).unwrap(), tiny, "{text} on tiny");
    }
}

#[test]
fn terms_and_spans() {
    let q = size("1h+3p+17");
    assert_eq!(
        q.terms,
        vec![(1, Unit::Pmd), (3, Unit::Page), (17, Unit::Bytes)]
    );
    assert_eq!(
        q.span,
        Span {
            offset: 20,
            len: 8,
            line: 2,
            column: 11
        }
    );
    assert!(q.depends_on_geometry());
    assert!(!size("4k+1").depends_on_geometry());
}

#[test]
fn overflow_names_the_quantity() {
    let q = Quantity {
        span: Span {
            offset: 5,
            len: 3,
            line: 2,
            column: 4,
        },
        terms: vec![(u64::MAX, Unit::Page)],
    };
    let e = q.resolve(&TINY).unwrap_err();
    assert_eq!((e.line, e.column), (2, 4));
    assert_eq!(
        e.to_string(),
        format!("line 2, column 4: `{}p` does not fit in 64 bits", u64::MAX)
    );
    // Fits on tiny, not on x86_64 (a custom geometry with huge units).
    let q = size("0x100000000000p");
    assert!(q.resolve(&TINY).is_ok());
    let big = UnitSizes {
        page_bytes: 1 << 40,
        ..X86
    };
    assert!(q.resolve(&big).is_err());
    // Through the scenario, the error carries the source.
    let s = parse("q.thp", "process P\nP: mmap A 0x100000000000p").unwrap();
    let Some(Op::Mmap { size, .. }) = s.steps().next().map(|s| &s.op) else {
        panic!()
    };
    let e = s.resolve(size, &big).unwrap_err();
    assert!(e.src.is_some());
    assert_eq!((e.line, e.column), (2, 11));
}

#[test]
fn display_round_trip() {
    let s = parse(
        "d.thp",
        "process P\nP: mmap A 1u+0x10\nP: write A[1h+3p+17..2h] = 1\nP: write A[..] = 1\nP: write A[1p..] = 1\nP: write A[..1p] = 1\nP: write A[4k] = 1",
    )
    .unwrap();
    let shown: Vec<String> = s
        .steps()
        .filter_map(|st| match &st.op {
            Op::Mmap { size, .. } => Some(size.to_string()),
            Op::Write { target, .. } => Some(target.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(
        shown,
        vec![
            "1u+16",
            "A[1h+3p+17..2h]",
            "A[..]",
            "A[1p..]",
            "A[..1p]",
            "A[4k]"
        ]
    );
    let Some(Op::Write { target, .. }) = s.steps().nth(1).map(|s| &s.op) else {
        panic!()
    };
    assert!(matches!(
        target.selector,
        Selector::Range {
            start: Some(_),
            end: Some(_)
        }
    ));
    assert_eq!(s.text(target.span), "A[1h+3p+17..2h]");
    assert_eq!(s.text(target.selector_span), "[1h+3p+17..2h]");
    assert_eq!(target.selector.to_string(), "[1h+3p+17..2h]");
}

#[test]
fn scenario_unit_sizes() {
    let s = parse("g.thp", "geometry tiny").unwrap();
    assert_eq!(s.unit_sizes(None), TINY);
    assert_eq!(s.unit_sizes(Some(Geometry::X86_64)), X86);
    let s = parse("g.thp", "").unwrap();
    assert_eq!(s.unit_sizes(None), X86);
}

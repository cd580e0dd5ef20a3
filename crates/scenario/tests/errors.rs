//! Each class of error names the right line, column and message.

use thpsim_scenario::{check_supported, parse, Feature, ScenarioError};

fn err(src: &str) -> ScenarioError {
    match parse("t.thp", src) {
        Ok(s) => panic!("parsed, expected an error:\n{src}\n{s:#?}"),
        Err(e) => e,
    }
}

/// Asserts the first error's position and message.
#[track_caller]
fn at(src: &str, line: usize, column: usize, message: &str) {
    let e = err(src);
    assert_eq!(
        (e.line, e.column, e.message.as_str()),
        (line, column, message),
        "\n{src}\n{e}"
    );
    assert_eq!((e.span().line, e.span().column), (line, column));
    assert_eq!(
        e.to_string(),
        format!("line {line}, column {column}: {message}")
    );
}

#[track_caller]
fn ok(src: &str) {
    if let Err(e) = parse("t.thp", src) {
        panic!("{e}\n{src}");
    }
}

const P: &str = "process P\nP: mmap A 2h\n";

#[test]
fn display_format() {
    let e = err("process P\n\nP: mmap A 2h\n\n\n\nP:     mmapp A 2h");
    assert_eq!(e.to_string(), "line 7, column 8: unknown operation `mmapp`");
    assert_eq!(e.help.as_deref(), Some("did you mean `mmap`?"));
}

#[test]
fn miette_rendering_shows_the_offending_text() {
    let e = err("process P\nP: mmapp A 2h\n");
    let mut out = String::new();
    miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
        .render_report(&mut out, &e)
        .unwrap();
    assert!(out.contains("P: mmapp A 2h"), "{out}");
    assert!(out.contains("t.thp:2:4"), "{out}");
    assert!(out.contains("did you mean `mmap`?"), "{out}");
    let src = e.src.as_ref().map(|s| s.name().to_string());
    assert_eq!(src.as_deref(), Some("t.thp"));
}

#[test]
fn header_errors() {
    at("thpp madvise", 1, 1, "unknown header key `thpp`");
    at(
        "geometry x86_64\nthp always\nthp never",
        3,
        1,
        "duplicate `thp` line",
    );
    at("swap 1m\nswap 2m", 2, 1, "duplicate `swap` line");
    at(
        "revert a-b\nrevert a-b",
        2,
        8,
        "`revert a-b` is given twice",
    );
    ok("revert a-b\nrevert c-d");
    at(
        &format!("{P}thp always"),
        3,
        1,
        "header lines must come before the first step",
    );
    at(
        "together\n thread kernel: deferred-split\nend\nnodes 2",
        4,
        1,
        "header lines must come before the first step",
    );
    ok("process P\nthp always\nP: exit");
    at("geometry arm", 1, 10, "unknown geometry `arm`");
    at("thp sometimes", 1, 5, "unknown THP policy `sometimes`");
    at("zero-page yes", 1, 11, "unknown zero-page setting `yes`");
    at(
        "nodes 0",
        1,
        7,
        "the number of nodes must be between 1 and 2^32-1",
    );
    at(
        "nodes 2k",
        1,
        7,
        "expected the number of nodes, a plain number without a unit, found `2k`",
    );
    at(
        "hugetlb-pool",
        1,
        13,
        "expected the hugetlb pool size (a number of pages) at the end of the statement",
    );
    at(
        "thp always never",
        1,
        12,
        "unexpected `never` after the end of the statement",
    );
    at(
        "memory 1g+",
        1,
        11,
        "expected a number after `+` at the end of the statement",
    );
}

#[test]
fn unknown_words() {
    at(
        &format!("{P}P: mmapp A 2h"),
        3,
        4,
        "unknown operation `mmapp`",
    );
    at(
        &format!("{P}foo-bar: exit"),
        3,
        1,
        "unknown context `foo-bar`",
    );
    at(
        &format!("{P}P: madvise A[..] hugepages"),
        3,
        18,
        "unknown advice `hugepages`",
    );
    at(
        &format!("{P}P: mprotect A[..] rwx"),
        3,
        19,
        "unknown protection `rwx`",
    );
    at(
        &format!("{P}expect P A[0] thp"),
        3,
        15,
        "unknown page kind `thp`",
    );
    at(
        &format!("{P}P: exit => crash"),
        3,
        12,
        "unknown outcome `crash`",
    );
    at(
        &format!("{P}P: mmap B 2h sharde"),
        3,
        14,
        "unknown mmap option `sharde`",
    );
    at(
        &format!("{P}frobnicate"),
        3,
        1,
        "unknown statement `frobnicate`",
    );
    at(&format!("{P}mmap B 2h"), 3, 1, "`mmap` needs a context");
    at(&format!("{P}P mmap B 2h"), 3, 1, "unknown statement `P`");
    at("P mmap B 2h", 1, 1, "unknown header key `P`");
    assert_eq!(
        err("P mmap B 2h").help.as_deref(),
        Some("missing `:`? a step is written `P: mmap ...`")
    );
    assert_eq!(
        err("thpp madvise").help.as_deref(),
        Some("did you mean `thp`?")
    );
    at(
        &format!("{P}P: expect P A[0] none"),
        3,
        4,
        "`expect` is written without a context",
    );
    at(&format!("{P}0: exit"), 3, 1, "unknown context `0`");
    at(
        &format!("{P}[ exit"),
        3,
        1,
        "expected a statement, found `[`",
    );
}

#[test]
fn numbers() {
    at(
        &format!("{P}P: mmap B 2q"),
        3,
        11,
        "bad number `2q`: unknown unit `q`",
    );
    at(
        &format!("{P}P: mmap B 2kb"),
        3,
        11,
        "bad number `2kb`: unknown unit `kb`",
    );
    at(
        &format!("{P}P: mmap B 0x"),
        3,
        11,
        "bad number `0x`: no digits after `0x`",
    );
    at(
        &format!("{P}P: mmap B 99999999999999999999"),
        3,
        11,
        "number `99999999999999999999` is too large",
    );
    at(
        &format!("{P}P: mmap B 0xffffffffffffffff+1"),
        3,
        11,
        "`18446744073709551615+1` does not fit in 64 bits",
    );
    at(
        &format!("{P}P: mmap B 20000000000u"),
        3,
        11,
        "`20000000000u` does not fit in 64 bits",
    );
    at(
        &format!("{P}P: write A[1p+] = 1"),
        3,
        15,
        "expected a number after `+`, found `]`",
    );
    at(
        &format!("{P}P: write A[0] = 256"),
        3,
        17,
        "byte value 256 is out of range (0..=255)",
    );
    at(
        &format!("{P}P: read A[0] == 0x100"),
        3,
        17,
        "byte value 256 is out of range (0..=255)",
    );
    at(
        &format!("{P}P: write A[0] = 1p"),
        3,
        17,
        "expected a byte value, a plain number without a unit, found `1p`",
    );
    at(
        &format!("{P}P: write A[0] = 1+1"),
        3,
        18,
        "a byte value is a plain number, not a sum",
    );
    at(
        &format!("{P}P: write A[0..1p"),
        3,
        17,
        "expected `]` at the end of the statement",
    );
    at(
        &format!("{P}P: write A[0 1] = 2"),
        3,
        14,
        "expected `]`, found `1`",
    );
    at(&format!("{P}P: write A[0.1] = 2"), 3, 13, "unexpected `.`");
    ok(&format!("{P}P: write A[0x1b] = 0xff"));
    ok(&format!(
        "{P}P: write A[1h+3p+17..] = 255\nP: write A[..1p] = 0"
    ));
}

#[test]
fn processes() {
    at("P: mmap A 2h", 1, 1, "undeclared process `P`");
    at(
        "process P\nprocess P",
        2,
        9,
        "process `P` is declared twice (first on line 1)",
    );
    at(
        "process P\nprocess C\nP: fork C",
        3,
        9,
        "process `C` already exists (declared on line 2)",
    );
    at(
        "process P\nP: fork C\nprocess C",
        3,
        9,
        "process `C` already exists (created by `fork` on line 2)",
    );
    at(
        "process P\nP: fork P",
        2,
        9,
        "process `P` already exists (declared on line 1)",
    );
    at(
        "process P\nP: exit\nP: mmap A 1h",
        3,
        1,
        "process `P` has exited (line 2)",
    );
    at(
        "process P\nP: exit\nP: fork C",
        3,
        1,
        "process `P` has exited (line 2)",
    );
    at(
        "process P\nP: mmap A 1h\nP: exit\nexpect P A[0] none",
        4,
        8,
        "process `P` has exited (line 3)",
    );
    at(
        "process P\nP: mmap A 1h\nP: exit\nkernel: khugepaged P A[..]",
        4,
        20,
        "process `P` has exited (line 3)",
    );
    at(
        "process kernel",
        1,
        9,
        "`kernel` is a context, not a process name",
    );
    at(
        "process P\nP: fork device",
        2,
        9,
        "`device` is a context, not a process name",
    );
    at("process P-1", 1, 9, "bad process name `P-1`");
    at(
        "process P\nKernel: exit",
        2,
        1,
        "undeclared process `Kernel`",
    );
    assert_eq!(
        err("process P\nKernel: exit").help.as_deref(),
        Some("did you mean the `kernel` context?")
    );
    ok("process P\nP: exit\nprocess Q\nQ: exit");
}

#[test]
fn regions() {
    at(
        "process P\nP: write A[0] = 1",
        2,
        10,
        "region `A` was never mapped by process `P`",
    );
    at(
        &format!("{P}P: mmap A 1h"),
        3,
        9,
        "process `P` already has a region `A` (line 2)",
    );
    at(
        &format!("{P}P: fork C\nP: mmap B 1h\nC: write B[0] = 1"),
        5,
        10,
        "region `B` was never mapped by process `C`",
    );
    at(
        &format!("{P}expect P A[0] same C A[0]"),
        3,
        20,
        "undeclared process `C`",
    );
    at(
        &format!("{P}process C\nexpect P A[0] other C A[0]"),
        4,
        23,
        "region `A` was never mapped by process `C`",
    );
    at(
        &format!("{P}show P B[..]"),
        3,
        8,
        "region `B` was never mapped by process `P`",
    );
    at(
        &format!("{P}kernel: split-huge-page P B[0]"),
        3,
        27,
        "region `B` was never mapped by process `P`",
    );
    // Still known after munmap (a run-time segv), and inherited at fork.
    ok(&format!(
        "{P}P: munmap A[..]\nP: write A[0] = 1 => segv\nP: fork C\nC: read A[0] => segv"
    ));
    // A file mapping needs the file.
    at(
        &format!("{P}P: mmap B 1h file=F shared"),
        3,
        19,
        "unknown file `F`",
    );
    at(
        &format!("{P}P: memfd F 1h\nP: memfd F 1h"),
        4,
        10,
        "file `F` already exists (line 3)",
    );
    at(
        &format!("{P}P: memfd F 1h\nP: mmap B 1h file=F"),
        4,
        14,
        "a `file=F` mapping must be `shared`",
    );
    at(
        &format!("{P}P: mmap B 1h hugetlb hugetlb"),
        3,
        22,
        "`hugetlb` conflicts with `hugetlb`",
    );
    at(
        &format!("{P}P: mmap B 1h shared shared"),
        3,
        21,
        "`shared` is given twice",
    );
    ok(&format!(
        "{P}P: memfd F 1h\nP: mmap B 1h shared file=F\nP: fork C\nC: mmap D 1h file=F shared"
    ));
}

#[test]
fn contexts() {
    at(
        "kernel: mmap A 1h",
        1,
        9,
        "`mmap` needs a process context, not `kernel`",
    );
    at(
        "device: mmap A 1h",
        1,
        9,
        "`mmap` needs a process context, not `device`",
    );
    at(
        "kernel: write A[0] = 1",
        1,
        9,
        "`write` needs a process, `device` or `mirror` context, not `kernel`",
    );
    at(
        &format!("{P}P: deferred-split"),
        3,
        4,
        "`deferred-split` is kernel work: it needs the `kernel` context, not `P`",
    );
    at(
        "device: split-huge-page P A[0]",
        1,
        9,
        "`split-huge-page` is kernel work: it needs the `kernel` context, not `device`",
    );
    at("kernel: frob", 1, 9, "unknown operation `frob`");
}

#[test]
fn places_and_ranges() {
    at(
        &format!("{P}P: munmap A[0]"),
        3,
        12,
        "`munmap` needs a range such as `A[0..1p]` or `A[..]`, not a single place",
    );
    at(
        &format!("{P}P: read A[0..1]"),
        3,
        10,
        "`read` needs a single place such as `A[1p]`, not a range",
    );
    at(
        &format!("{P}expect P A[..] none"),
        3,
        11,
        "`expect` needs a single place such as `A[1p]`, not a range",
    );
    at(
        &format!("{P}P: munmap A"),
        3,
        12,
        "expected `[` after `A` at the end of the statement",
    );
    ok(&format!("{P}show P A[1p]\nshow P A[..]"));
}

#[test]
fn blocks() {
    at(
        "process P\ntogether\n  thread P: exit\n",
        2,
        1,
        "`together` without `end`",
    );
    at("end", 1, 1, "`end` without `together`");
    at(
        "process P\ntogether\n thread P: exit\ntogether\nend",
        4,
        1,
        "`together` blocks cannot be nested",
    );
    at("together\nend", 1, 1, "empty `together` block");
    at(
        "process P\nthread P: exit",
        2,
        1,
        "`thread` outside a `together` block",
    );
    at(
        "process P\ntogether\nP: exit\nend",
        3,
        1,
        "only `thread` lines may appear inside `together`, found `P`",
    );
    at(
        "process P\ntogether\n thread P:\nend",
        3,
        11,
        "a thread needs at least one step",
    );
    at(
        "process P\ntogether\n thread P exit\nend",
        3,
        11,
        "expected `:` after the thread's context, found `exit`",
    );
    at(
        "process P\ntogether\n thread P: exit; thread P: exit\nend",
        3,
        18,
        "`thread` must start its own line",
    );
    at(
        "process P\nprocess Q\ntogether\n thread P: exit; Q: exit\nend",
        4,
        18,
        "this thread runs as `P`, not `Q`",
    );
    ok("process P\ntogether\n thread P: fork C; P: exit\nend");
    at(
        "process P\ntogether\n thread P: exit; fork C\nend",
        3,
        18,
        "process `P` has exited (line 3)",
    );
    at(
        "process P\ntogether\n thread P: exit; P: exit\nend",
        3,
        18,
        "process `P` has exited (line 3)",
    );
    ok("process P\ntogether; thread P: exit\nend");
}

#[test]
fn together_visibility() {
    // What a thread makes is visible after the block, not in other threads.
    ok(&format!("{P}together\n thread P: fork C\n thread P: mmap B 1h\nend\nC: write A[0] = 1\nP: write B[0] = 1"));
    at(
        &format!("{P}together\n thread P: fork C\n thread C: exit\nend"),
        5,
        9,
        "undeclared process `C`",
    );
    at(
        &format!("{P}together\n thread P: fork C\n thread P: fork C\nend"),
        5,
        17,
        "process `C` is also created by another thread of this `together` block",
    );
    at(
        &format!("{P}together\n thread P: mmap B 1h\n thread P: mmap B 1h\nend"),
        5,
        17,
        "region `B` of `P` is also mapped by another thread of this `together` block",
    );
    // A thread sees its own earlier steps.
    ok(&format!("{P}together\n thread P: fork C; pin R = A[..]\n thread kernel: deferred-split\nend\ndevice: write R[0] = 1"));
    // Exit in one thread races with steps in another; afterwards it has exited.
    ok(&format!("{P}process Q\ntogether\n thread P: exit\n thread P: write A[0] = 1\n thread kernel: split-huge-page P A[0]\nend"));
    at(
        &format!("{P}together\n thread P: exit\n thread kernel: deferred-split\nend\nP: exit"),
        7,
        1,
        "process `P` has exited (line 4)",
    );
    // Unpin in one thread; the pin is gone after the block.
    at(
        &format!("{P}P: pin R = A[..]\ntogether\n thread P: unpin R\n thread device: write R[0] = 1\nend\ndevice: read R[0]"),
        8,
        14,
        "unknown pin `R`",
    );
}

#[test]
fn pins() {
    at(&format!("{P}P: unpin R"), 3, 10, "unknown pin `R`");
    at("device: write R[0] = 1", 1, 15, "unknown pin `R`");
    at(
        &format!("{P}P: pin R = A[..]\nP: pin R = A[..]"),
        4,
        8,
        "pin `R` is already held (line 3)",
    );
    at(
        &format!("{P}P: pin R A[..]"),
        3,
        10,
        "expected `=` after the pin's name (`pin R = A[0..1h]`), found `A`",
    );
    at(
        &format!("{P}P: pin R = A[0]"),
        3,
        13,
        "`pin` needs a range such as `A[0..1p]` or `A[..]`, not a single place",
    );
    ok(&format!("{P}P: pin R = A[..]\nP: unpin R\nP: pin R = A[0..1p] write\ndevice: write R[0..1p] = 1\ndevice: read R[0] == 1"));
}

#[test]
fn statement_shape() {
    at(
        &format!("{P}P: exit now"),
        3,
        9,
        "unexpected `now` after the end of the statement",
    );
    at(
        &format!("{P}P: write A[0] 0x11"),
        3,
        15,
        "missing `=` in `write`",
    );
    at(
        &format!("{P}P: write A[0]"),
        3,
        14,
        "missing `=` in `write`",
    );
    at(
        &format!("{P}P: read A[0] = 1"),
        3,
        14,
        "a read compares with `==`, not `=`",
    );
    at(
        &format!("{P}expect P A[0] none => ok"),
        3,
        20,
        "`expect` takes no outcome",
    );
    at(&format!("{P}P: exit =>"), 3, 11, "expected the outcome (ok | segv | sigbus | enomem | einval | ebusy | efault) at the end of the statement");
    at(
        &format!("{P}P: move-pages A[..] node 1"),
        3,
        26,
        "expected `=` after `node`, found `1`",
    );
    at(
        &format!("{P}P:"),
        3,
        3,
        "expected an operation after `P:` at the end of the statement",
    );
    ok(&format!("{P};;P: exit;"));
}

#[test]
fn lexical_errors() {
    at(&format!("{P}P: exit €"), 3, 9, "unexpected character `€`");
    at("# ééé\nprocess Pé", 2, 10, "unexpected character `é`");
    at("process P\tQ\x07", 1, 12, "unexpected character `\\u{7}`");
}

#[test]
fn first_error_by_position_with_related() {
    // A name error before a syntax error is reported first ...
    let e = err("P: exit\nprocess Q\nQ: frob");
    assert_eq!((e.line, e.message.as_str()), (1, "undeclared process `P`"));
    assert_eq!(e.related.len(), 1);
    assert_eq!(e.related[0].line, 3);
    // ... and a syntax error before a name error too.
    let e = err("process P\nP: frob\nQ: exit\nP: zap");
    assert_eq!(
        (e.line, e.message.as_str()),
        (2, "unknown operation `frob`")
    );
    assert_eq!(e.related.len(), 1, "{:?}", e.related);
    assert_eq!(e.related[0].message, "unknown operation `zap`");
}

#[test]
fn unsupported_features() {
    let s = parse(
        "t.thp",
        &format!("{P}P: pin R = A[..]\nP: madvise A[..] collapse"),
    )
    .unwrap();
    let e = check_supported(&s, |f| f == Feature::Core).unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 3, column 4: `pin` is not supported yet"
    );
    let e = check_supported(&s, |f| f != Feature::Collapse).unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 4, column 18: `madvise collapse` is not supported yet"
    );
    assert!(check_supported(&s, |f| f != Feature::Swap).is_ok());

    let s = parse(
        "t.thp",
        "nodes 2\nswap 1m\nhugetlb-pool 0\nprocess P\nP: memfd F 1u hugetlb",
    )
    .unwrap();
    let found: Vec<Feature> = s.features().into_iter().map(|(f, _)| f).collect();
    assert_eq!(
        found,
        vec![
            Feature::Nodes,
            Feature::Swap,
            Feature::Memfd,
            Feature::Hugetlb
        ]
    );
    let e = check_supported(&s, |f| f != Feature::Swap).unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 2, column 6: `swap` is not supported yet"
    );
    let e = check_supported(&s, |f| f != Feature::Hugetlb).unwrap_err();
    assert_eq!((e.line, e.column), (5, 4));
}

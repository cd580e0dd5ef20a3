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

#[test]
fn kernel_line() {
    at("kernel 4.4", 1, 8, "unknown kernel version `4.4`");
    at("kernel 5", 1, 8, "unknown kernel version `5`");
    at("kernel 3.16.1", 1, 8, "unknown kernel version `3.16.1`");
    at(
        "kernel",
        1,
        7,
        "expected the kernel version (5.8 | 3.16) at the end of the statement",
    );
    at("kernel x86", 1, 1, "missing `:` after `kernel`");
    at("kernel 5.8\nkernel 3.16", 2, 1, "duplicate `kernel` line");
    at(
        "kernel 3.16 5.8",
        1,
        13,
        "unexpected `5.8` after the end of the statement",
    );
    at(
        &format!("{P}kernel 5.8"),
        3,
        1,
        "header lines must come before the first step",
    );
    at(
        &format!("{P}kernel deferred-split"),
        3,
        1,
        "missing `:` after `kernel`",
    );
    assert_eq!(
        err(&format!("{P}kernel deferred-split")).help.as_deref(),
        Some("kernel work is written `kernel: deferred-split ...`; the header line `kernel 5.8 | 3.16` selects the kernel design")
    );
    ok("kernel 5.8\nprocess P");
    ok("process P\nkernel 3.16\nP: exit");
}

#[test]
fn reverting_a_fix_the_kernel_lacks() {
    at(
        "kernel 3.16\nrevert split-pmd-page-lock",
        2,
        8,
        "kernel 3.16 does not have the fix `split-pmd-page-lock` (it landed in 5.8): there is nothing to revert",
    );
    assert_eq!(
        err("kernel 3.16\nrevert split-pmd-page-lock")
            .help
            .as_deref(),
        Some(
            "`kernel 3.16` (line 1) has these seed fixes: rmap-pmd-under-ptl, split-anon-vma-write"
        )
    );
    // The order of the lines does not matter.
    at(
        "revert migrate-unshare-hugetlb-pmd\nkernel 3.16",
        1,
        8,
        "kernel 3.16 does not have the fix `migrate-unshare-hugetlb-pmd` (it landed in 4.19): there is nothing to revert",
    );
    at(
        "kernel 3.16\nrevert rmap-pmd-under-ptl\nrevert thp-wp-accurate-mapcount",
        3,
        8,
        "kernel 3.16 does not have the fix `thp-wp-accurate-mapcount` (it landed in 4.6): there is nothing to revert",
    );
    ok("kernel 3.16\nrevert rmap-pmd-under-ptl\nrevert split-anon-vma-write");
    // 5.8 (also by default) has all five.
    ok("kernel 5.8\nrevert split-pmd-page-lock\nrevert rmap-pmd-under-ptl\nrevert split-anon-vma-write\nrevert migrate-unshare-hugetlb-pmd\nrevert thp-wp-accurate-mapcount");
    ok("revert split-pmd-page-lock\nrevert thp-wp-accurate-mapcount");
    // Names that are no seed fix are the runner's to judge.
    ok("kernel 3.16\nrevert NAME");
}

#[test]
fn khugepaged_line() {
    at(
        "khugepaged max_ptes_none=511 max_ptes_none=3",
        1,
        30,
        "`max_ptes_none` is given twice",
    );
    assert_eq!(
        err("khugepaged max_ptes_none=511 max_ptes_none=3")
            .help
            .as_deref(),
        Some("first at column 12")
    );
    at(
        "khugepaged max_ptes_nne=3",
        1,
        12,
        "unknown khugepaged setting `max_ptes_nne`",
    );
    assert_eq!(
        err("khugepaged max_ptes_nne=3").help.as_deref(),
        Some(
            "did you mean `max_ptes_none`? (max_ptes_none=N | max_ptes_swap=N | max_ptes_shared=N)"
        )
    );
    at(
        "khugepaged scan_sleep_millisecs=10",
        1,
        12,
        "unknown khugepaged setting `scan_sleep_millisecs`",
    );
    at(
        "khugepaged",
        1,
        11,
        "expected a khugepaged setting (max_ptes_none=N | max_ptes_swap=N | max_ptes_shared=N) at the end of the statement",
    );
    at(
        "khugepaged max_ptes_none 3",
        1,
        26,
        "expected `=` after `max_ptes_none` (`max_ptes_none=N`), found `3`",
    );
    at(
        "khugepaged max_ptes_none=",
        1,
        26,
        "expected the value of `max_ptes_none` (a number of PTEs) at the end of the statement",
    );
    at(
        "khugepaged max_ptes_swap=1p",
        1,
        26,
        "expected the value of `max_ptes_swap` (a number of PTEs), a plain number without a unit, found `1p`",
    );
    at(
        "khugepaged max_ptes_none=1\nkhugepaged max_ptes_swap=1",
        2,
        1,
        "duplicate `khugepaged` line",
    );
    // Values above HPAGE_PMD_NR-1 in the file's geometry (x86_64 by default).
    at(
        "khugepaged max_ptes_none=512",
        1,
        12,
        "max_ptes_none=512 is above HPAGE_PMD_NR-1 = 511 in this geometry",
    );
    at(
        "khugepaged max_ptes_none=3 max_ptes_shared=600",
        1,
        28,
        "max_ptes_shared=600 is above HPAGE_PMD_NR-1 = 511 in this geometry",
    );
    at(
        "geometry tiny\nkhugepaged max_ptes_swap=4",
        2,
        12,
        "max_ptes_swap=4 is above HPAGE_PMD_NR-1 = 3 in this geometry",
    );
    at(
        "khugepaged max_ptes_none=4\ngeometry tiny",
        1,
        12,
        "max_ptes_none=4 is above HPAGE_PMD_NR-1 = 3 in this geometry",
    );
    ok("geometry tiny\nkhugepaged max_ptes_none=3 max_ptes_swap=3 max_ptes_shared=3");
    ok("khugepaged max_ptes_none=511 max_ptes_swap=511 max_ptes_shared=0");
    // 3.16 has only max_ptes_none.
    at(
        "kernel 3.16\nkhugepaged max_ptes_none=0 max_ptes_shared=1",
        2,
        28,
        "kernel 3.16 has no `max_ptes_shared` setting",
    );
    at(
        "khugepaged max_ptes_swap=1\nkernel 3.16",
        1,
        12,
        "kernel 3.16 has no `max_ptes_swap` setting",
    );
    ok("kernel 3.16\nkhugepaged max_ptes_none=0");
    // Without `=` and with a process after it, it is kernel work.
    at(
        &format!("{P}khugepaged P A[..]"),
        3,
        1,
        "`khugepaged` needs a context",
    );
    at(
        &format!("{P}khugepaged max_ptes_none=1"),
        3,
        1,
        "header lines must come before the first step",
    );
}

#[test]
fn pin_options() {
    at(
        &format!("{P}P: pin R = A[..] write write"),
        3,
        24,
        "`write` is given twice",
    );
    at(
        &format!("{P}P: pin R = A[..] fast write fast"),
        3,
        29,
        "`fast` is given twice",
    );
    at(
        &format!("{P}P: pin R = A[..] wrte"),
        3,
        18,
        "unknown pin option `wrte`",
    );
    assert_eq!(
        err(&format!("{P}P: pin R = A[..] wrte")).help.as_deref(),
        Some("did you mean `write`?")
    );
    at(
        &format!("{P}P: pin R = A[..] longterm"),
        3,
        18,
        "unknown pin option `longterm`",
    );
    ok(&format!(
        "{P}P: pin R = A[..] fast\nP: unpin R\nP: pin R = A[..] fast write => efault"
    ));
}

#[test]
fn device_accesses_stay_inside_their_pin() {
    at(
        &format!("{P}P: pin R = A[0..1p] write\ndevice: write R[0..2p] = 1"),
        4,
        16,
        "`R[0..2p]` is outside pin `R`, which covers 4096 bytes (`A[0..1p]`, line 3)",
    );
    assert_eq!(
        err(&format!("{P}P: pin R = A[0..1p] write\ndevice: read R[1p]"))
            .help
            .as_deref(),
        Some("offsets in `R[...]` are relative to the start of the pin")
    );
    at(
        &format!("{P}P: pin R = A[1h..] write\ndevice: read R[1h]"),
        4,
        15,
        "`R[1h]` is outside pin `R`, which covers 2097152 bytes (`A[1h..]`, line 3)",
    );
    at(
        &format!("{P}P: pin R = A[..]\ndevice: write R[1p..1p] = 1"),
        4,
        16,
        "empty range [1p..1p]: the end must be after the start",
    );
    // Offsets are relative to the pin; the pin keeps its length after munmap.
    ok(&format!(
        "{P}P: pin R = A[1h..2h] write\nP: munmap A[..]\ndevice: write R[..] = 1\ndevice: read R[2p]"
    ));
    // The length follows the file's geometry.
    at(
        "geometry tiny\nprocess P\nP: mmap A 2h\nP: pin R = A[..] write\ndevice: read R[2h]",
        5,
        15,
        "`R[2h]` is outside pin `R`, which covers 512 bytes (`A[..]`, line 4)",
    );
    // A pin outside its region fails at run time; nothing to check it against.
    ok(&format!("{P}P: pin R = A[0..3h]\ndevice: read R[2h+1]"));
    // A forked child's regions have the parent's lengths.
    at(
        &format!("{P}P: fork C\nC: pin R = A[1h+1p..]\ndevice: read R[1h]"),
        5,
        15,
        "`R[1h]` is outside pin `R`, which covers 2093056 bytes (`A[1h+1p..]`, line 4)",
    );
}

#[test]
fn mirrors() {
    at(
        &format!("{P}mirror: read M[1p]"),
        3,
        14,
        "unknown mirror `M`",
    );
    assert_eq!(
        err(&format!("{P}mirror: read M[1p]")).help.as_deref(),
        Some("a mirror is registered by `P: mirror M = A[..]` before its first use")
    );
    at(
        &format!("{P}P: mirror M = A[..]\nmirror: write N[0] = 1"),
        4,
        15,
        "unknown mirror `N`",
    );
    // Declared before use, flow-sensitively.
    at(
        &format!("{P}mirror: write M[0] = 1\nP: mirror M = A[..]"),
        3,
        15,
        "unknown mirror `M`",
    );
    // Pins and mirrors are separate namespaces.
    at(
        &format!("{P}P: pin R = A[..] write\nmirror: read R[0]"),
        4,
        14,
        "unknown mirror `R`",
    );
    at(
        &format!("{P}P: mirror M = A[..]\ndevice: read M[0]"),
        4,
        14,
        "unknown pin `M`",
    );
    at(
        &format!("{P}P: mirror M = A[..]\nP: mirror M = A[0..1p]"),
        4,
        11,
        "mirror `M` already exists (line 3)",
    );
    at(
        &format!("{P}P: mirror M = B[..]"),
        3,
        15,
        "region `B` was never mapped by process `P`",
    );
    at(
        &format!("{P}P: mirror M A[..]"),
        3,
        13,
        "expected `=` after the mirror's name (`mirror M = A[0..1h]`), found `A`",
    );
    at(
        &format!("{P}P: mirror M = A[0]"),
        3,
        16,
        "`mirror` needs a range such as `A[0..1p]` or `A[..]`, not a single place",
    );
    // Accesses outside the mirror's range.
    at(
        &format!("{P}P: mirror M = A[0..1h]\nmirror: read M[1h]"),
        4,
        15,
        "`M[1h]` is outside mirror `M`, which covers 2097152 bytes (`A[0..1h]`, line 3)",
    );
    at(
        &format!(
            "{P}P: mirror M = A[1h..]\nmirror: write M[1p..] = 1\nmirror: write M[0..1h+1] = 1"
        ),
        5,
        16,
        "`M[0..1h+1]` is outside mirror `M`, which covers 2097152 bytes (`A[1h..]`, line 3)",
    );
    at(
        &format!("{P}P: mirror M = A[..]\nmirror: read M[0..1p]"),
        4,
        15,
        "`read` needs a single place such as `M[1p]`, not a range",
    );
    // Contexts.
    at(
        &format!("{P}mirror read M[0]"),
        3,
        1,
        "missing `:` after `mirror`",
    );
    at(
        &format!("{P}mirror M = A[..]"),
        3,
        1,
        "`mirror` needs a context",
    );
    at(
        "process mirror",
        1,
        9,
        "`mirror` is a context, not a process name",
    );
    at(
        &format!("{P}mirror: mmap B 1h"),
        3,
        9,
        "`mmap` needs a process context, not `mirror`",
    );
    at(
        &format!("{P}kernel: mirror M = A[..]"),
        3,
        9,
        "`mirror` needs a process context, not `kernel`",
    );
    at(
        &format!("{P}mirror: deferred-split"),
        3,
        9,
        "`deferred-split` is kernel work: it needs the `kernel` context, not `mirror`",
    );
    assert_eq!(
        err("process P\nMirror: exit").help.as_deref(),
        Some("did you mean the `mirror` context?")
    );
    // Together: a mirror registered by a thread is visible after the block,
    // not in the other threads; two threads cannot register the same name.
    ok(&format!(
        "{P}together\n thread P: mirror M = A[..]; P: write A[0] = 1\n thread kernel: deferred-split\nend\nmirror: read M[0] == 1"
    ));
    at(
        &format!("{P}together\n thread P: mirror M = A[..]\n thread mirror: read M[0]\nend"),
        5,
        22,
        "unknown mirror `M`",
    );
    at(
        &format!("{P}together\n thread P: mirror M = A[..]\n thread P: mirror M = A[..]\nend"),
        5,
        19,
        "mirror `M` is also registered by another thread of this `together` block",
    );
    // A mirror stays after its process exits (accesses then fault at run time).
    ok(&format!(
        "{P}P: mirror M = A[..]\nP: exit\nmirror: read M[0] => efault"
    ));
}

#[test]
fn move_pages_nodes() {
    at(
        &format!("{P}P: move-pages A[..] node=1"),
        3,
        26,
        "node 1 does not exist: the machine has 1 node",
    );
    at(
        &format!("nodes 2\n{P}P: move-pages A[..] node=2 all"),
        4,
        26,
        "node 2 does not exist: the machine has 2 nodes",
    );
    ok(&format!(
        "nodes 2\n{P}P: move-pages A[..] node=1 all\nP: move-pages A[..] node=0"
    ));
    at(
        &format!("nodes 2\n{P}P: move-pages A[..] node=1 every"),
        4,
        28,
        "unexpected `every` after the end of the statement",
    );
}

#[test]
fn new_features_are_reported_unsupported() {
    let unsupported = |src: &str, except: Feature| -> String {
        let s = parse("t.thp", src).unwrap_or_else(|e| panic!("{e}\n{src}"));
        check_supported(&s, |f| {
            matches!(f, Feature::Core | Feature::Nodes) || f == except
        })
        .unwrap_err()
        .to_string()
    };
    assert_eq!(
        unsupported(&format!("kernel 3.16\n{P}"), Feature::Core),
        "line 1, column 8: `kernel 3.16` is not supported yet"
    );
    assert_eq!(
        unsupported(&format!("{P}P: mirror M = A[..]"), Feature::Core),
        "line 3, column 4: `mirror` is not supported yet"
    );
    assert_eq!(
        unsupported(&format!("{P}P: pin R = A[..] write fast"), Feature::Pin),
        "line 3, column 4: `pin ... fast` is not supported yet"
    );
    assert_eq!(
        unsupported(&format!("{P}P: pin R = A[..]"), Feature::Pin),
        "line 3, column 4: `read-only pin` is not supported yet"
    );
    assert_eq!(
        unsupported(
            &format!("nodes 2\n{P}P: move-pages A[..] node=1 all"),
            Feature::MovePages
        ),
        "line 4, column 4: `move-pages ... all` is not supported yet"
    );
    assert_eq!(
        unsupported(&format!("khugepaged max_ptes_none=0\n{P}"), Feature::Core),
        "line 1, column 1: `khugepaged limits` is not supported yet"
    );
    assert_eq!(
        unsupported(&format!("{P}expect P A[0] mlocked"), Feature::Core),
        "line 3, column 15: `mlock` is not supported yet"
    );
    // `kernel 5.8` needs nothing.
    let s = parse("t.thp", &format!("kernel 5.8\n{P}")).unwrap();
    assert!(s.features().is_empty());
    // The mirror's accesses need the feature too (e.g. in a thread).
    let s = parse(
        "t.thp",
        &format!("{P}P: mirror M = A[..]\ntogether\n thread mirror: read M[0]\nend"),
    )
    .unwrap();
    let all: Vec<(Feature, usize)> = s
        .steps()
        .flat_map(|st| st.features())
        .filter(|(f, _)| *f != Feature::Core)
        .map(|(f, sp)| (f, sp.line))
        .collect();
    assert_eq!(all, vec![(Feature::Mirror, 3), (Feature::Mirror, 5)]);
}

#[test]
fn outcomes() {
    ok(&format!("{P}P: write A[0] = 1 => efault"));
    at(
        &format!("{P}P: write A[0] = 1 => efualt"),
        3,
        22,
        "unknown outcome `efualt`",
    );
}

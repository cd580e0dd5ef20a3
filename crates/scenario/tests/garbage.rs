//! No input makes the parser panic: random bytes, random token soup,
//! truncations of valid files, and assorted Unicode.

use thpsim_scenario::parse;

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const VALID: &str = "geometry tiny\nthp always\nzero-page off\nnodes 2\nhugetlb-pool 4\nswap 1m\nmemory 64m\nrevert split-pmd-page-lock\n\
kernel 5.8\nkhugepaged max_ptes_none=3 max_ptes_swap=0 max_ptes_shared=2\n\
process P\nP: mmap A 2h\nP: mmap H 1u hugetlb shared\nP: memfd F 1u\nP: mmap M 1u file=F shared\nP: fork C\n\
P: madvise A[..] hugepage\nP: write A[0..2h] = 0x11\nP: read A[1p+17] == 0x11\nP: pin R = A[0..1h] write\n\
device: write R[1p] = 0x44; device: read R[1p] == 0x44\nP: unpin R\nP: pin S = A[..] write fast\nP: pin T = A[1h..]\nP: mirror N = A[1p..]\nmirror: write N[1p] = 0x45; mirror: read N[0] == 0\n\
P: mprotect A[1h..2h] r\nP: move-pages A[0..1h] node=1\nP: move-pages A[..] node=0 all => efault\n\
P: mlock A[..]; P: munlock A[..]\ntogether\n  thread P: write A[1p] = 0x33; read A[1p] == 0x33\n  thread C: munmap A[..]\n\
  thread kernel: split-huge-page C A[0]\nend\nkernel: khugepaged P A[..]\nkernel: reclaim P A[..] => ok\nkernel: deferred-split\n\
expect P A[0] thp-pmd\nexpect P A[1p] mapcount 2\nexpect P A[1p] same C A[1p]\nexpect P A[1p] node 1\nexpect P A[0] mlocked\nshow P A[0..2h]\nC: exit\n";

const SOUP: &[&str] = &[
    "P",
    "C",
    "A",
    "R",
    "F",
    "kernel",
    "device",
    ":",
    ";",
    "[",
    "]",
    "..",
    "=",
    "==",
    "=>",
    "+",
    "0",
    "1p",
    "2h",
    "0x11",
    "1u",
    "256",
    "99999999999999999999",
    "0x",
    "mmap",
    "munmap",
    "write",
    "read",
    "fork",
    "exit",
    "pin",
    "unpin",
    "process",
    "together",
    "thread",
    "end",
    "expect",
    "show",
    "thp-pmd",
    "mapcount",
    "same",
    "node",
    "node=1",
    "file=F",
    "shared",
    "hugetlb",
    "memfd",
    "split-huge-page",
    "khugepaged",
    "deferred-split",
    "madvise",
    "hugepage",
    "geometry",
    "tiny",
    "swap",
    "revert",
    "\n",
    "\n",
    "\n",
    " ",
    "#",
    "é",
    "€",
    "\u{0}",
    "\r",
    "\t",
    "ok",
    "segv",
    "..]",
    "[..",
    "1h+3p+17",
    "kernel 5.8",
    "3.16",
    "khugepaged",
    "max_ptes_none=1",
    "max_ptes_shared",
    "mirror",
    "M",
    "fast",
    "all",
    "efault",
    "mlocked",
    "0.5",
    ".",
];

#[test]
fn the_valid_file_parses() {
    let s = parse("valid.thp", VALID).unwrap_or_else(|e| panic!("{e}"));
    assert!(s.steps().count() > 20);
}

#[test]
fn random_bytes() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..3000 {
        let len = rng.below(200);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let src = String::from_utf8_lossy(&bytes);
        let _ = parse("garbage.thp", &src);
        // Mostly ASCII, to reach the parser more often.
        let ascii: String = bytes.iter().map(|b| char::from(b % 96 + 32)).collect();
        let _ = parse("garbage.thp", &ascii.replace('~', "\n"));
    }
}

#[test]
fn token_soup() {
    let mut rng = Rng(42);
    for _ in 0..5000 {
        let n = rng.below(40);
        let mut src = String::new();
        for _ in 0..n {
            src.push_str(SOUP[rng.below(SOUP.len())]);
            if rng.below(2) == 0 {
                src.push(' ');
            }
        }
        if let Err(e) = parse("soup.thp", &src) {
            assert!(e.line >= 1 && e.column >= 1, "{e}");
            assert!(e.span().end() <= src.len(), "{e}");
            assert!(src.is_char_boundary(e.span().offset) && src.is_char_boundary(e.span().end()));
            let _ = format!("{e:?}");
        }
    }
}

#[test]
fn mutations_of_a_valid_file() {
    let mut rng = Rng(7);
    let chars: Vec<char> = VALID.chars().collect();
    for i in 0..chars.len() {
        // Every truncation.
        let cut: String = chars[..i].iter().collect();
        let _ = parse("cut.thp", &cut);
    }
    for _ in 0..3000 {
        let mut cs = chars.clone();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(cs.len());
            match rng.below(3) {
                0 => {
                    cs.remove(at);
                }
                1 => cs.insert(
                    at,
                    ['é', ';', ':', '[', ']', '.', '=', '\n', 'x', '9'][rng.below(10)],
                ),
                _ => cs[at] = ['€', ' ', '+', '#', 'h', '0'][rng.below(6)],
            }
        }
        let src: String = cs.into_iter().collect();
        if let Err(e) = parse("mut.thp", &src) {
            assert!(e.span().end() <= src.len());
            let mut out = String::new();
            let _ = miette::GraphicalReportHandler::new_themed(
                miette::GraphicalTheme::unicode_nocolor(),
            )
            .render_report(&mut out, &e);
        }
    }
}

#[test]
fn unicode_and_edge_cases() {
    for src in [
        "",
        "\n\n\n",
        "\r\n",
        "#",
        ";",
        "::::",
        "é",
        "process Pé",
        "process P\nP: mmap Ä 1h",
        "process P\nP: mmap A 1h\nP: write A[１] = 1",
        "\u{feff}process P",
        "process\u{a0}P",
        "process P\u{2028}P: exit",
        "🦀: exit",
        "P:🦀",
        "together\n\tthread 🦀",
        "process P\nP: write A[",
        "process P\nP: mmap A 1h\nP: write A[..",
        "process P\nP: mmap A 1h\nP: write A[0..1p] =",
        "expect",
        "expect P",
        "expect P A[",
        "show P A[..",
        "thread",
        "together\nthread kernel",
        "together\nthread kernel:",
        "=>",
        "P: exit =>",
        "0x",
        "0xffffffffffffffffff",
        "memory 18446744073709551615u",
        "nodes 99999999999",
    ] {
        let _ = parse("edge.thp", src);
    }
    let e = parse("u.thp", "# ünïcödé\nprocess P\nP: exit €").unwrap_err();
    assert_eq!((e.line, e.column), (3, 9));
}

#[test]
fn large_inputs_stay_fast() {
    let start = std::time::Instant::now();
    let long = "x".repeat(200_000);
    let _ = parse("long.thp", &long);
    let _ = parse("long.thp", &format!("process P\nP: {long} A 1h"));
    let _ = parse(
        "long.thp",
        &format!("process P\nP: mmap A {}", "9".repeat(100_000)),
    );
    let mut big = String::from("process P\nP: mmap A 1u\n");
    for i in 0..20_000 {
        big.push_str(&format!("P: write A[{i}] = {}\n", i % 256));
    }
    let s = parse("big.thp", &big).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.steps().count(), 20_001);
    assert!(start.elapsed().as_secs() < 20, "{:?}", start.elapsed());
}

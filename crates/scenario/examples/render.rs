//! Prints how an invalid scenario is reported: `cargo run --example render`.

fn main() {
    let src =
        "thp always\nprocess P\nP: mmap A 2h\n\nP: write A[0..1h] 0x11   # fill\nP: mmapp B 1h\n";
    match thpsim_scenario::parse("demo.thp", src) {
        Ok(_) => println!("parsed"),
        Err(e) => {
            println!("{e}");
            println!("{:?}", miette::Report::new(e));
        }
    }
}

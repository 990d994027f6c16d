//! Source fixture `rust-broken`: does not compile (a type error in `main`), so its
//! staging fails with rustc's message.

fn main() {
    let port: u16 = "not a number";
    println!("{port}");
}

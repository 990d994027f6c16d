//! Source fixture `rust-vendored`: a Cargo project whose one dependency, a proc-macro
//! crate, is vendored (`vendor/`, as `cargo vendor` lays it out), so the
//! `rust_buildpack` builds it offline and a restage finds it compiled in the cache.

fn main() {
    println!("{}", greeting_macro::greeting!());
}

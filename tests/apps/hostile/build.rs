//! Gives the component linker the WIT of `wasi:cli/exit@0.2.12` (see `wit/exit.wit`).

fn main() {
    let wit = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("wit/exit.wit");
    println!("cargo:rerun-if-changed={}", wit.display());
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("wasi") {
        println!("cargo:rustc-link-arg=--component-type={}", wit.display());
    }
}

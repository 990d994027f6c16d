//! A vendored proc-macro crate: built for the cell (a shared object), like `serde_derive`.

use proc_macro::TokenStream;

/// Expands to the string literal `"hello from a vendored macro"`.
#[proc_macro]
pub fn greeting(_input: TokenStream) -> TokenStream {
    "\"hello from a vendored macro\"".parse().expect("a string literal")
}

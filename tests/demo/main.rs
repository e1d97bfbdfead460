//! The demo (written once the functions exist).
fn main() {}

//! Being written (issue 4).
fn main() {}

//! Placeholder until the install benchmark lands.
fn main() {}

//! `calyx`: the node daemon (`calyx node run`) and the calicoctl-like client.

fn main() {}

//! `uprtcd-load`: the load generator's command line.

fn main() {}

//! Load and data for measuring the system: `millions seed` writes a realistic
//! social graph straight into the shards, `millions bench` drives open-loop load
//! through the public entry and checks that every acknowledged write is readable.
#![forbid(unsafe_code)]

pub mod bench;
pub mod seed;

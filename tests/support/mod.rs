//! Helpers shared by the integration tests.

// Each test crate that declares `mod support;` uses a different subset of these helpers.
#[allow(dead_code)]
pub mod cli;
#[allow(dead_code)]
pub mod media;
#[allow(dead_code)]
pub mod model;
#[allow(dead_code)]
pub mod server;

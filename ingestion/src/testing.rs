//! Test support for this crate's tests and the end-to-end tests (feature
//! `testing`): fakes of the third-party services the providers read.

pub mod kubernetes;
pub mod pagerduty;

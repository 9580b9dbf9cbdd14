//! journeys (issue 17, docs/journeys.md): multi-step cross-channel flows that act on the
//! resolved customer. This crate holds the definitions a marketer writes and checks them; the
//! service that runs them is built on it.

pub mod core;
pub mod definition;

pub use definition::{Journey, Problem, Problems, check};

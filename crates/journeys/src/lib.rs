//! journeys (issue 17, docs/journeys.md): multi-step cross-channel flows that act on the
//! resolved customer: the definitions a marketer writes and their checks, the pure core that runs
//! them per customer, and the records it writes. The service on the runtime is built on it.

pub mod core;
pub mod definition;
pub mod records;
pub mod service;

pub use definition::{Journey, Problem, Problems, check};

//! Live mode: follow a log as it grows, keep features and decisions current,
//! and publish decisions to the API's store.

pub mod allow;
pub mod control;
pub mod follow;
pub mod runner;
pub mod store;

pub use store::{LiveDecision, LiveStore, Query, Verdict};

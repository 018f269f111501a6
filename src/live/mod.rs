//! Live mode: follow a log as it grows, keep features and decisions current,
//! and publish decisions to the API's store.

pub mod allow;
pub mod collateral;
pub mod control;
pub mod feed;
pub mod learn;
pub mod publish;
pub mod runner;
pub mod shadow;
pub mod sink;
pub mod store;

pub use shadow::{ShadowLog, ShadowSink};
pub use sink::StoreSink;
pub use store::{LiveStore, Query, Verdict};

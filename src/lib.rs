//! gatewatch: behaviour analytics for API gateways.
//!
//! Streams gateway access logs, builds per-entity behaviour features over
//! event-time windows in Apache Arrow, scores them with SQL rules and linfa
//! models, and turns hits into decisions (deny, challenge, throttle) with a TTL
//! and a reason.
//!
//! The modules follow the data: [`source`] → [`event`] → [`features`] →
//! [`detect`] and [`model`] → [`decision`] → [`sink`], wired by [`engine`] and
//! driven by [`driver`] (one loop for replay and live mode); [`simulate`]
//! produces labelled traffic, [`eval`] measures decisions against labels and
//! [`analytics`] answers SQL over the stored tables. [`live`] follows a log as it
//! grows and [`api`] serves the decisions to gateways.

pub mod analytics;
pub mod api;
pub mod classes;
pub mod config;
pub mod decision;
pub mod detect;
pub mod driver;
pub mod engine;
pub mod eval;
pub mod event;
pub mod features;
pub mod fired;
pub mod fsutil;
pub mod fuzzing;
pub mod kafka;
pub mod live;
pub mod metrics;
pub mod model;
pub mod repartition;
pub mod sessions;
pub mod simulate;
pub mod sink;
pub mod source;
pub mod sysmem;

/// The `arrow` that DataFusion is built with; use this one, never a separate crate.
pub use datafusion::arrow;

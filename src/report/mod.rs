//! Reporting a run's outcome to people and machines.

pub mod human;
pub mod json;
pub mod model;
pub mod prometheus;

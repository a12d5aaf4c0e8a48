//! Reporting a run's outcome to people (and, later, machines).

pub mod human;

//! The wall clock, read in one place: Unix seconds and milliseconds.
//!
//! Session lifetimes, token expiry and cache deadlines are all Unix times, so
//! they compare across instances and with what Redis shows an operator.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 for a clock set before it).
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Whole seconds since the Unix epoch, floored.
pub fn unix_secs() -> u64 {
    unix_millis() / 1000
}

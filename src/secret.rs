//! `Secret`: a string that must never reach a log line, an error body or `Debug` output.
//!
//! The AppSecret and every `session_key` travel in this type, so an accidental
//! `{:?}` or `log::debug!("{config:?}")` prints `***` instead of the value.
//! Fresh secrets come from [`os_random_bytes`].

use std::fmt;

use rand::{rngs::OsRng, TryRngCore};
use serde::Deserialize;

/// `N` bytes from the operating system's CSPRNG (never a seeded or user-space generator).
pub fn os_random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the operating system's random source failed");
    bytes
}

/// A string value that prints as `***`. Read it only where it is used, with [`Secret::expose`].
///
/// Deserializes from a plain string, so configuration can hold it directly.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The raw value, for the one place that must send or use it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
    }
}

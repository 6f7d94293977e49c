//! `SessionId`: the 128-bit bearer token a client carries in the session header.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::secret::os_random_bytes;

const ID_BYTES: usize = 16;
const ID_HEX_LEN: usize = ID_BYTES * 2;

/// Whether each of eight bytes is a lower-case hex digit, all at once: per
/// byte, a carry into its top bit says whether it is at least the low end of a
/// range, another whether it is past the high end (bytes of 0x80 and up are
/// refused first, so no carry crosses into the next byte).
fn lower_hex_word(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const TOPS: u64 = 0x8080_8080_8080_8080;
    let within = |lo: u8, hi: u8| {
        let at_least_lo = word + ONES * u64::from(0x80 - lo);
        let above_hi = word + ONES * u64::from(0x7f - hi);
        at_least_lo & !above_hi & TOPS
    };
    word & TOPS == 0 && (within(b'0', b'9') | within(b'a', b'f')) == TOPS
}

/// 16 bytes from the operating system's CSPRNG, written as 32 lower-case hex digits.
///
/// `Debug` shows only a short hash, so a stray `{:?}` cannot leak a usable token.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionId([u8; ID_HEX_LEN]);

/// The header value was not exactly 32 lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedId;

impl SessionId {
    /// Draws a fresh id from the OS CSPRNG; never derived from anything else.
    pub fn generate() -> SessionId {
        let bytes: [u8; ID_BYTES] = os_random_bytes();
        let mut hex = [0u8; ID_HEX_LEN];
        hex::encode_to_slice(bytes, &mut hex).expect("32 hex digits for 16 bytes");
        SessionId(hex)
    }

    /// Accepts exactly 32 lower-case hex digits and nothing else (no trimming).
    ///
    /// Runs on every guarded request: eight bytes at a time.
    pub fn parse(text: &[u8]) -> Result<SessionId, MalformedId> {
        let hex: [u8; ID_HEX_LEN] = text.try_into().map_err(|_| MalformedId)?;
        let valid = hex.chunks_exact(8).fold(true, |ok, word| {
            ok & lower_hex_word(u64::from_le_bytes(word.try_into().expect("eight bytes")))
        });
        if !valid {
            return Err(MalformedId);
        }
        Ok(SessionId(hex))
    }

    /// The full id, for the one answer that hands it to its owner and for Redis keys.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex is ASCII")
    }

    /// A short, non-reversible tag for log lines: the first 8 hex digits of SHA-256(id).
    pub fn log_tag(&self) -> String {
        log_tag(&self.0)
    }
}

/// The log tag of any header value, well-formed or not.
pub fn log_tag(raw: &[u8]) -> String {
    hex::encode(&Sha256::digest(raw)[..4])
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId(#{})", self.log_tag())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_32_lower_hex_and_distinct() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert_ne!(a, b);
        assert_eq!(SessionId::parse(a.as_str().as_bytes()), Ok(a.clone()));
        assert!(!format!("{a:?}").contains(a.as_str()));
    }

    #[test]
    fn every_byte_in_every_place_is_judged_as_a_range_test_would() {
        let good = *b"0123456789abcdef0123456789abcdef";
        for place in 0..ID_HEX_LEN {
            for byte in 0..=255u8 {
                let mut text = good;
                text[place] = byte;
                assert_eq!(
                    SessionId::parse(&text).is_ok(),
                    matches!(byte, b'0'..=b'9' | b'a'..=b'f'),
                    "byte {byte:#04x} at {place}"
                );
            }
        }
    }

    #[test]
    fn parse_rejects_everything_else() {
        let good = "0123456789abcdef0123456789abcdef";
        assert!(SessionId::parse(good.as_bytes()).is_ok());
        for bad in [
            "",
            "0123456789ABCDEF0123456789abcdef",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            " 0123456789abcdef0123456789abcde",
            "0123456789abcdeg0123456789abcdef",
            "0123456789abcdef0123456789abcd\u{e9}",
        ] {
            assert_eq!(
                SessionId::parse(bad.as_bytes()),
                Err(MalformedId),
                "{bad:?}"
            );
        }
    }
}

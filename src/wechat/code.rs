//! `LoginCode`: a login code from `wx.login`, checked before it goes anywhere.

use std::fmt;

/// A login code as the mini-program sent it (from `wx.login`): 1 to 128 bytes of
/// printable ASCII without spaces. One-time, but still a credential until used,
/// so `Debug` does not show it.
#[derive(Clone)]
pub struct LoginCode(String);

impl LoginCode {
    pub const MAX_LEN: usize = 128;

    pub fn parse(code: String) -> Result<LoginCode, &'static str> {
        if code.is_empty() {
            Err("code is empty")
        } else if code.len() > Self::MAX_LEN {
            Err("code is longer than 128 bytes")
        } else if !code.bytes().all(|b| b.is_ascii_graphic()) {
            Err("code must be printable ASCII")
        } else {
            Ok(LoginCode(code))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for LoginCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoginCode(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_code_rules() {
        assert!(LoginCode::parse("081aBcDe2xYz".into()).is_ok());
        assert!(LoginCode::parse("x".repeat(128)).is_ok());
        for bad in ["", "a b", "caf\u{e9}", "tab\t", "nul\0"] {
            assert!(LoginCode::parse(bad.into()).is_err(), "{bad:?}");
        }
        assert!(LoginCode::parse("x".repeat(129)).is_err());
        assert_eq!(
            format!("{:?}", LoginCode::parse("secret".into()).unwrap()),
            "LoginCode(***)"
        );
    }
}

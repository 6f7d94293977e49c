//! [`Device`]: the device type a login names (`phone`, `pad`, `pc`, …), which
//! its session remembers and `session.one_per_device` keeps to one per user.

use std::fmt;

/// 1–32 characters of `a-z`, `0-9`, `_` and `-`: safe in a Redis hash field,
/// a log line and a JSON string as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device(String);

/// What a client sent as `device` that is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidDevice;

impl InvalidDevice {
    pub const MESSAGE: &'static str = "device must be 1-32 characters of a-z, 0-9, _ and -";
}

impl fmt::Display for InvalidDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::MESSAGE)
    }
}

impl Device {
    pub fn parse(text: String) -> Result<Device, InvalidDevice> {
        let allowed = |b: u8| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-');
        if (1..=32).contains(&text.len()) && text.bytes().all(allowed) {
            Ok(Device(text))
        } else {
            Err(InvalidDevice)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_types_are_short_lower_case_names() {
        for good in [
            "phone",
            "pc",
            "mac",
            "watch",
            "a",
            "car_2-b",
            &"x".repeat(32),
        ] {
            assert_eq!(Device::parse(good.to_string()).unwrap().as_str(), good);
        }
        for bad in [
            "",
            "Phone",
            "pc ",
            "手机",
            "a.b",
            "a/b",
            "a\"b",
            &"x".repeat(33),
        ] {
            assert_eq!(
                Device::parse(bad.to_string()),
                Err(InvalidDevice),
                "{bad:?}"
            );
        }
    }
}

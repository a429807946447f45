//! `"10s"`, `"7d"` in config files: humantime durations through serde,
//! the one helper every config section with a duration uses.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A required duration (`#[serde(with = "crate::serde_duration")]`).
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(serde::de::Error::custom)
}

/// An optional one (`#[serde(default, with = "crate::serde_duration::option")]`).
pub mod option {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| humantime::parse_duration(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

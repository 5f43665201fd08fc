//! Durations in configuration files: `"500ms"`, `"2s"`, `"10m"`, `"24h"`, `"3d"`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration written as a number and a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

pub use provd_connector_core::duration::parse;

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map(Dur).map_err(serde::de::Error::custom)
    }
}

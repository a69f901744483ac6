//! Integers a config file may hold, each a newtype checked against its bounds *while* it is read, so that an error
//! carries the value's line, column and key path (`backends[0].weight: weight must be between 0 and 1000, got
//! 2000`). Shared by every part of the file (backends, pools, health checks, balancing).

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// An integer in `min..=max`, with a message that names the bounds.
pub(super) struct Bounded {
    /// What the message calls the value ("port", "status"); empty when the key path says enough ("rise").
    pub(super) what: &'static str,
    pub(super) min: u64,
    pub(super) max: u64,
}

impl Bounded {
    pub(super) fn check<E: de::Error>(&self, v: i128) -> Result<u64, E> {
        let (what, min, max) = (self.what, self.min, self.max);
        if v >= i128::from(min) && v <= i128::from(max) {
            return Ok(v as u64);
        }
        Err(E::custom(if !what.is_empty() {
            format!("{what} must be between {min} and {max}, got {v}")
        } else if v < i128::from(min) {
            format!("must be at least {min}, got {v}")
        } else {
            format!("must be at most {max}, got {v}")
        }))
    }
}

impl Visitor<'_> for Bounded {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an integer from {} to {}", self.min, self.max)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        self.check(i128::from(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        self.check(i128::from(v))
    }
}

/// An integer newtype checked by [`Bounded`] inside deserialization.
macro_rules! bounded_int {
    ($(#[$doc:meta])* $name:ident($ty:ty): $what:literal, $min:expr, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name(pub $ty);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let (what, min, max) = ($what, $min, $max);
                let n = deserializer.deserialize_u64(Bounded { what, min, max })?;
                Ok($name(n as $ty))
            }
        }
    };
}

bounded_int!(
    /// A backend port.
    Port(u16): "port", 1, 65535
);
bounded_int!(
    /// The listen port; 0 asks for any free port.
    ListenPort(u16): "port", 0, 65535
);
bounded_int!(
    /// A count that must be at least 1 (workers, rise, fall, max_connections).
    AtLeastOne(u32): "", 1, u64::from(u32::MAX)
);
bounded_int!(
    /// Idle connections kept per backend per worker; 0 keeps none (a new connection for every request).
    IdleCount(u32): "", 0, 1_000_000
);
bounded_int!(
    /// A backend's share of new requests relative to the others of its pool; 0 gets none (still checked).
    Weight(u32): "weight", 0, 1000
);
bounded_int!(
    /// A percentage (`max_ejected_percent`).
    Percent(u8): "", 0, 100
);
bounded_int!(
    /// `[retries] budget_percent`: at most 1000 (ten retries for every request is no budget at all, and a larger
    /// number is more likely a typo than a wish).
    BudgetPercent(u32): "", 0, 1000
);

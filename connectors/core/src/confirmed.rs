//! Accounts a connector knows to exist lately: an add right after the create (or the
//! read) that found the account needs no second look before it (DESIGN §17).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an entry this connector just created, found or read counts as existing:
/// a grant's add right after its create needs no second look.
const CONFIRMED_FOR: Duration = Duration::from_secs(10);

/// Accounts known to exist, and since when (keys compared without case).
#[derive(Default)]
pub struct Confirmed(Mutex<HashMap<String, Instant>>);

impl Confirmed {
    pub fn note(&self, dn: &str) {
        if let Ok(mut m) = self.0.lock() {
            if m.len() > 10_000 {
                m.retain(|_, at| at.elapsed() < CONFIRMED_FOR);
            }
            m.insert(dn.to_ascii_lowercase(), Instant::now());
        }
    }

    /// An operation found the account gone after all (deleted out of band within the
    /// window): the next look must ask the target.
    pub fn forget(&self, dn: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(&dn.to_ascii_lowercase());
        }
    }

    pub fn recent(&self, dn: &str) -> bool {
        self.0
            .lock()
            .ok()
            .and_then(|m| m.get(&dn.to_ascii_lowercase()).copied())
            .is_some_and(|at| at.elapsed() < CONFIRMED_FOR)
    }
}

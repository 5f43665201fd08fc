//! Correlation looked up for many accounts at once: one search `(|(uid=a)(uid=b)…)` for a
//! batch of creates instead of one search each, which is a third of the directory's
//! requests when accounts are created and then given a group.
//!
//! What one search told is kept for [`TTL`] and used once. An account made by someone
//! else between that search and the add is missed only if it has another DN (the same
//! window exists between a create's own search and its add, only shorter); one with the
//! same DN makes the add answer 68 and is linked as before.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a looked-up answer may be used: a job that waits longer looks for itself.
pub const TTL: Duration = Duration::from_secs(30);
/// Correlation values per search, to keep filters a reasonable size.
pub const CHUNK: usize = 50;
/// Answers kept at most (jobs that never ran leave theirs behind until they expire).
const CAP: usize = 20_000;

/// What a search said about one correlation value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Known {
    /// No entry has it.
    Absent,
    /// Exactly one entry has it, exactly: its DN.
    Found(String),
}

/// Values compared roughly as a directory's caseIgnoreMatch does (RFC 4518: case folded,
/// surrounding spaces dropped, inner runs of spaces as one), so that "jdoe" and " JDoe "
/// count as the same account rather than as proof that one of them is absent.
fn fold(v: &str) -> String {
    v.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// The answer for each requested value that the entries settle beyond doubt. The server
/// matched with its own rules; provd only trusts what they cannot contradict:
/// - Found: exactly one entry holds a value that folds like the requested one, and holds
///   the requested value exactly;
/// - Absent: no entry folds like it, and every entry the search returned is explained by
///   some requested value (an entry matched by rules provd does not model — a numeric or
///   telephone match, say — might be this value's account);
/// - anything else (two holders, a variant spelling) is left to the create's own search.
pub fn resolve(requested: &[String], entries: &[(String, Vec<String>)]) -> Vec<(String, Known)> {
    let wanted: Vec<String> = requested.iter().map(|v| fold(v)).collect();
    let all_explained = entries
        .iter()
        .all(|(_, vals)| vals.iter().any(|x| wanted.contains(&fold(x))));
    requested
        .iter()
        .zip(&wanted)
        .filter_map(|(v, folded)| {
            let holders: Vec<&(String, Vec<String>)> = entries
                .iter()
                .filter(|(_, vals)| vals.iter().any(|x| fold(x) == *folded))
                .collect();
            match holders.as_slice() {
                [] if all_explained => Some((v.clone(), Known::Absent)),
                [(dn, vals)] if vals.iter().any(|x| x == v) => {
                    Some((v.clone(), Known::Found(dn.clone())))
                }
                _ => None,
            }
        })
        .collect()
}

/// Looked-up answers by (search base, correlation value), each used once.
#[derive(Default)]
pub struct Cache {
    map: Mutex<HashMap<(String, String), (Instant, Known)>>,
}

impl Cache {
    pub fn put(&self, base: &str, answers: Vec<(String, Known)>, now: Instant) {
        if let Ok(mut m) = self.map.lock() {
            if m.len() + answers.len() > CAP {
                m.retain(|_, (at, _)| now.duration_since(*at) < TTL);
            }
            for (value, known) in answers {
                if m.len() >= CAP {
                    break;
                }
                m.insert((base.to_string(), value), (now, known));
            }
        }
    }

    /// The answer for `value` under `base`, if one is fresh; it is used up.
    pub fn take(&self, base: &str, value: &str, now: Instant) -> Option<Known> {
        let mut m = self.map.lock().ok()?;
        let (at, known) = m.remove(&(base.to_string(), value.to_string()))?;
        (now.duration_since(at) < TTL).then_some(known)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(dn: &str, vals: &[&str]) -> (String, Vec<String>) {
        (dn.into(), vals.iter().map(|v| v.to_string()).collect())
    }

    fn req(vals: &[&str]) -> Vec<String> {
        vals.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn found_absent_and_doubtful() {
        let entries = [
            e("uid=a,ou=p", &["a"]),
            e("cn=B,ou=p", &["b"]),
            e("uid=x1,ou=p", &["dup"]),
            e("uid=x2,ou=p", &["dup"]),
            e("uid=C,ou=p", &["C"]),
        ];
        let got = resolve(&req(&["a", "b", "dup", "c", "none"]), &entries);
        assert_eq!(
            got,
            vec![
                ("a".into(), Known::Found("uid=a,ou=p".into())),
                ("b".into(), Known::Found("cn=B,ou=p".into())),
                // "dup": two entries; "c": only "C" exists — both left to the create.
                ("none".into(), Known::Absent),
            ]
        );
    }

    #[test]
    fn multi_valued_attribute_and_unicode_case() {
        let entries = [
            e("uid=j,ou=p", &["jdoe", "John.Doe"]),
            e("uid=s,ou=p", &["ÉVA"]),
        ];
        let got = resolve(&req(&["John.Doe", "éva"]), &entries);
        assert_eq!(
            got,
            vec![("John.Doe".into(), Known::Found("uid=j,ou=p".into()))]
        );
    }

    #[test]
    fn spacing_variants_are_the_same_account_not_an_absence() {
        // caseIgnoreMatch: " jdoe " finds uid=jdoe, so it must not be called absent.
        let entries = [e("uid=jdoe,ou=p", &["jdoe"])];
        let got = resolve(&req(&[" jdoe ", "ann", "jdoe"]), &entries);
        assert_eq!(
            got,
            vec![
                ("ann".into(), Known::Absent),
                ("jdoe".into(), Known::Found("uid=jdoe,ou=p".into())),
            ]
        );
    }

    #[test]
    fn an_entry_no_requested_value_explains_forbids_absent_answers() {
        // The server matched "+1 555 0100" by a rule provd does not model: which
        // requested value it belongs to is unknown, so none is declared absent.
        let entries = [e("cn=x,ou=p", &["+1 555 0100"]), e("uid=a,ou=p", &["a"])];
        let got = resolve(&req(&["a", "+15550100", "b"]), &entries);
        assert_eq!(got, vec![("a".into(), Known::Found("uid=a,ou=p".into()))]);
    }

    #[test]
    fn answers_are_used_once_and_expire() {
        let c = Cache::default();
        let t = Instant::now();
        c.put(
            "ou=p",
            vec![("a".into(), Known::Absent), ("b".into(), Known::Absent)],
            t,
        );
        assert_eq!(c.take("ou=p", "a", t), Some(Known::Absent));
        assert_eq!(c.take("ou=p", "a", t), None, "used up");
        assert_eq!(c.take("ou=q", "b", t), None, "other base");
        assert_eq!(c.take("ou=p", "b", t + TTL), None, "expired");
    }
}

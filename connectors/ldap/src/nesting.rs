//! Nested groups, read and never written (DESIGN §24): an account in group B, B in group
//! A, holds A through B. provd adds and removes direct members only; the read-back tells
//! the rest, so that the access list and drift show effective membership `via` the group
//! the account is directly in. AD answers "in A at any depth?" itself
//! (LDAP_MATCHING_RULE_IN_CHAIN); the path, and everything on other directories, comes
//! from walking `member` upwards from the account.

use std::collections::{BTreeMap, VecDeque};

use ldap3::{Ldap, Scope, SearchEntry};
use provd_connector_core::ConnectorError;

use crate::error::{from_ldap, from_result};
use crate::escape::{dn_key, filter_value};

/// AD's matching rule that follows `member` through nesting.
const IN_CHAIN: &str = "1.2.840.113556.1.4.1941";

/// Groups read on the way up, at most: a cycle or a huge tree stops here.
const MAX_GROUPS: usize = 500;

/// DNs under `base` whose `attr` holds `value` (`filter` may add a matching rule).
async fn holders(ldap: &mut Ldap, base: &str, filter: &str) -> Result<Vec<String>, ConnectorError> {
    let r = ldap
        .search(base, Scope::Subtree, filter, vec!["1.1"])
        .await
        .map_err(|e| from_ldap("search groups", e))?;
    let (entries, result) = (r.0, r.1);
    match result.rc {
        0 => Ok(entries
            .into_iter()
            .filter(|e| !e.is_ref())
            .map(|e| SearchEntry::construct(e).dn)
            .collect()),
        32 => Ok(Vec::new()),
        _ => Err(from_result("search groups", &result)),
    }
}

/// AD: the groups under `base` that hold `member` at any depth (one search).
pub(crate) async fn in_chain(
    ldap: &mut Ldap,
    base: &str,
    attr: &str,
    member: &str,
) -> Result<Vec<String>, ConnectorError> {
    let filter = format!("({attr}:{IN_CHAIN}:={})", filter_value(member));
    holders(ldap, base, &filter).await
}

/// Every group above `member` (keyed by [`dn_key`]) with the group `member` is directly
/// in on the way there; breadth first, so the shortest path's.
pub(crate) async fn above(
    ldap: &mut Ldap,
    base: &str,
    attr: &str,
    member: &str,
) -> Result<BTreeMap<String, String>, ConnectorError> {
    let mut via: BTreeMap<String, String> = BTreeMap::new();
    let mut queue: VecDeque<(String, Option<String>)> =
        VecDeque::from([(member.to_string(), None)]);
    while let Some((dn, origin)) = queue.pop_front() {
        if via.len() >= MAX_GROUPS {
            break;
        }
        let filter = format!("({attr}={})", filter_value(&dn));
        for group in holders(ldap, base, &filter).await? {
            let key = dn_key(&group);
            if via.contains_key(&key) || key == dn_key(member) {
                continue;
            }
            let first = origin.clone().unwrap_or_else(|| group.clone());
            via.insert(key, first.clone());
            queue.push_back((group, Some(first)));
        }
    }
    Ok(via)
}

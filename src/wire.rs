//! The SailPoint-shaped answers provd gives (DESIGN §9): the 202 body of an accepted
//! request. One module, so that the API and the CLI print the same thing and the store
//! only keeps what it is handed.

use serde_json::{Value, json};

use crate::clock::to_ms;
use crate::model::{ItemType, Plan};

/// FNV-1a, 64 bits: a stable content hash (spool idempotency keys, attribute hashes).
/// Not for anything an attacker must not forge.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A stable 32-bit hash of what an entry asks for, for the upstream's `attributesHash`.
fn attributes_hash(identity: &str, ty: ItemType, id: &str, remove_at: Option<i64>) -> i32 {
    let text = format!("{identity}\u{0}{}\u{0}{id}\u{0}{remove_at:?}", ty.as_str());
    fnv1a64(text.as_bytes()) as i32
}

/// The 202 body: `{"newRequests":[…],"existingRequests":[…]}`, one entry per (identity,
/// item), duplicates under `existingRequests` with the request that holds them.
pub fn accepted(request_id: &str, plan: &Plan) -> Value {
    let mut new = Vec::new();
    let mut existing = Vec::new();
    for item in &plan.items {
        let remove_at = item.item.remove_at.map(to_ms);
        let entry = |ids: Vec<&str>| {
            json!({
                "requestedFor": item.identity,
                "requestedItemsDetails": [{ "type": item.item.ty.as_str(), "id": item.item.id }],
                "attributesHash": attributes_hash(&item.identity, item.item.ty, &item.item.id, remove_at),
                "accessRequestIds": ids,
            })
        };
        match &item.existing {
            Some((_, original)) => existing.push(entry(vec![original.as_str()])),
            None => new.push(entry(vec![request_id])),
        }
    }
    json!({ "newRequests": new, "existingRequests": existing })
}

#[cfg(test)]
mod tests {
    #[test]
    fn fnv_is_stable() {
        assert_eq!(super::fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(super::fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}

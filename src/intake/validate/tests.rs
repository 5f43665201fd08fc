use jiff::tz::TimeZone;
use serde_json::json;

use super::*;

struct K;

impl Known for K {
    fn identity_exists(&self, id: &str) -> bool {
        id.starts_with("u")
    }
    fn item_exists(&self, _ty: ItemType, id: &str) -> bool {
        !id.starts_with("unknown")
    }
}

fn now() -> Timestamp {
    "2030-01-01T00:00:00Z".parse().unwrap()
}

fn check(v: serde_json::Value) -> Result<ValidRequest, Invalid> {
    validate(v.to_string().as_bytes(), &K, &TimeZone::UTC, now())
}

/// The fields named by the errors, in order.
fn fields(v: serde_json::Value) -> Vec<String> {
    match check(v) {
        Ok(_) => vec![],
        Err(Invalid(e)) => e.into_iter().map(|f| f.field).collect(),
    }
}

fn grant() -> serde_json::Value {
    json!({ "requestedFor": ["u1"], "requestedItems": [{ "type": "ROLE", "id": "r1" }] })
}

#[test]
fn a_minimal_grant_is_accepted_with_defaults() {
    let r = check(grant()).unwrap();
    assert_eq!(r.request_type, RequestType::Grant);
    assert_eq!(r.requested_for, ["u1"]);
    assert_eq!(r.items[0].ty, ItemType::Role);
}

#[test]
fn malformed_json_and_non_objects() {
    assert_eq!(
        validate(b"{", &K, &TimeZone::UTC, now()).unwrap_err().0[0].field,
        "body"
    );
    assert_eq!(fields(json!([1])), ["body"]);
    let big = vec![b' '; MAX_BODY + 1];
    let e = validate(&big, &K, &TimeZone::UTC, now()).unwrap_err();
    assert!(e.0[0].message.contains("1 MiB"), "{e}");
}

#[test]
fn required_fields_and_empty_lists() {
    assert_eq!(
        fields(json!({ "requestedItems": [{ "type": "ROLE", "id": "r1" }] })),
        ["requestedFor"]
    );
    assert_eq!(
        fields(json!({ "requestedFor": ["u1"] })),
        ["requestedItems"]
    );
    assert_eq!(
        fields(json!({ "requestedFor": [], "requestedItems": [] })),
        ["requestedFor", "requestedItems"]
    );
}

#[test]
fn unknown_types_and_non_string_ids() {
    let mut v = grant();
    v["requestType"] = json!("MODIFY");
    assert_eq!(fields(v), ["requestType"]);
    let mut v = grant();
    v["requestedItems"][0]["type"] = json!("APP");
    assert_eq!(fields(v), ["requestedItems[0].type"]);
    let mut v = grant();
    v["requestedItems"][0]["id"] = json!(7);
    assert_eq!(fields(v), ["requestedItems[0].id"]);
    let mut v = grant();
    v["requestedFor"] = json!([42]);
    assert_eq!(fields(v), ["requestedFor[0]"]);
    let mut v = grant();
    v["requestedFor"] = json!("u1");
    assert_eq!(fields(v), ["requestedFor"]);
}

#[test]
fn unknown_fields_are_refused_so_typos_are_not_ignored() {
    let mut v = grant();
    v["requestedItems"][0]["removedate"] = json!("2031-01-01");
    assert_eq!(fields(v), ["requestedItems[0].removedate"]);
    let mut v = grant();
    v["extra"] = json!(1);
    assert_eq!(fields(v), ["extra"]);
}

#[test]
fn at_most_10_identities_and_25_entitlements() {
    let mut v = grant();
    v["requestedFor"] = json!((1..=10).map(|i| format!("u{i}")).collect::<Vec<_>>());
    assert!(check(v.clone()).is_ok());
    v["requestedFor"] = json!((1..=11).map(|i| format!("u{i}")).collect::<Vec<_>>());
    assert_eq!(fields(v), ["requestedFor"]);
    let ents = |n: usize| {
        json!(
            (0..n)
                .map(|i| json!({ "type": "ENTITLEMENT", "id": format!("e{i}") }))
                .collect::<Vec<_>>()
        )
    };
    let mut v = grant();
    v["requestedItems"] = ents(25);
    assert!(check(v.clone()).is_ok());
    v["requestedItems"] = ents(26);
    assert_eq!(fields(v), ["requestedItems"]);
}

#[test]
fn duplicates_in_one_request_are_refused() {
    let mut v = grant();
    v["requestedFor"] = json!(["u1", "u1"]);
    assert_eq!(fields(v), ["requestedFor[1]"]);
    let mut v = grant();
    v["requestedItems"] = json!([{ "type": "ROLE", "id": "r1" }, { "type": "ROLE", "id": "r1" }]);
    assert_eq!(fields(v), ["requestedItems[1].id"]);
}

#[test]
fn revoke_rules() {
    let revoke = json!({ "requestedFor": ["u1"], "requestType": "REVOKE_ACCESS",
        "requestedItems": [{ "type": "ROLE", "id": "r1", "comment": "left the team" }] });
    assert_eq!(
        check(revoke.clone()).unwrap().request_type,
        RequestType::Revoke
    );
    let mut v = revoke.clone();
    v["requestedFor"] = json!(["u1", "u2"]);
    assert_eq!(fields(v), ["requestedFor"]);
    let mut v = revoke.clone();
    v["requestedItems"][0]
        .as_object_mut()
        .unwrap()
        .remove("comment");
    assert_eq!(fields(v), ["requestedItems[0].comment"]);
    let mut v = revoke.clone();
    v["requestedItems"][0]["comment"] = json!("  ");
    assert_eq!(fields(v), ["requestedItems[0].comment"]);
    let mut v = revoke.clone();
    v["requestedItems"][0]["startDate"] = json!("2031-01-01");
    assert_eq!(fields(v), ["requestedItems[0].startDate"]);
    let mut v = revoke;
    v["requestedItems"][0]["removeDate"] = json!("2031-01-01");
    assert!(
        check(v).unwrap().items[0].remove_at.is_some(),
        "a revoke may be scheduled"
    );
}

#[test]
fn dates_must_be_future_and_ordered() {
    let mut v = grant();
    v["requestedItems"][0]["removeDate"] = json!("2029-12-31T23:59:59Z");
    assert_eq!(fields(v), ["requestedItems[0].removeDate"]);
    let mut v = grant();
    v["requestedItems"][0]["startDate"] = json!("2030-01-01T00:00:00Z");
    assert_eq!(
        fields(v),
        ["requestedItems[0].startDate"],
        "now is not in the future"
    );
    let mut v = grant();
    v["requestedItems"][0]["startDate"] = json!("2030-02-01");
    v["requestedItems"][0]["removeDate"] = json!("2030-02-01");
    assert_eq!(fields(v), ["requestedItems[0].removeDate"]);
    let mut v = grant();
    v["requestedItems"][0]["removeDate"] = json!("soon");
    assert_eq!(fields(v), ["requestedItems[0].removeDate"]);
    let mut v = grant();
    v["requestedItems"][0]["removeDate"] = json!(1_900_000_000);
    assert_eq!(fields(v), ["requestedItems[0].removeDate"]);
}

#[test]
fn bare_dates_use_the_request_zone_then_the_agent_zone() {
    let mut v = grant();
    v["requestedItems"][0]["removeDate"] = json!("2030-06-01");
    let utc = check(v.clone()).unwrap().items[0].remove_at.unwrap();
    assert_eq!(utc, "2030-06-01T00:00:00Z".parse::<Timestamp>().unwrap());
    let agent = validate(
        v.to_string().as_bytes(),
        &K,
        &TimeZone::get("Asia/Tokyo").unwrap(),
        now(),
    )
    .unwrap();
    assert_eq!(
        agent.items[0].remove_at.unwrap(),
        "2030-05-31T15:00:00Z".parse::<Timestamp>().unwrap()
    );
    v["clientMetadata"] = json!({ "timeZone": "America/New_York" });
    let ny = check(v.clone()).unwrap().items[0].remove_at.unwrap();
    assert_eq!(ny, "2030-06-01T04:00:00Z".parse::<Timestamp>().unwrap());
    v["requestedItems"][0]["clientMetadata"] = json!({ "timeZone": "Europe/Berlin" });
    let be = check(v.clone()).unwrap().items[0].remove_at.unwrap();
    assert_eq!(
        be,
        "2030-05-31T22:00:00Z".parse::<Timestamp>().unwrap(),
        "the item's zone wins"
    );
    v["clientMetadata"] = json!({ "timeZone": "Mars/Olympus" });
    assert_eq!(fields(v), ["clientMetadata.timeZone"]);
}

#[test]
fn unknown_identities_and_items_are_named() {
    let mut v = grant();
    v["requestedFor"] = json!(["x1"]);
    let e = check(v).unwrap_err();
    assert_eq!(e.0[0].field, "requestedFor[0]");
    assert!(e.0[0].message.contains("unknown identity `x1`"));
    let mut v = grant();
    v["requestedItems"][0]["id"] = json!("unknown-role");
    let e = check(v).unwrap_err();
    assert_eq!(e.0[0].field, "requestedItems[0].id");
    assert!(
        e.0[0].message.contains("unknown ROLE `unknown-role`"),
        "{e}"
    );
}

#[test]
fn metadata_values_must_be_strings() {
    let mut v = grant();
    v["clientMetadata"] = json!({ "ticket": 5 });
    assert_eq!(fields(v), ["clientMetadata.ticket"]);
}

#[test]
fn every_problem_is_reported_at_once() {
    let v = json!({ "requestedFor": ["x1", 3], "requestType": "REVOKE_ACCESS",
        "requestedItems": [{ "type": "ROLE", "id": "unknown-r" }] });
    let f = fields(v);
    assert_eq!(
        f,
        [
            "requestedFor[0]",
            "requestedFor[1]",
            "requestedFor",
            "requestedItems[0].id",
            "requestedItems[0].comment"
        ]
    );
}

#[test]
fn a_flood_of_problems_names_the_first_hundred_and_counts_the_rest() {
    let ids: Vec<String> = (0..100_000).map(|i| format!("x{i}")).collect();
    let Err(Invalid(e)) =
        check(json!({ "requestedFor": ids, "requestedItems": [{ "type": "ROLE", "id": "r1" }] }))
    else {
        panic!("accepted");
    };
    assert_eq!(e.len(), MAX_PROBLEMS + 1);
    let last = e.last().unwrap();
    assert_eq!(last.field, "body");
    // One problem for the count of identities, 100,000 unknown ones: 100 kept.
    assert_eq!(last.message, "99901 more problems not listed");
    let text: usize = e.iter().map(|f| f.to_string().len()).sum();
    assert!(text < 10_000, "{text} bytes");
}

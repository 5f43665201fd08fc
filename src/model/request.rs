//! An access request as every stage after validation sees it, and the kinds of item it
//! names. Below intake, plan and store, so that none of them imports another's types.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The three kinds of requestable item (request body `requestedItems[].type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ItemType {
    Role,
    AccessProfile,
    Entitlement,
}

impl ItemType {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemType::Role => "ROLE",
            ItemType::AccessProfile => "ACCESS_PROFILE",
            ItemType::Entitlement => "ENTITLEMENT",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ROLE" => Some(ItemType::Role),
            "ACCESS_PROFILE" => Some(ItemType::AccessProfile),
            "ENTITLEMENT" => Some(ItemType::Entitlement),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestType {
    Grant,
    Revoke,
}

impl RequestType {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestType::Grant => "GRANT_ACCESS",
            RequestType::Revoke => "REVOKE_ACCESS",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ValidItem {
    pub ty: ItemType,
    pub id: String,
    pub comment: Option<String>,
    pub start_at: Option<Timestamp>,
    pub remove_at: Option<Timestamp>,
    pub client_metadata: BTreeMap<String, String>,
}

/// A request that passed every rule.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidRequest {
    pub request_type: RequestType,
    pub requested_for: Vec<String>,
    pub items: Vec<ValidItem>,
    pub client_metadata: BTreeMap<String, String>,
    /// Account operations a lifecycle change asks for, per source (DESIGN §13): planned
    /// for each identity that has an account there. Never from a client's body.
    pub account_ops: Vec<(String, provd_connector_core::Operation)>,
    /// Operations evidence found missing on a source (DESIGN §17: a value granted but not
    /// there, an account deleted out of band), planned as given in a grant job. Never from
    /// a client's body.
    pub repairs: Vec<(String, provd_connector_core::Operation)>,
}

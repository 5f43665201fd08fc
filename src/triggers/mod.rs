//! SailPoint event triggers (DESIGN §16): provd as the subscriber of "Access Request
//! Submitted" (pre-approval by the local policy, answered SYNC, ASYNC or DYNAMIC) and of
//! "Access Request Decision" (approved items taken in through the one intake path). The
//! HTTP side (`api/triggers.rs`) authenticates and maps answers to status codes; the
//! callbacks of ASYNC answers are `callback.rs`.

pub mod body;
pub mod callback;
pub mod decide;
pub mod seal;

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::clock::{SharedClock, to_ms};
use crate::config::trigger::Trigger;
use crate::config::{Config, Live};
use crate::intake::{Intake, SubmitError};
use crate::model::{ItemType, Requester};
use crate::store::audit::AccessQuery;
use crate::store::triggers::{Answer, Invocation, TriggerEvent};
use crate::store::{Stamp, Store, StoreError};
use body::{BadField, Decided, Mode, Operation, Submitted};
use decide::{Asked, Verdict};

/// How long a DYNAMIC invocation may take to decide before it is answered 202 and
/// called back instead (SailPoint waits 10 s for any answer).
const DYNAMIC_BUDGET: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// The body cannot be taken: 400, nothing stored.
    #[error("{0}")]
    Bad(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Seal(#[from] seal::SealError),
}

impl From<BadField> for TriggerError {
    fn from(e: BadField) -> Self {
        TriggerError::Bad(e.to_string())
    }
}

/// What to answer an "Access Request Submitted" invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// 200 with `{approved, comment, approver}`.
    Output(Value),
    /// 200 `{}`: the answer follows by callback (ASYNC).
    Later,
    /// 202 `{}`: a DYNAMIC invocation answered by callback.
    Accepted,
}

/// The output object SailPoint reads.
pub fn output(a: &Answer) -> Value {
    json!({ "approved": a.approved, "comment": a.comment, "approver": a.approver })
}

/// Everything the triggers need; cheap to clone.
#[derive(Clone)]
pub struct Triggers {
    pub store: Store,
    pub live: Arc<Live>,
    pub clock: SharedClock,
    pub intake: Intake,
    pub sealer: Arc<seal::Sealer>,
    /// `agent:NAME`, for what the agent does on its own (callbacks).
    pub agent: String,
}

fn parse(bytes: &[u8]) -> Result<Value, TriggerError> {
    crate::intake::json::parse_strict(bytes)
        .map_err(|e| TriggerError::Bad(format!("body: not JSON: {e}")))
}

/// The body as stored: without `_metadata` (its secret is sealed apart).
fn stored_body(mut v: Value) -> String {
    if let Some(o) = v.as_object_mut() {
        o.remove("_metadata");
    }
    v.to_string()
}

impl Triggers {
    /// Decides `sub` as `trigger` maps it.
    pub async fn decide(
        &self,
        config: &Config,
        trigger: &Trigger,
        sub: &Submitted,
    ) -> Result<Verdict, StoreError> {
        pre_approve(
            &self.store,
            config,
            &trigger.identity_attribute,
            &trigger.items,
            sub,
        )
        .await
    }

    /// An "Access Request Submitted" invocation: decided, stored (before any answer
    /// leaves), answered as its response mode says.
    pub async fn submitted(&self, trigger: &Trigger, bytes: &[u8]) -> Result<Reply, TriggerError> {
        let value = parse(bytes)?;
        let sub = body::submitted(&value)?;
        let config = self.live.get();
        let now = to_ms(self.clock.now());
        let verdict = match sub.mode {
            Mode::Dynamic => {
                tokio::time::timeout(DYNAMIC_BUDGET, self.decide(&config, trigger, &sub))
                    .await
                    .ok()
                    .transpose()?
            }
            _ => Some(self.decide(&config, trigger, &sub).await?),
        };
        let id = format!("{}:{}", trigger.name, sub.access_request_id);
        let answer = verdict.map(|v| Answer {
            approved: v.approved,
            comment: v.comment,
            approver: v.approver,
            rule: v.rule,
        });
        let later = sub.mode == Mode::Async || answer.is_none();
        let sealed = match (&sub.callback, later) {
            (Some(cb), true) => Some(self.sealer.seal(&id, cb.secret.expose_secret())?),
            _ => None,
        };
        let inv = Invocation {
            id,
            trigger: trigger.name.clone(),
            access_request_id: sub.access_request_id.clone(),
            identity: sub.requested_for.first().map(|r| r.id.clone()),
            mode: sub.mode.as_str().into(),
            body: stored_body(value),
            answer,
            callback_url: sub
                .callback
                .as_ref()
                .filter(|_| later)
                .map(|c| c.url.clone()),
            sealed_secret: sealed,
            state: if later { "pending" } else { "answered" }.into(),
            attempts: 0,
            next_attempt_at: later.then_some(now),
            deadline_at: later.then(|| now + trigger.response_deadline.as_millis() as i64),
            received_at: now,
        };
        let (stored, _) = self
            .store
            .record_invocation(inv, format!("trigger:{}", trigger.name))
            .await?;
        let a = stored.answer.as_ref();
        tracing::info!(trigger = %trigger.name, access_request_id = %stored.access_request_id, mode = %stored.mode,
            approved = ?a.map(|a| a.approved), rule = a.map(|a| a.rule.as_str()).unwrap_or("-"), "pre-approval invocation");
        Ok(match (stored.state.as_str(), a) {
            ("answered", Some(a)) => Reply::Output(output(a)),
            _ if stored.mode == "DYNAMIC" => Reply::Accepted,
            _ => Reply::Later,
        })
    }

    /// An "Access Request Decision" event: approved items become provd requests through
    /// the one intake path (a grant, and a revoke for removals), denied ones are recorded.
    pub async fn decided(&self, trigger: &Trigger, bytes: &[u8]) -> Result<Value, TriggerError> {
        let value = parse(bytes)?;
        let d = body::decided(&value)?;
        let config = self.live.get();
        let now = to_ms(self.clock.now());
        let actor = format!("trigger:{}", trigger.name);
        let mut ids = Vec::new();
        for who in &d.requested_for {
            match crate::intake::identity::resolve(
                &*self.store,
                &config,
                &trigger.identity_attribute,
                &who.id,
            )
            .await?
            {
                Some(id) => ids.push(id),
                None => {
                    return Err(TriggerError::Bad(format!(
                        "requestedFor: no identity with {} = `{}` is known to provd",
                        trigger.identity_attribute, who.id
                    )));
                }
            }
        }
        let denied: Vec<Value> = d
            .items
            .iter()
            .filter(|i| !i.approved)
            .map(|i| json!({ "id": i.item.id, "type": i.item.ty.as_str(), "approvers": i.approvers }))
            .collect();
        // Kept as an invocation of its own, so that a second delivery is known as one.
        let (_, first) = self
            .store
            .record_invocation(
                Invocation {
                    id: format!("{}:decision:{}", trigger.name, d.access_request_id),
                    trigger: trigger.name.clone(),
                    access_request_id: d.access_request_id.clone(),
                    identity: ids.first().cloned(),
                    mode: "DECISION".into(),
                    body: stored_body(value),
                    answer: None,
                    callback_url: None,
                    sealed_secret: None,
                    state: "answered".into(),
                    attempts: 0,
                    next_attempt_at: None,
                    deadline_at: None,
                    received_at: now,
                },
                actor.clone(),
            )
            .await?;
        if first && !denied.is_empty() {
            let data = json!({ "trigger": trigger.name, "accessRequestId": d.access_request_id, "items": denied });
            self.store
                .trigger_event(
                    TriggerEvent {
                        kind: "trigger_items_denied",
                        identity: ids.first().cloned(),
                        data,
                    },
                    Stamp::new(actor.clone(), now),
                )
                .await?;
        }
        let mut requests = Vec::new();
        for (op, kind, suffix) in [
            (Operation::Add, "GRANT_ACCESS", ""),
            (Operation::Remove, "REVOKE_ACCESS", ":revoke"),
        ] {
            let items: Vec<Value> = d
                .items
                .iter()
                .filter(|i| i.approved && i.item.operation == op)
                .map(|i| request_item(trigger, &i.item))
                .collect();
            if items.is_empty() {
                continue;
            }
            let body = request_body(trigger, &d, &ids, kind, items).to_string();
            let key = format!("trigger:{}:{}{suffix}", trigger.name, d.access_request_id);
            let replay = self
                .intake
                .submit(
                    body.as_bytes(),
                    &Requester::trigger(&trigger.name),
                    Some(&key),
                )
                .await
                .map_err(|e| match e {
                    SubmitError::Store(e) => TriggerError::Store(e),
                    e => TriggerError::Bad(e.to_string()),
                })?;
            requests
                .push(json!({ "requestType": kind, "requestId": replay.accepted().request_id }));
        }
        tracing::info!(trigger = %trigger.name, access_request_id = %d.access_request_id, requests = requests.len(),
            denied_items = denied.len(), "access request decision taken in");
        Ok(
            json!({ "accessRequestId": d.access_request_id, "requests": requests, "deniedItems": denied }),
        )
    }
}

/// Pre-approval of `sub` (DESIGN §16): the policy applied to every identity the request
/// is for, with what each holds and awaits; the first denial answers. `provd policy check`
/// runs it offline.
pub async fn pre_approve(
    store: &Store,
    config: &Config,
    attribute: &str,
    items: &std::collections::BTreeMap<String, crate::config::files::UpstreamItem>,
    sub: &Submitted,
) -> Result<Verdict, StoreError> {
    let policy = &config.policy;
    let mut last = None;
    for who in &sub.requested_for {
        let found = crate::intake::identity::resolve(&**store, config, attribute, &who.id).await?;
        let Some(id) = found else {
            return Ok(Verdict {
                approved: false,
                comment: format!(
                    "no identity with {} = `{}` is known to provd",
                    attribute, who.id
                ),
                approver: policy.approver.clone(),
                rule: "unknown_identity".into(),
            });
        };
        let attributes = match store.identity(id.clone()).await? {
            Some(i) => i.attributes,
            None => config
                .identities
                .get(&id)
                .map(|i| i.attributes.clone())
                .unwrap_or_default(),
        };
        let state = attributes
            .get(crate::config::lifecycle::STATE_ATTRIBUTE)
            .map(|s| s.trim().to_string())
            .filter(|s| config.lifecycle.states.contains_key(s));
        let existing: Vec<(ItemType, String)> = store
            .holdings(AccessQuery {
                identity: Some(id.clone()),
                ..Default::default()
            })
            .await?
            .into_iter()
            .filter(|h| h.is_live())
            .filter_map(|h| ItemType::parse(&h.item_type).map(|t| (t, h.item_id)))
            .collect();
        let asked: Vec<Asked> = sub
            .items
            .iter()
            .map(|i| {
                let (ty, pid) = target(items, i);
                Asked {
                    known: config.catalog.contains(ty, &pid),
                    ty,
                    id: pid,
                    remove: i.operation == Operation::Remove,
                }
            })
            .collect();
        let v = decide::decide(
            policy,
            &config.catalog,
            &id,
            state.as_deref(),
            &existing,
            &asked,
        );
        if !v.approved {
            return Ok(v);
        }
        last = Some(v);
    }
    Ok(last.unwrap_or_else(|| Verdict {
        approved: false,
        comment: "the request names no identity".into(),
        approver: policy.approver.clone(),
        rule: "unknown_identity".into(),
    }))
}

/// The provd item a SailPoint item means: `[trigger.items]`, else the same id and type.
fn target(
    items: &std::collections::BTreeMap<String, crate::config::files::UpstreamItem>,
    i: &body::Item,
) -> (ItemType, String) {
    match items.get(&i.id) {
        Some(t) => (ItemType::parse(&t.ty).unwrap_or(i.ty), t.id.clone()),
        None => (i.ty, i.id.clone()),
    }
}

fn request_item(trigger: &Trigger, i: &body::Item) -> Value {
    let (ty, id) = target(&trigger.items, i);
    let mut item = json!({ "type": ty.as_str(), "id": id });
    if let Some(c) = &i.comment {
        item["comment"] = json!(c);
    }
    if let Some(r) = &i.remove_date {
        item["removeDate"] = json!(r);
    }
    if let Some(m) = &i.client_metadata {
        item["clientMetadata"] = m.clone();
    }
    item
}

fn request_body(
    trigger: &Trigger,
    d: &Decided,
    ids: &[String],
    kind: &str,
    items: Vec<Value>,
) -> Value {
    let mut meta = json!({ "trigger": trigger.name, "accessRequestId": d.access_request_id });
    if let Some(by) = &d.requested_by {
        meta["requestedBy"] = json!(by.name.clone().unwrap_or_else(|| by.id.clone()));
        meta["requestedById"] = json!(by.id);
    }
    json!({ "requestedFor": ids, "requestType": kind, "requestedItems": items, "clientMetadata": meta })
}

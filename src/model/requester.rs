//! Who asked (DESIGN §14). Every request records its requester, every audit event its
//! actor; both are plain names an auditor can read: a token's name, `cli:USER`, `spool`,
//! `upstream:NAME`, `trigger:NAME`, `lifecycle`, `schedule`, and `agent:NAME` for the
//! agent's own steps.

/// Where a request came in and who it is recorded as coming from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    /// The channel (`api`, `cli`, `spool`, `upstream:NAME`, `schedule`, …): idempotency
    /// rules and log lines key on it.
    pub origin: String,
    /// The requester the audit trail names.
    pub name: String,
}

impl Requester {
    /// Through the HTTP API, authenticated by the token called `token`.
    pub fn api(token: &str) -> Self {
        Self::of("api", token.to_string())
    }

    /// From `provd submit`, run by `user`.
    pub fn cli(user: &str) -> Self {
        Self::of("cli", cli_actor(user))
    }

    /// A file dropped in the spool folder.
    pub fn spool() -> Self {
        Self::of("spool", "spool".into())
    }

    /// Pulled from the upstream governance service `name`.
    pub fn upstream(name: &str) -> Self {
        let n = format!("upstream:{name}");
        Self::of(&n, n.clone())
    }

    /// Taken in from the SailPoint trigger subscription `name` (DESIGN §16).
    pub fn trigger(name: &str) -> Self {
        let n = format!("trigger:{name}");
        Self::of(&n, n.clone())
    }

    /// A change of an identity's lifecycle state (DESIGN §13).
    pub fn lifecycle() -> Self {
        Self::of("lifecycle", "lifecycle".into())
    }

    /// A lifecycle change made by `actor` (a token, `cli:USER`, `agent:NAME` for
    /// identities.csv): the request keeps who made the change (DESIGN §21).
    pub fn lifecycle_as(actor: &str) -> Self {
        Self::of("lifecycle", actor.to_string())
    }

    /// A removal fired by a removeDate.
    pub fn schedule() -> Self {
        Self::of("schedule", "schedule".into())
    }

    /// Anything else (tools, benches): channel and name alike.
    pub fn other(name: &str) -> Self {
        Self::of(name, name.to_string())
    }

    fn of(origin: &str, name: String) -> Self {
        Self {
            origin: origin.to_string(),
            name,
        }
    }
}

/// The actor of a command run by `user`.
pub fn cli_actor(user: &str) -> String {
    format!("cli:{user}")
}

/// The actor of an agent's own steps. A lease owner (`NAME#RUN`) names its agent.
pub fn agent_actor(owner_or_name: &str) -> String {
    let name = owner_or_name
        .split_once('#')
        .map_or(owner_or_name, |(n, _)| n);
    format!("agent:{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(Requester::api("ci-bot").name, "ci-bot");
        assert_eq!(Requester::api("ci-bot").origin, "api");
        assert_eq!(Requester::cli("ada").name, "cli:ada");
        assert_eq!(Requester::upstream("isc").origin, "upstream:isc");
        assert_eq!(Requester::upstream("isc").name, "upstream:isc");
        assert_eq!(agent_actor("a1#0badf00d"), "agent:a1");
        assert_eq!(agent_actor("a1"), "agent:a1");
    }
}

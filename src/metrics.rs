//! Counters and histograms for `/metrics` that the running loops update: connector attempts
//! by source and outcome, connector call latency, breaker state, upstream poll results.
//! (Gauges read from the store — jobs by state, queue depth, open tasks — are computed by
//! the API handler when scraped.)

use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

const LATENCY_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; LATENCY_BUCKETS.len()],
    total: u64,
    sum: f64,
}

#[derive(Default)]
struct Registry {
    attempts: BTreeMap<(String, String), u64>,
    latency: BTreeMap<String, Histogram>,
    breaker: BTreeMap<String, u8>,
    /// Sources whose jobs are held (credentials refused, TLS not trusted), with why.
    held: BTreeMap<String, String>,
    polls: BTreeMap<(String, String), u64>,
    auth_failures: u64,
    lease_lost: u64,
    /// Store transactions failed by a deadlock or serialization conflict and run again.
    store_contention: u64,
    /// Transactions that stored accepted requests, and how many requests they stored.
    accept_groups: u64,
    accept_grouped: u64,
    /// DONE manual tasks no export has shown within verify_within, per source.
    unverified: BTreeMap<String, usize>,
    /// This agent's name and whether it holds the leader lease.
    leader: Option<(String, bool)>,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(|| Mutex::new(Registry::default()));

fn with(f: impl FnOnce(&mut Registry)) {
    if let Ok(mut r) = REGISTRY.lock() {
        f(&mut r);
    }
}

/// An attempt ended: `succeeded`, `retryable`, `permanent` or `manual`.
pub fn attempt(source: &str, outcome: &str) {
    with(|r| {
        *r.attempts
            .entry((source.to_string(), outcome.to_string()))
            .or_default() += 1
    });
}

/// One connector call took `d`.
pub fn call(source: &str, d: Duration) {
    let secs = d.as_secs_f64();
    with(|r| {
        let h = r.latency.entry(source.to_string()).or_default();
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.total += 1;
        h.sum += secs;
    });
}

/// DONE tasks of `source` not verified in time (DESIGN §17).
pub fn unverified(source: &str, n: usize) {
    with(|r| {
        r.unverified.insert(source.to_string(), n);
    });
}

/// Breaker state: 0 closed, 1 half-open, 2 open.
pub fn breaker(source: &str, state: u8) {
    with(|r| {
        r.breaker.insert(source.to_string(), state);
        // A closed breaker holds nothing.
        if state == 0 {
            r.held.remove(source);
        }
    });
}

/// The source's jobs are held for `reason` (its breaker open on provd's side of the
/// connection); cleared when the breaker closes.
pub fn held(source: &str, reason: &str) {
    with(|r| {
        r.held.insert(source.to_string(), reason.to_string());
    });
}

/// The sources whose jobs are held, with why (`/readyz`).
pub fn held_sources() -> BTreeMap<String, String> {
    REGISTRY.lock().map(|r| r.held.clone()).unwrap_or_default()
}

/// An upstream poll ended: `ok`, `rate_limited`, `unauthorized` or `error`.
pub fn poll(upstream: &str, result: &str) {
    with(|r| {
        *r.polls
            .entry((upstream.to_string(), result.to_string()))
            .or_default() += 1
    });
}

/// An attempt's outcome (or a lease renewal) found the job leased to another agent.
pub fn lease_lost() {
    with(|r| r.lease_lost += 1);
}

/// A store transaction was failed to break a deadlock and is run again whole.
pub fn store_contention() {
    with(|r| r.store_contention += 1);
}

/// One group commit stored `size` requests.
pub fn accept_group(size: usize) {
    with(|r| {
        r.accept_groups += 1;
        r.accept_grouped += size as u64;
    });
}

/// Whether agent `name` holds the leader lease now.
pub fn leader(name: &str, is_leader: bool) {
    with(|r| r.leader = Some((name.to_string(), is_leader)));
}

/// A request to the API presented no valid token.
pub fn auth_failure() {
    with(|r| r.auth_failures += 1);
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus text for everything above; `sources` get a breaker line even before any call.
pub fn render(out: &mut String, sources: &[String]) {
    let Ok(r) = REGISTRY.lock() else { return };
    out.push_str("# HELP provd_attempts_total Connector attempts by source and outcome.\n# TYPE provd_attempts_total counter\n");
    for ((s, o), n) in &r.attempts {
        out.push_str(&format!(
            "provd_attempts_total{{source=\"{}\",outcome=\"{}\"}} {n}\n",
            esc(s),
            esc(o)
        ));
    }
    out.push_str("# HELP provd_connector_call_seconds Connector call latency.\n# TYPE provd_connector_call_seconds histogram\n");
    for (s, h) in &r.latency {
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            out.push_str(&format!(
                "provd_connector_call_seconds_bucket{{source=\"{}\",le=\"{b}\"}} {}\n",
                esc(s),
                h.counts[i]
            ));
        }
        out.push_str(&format!(
            "provd_connector_call_seconds_bucket{{source=\"{}\",le=\"+Inf\"}} {}\n",
            esc(s),
            h.total
        ));
        out.push_str(&format!(
            "provd_connector_call_seconds_sum{{source=\"{}\"}} {}\n",
            esc(s),
            h.sum
        ));
        out.push_str(&format!(
            "provd_connector_call_seconds_count{{source=\"{}\"}} {}\n",
            esc(s),
            h.total
        ));
    }
    out.push_str("# HELP provd_breaker_state Per-source circuit breaker: 0 closed, 1 half-open, 2 open.\n# TYPE provd_breaker_state gauge\n");
    for s in sources {
        out.push_str(&format!(
            "provd_breaker_state{{source=\"{}\"}} {}\n",
            esc(s),
            r.breaker.get(s).copied().unwrap_or(0)
        ));
    }
    if !r.unverified.is_empty() {
        out.push_str("# HELP provd_manual_tasks_unverified DONE manual tasks no account export has shown within verify_within.\n# TYPE provd_manual_tasks_unverified gauge\n");
        for (s, n) in &r.unverified {
            out.push_str(&format!(
                "provd_manual_tasks_unverified{{source=\"{}\"}} {n}\n",
                esc(s)
            ));
        }
    }
    out.push_str(&format!(
        "# HELP provd_api_auth_failures_total API requests refused for want of a valid token.\n# TYPE provd_api_auth_failures_total counter\nprovd_api_auth_failures_total {}\n",
        r.auth_failures
    ));
    out.push_str(&format!(
        "# HELP provd_lease_lost_total Attempt outcomes dropped because another agent held the job's lease.\n# TYPE provd_lease_lost_total counter\nprovd_lease_lost_total {}\n",
        r.lease_lost
    ));
    out.push_str(&format!(
        "# HELP provd_store_contention_total Store transactions failed to break a deadlock or conflict and run again whole.\n# TYPE provd_store_contention_total counter\nprovd_store_contention_total {}\n",
        r.store_contention
    ));
    out.push_str(&format!(
        "# HELP provd_accept_groups_total Transactions that stored accepted requests (group commit).\n# TYPE provd_accept_groups_total counter\nprovd_accept_groups_total {}\n# HELP provd_accept_grouped_requests_total Requests those transactions stored.\n# TYPE provd_accept_grouped_requests_total counter\nprovd_accept_grouped_requests_total {}\n",
        r.accept_groups, r.accept_grouped
    ));
    if let Some((name, is)) = &r.leader {
        out.push_str(&format!(
            "# HELP provd_agent_leader Whether this agent holds the leader lease (singleton work).\n# TYPE provd_agent_leader gauge\nprovd_agent_leader{{agent=\"{}\"}} {}\n",
            esc(name),
            u8::from(*is)
        ));
    }
    out.push_str("# HELP provd_upstream_polls_total Upstream polls by result.\n# TYPE provd_upstream_polls_total counter\n");
    for ((u, res), n) in &r.polls {
        out.push_str(&format!(
            "provd_upstream_polls_total{{upstream=\"{}\",result=\"{}\"}} {n}\n",
            esc(u),
            esc(res)
        ));
    }
}

//! `make faults`: the fault matrix, proving money safety against the real `allocate` and
//! `scan-credits` binaries under the Lambda Runtime API emulator, with portal-sim in-process and
//! moto (DynamoDB, Secrets Manager).
//!
//! Each scenario builds a fresh world (a simulated org, its own ledger table and secret, its
//! own emulator), starts real function processes, breaks something at an exact point (a kill
//! at a portal-sim hold, a fault, a short deadline through the Runtime API proxy, concurrent
//! writers), retries as a client or the scheduler would, and then checks:
//! - (a) the final ArcGIS state against an expectation computed here, independently of
//!   the shared crate, from the initial balances and the requests ([`Model`]);
//! - (b) the audit trail against the simulator's write log: every write that changed an
//!   allocation has exactly one audit `change` entry with the same before and after, no audit
//!   entry lacks a write, and every write had its audit intent first;
//! - (c) the replies (status, member statuses, caller, replay header).
//!
//! Across every scenario, no process output, reply or summary may contain the admin password
//! or a token the simulator issued (scenario 15).
//!
//! Synchronisation is by holds, by invocation results, or by polling state against a bounded
//! deadline; the only waits are a client honouring `Retry-After` and a scheduler redelivering.
//!
//! `cargo run -p tests --bin faults [-- <scenario numbers>]` (all by default). One line per
//! scenario, then the totals; the exit code is non-zero when anything failed.

#[path = "../e2e/support.rs"]
#[allow(dead_code, unused_imports)]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;
use portal_sim::generate::ADMIN_PASSWORD;
use portal_sim::org::micros;
use portal_sim::{Faults, GenParams, Hold, HoldPhase, HoldSpec, HoldStatus, HttpErrorFault, Trigger, generate};
use serde_json::{Value, json};
use support::World;
use testkit::lambda::{FunctionProcess, Invocation};

const ASSIGN: &str = "portals/self/assignUserCredits";
const LOOKUP: &str = "community/users/{user}";
const ALLOCATE: &str = "allocate";
const SCAN: &str = "scan-credits";
const JOBS: &str = "allocation-jobs";

/// allocate's timeout in the SAM template.
const ALLOCATE_TIMEOUT: Duration = Duration::from_secs(30);
/// scan-credits' timeout for processes that are not killed (shorter than the template's 300 s
/// so that nothing here can wait on a five-minute lease).
const SCAN_TIMEOUT: Duration = Duration::from_secs(60);
/// The timeout of a process the matrix kills: its lease (deadline + 2 s) ends soon after.
const KILLED_TIMEOUT: Duration = Duration::from_secs(8);
/// How long a client keeps retrying a `409 … retry after` before giving up.
const RETRY_LIMIT: Duration = Duration::from_secs(60);
/// How long any single wait (a hold, an invocation) may take before the scenario fails.
const WAIT_LIMIT: Duration = Duration::from_secs(90);
/// A whole scenario.
const SCENARIO_LIMIT: Duration = Duration::from_secs(240);

const SCENARIOS: &[(u32, &str)] = &[
    (1, "kill before send"),
    (2, "kill after send, before the reply"),
    (3, "kill between batches (150 members)"),
    (4, "kill before the audit (during the read-back)"),
    (5, "429 Retry-After 10 after commit on every assign"),
    (6, "503 after commit on every assign"),
    (7, "token expiry mid-apply (every position)"),
    (8, "deadline: short timeout, slow ArcGIS"),
    (9, "concurrent writers on overlapping members"),
    (10, "cumulative daily budget (sequential and concurrent)"),
    (11, "replay after a cold start"),
    (12, "idempotency keys are per caller"),
    (13, "auto top-up killed mid-way, run redelivered"),
    (14, "allocate and the scan top-up concurrently"),
    (16, "503 before commit, then a retry"),
    (17, "the same key twice at once"),
    (18, "an in-doubt request overtaken by another writer"),
    (19, "scan redelivered while the killed run's lease is live"),
    (20, "dropped connection / broken reply after commit"),
    (21, "queued job: worker killed between batches, redelivered"),
    (15, "no secret in any output"),
];

// ---------------------------------------------------------------------------------------
// Money, exactly: micro-credits.

fn value_micros(v: &Value) -> Option<i64> {
    v.as_f64().map(micros)
}

fn show(m: i64) -> String {
    let whole = m / 1_000_000;
    let frac = (m % 1_000_000).abs();
    if frac == 0 {
        whole.to_string()
    } else {
        let sign = if m < 0 && whole == 0 { "-" } else { "" };
        format!("{sign}{whole}.{}", format!("{frac:06}").trim_end_matches('0'))
    }
}

fn show_opt(m: Option<i64>) -> String {
    m.map_or("unlimited".to_owned(), show)
}

// ---------------------------------------------------------------------------------------
// Requests.

/// One allocation request line; amounts in whole credits.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Set(String, i64),
    Add(String, i64),
    TopUpTo(String, i64),
}

impl Op {
    fn username(&self) -> &str {
        match self {
            Op::Set(u, _) | Op::Add(u, _) | Op::TopUpTo(u, _) => u,
        }
    }

    fn line(&self) -> Value {
        match self {
            Op::Set(u, c) => json!({"username": u, "set": c}),
            Op::Add(u, c) => json!({"username": u, "add": c}),
            Op::TopUpTo(u, c) => json!({"username": u, "top_up_to": c}),
        }
    }
}

fn body(ops: &[Op], reason: &str) -> String {
    json!({"allocations": ops.iter().map(Op::line).collect::<Vec<_>>(), "reason": reason}).to_string()
}

/// An IAM principal calling the API.
#[derive(Debug, Clone, Copy)]
struct Who {
    principal: &'static str,
    arn: &'static str,
}

/// The fixture's caller.
const ALICE: Who = Who {
    principal: "AROAEXAMPLEROLEID:alice",
    arn: "arn:aws:sts::111122223333:assumed-role/CreditAdmins/alice",
};
const BOB: Who = Who {
    principal: "AROAEXAMPLEROLEID:bob",
    arn: "arn:aws:sts::111122223333:assumed-role/CreditAdmins/bob",
};

/// The IAM-authorized API Gateway v2 fixture with this body, key and caller.
fn event(body: &str, key: &str, who: Who) -> Value {
    // The request id is given when the event is sent (`stamp`).
    let mut e = support::allocation_event(body, Some(key), "");
    let iam = &mut e["requestContext"]["authorizer"]["iam"];
    iam["userId"] = json!(who.principal);
    iam["callerId"] = json!(who.principal);
    iam["userArn"] = json!(who.arn);
    e
}

/// A fresh API Gateway request id, as every HTTP request (a retry included) gets one.
fn stamp(event: &Value) -> (Value, String) {
    static N: AtomicU64 = AtomicU64::new(1);
    let id = format!("faults-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let mut e = event.clone();
    e["requestContext"]["requestId"] = json!(id);
    (e, id)
}

fn scheduled_event(at: &str) -> Value {
    json!({"scheduled_time": at})
}

fn now_minute() -> String {
    Utc::now().format("%Y-%m-%dT%H:%M:00Z").to_string()
}

/// The answers a client retried after.
#[derive(Debug, Default, Clone, Copy)]
struct Retried {
    /// `409` in progress (another invocation holds the request or the lock).
    busy: usize,
    /// `503` incomplete (resumable).
    incomplete: usize,
}

impl std::fmt::Display for Retried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} × 409 in progress, {} × 503 incomplete",
            self.busy, self.incomplete
        )
    }
}

/// An allocate answer.
#[derive(Debug, Clone)]
struct Reply {
    /// The API Gateway request id it answered.
    request_id: String,
    /// HTTP status; 0 when the function failed instead of answering.
    status: u16,
    headers: Value,
    body: Value,
    /// What took the invocation.
    elapsed: Duration,
}

impl Reply {
    fn from(out: &Invocation, request_id: String, elapsed: Duration) -> Reply {
        match support::http_reply(out) {
            Some((status, body)) => Reply {
                request_id,
                status,
                headers: out.payload["headers"].clone(),
                body,
                elapsed,
            },
            None => Reply {
                request_id,
                status: 0,
                headers: Value::Null,
                body: out.payload.clone(),
                elapsed,
            },
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(Value::as_str)
    }

    fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    fn member_status(&self, username: &str) -> Option<&str> {
        self.body["members"]
            .as_array()?
            .iter()
            .find(|m| m["username"] == username)?["status"]
            .as_str()
    }

    /// `409 … retry after`: another invocation holds the request or the org's lock.
    fn busy(&self) -> bool {
        self.status == 409 && matches!(self.code(), "idempotency_key_in_progress" | "allocation_in_progress")
    }

    /// `200`, or `409 idempotency_key_in_progress`: the status and the code, if any.
    fn label(&self) -> String {
        match self.code() {
            "" => self.status.to_string(),
            code => format!("{} {code}", self.status),
        }
    }

    fn brief(&self) -> String {
        let text = self.body.to_string();
        let cut: String = text.chars().take(300).collect();
        format!("{} {}{}", self.status, cut, if text.len() > 300 { "…" } else { "" })
    }
}

// ---------------------------------------------------------------------------------------
// The independent model: what the allocations should be.

#[derive(Debug, Clone)]
struct Member {
    allocation: Option<i64>,
    consumed: i64,
    disabled: bool,
    viewer: bool,
}

impl Member {
    fn available(&self) -> Option<i64> {
        self.allocation.map(|a| a - self.consumed)
    }
}

/// Members' allocations as the rules say they should become, written from the API's
/// documentation (set = x, add = +x, top_up_to = consumed + x when fewer than x are available;
/// disabled members and viewers are left alone; the critical rule), never
/// from the shared crate.
#[derive(Debug, Clone)]
struct Model {
    members: BTreeMap<String, Member>,
}

/// One expected change: (username, before, after).
type Change = (String, i64, i64);

impl Model {
    fn of(world: &World) -> Model {
        Model {
            members: world
                .sim
                .members()
                .into_iter()
                .map(|m| {
                    (
                        m.username.clone(),
                        Member {
                            allocation: m.allocation.map(micros),
                            consumed: micros(m.consumed),
                            disabled: m.disabled,
                            viewer: m.user_type.eq_ignore_ascii_case("viewerUT"),
                        },
                    )
                })
                .collect(),
        }
    }

    fn allocation(&self, username: &str) -> Option<i64> {
        self.members.get(username).and_then(|m| m.allocation)
    }

    /// Applies one request line; the change it makes, if any.
    fn apply(&mut self, op: &Op) -> Option<Change> {
        let m = self.members.get_mut(op.username())?;
        if m.disabled || m.viewer {
            return None;
        }
        let current = m.allocation?;
        let new = match op {
            Op::Set(_, x) => x * 1_000_000,
            Op::Add(_, x) => current + x * 1_000_000,
            Op::TopUpTo(_, x) if current - m.consumed < x * 1_000_000 => m.consumed + x * 1_000_000,
            Op::TopUpTo(..) => current,
        };
        (new != current).then(|| {
            m.allocation = Some(new);
            (op.username().to_owned(), current, new)
        })
    }

    fn apply_all(&mut self, ops: &[Op]) -> Vec<Change> {
        ops.iter().filter_map(|op| self.apply(op)).collect()
    }

    /// The critical rule: limited, enabled, not a viewer, and overspent or strictly
    /// below 10 % of a non-zero allocation left.
    fn critical(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|(_, m)| !m.disabled && !m.viewer)
            .filter(|(_, m)| match (m.allocation, m.available()) {
                (Some(assigned), Some(available)) => available < 0 || (assigned > 0 && available * 10 < assigned),
                _ => false,
            })
            .map(|(u, _)| u.clone())
            .collect()
    }

    /// scan-credits' automatic top-up: every critical member topped up to `to` available.
    fn top_up(&mut self, to: i64) -> Vec<Change> {
        let ops: Vec<Op> = self.critical().into_iter().map(|u| Op::TopUpTo(u, to)).collect();
        self.apply_all(&ops)
    }

    /// Members any `add` can go to: limited with a positive allocation, enabled, not viewers;
    /// sorted by name.
    fn limited(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|(_, m)| !m.disabled && !m.viewer && m.allocation.is_some_and(|a| a > 0))
            .map(|(u, _)| u.clone())
            .collect()
    }

    /// Members that can take a change: limited with a positive allocation and credits left,
    /// enabled, not viewers, not critical; sorted by name.
    fn eligible(&self) -> Vec<String> {
        let critical: BTreeSet<String> = self.critical().into_iter().collect();
        self.members
            .iter()
            .filter(|(u, m)| {
                !m.disabled
                    && !m.viewer
                    && !critical.contains(*u)
                    && m.allocation.is_some_and(|a| a > 0)
                    && m.available().is_some_and(|a| a > 0)
            })
            .map(|(u, _)| u.clone())
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Violations and the scenario context.

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    double: usize,
    lost: usize,
    guardrail: usize,
    unaudited: usize,
    secrets: usize,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.double += o.double;
        self.lost += o.lost;
        self.guardrail += o.guardrail;
        self.unaudited += o.unaudited;
        self.secrets += o.secrets;
    }
}

/// What a scenario found.
#[derive(Debug, Default)]
struct Report {
    failures: Vec<String>,
    notes: Vec<String>,
    counts: Counts,
    /// Texts the secret check read, and secrets found.
    texts_checked: usize,
    tokens_known: usize,
}

/// One scenario's world, processes and findings.
struct Cx {
    worlds: Vec<World>,
    procs: Vec<FunctionProcess>,
    /// Replies and summaries, for the secret check.
    texts: Vec<String>,
    /// Outputs of processes already dropped, for the secret check.
    outputs: Vec<String>,
    /// The current world's `MAX_CREDITS_PER_DAY` (whole credits), checked when it closes.
    budget: i64,
    report: Report,
}

impl Cx {
    fn new() -> Cx {
        Cx {
            worlds: Vec::new(),
            procs: Vec::new(),
            texts: Vec::new(),
            outputs: Vec::new(),
            budget: DEFAULT_DAY_BUDGET,
            report: Report::default(),
        }
    }

    /// A fresh world of `members` (generated with `seed`); the current one from now on. The
    /// previous world and its processes are checked (audit against writes, secrets) and
    /// stopped.
    async fn world(&mut self, members: usize, seed: u64) {
        if !self.worlds.is_empty() {
            self.close_world().await;
        }
        let org = generate(&GenParams::new(members, seed, Utc::now().date_naive()));
        self.worlds.push(World::new(org).await);
    }

    fn w(&self) -> &World {
        self.worlds.last().expect("a scenario creates its world first")
    }

    fn fail(&mut self, why: impl Into<String>) {
        self.report.failures.push(why.into());
    }

    fn check(&mut self, ok: bool, why: impl FnOnce() -> String) {
        if !ok {
            self.fail(why());
        }
    }

    fn note(&mut self, what: impl Into<String>) {
        self.report.notes.push(what.into());
    }

    /// Waits until every process in `procs` is idle (polling for an invocation), so that
    /// invocations fired next each go to a process of their own.
    async fn wait_idle(&mut self, procs: &[usize]) {
        let started = Instant::now();
        while !procs.iter().all(|p| self.procs[*p].polling()) {
            if started.elapsed() > WAIT_LIMIT {
                self.fail("function processes did not become idle");
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Starts a function process behind the deadline proxy; its index in `procs`. The
    /// world's daily budget follows `MAX_CREDITS_PER_DAY` in `env`.
    fn start(&mut self, function: &str, env: &[(&str, &str)], timeout: Duration) -> usize {
        if let Some((_, v)) = env.iter().find(|(k, _)| *k == "MAX_CREDITS_PER_DAY") {
            self.budget = v.parse().unwrap_or(self.budget);
        }
        let p = self.w().start_with_timeout(function, env, timeout);
        self.procs.push(p);
        self.procs.len() - 1
    }

    /// One allocate invocation (a fresh API Gateway request id), bounded.
    async fn allocate(&mut self, event: &Value) -> Reply {
        let (stamped, request_id) = stamp(event);
        let invoker = self.w().invoker();
        let started = Instant::now();
        let out = tokio::time::timeout(WAIT_LIMIT, invoker.invoke(ALLOCATE, &stamped)).await;
        let reply = match out {
            Ok(out) => {
                self.texts.push(out.payload.to_string());
                Reply::from(&out, request_id, started.elapsed())
            }
            Err(_) => {
                self.fail(format!("allocate did not answer within {WAIT_LIMIT:?}"));
                Reply {
                    request_id,
                    status: 0,
                    headers: Value::Null,
                    body: json!("no answer"),
                    elapsed: started.elapsed(),
                }
            }
        };
        if reply.status == 0 {
            self.fail(format!("allocate failed instead of answering: {}", reply.body));
        }
        reply
    }

    /// Like a client: retries with the same key and body while the answer says to retry
    /// after a while (`409 … in progress`, or `503` with `incomplete`), honouring
    /// `Retry-After`, within [`RETRY_LIMIT`]. Also returns how many such answers it met.
    async fn allocate_until_settled(&mut self, event: &Value) -> (Reply, Retried) {
        let started = Instant::now();
        let mut retried = Retried::default();
        loop {
            let reply = self.allocate(event).await;
            let incomplete = reply.status == 503 && reply.body["incomplete"].is_object();
            if !(reply.busy() || incomplete) || started.elapsed() > RETRY_LIMIT {
                return (reply, retried);
            }
            if incomplete {
                retried.incomplete += 1;
            } else {
                retried.busy += 1;
            }
            let wait = reply
                .header("retry-after")
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(1)
                .clamp(1, 5);
            tokio::time::sleep(Duration::from_secs(wait)).await;
        }
    }

    /// One scan-credits invocation with `event`, bounded: the summary, or the error document.
    async fn scan(&mut self, event: &Value) -> (Value, bool) {
        let invoker = self.w().invoker();
        match tokio::time::timeout(WAIT_LIMIT, invoker.invoke(SCAN, event)).await {
            Ok(out) => {
                self.texts.push(out.payload.to_string());
                let failed = out.function_error.is_some();
                (out.payload, !failed)
            }
            Err(_) => {
                self.fail(format!("scan-credits did not answer within {WAIT_LIMIT:?}"));
                (Value::Null, false)
            }
        }
    }

    /// Stands for the time between a killed invocation and Lambda's next retry (a minute or
    /// more): ends every live lease in the ledger (allocation requests and the allocation
    /// lock) instead of waiting for them to run out.
    async fn lapse_leases(&mut self) {
        let now = Utc::now().timestamp_millis() - 1;
        let w = self.w();
        let mut failures = Vec::new();
        for item in w.ledger().await {
            let (pk, sk) = (
                support::attr(&item, "pk").unwrap_or_default().to_owned(),
                support::attr(&item, "sk").unwrap_or_default().to_owned(),
            );
            let attribute = if pk.starts_with("REQ#") && sk == "HEAD" {
                "lease_until"
            } else if pk == "LOCK" && sk == "ALLOCATIONS" {
                "until"
            } else {
                continue;
            };
            let live = item
                .get(attribute)
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse::<i64>().ok())
                .is_some_and(|until| until > now);
            if !live {
                continue;
            }
            let result = w
                .dynamo
                .update_item()
                .table_name(&w.table)
                .key("pk", AttributeValue::S(pk.clone()))
                .key("sk", AttributeValue::S(sk.clone()))
                .update_expression("SET #a = :now")
                .expression_attribute_names("#a", attribute)
                .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
                .send()
                .await;
            if let Err(e) = result {
                failures.push(format!("could not end the lease of {pk}/{sk}: {e:?}"));
            }
        }
        for failure in failures {
            self.fail(failure);
        }
    }

    /// Invokes `function` with `event` and SIGKILLs process `proc` as soon as `hold` is
    /// reached; then waits until the simulator saw the client go (the held request
    /// abandoned) and releases the hold. False (and a failure) if the invocation answered
    /// first or the hold was not reached in time.
    async fn invoke_and_kill(&mut self, proc: usize, function: &str, event: &Value, hold: &Hold) -> bool {
        let invoker = self.w().invoker();
        let event = if function == ALLOCATE {
            stamp(event).0
        } else {
            event.clone()
        };
        let mut call = Box::pin(invoker.invoke(function, &event));
        let reached = tokio::time::timeout(WAIT_LIMIT, async {
            tokio::select! {
                seq = hold.reached() => Ok(seq),
                out = &mut call => Err(out),
            }
        })
        .await;
        match reached {
            Ok(Ok(_seq)) => {}
            Ok(Err(out)) => {
                self.texts.push(out.payload.to_string());
                hold.release();
                self.fail(format!(
                    "{function} answered before reaching the hold on {}: {}",
                    hold.spec().endpoint,
                    out.payload
                ));
                return false;
            }
            Err(_) => {
                hold.release();
                self.fail(format!("the hold on {} was never reached", hold.spec().endpoint));
                return false;
            }
        }
        self.procs[proc].kill().await;
        // The invocation in flight is lost, as when Lambda kills a container.
        drop(call);
        let settled = tokio::time::timeout(Duration::from_secs(20), hold.settled()).await;
        hold.release();
        match settled {
            Ok(HoldStatus::Abandoned { .. }) => true,
            other => {
                self.fail(format!(
                    "the simulator did not see the killed client leave (hold {other:?})"
                ));
                false
            }
        }
    }

    /// The allocations now, for the members the model knows.
    fn state(&self) -> BTreeMap<String, Option<i64>> {
        self.w()
            .sim
            .members()
            .into_iter()
            .map(|m| (m.username, m.allocation.map(micros)))
            .collect()
    }

    /// (a) The final state against the model: members whose allocation differs.
    fn expect_state(&mut self, model: &Model) -> Vec<String> {
        let now = self.state();
        let mut wrong = Vec::new();
        for (u, m) in &model.members {
            let actual = now.get(u).copied().flatten();
            if actual != m.allocation {
                wrong.push(u.clone());
                self.fail(format!(
                    "{u}: allocation {} where {} was expected",
                    show_opt(actual),
                    show_opt(m.allocation)
                ));
            }
        }
        wrong
    }

    /// The simulator's writes that changed an allocation: (username, before, after), in the
    /// order they were applied.
    fn changing_writes(&self) -> Vec<(String, Option<i64>, Option<i64>)> {
        let mut calls = self.w().sim.allocation_calls();
        calls.sort_by_key(|c| c.order);
        calls
            .iter()
            .flat_map(|c| c.entries.iter())
            .filter(|e| e.applied && e.before != e.after)
            .map(|e| (e.username.clone(), e.before.map(micros), e.after.map(micros)))
            .collect()
    }

    /// Entries sent that changed nothing (a target sent again): re-sends.
    fn resends(&self) -> usize {
        self.w()
            .sim
            .allocation_calls()
            .iter()
            .flat_map(|c| c.entries.iter())
            .filter(|e| e.applied && e.before == e.after)
            .count()
    }

    /// The writes against the changes expected: extra ones are double applications, missing
    /// ones failures. Also fails on re-sends (a target sent twice, even if it changed nothing).
    fn expect_writes(&mut self, expected: &[Change]) {
        let mut want: BTreeMap<(String, i64, i64), i64> = BTreeMap::new();
        for (u, b, a) in expected {
            *want.entry((u.clone(), *b, *a)).or_default() += 1;
        }
        let mut got: BTreeMap<(String, i64, i64), i64> = BTreeMap::new();
        for (u, b, a) in self.changing_writes() {
            *got.entry((u, b.unwrap_or(-1), a.unwrap_or(-1))).or_default() += 1;
        }
        let keys: BTreeSet<_> = want.keys().chain(got.keys()).cloned().collect();
        let mut per_member_extra: BTreeMap<String, i64> = BTreeMap::new();
        for k in keys {
            let (w, g) = (want.get(&k).copied().unwrap_or(0), got.get(&k).copied().unwrap_or(0));
            if g > w {
                *per_member_extra.entry(k.0.clone()).or_default() += g - w;
                self.fail(format!(
                    "{}: {} unexpected write(s) {} → {}",
                    k.0,
                    g - w,
                    show(k.1),
                    show(k.2)
                ));
            } else if g < w {
                self.fail(format!(
                    "{}: the change {} → {} was not applied",
                    k.0,
                    show(k.1),
                    show(k.2)
                ));
            }
        }
        self.report.counts.double += per_member_extra.values().sum::<i64>() as usize;
        let resends = self.resends();
        self.check(resends == 0, || {
            format!("{resends} allocation(s) sent again though already at their target")
        });
    }

    /// (b) The audit trail against the simulator's write log.
    async fn audit_against_writes(&mut self) {
        let writes = self.changing_writes();
        let changes = self.w().audit("change").await;
        let intents = self.w().audit("intent").await;
        let assigned = |b: &Value| match b["kind"].as_str() {
            Some("limited") => value_micros(&b["assigned"]),
            _ => None,
        };
        let mut by_write: BTreeMap<(String, Option<i64>, Option<i64>), i64> = BTreeMap::new();
        for (u, b, a) in &writes {
            *by_write.entry((u.clone(), *b, *a)).or_default() += 1;
        }
        let mut by_audit: BTreeMap<(String, Option<i64>, Option<i64>), i64> = BTreeMap::new();
        for c in &changes {
            let u = c["username"].as_str().unwrap_or("?").to_owned();
            let observed = assigned(&c["observed"]);
            if c["matches_plan"] != true || observed != value_micros(&c["planned"]) {
                self.fail(format!("{u}: audit entry does not match its plan: {c}"));
            }
            *by_audit.entry((u, assigned(&c["before"]), observed)).or_default() += 1;
        }
        let keys: BTreeSet<_> = by_write.keys().chain(by_audit.keys()).cloned().collect();
        let mut unaudited = 0;
        for k in keys {
            let (w, a) = (
                by_write.get(&k).copied().unwrap_or(0),
                by_audit.get(&k).copied().unwrap_or(0),
            );
            let what = format!("{} {} → {}", k.0, show_opt(k.1), show_opt(k.2));
            if w > a {
                unaudited += w - a;
                self.fail(format!("{what}: {} write(s) without an audit entry", w - a));
            } else if a > w {
                unaudited += a - w;
                self.fail(format!("{what}: {} audit entr(ies) without a write", a - w));
            }
        }
        self.report.counts.unaudited += unaudited as usize;
        // Write-ahead: every write had its intent on record.
        let intended: BTreeSet<(String, Option<i64>)> = intents
            .iter()
            .flat_map(|i| i["members"].as_array().cloned().unwrap_or_default())
            .map(|m| {
                (
                    m["username"].as_str().unwrap_or("?").to_owned(),
                    value_micros(&m["target"]),
                )
            })
            .collect();
        let without: Vec<String> = writes
            .iter()
            .filter(|(u, _, a)| !intended.contains(&(u.clone(), *a)))
            .map(|(u, _, a)| format!("{u} → {}", show_opt(*a)))
            .collect();
        self.check(without.is_empty(), || {
            format!("write(s) without an audit intent before them: {}", without.join(", "))
        });
    }

    /// The guardrail every world shares: what was added in total stays within the daily
    /// budget `max_per_day` (whole credits).
    fn expect_within_budget(&mut self, max_per_day: i64) {
        let added: i64 = self
            .changing_writes()
            .iter()
            .filter_map(|(_, b, a)| Some((a.as_ref()? - b.as_ref()?).max(0)))
            .sum();
        if added > max_per_day * 1_000_000 {
            self.report.counts.guardrail += 1;
            self.fail(format!(
                "{} credits were added, above MAX_CREDITS_PER_DAY {max_per_day}",
                show(added)
            ));
        }
    }

    /// Checks and stops the current world: the audit trail against the writes, then the
    /// secrets in everything its processes printed and every reply.
    async fn close_world(&mut self) {
        self.audit_against_writes().await;
        self.expect_within_budget(self.budget);
        self.budget = DEFAULT_DAY_BUDGET;
        let world = self.worlds.pop().expect("a world");
        let mut secrets = vec![ADMIN_PASSWORD.to_owned()];
        secrets.extend(world.sim.sim().world().tokens.keys().cloned());
        self.report.tokens_known += secrets.len() - 1;
        let mut texts = std::mem::take(&mut self.texts);
        texts.append(&mut self.outputs);
        for p in self.procs.drain(..) {
            texts.push(p.output());
        }
        self.report.texts_checked += texts.len();
        for text in &texts {
            for secret in &secrets {
                if text.contains(secret.as_str()) {
                    self.report.counts.secrets += 1;
                    let what = if secret == ADMIN_PASSWORD {
                        "the admin password"
                    } else {
                        "a token"
                    };
                    let at = text.find(secret.as_str()).unwrap_or(0);
                    let context: String = text[at.saturating_sub(80)..].chars().take(160).collect();
                    self.report
                        .failures
                        .push(format!("{what} appears in an output or reply: …{context}…"));
                }
            }
        }
        drop(world);
    }
}

// ---------------------------------------------------------------------------------------
// Scenarios.

/// The default guardrails of the template, except where a scenario says otherwise.
const GENEROUS: &[(&str, &str)] = &[
    ("MAX_CREDITS_PER_MEMBER", "100000"),
    ("MAX_CREDITS_PER_PLAN", "1000000"),
    ("MAX_CREDITS_PER_DAY", "1000000"),
];
const DEFAULT_DAY_BUDGET: i64 = 20_000;

/// Three eligible members and a request with every kind of operation on them.
fn mixed_request(model: &Model, from: usize) -> Vec<Op> {
    let e = model.eligible();
    let (a, b, c) = (&e[from], &e[from + 1], &e[from + 2]);
    let b_alloc = model.allocation(b).unwrap_or(0) / 1_000_000;
    let c_available = model.members[c].available().unwrap_or(0) / 1_000_000;
    vec![
        Op::Add(a.clone(), 25),
        Op::Set(b.clone(), b_alloc + 40),
        Op::TopUpTo(c.clone(), c_available + 50),
    ]
}

fn all_assigned(cx: &mut Cx, reply: &Reply, ops: &[Op]) {
    for op in ops {
        let status = reply.member_status(op.username()).unwrap_or("missing");
        cx.check(status == "assigned", || {
            format!("{}: reply status {status}, expected assigned", op.username())
        });
    }
}

/// 1, 2: a kill at an `assignUserCredits` hold, then a retry with the same key on a new
/// process.
async fn kill_at_assign(cx: &mut Cx, phase: HoldPhase) {
    cx.world(200, 11).await;
    let mut model = Model::of(cx.w());
    let ops = mixed_request(&model, 0);
    let expected = model.apply_all(&ops);
    let request = event(&body(&ops, "fault matrix"), "kill-at-assign", ALICE);
    let first = cx.start(ALLOCATE, &[], KILLED_TIMEOUT);
    let hold = cx.w().sim.hold(HoldSpec {
        endpoint: ASSIGN.into(),
        nth: 1,
        phase,
    });
    if !cx.invoke_and_kill(first, ALLOCATE, &request, &hold).await {
        return;
    }
    let written = cx.changing_writes().len();
    match phase {
        HoldPhase::BeforeProcessing => cx.check(written == 0, || format!("{written} write(s) before the send")),
        HoldPhase::AfterProcessing => cx.check(written == expected.len(), || {
            format!("{written} write(s) after the send, expected {}", expected.len())
        }),
    }
    let _retry = cx.start(ALLOCATE, &[], ALLOCATE_TIMEOUT);
    let (reply, retried) = cx.allocate_until_settled(&request).await;
    cx.note(format!("retry answered {} after {retried}", reply.status));
    cx.check(reply.status == 200, || format!("retry: {}", reply.brief()));
    all_assigned(cx, &reply, &ops);
    cx.expect_state(&model);
    cx.expect_writes(&expected);
    let calls = cx.w().sim.allocation_calls().len();
    cx.check(calls == 1, || {
        format!("{calls} assignUserCredits calls processed, expected 1")
    });
}

/// 3: 150 members, killed while the second batch is held before processing.
async fn kill_between_batches(cx: &mut Cx) {
    cx.world(360, 12).await;
    let mut model = Model::of(cx.w());
    let members = model.limited();
    if members.len() < 150 {
        cx.fail(format!("only {} eligible members", members.len()));
        return;
    }
    let ops: Vec<Op> = members[..150].iter().map(|u| Op::Add(u.clone(), 10)).collect();
    let expected = model.apply_all(&ops);
    let request = event(&body(&ops, "fault matrix: batches"), "kill-between-batches", ALICE);
    let first = cx.start(ALLOCATE, &[], KILLED_TIMEOUT);
    let hold = cx.w().sim.hold(HoldSpec {
        endpoint: ASSIGN.into(),
        nth: 2,
        phase: HoldPhase::BeforeProcessing,
    });
    if !cx.invoke_and_kill(first, ALLOCATE, &request, &hold).await {
        return;
    }
    let calls = cx.w().sim.allocation_calls();
    cx.check(calls.len() == 1 && calls[0].entries.len() == 100, || {
        format!(
            "after the kill: {} call(s) of {:?} entries, expected one batch of 100",
            calls.len(),
            calls.iter().map(|c| c.entries.len()).collect::<Vec<_>>()
        )
    });
    let _retry = cx.start(ALLOCATE, &[], ALLOCATE_TIMEOUT);
    let (reply, retried) = cx.allocate_until_settled(&request).await;
    cx.note(format!("retry answered {} after {retried}", reply.status));
    cx.check(reply.status == 200, || format!("retry: {}", reply.brief()));
    cx.check(reply.body["summary"]["assigned"] == 150, || {
        format!("retry summary: {}", reply.body["summary"])
    });
    let calls = cx.w().sim.allocation_calls();
    let batch_two: BTreeSet<&str> = members[100..150].iter().map(String::as_str).collect();
    let second: BTreeSet<&str> = calls
        .get(1)
        .map(|c| c.entries.iter().map(|e| e.username.as_str()).collect())
        .unwrap_or_default();
    cx.check(calls.len() == 2 && second == batch_two, || {
        format!(
            "the retry sent {} call(s); its second holds {} member(s), {} of batch 2",
            calls.len(),
            second.len(),
            second.intersection(&batch_two).count()
        )
    });
    cx.expect_state(&model);
    cx.expect_writes(&expected);
}

/// 4: killed after the write, while reading the members back (before the audit).
async fn kill_before_audit(cx: &mut Cx) {
    cx.world(200, 13).await;
    let mut model = Model::of(cx.w());
    let ops = mixed_request(&model, 3);
    let expected = model.apply_all(&ops);
    let request = event(&body(&ops, "fault matrix: audit"), "kill-before-audit", ALICE);
    let first = cx.start(ALLOCATE, &[], KILLED_TIMEOUT);
    // Hold the write after it was applied, then arm the read-back hold, then let it go on.
    let write = cx.w().sim.hold(HoldSpec {
        endpoint: ASSIGN.into(),
        nth: 1,
        phase: HoldPhase::AfterProcessing,
    });
    let invoker = cx.w().invoker();
    let stamped = stamp(&request).0;
    let mut call = Box::pin(invoker.invoke(ALLOCATE, &stamped));
    let reached = tokio::time::timeout(WAIT_LIMIT, async {
        tokio::select! {
            _ = write.reached() => true,
            _ = &mut call => false,
        }
    })
    .await;
    if reached != Ok(true) {
        write.release();
        cx.fail("the write was not held");
        return;
    }
    let read_back = cx.w().sim.hold(HoldSpec {
        endpoint: LOOKUP.into(),
        nth: 1,
        phase: HoldPhase::BeforeProcessing,
    });
    write.release();
    let reached = tokio::time::timeout(WAIT_LIMIT, async {
        tokio::select! {
            _ = read_back.reached() => true,
            _ = &mut call => false,
        }
    })
    .await;
    if reached != Ok(true) {
        read_back.release();
        cx.fail("the read-back was not held");
        return;
    }
    cx.procs[first].kill().await;
    drop(call);
    let settled = tokio::time::timeout(Duration::from_secs(20), read_back.settled()).await;
    read_back.release();
    cx.check(matches!(settled, Ok(HoldStatus::Abandoned { .. })), || {
        format!("the read-back was not abandoned: {settled:?}")
    });
    let audited = cx.w().audit("change").await.len();
    cx.check(audited == 0, || format!("{audited} audit entries before the kill"));
    let _retry = cx.start(ALLOCATE, &[], ALLOCATE_TIMEOUT);
    let (reply, retried) = cx.allocate_until_settled(&request).await;
    cx.note(format!("retry answered {} after {retried}", reply.status));
    cx.check(reply.status == 200, || format!("retry: {}", reply.brief()));
    all_assigned(cx, &reply, &ops);
    cx.expect_state(&model);
    cx.expect_writes(&expected);
    let calls = cx.w().sim.allocation_calls().len();
    cx.check(calls == 1, || {
        format!("{calls} assignUserCredits calls processed, expected 1")
    });
    let audited = cx.w().audit("change").await.len();
    cx.check(audited == expected.len(), || {
        format!("{audited} audit entries, expected {}", expected.len())
    });
}

/// 5, 6: an HTTP error after the write was applied, on every assign.
async fn error_after_commit(cx: &mut Cx, status: u16, retry_after: Option<u64>) {
    cx.world(200, 14).await;
    let mut model = Model::of(cx.w());
    let ops = mixed_request(&model, 6);
    let expected = model.apply_all(&ops);
    cx.w().sim.set_faults(Faults {
        http_error: Some(HttpErrorFault {
            status,
            retry_after_secs: retry_after,
            when: Trigger {
                endpoint: Some(ASSIGN.into()),
                after_processing: true,
                ..Trigger::default()
            },
        }),
        ..Faults::default()
    });
    let _p = cx.start(ALLOCATE, &[], ALLOCATE_TIMEOUT);
    let request = event(
        &body(&ops, "fault matrix: error after commit"),
        "error-after-commit",
        ALICE,
    );
    let reply = cx.allocate(&request).await;
    cx.note(format!(
        "answered {} in {:.1} s",
        reply.status,
        reply.elapsed.as_secs_f64()
    ));
    cx.check(reply.status == 200, || format!("reply: {}", reply.brief()));
    all_assigned(cx, &reply, &ops);
    cx.expect_state(&model);
    cx.expect_writes(&expected);
    let calls = cx.w().sim.allocation_calls().len();
    cx.check(calls == 1, || {
        format!("{calls} assignUserCredits calls processed, expected 1")
    });
}

/// 7: every token expires at the 1st, 2nd, … request of an allocation, one position after the
/// other until the allocation has no request left to expire at.
async fn token_expiry(cx: &mut Cx) {
    cx.world(200, 15).await;
    let mut model = Model::of(cx.w());
    let members = model.eligible();
    let _p = cx.start(ALLOCATE, &[], ALLOCATE_TIMEOUT);
    // Warm: the process signs in and keeps its token.
    let warm = json!({"allocations": [{"username": members[0], "add": 1}], "dry_run": true}).to_string();
    let reply = cx.allocate(&event(&warm, "warm", ALICE)).await;
    cx.check(reply.status == 200, || format!("dry run: {}", reply.brief()));
    let mut expected = Vec::new();
    let mut positions = Vec::new();
    for n in 1..=8u64 {
        let refused_before = cx.w().sim.requests().len();
        let ops = vec![Op::Add(members[n as usize].clone(), 5)];
        expected.extend(model.apply_all(&ops));
        cx.w().sim.set_faults(Faults {
            expire_tokens_after: Some(n),
            ..Faults::default()
        });
        let reply = cx
            .allocate(&event(
                &body(&ops, "fault matrix: token expiry"),
                &format!("expiry-{n}"),
                ALICE,
            ))
            .await;
        cx.check(reply.status == 200, || {
            format!("tokens expiring at request {n}: {}", reply.brief())
        });
        all_assigned(cx, &reply, &ops);
        let expired_at: Vec<String> = cx.w().sim.requests()[refused_before..]
            .iter()
            .filter(|r| r.outcome == "error:498")
            .map(|r| r.endpoint.clone())
            .collect();
        if expired_at.is_empty() {
            // The allocation made fewer than n requests: every position is covered.
            break;
        }
        positions.extend(expired_at);
    }
    cx.w().sim.clear_faults();
    let sign_ins = cx.w().sim.request_count("generateToken");
    cx.check(positions.iter().any(|p| p == ASSIGN), || {
        format!("no expiry hit the write; expired at {positions:?}")
    });
    cx.note(format!("expired at {} ({sign_ins} sign-ins)", positions.join(", ")));
    cx.expect_state(&model);
    cx.expect_writes(&expected);
}

/// 8: a 9 s timeout and 1.5 s per ArcGIS request: the work cannot finish; a retry with the
/// template's timeout does.
async fn deadline(cx: &mut Cx) {
    cx.world(360, 16).await;
    let mut model = Model::of(cx.w());
    let members = model.limited();
    let ops: Vec<Op> = members[..150].iter().map(|u| Op::Add(u.clone(), 3)).collect();
    let expected = model.apply_all(&ops);
    let timeout = Duration::from_secs(9);
    let first = cx.start(ALLOCATE, &[], timeout);
    let warm = json!({"allocations": [{"username": members[0], "add": 1}], "dry_run": true}).to_string();
    let reply = cx.allocate(&event(&warm, "warm", ALICE)).await;
    cx.check(reply.status == 200, || format!("dry run: {}", reply.brief()));
    cx.w().sim.set_faults(Faults {
        latency_ms: 1500,
        ..Faults::default()
    });
    let request = event(&body(&ops, "fault matrix: deadline"), "deadline", ALICE);
    let invoker = cx.w().invoker();
    let (stamped, _) = stamp(&request);
    let started = Instant::now();
    // Lambda stops an invocation at its deadline: so does the matrix (with a second's grace).
    let out = tokio::time::timeout(timeout + Duration::from_secs(1), invoker.invoke(ALLOCATE, &stamped)).await;
    match out {
        Ok(out) => {
            cx.texts.push(out.payload.to_string());
            let reply = Reply::from(&out, String::new(), started.elapsed());
            let incomplete = reply.status == 503
                && (reply.body["incomplete"].is_object() || reply.code() == "out_of_time")
                && reply.header("retry-after").is_some();
            cx.check(incomplete, || {
                format!("with the short deadline: {} (expected 503 incomplete)", reply.brief())
            });
            cx.note(format!(
                "first: {} {} in {:.1} s, {} of 2 batches sent",
                reply.status,
                if reply.body["incomplete"].is_object() {
                    "incomplete"
                } else {
                    reply.code()
                },
                reply.elapsed.as_secs_f64(),
                cx.w().sim.allocation_calls().len()
            ));
        }
        Err(_) => {
            cx.procs[first].kill().await;
            cx.note(format!(
                "first: died at its deadline, {} of 2 batches sent",
                cx.w().sim.allocation_calls().len()
            ));
        }
    }
    // ArcGIS back to its usual speed; the client retries with the template's timeout.
    cx.w().sim.clear_faults();
    let _retry = cx.start(ALLOCATE, &[], ALLOCATE_TIMEOUT);
    let (reply, retried) = cx.allocate_until_settled(&request).await;
    cx.note(format!("retry: {} after {retried}", reply.status));
    cx.check(reply.status == 200, || {
        format!("retry with the normal timeout: {}", reply.brief())
    });
    cx.expect_state(&model);
    cx.expect_writes(&expected);
}

/// Fires `requests` (event, label) at once; the replies in the same order.
async fn concurrently(cx: &mut Cx, requests: &[Value]) -> Vec<Reply> {
    let invoker = cx.w().invoker();
    let mut set = tokio::task::JoinSet::new();
    for (i, e) in requests.iter().enumerate() {
        let (stamped, id) = stamp(e);
        let invoker = invoker.clone();
        set.spawn(async move {
            let started = Instant::now();
            let out = tokio::time::timeout(WAIT_LIMIT, invoker.invoke(ALLOCATE, &stamped)).await;
            (i, id, out, started.elapsed())
        });
    }
    let mut replies: Vec<Option<Reply>> = vec![None; requests.len()];
    while let Some(done) = set.join_next().await {
        let Ok((i, id, out, elapsed)) = done else {
            cx.fail("a concurrent invocation panicked");
            continue;
        };
        let reply = match out {
            Ok(out) => {
                cx.texts.push(out.payload.to_string());
                Reply::from(&out, id, elapsed)
            }
            Err(_) => {
                cx.fail("a concurrent invocation did not answer");
                Reply {
                    request_id: id,
                    status: 0,
                    headers: Value::Null,
                    body: Value::Null,
                    elapsed,
                }
            }
        };
        replies[i] = Some(reply);
    }
    replies.into_iter().map(|r| r.expect("every task answered")).collect()
}

/// The requests answered 200, in the order of their plans (`planned_at` of their audit
/// entries), with their index.
async fn serialized(cx: &mut Cx, replies: &[Reply]) -> Vec<usize> {
    let changes = cx.w().audit("change").await;
    let mut order = Vec::new();
    for (i, r) in replies.iter().enumerate().filter(|(_, r)| r.status == 200) {
        let planned: BTreeSet<String> = changes
            .iter()
            .filter(|c| c["request_id"] == r.request_id.as_str())
            .filter_map(|c| c["planned_at"].as_str().map(str::to_owned))
            .collect();
        match planned.len() {
            1 => order.push((planned.into_iter().next().unwrap_or_default(), i)),
            n => cx.fail(format!(
                "request {} answered 200 with {n} plan time(s) in the audit trail",
                r.request_id
            )),
        }
    }
    order.sort();
    order.into_iter().map(|(_, i)| i).collect()
}

/// 409 answers changed nothing: no audit intent or entry carries their request id.
async fn refused_changed_nothing(cx: &mut Cx, replies: &[Reply]) {
    let mut records = cx.w().audit("change").await;
    records.extend(cx.w().audit("intent").await);
    for r in replies.iter().filter(|r| r.status != 200) {
        let touched = records
            .iter()
            .filter(|c| c["request_id"] == r.request_id.as_str())
            .count();
        cx.check(touched == 0, || {
            format!("a request answered {} left {touched} audit record(s)", r.status)
        });
    }
}

/// 9: four processes, four writers at a time, every kind of operation on four members, with
/// latency jitter; three rounds.
async fn concurrent_writers(cx: &mut Cx) {
    cx.world(200, 17).await;
    let model0 = Model::of(cx.w());
    let e = model0.eligible();
    let (m1, m2, m3, m4) = (e[0].clone(), e[1].clone(), e[2].clone(), e[3].clone());
    let procs: Vec<usize> = (0..4).map(|_| cx.start(ALLOCATE, GENEROUS, ALLOCATE_TIMEOUT)).collect();
    cx.w().sim.set_faults(Faults {
        latency_ms: 20,
        latency_jitter_ms: 250,
        ..Faults::default()
    });
    let mut all_ops: Vec<Vec<Op>> = Vec::new();
    let mut replies: Vec<Reply> = Vec::new();
    let mut distinct_rounds = 0;
    for round in 0..3i64 {
        let writers = vec![
            vec![
                Op::Set(m1.clone(), 500 + round),
                Op::Add(m2.clone(), 40),
                Op::TopUpTo(m3.clone(), 300),
            ],
            vec![Op::Add(m1.clone(), 25), Op::Set(m2.clone(), 0)],
            vec![
                Op::TopUpTo(m1.clone(), 400),
                Op::Add(m3.clone(), 30),
                Op::Set(m4.clone(), 250 + round),
            ],
            vec![
                Op::Add(m4.clone(), 15),
                Op::TopUpTo(m2.clone(), 100),
                Op::Add(m1.clone(), 10),
            ],
        ];
        let events: Vec<Value> = writers
            .iter()
            .enumerate()
            .map(|(w, ops)| event(&body(ops, "fault matrix: race"), &format!("race-{round}-{w}"), ALICE))
            .collect();
        cx.wait_idle(&procs).await;
        let before: Vec<usize> = procs.iter().map(|p| cx.procs[*p].delivered().len()).collect();
        let answers = concurrently(cx, &events).await;
        let got: Vec<usize> = procs
            .iter()
            .zip(&before)
            .map(|(p, b)| cx.procs[*p].delivered().len() - b)
            .collect();
        if got.iter().all(|n| *n == 1) {
            distinct_rounds += 1;
        }
        all_ops.extend(writers);
        replies.extend(answers);
    }
    cx.w().sim.clear_faults();
    cx.check(distinct_rounds == 3, || {
        format!("only {distinct_rounds} of 3 rounds had each invocation on its own process")
    });
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    let times: Vec<f64> = replies.iter().map(|r| r.elapsed.as_secs_f64()).collect();
    let (fastest, slowest) = times
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), t| (lo.min(*t), hi.max(*t)));
    cx.note(format!(
        "{} × 200, {} × 409; each round's 4 invocations on 4 processes at once, answered in \
         {fastest:.1}–{slowest:.1} s (serialized by the lock)",
        statuses.iter().filter(|s| **s == 200).count(),
        statuses.iter().filter(|s| **s == 409).count()
    ));
    for r in &replies {
        cx.check(r.status == 200 || r.busy(), || {
            format!("unexpected answer: {}", r.brief())
        });
    }
    refused_changed_nothing(cx, &replies).await;
    let order = serialized(cx, &replies).await;
    let mut model = model0.clone();
    let mut expected = Vec::new();
    for i in order {
        expected.extend(model.apply_all(&all_ops[i]));
    }
    let wrong = cx.expect_state(&model);
    cx.report.counts.lost += wrong.len();
    cx.expect_writes(&expected);
}

/// 10: `MAX_CREDITS_PER_DAY` 500 and twenty `add 50` one after another; then 400 and five
/// concurrent `add 150`.
async fn daily_budget(cx: &mut Cx) {
    cx.world(200, 18).await;
    let mut model = Model::of(cx.w());
    let member = model.eligible()[0].clone();
    let _p = cx.start(ALLOCATE, &[("MAX_CREDITS_PER_DAY", "500")], ALLOCATE_TIMEOUT);
    let (mut applied, mut refused) = (0, 0);
    let mut expected = Vec::new();
    for i in 0..20 {
        let ops = vec![Op::Add(member.clone(), 50)];
        let reply = cx
            .allocate(&event(
                &body(&ops, "fault matrix: budget"),
                &format!("budget-{i}"),
                ALICE,
            ))
            .await;
        let guardrails: Vec<&str> = reply.body["problems"]
            .as_array()
            .map(|p| p.iter().filter_map(|p| p["guardrail"].as_str()).collect())
            .unwrap_or_default();
        match reply.status {
            200 => {
                applied += 1;
                expected.extend(model.apply_all(&ops));
            }
            422 if guardrails.contains(&"max_per_day") => refused += 1,
            _ => cx.fail(format!("add 50 #{i}: {}", reply.brief())),
        }
    }
    cx.note(format!("sequential: {applied} applied, {refused} refused max_per_day"));
    cx.check(applied == 10 && refused == 10, || {
        format!("sequential: {applied} applied and {refused} refused, expected 10 and 10")
    });
    cx.expect_state(&model);
    cx.expect_writes(&expected);

    // Concurrent, on a fresh ledger: at most two of five fit in 400.
    cx.world(200, 18).await;
    let model0 = Model::of(cx.w());
    let members = model0.eligible();
    let procs: Vec<usize> = (0..5)
        .map(|_| cx.start(ALLOCATE, &[("MAX_CREDITS_PER_DAY", "400")], ALLOCATE_TIMEOUT))
        .collect();
    cx.wait_idle(&procs).await;
    cx.w().sim.set_faults(Faults {
        latency_jitter_ms: 100,
        ..Faults::default()
    });
    let ops: Vec<Vec<Op>> = (0..5).map(|i| vec![Op::Add(members[i].clone(), 150)]).collect();
    let events: Vec<Value> = ops
        .iter()
        .enumerate()
        .map(|(i, o)| {
            event(
                &body(o, "fault matrix: budget race"),
                &format!("budget-race-{i}"),
                ALICE,
            )
        })
        .collect();
    let replies = concurrently(cx, &events).await;
    cx.w().sim.clear_faults();
    let statuses: Vec<String> = replies
        .iter()
        .map(|r| match r.status {
            200 => "200".to_owned(),
            s => format!("{s} {}", r.code()),
        })
        .collect();
    cx.note(format!("concurrent: {}", statuses.join(", ")));
    let ok = replies.iter().filter(|r| r.status == 200).count();
    for r in replies.iter().filter(|r| r.status != 200) {
        cx.check(matches!(r.status, 409 | 422), || {
            format!("unexpected answer: {}", r.brief())
        });
    }
    // (A breach is counted by the budget check when the world closes.)
    cx.check(ok <= 2, || {
        format!("{ok} of 5 concurrent add 150 applied under a 400 budget")
    });
    refused_changed_nothing(cx, &replies).await;
    let order = serialized(cx, &replies).await;
    let mut model = model0.clone();
    let mut expected = Vec::new();
    for i in order {
        expected.extend(model.apply_all(&ops[i]));
    }
    let wrong = cx.expect_state(&model);
    cx.report.counts.lost += wrong.len();
    cx.expect_writes(&expected);
}

/// 11: the same key and body on a new process after the first answered.
async fn replay_after_cold_start(cx: &mut Cx) {
    cx.world(200, 19).await;
    let mut model = Model::of(cx.w());
    let ops = mixed_request(&model, 9);
    let expected = model.apply_all(&ops);
    let request = event(&body(&ops, "fault matrix: replay"), "replay", ALICE);
    let first = cx.start(ALLOCATE, &[], ALLOCATE_TIMEOUT);
    let original = cx.allocate(&request).await;
    cx.check(original.status == 200, || format!("first: {}", original.brief()));
    let output = cx.procs[first].output();
    cx.outputs.push(output);
    cx.procs[first].kill().await;
    let _second = cx.start(ALLOCATE, &[], ALLOCATE_TIMEOUT);
    let replay = cx.allocate(&request).await;
    cx.check(replay.status == original.status, || {
        format!("replay: {}", replay.brief())
    });
    cx.check(replay.header("idempotent-replayed") == Some("true"), || {
        format!("no idempotent-replayed header: {}", replay.headers)
    });
    cx.check(original.header("idempotent-replayed").is_none(), || {
        "the first answer says replayed".to_owned()
    });
    cx.check(replay.body == original.body, || {
        format!(
            "the replay's body differs:\n  first  {}\n  replay {}",
            original.body, replay.body
        )
    });
    cx.note(format!(
        "replayed on a new process: {}, same body, {} write(s) in all",
        replay.status,
        cx.changing_writes().len()
    ));
    cx.expect_state(&model);
    cx.expect_writes(&expected);
}

/// 12: caller B with caller A's key.
async fn per_caller_keys(cx: &mut Cx) {
    cx.world(200, 20).await;
    let mut model = Model::of(cx.w());
    let e = model.eligible();
    let _p = cx.start(ALLOCATE, &[], ALLOCATE_TIMEOUT);
    let x = vec![Op::Add(e[0].clone(), 10)];
    let mut expected = model.apply_all(&x);
    let a1 = cx
        .allocate(&event(&body(&x, "shared body"), "shared-key-1", ALICE))
        .await;
    cx.check(a1.status == 200, || format!("A: {}", a1.brief()));
    // B, same key, same body: B's own request.
    expected.extend(model.apply_all(&x));
    let b1 = cx.allocate(&event(&body(&x, "shared body"), "shared-key-1", BOB)).await;
    cx.check(b1.status == 200, || format!("B with A's key and body: {}", b1.brief()));
    cx.check(b1.header("idempotent-replayed").is_none(), || {
        "B was answered A's stored reply".to_owned()
    });
    cx.check(b1.body["caller"] == BOB.arn, || {
        format!("B's reply names {}", b1.body["caller"])
    });
    cx.check(b1.body["caller_identity"]["principal_id"] == BOB.principal, || {
        format!("B's reply identity: {}", b1.body["caller_identity"])
    });
    cx.check(b1.body["request_id"] != a1.body["request_id"], || {
        "B got A's request id".to_owned()
    });
    let names_alice = |r: &Reply| {
        let text = r.body.to_string();
        text.contains(ALICE.principal) || text.contains(ALICE.arn) || text.contains(a1.request_id.as_str())
    };
    cx.check(!names_alice(&b1), || format!("B's reply names A: {}", b1.brief()));
    // A uses a second key; B uses it with another body: not a conflict.
    let y = vec![Op::Add(e[1].clone(), 7)];
    expected.extend(model.apply_all(&y));
    let a2 = cx
        .allocate(&event(&body(&y, "first body"), "shared-key-2", ALICE))
        .await;
    cx.check(a2.status == 200, || format!("A, second key: {}", a2.brief()));
    let y2 = vec![Op::Add(e[1].clone(), 9)];
    expected.extend(model.apply_all(&y2));
    let b2 = cx
        .allocate(&event(&body(&y2, "another body"), "shared-key-2", BOB))
        .await;
    cx.check(b2.status == 200, || {
        format!("B with A's key, another body: {}", b2.brief())
    });
    cx.check(b2.status != 409 && !names_alice(&b2), || {
        format!("B's reply names A: {}", b2.brief())
    });
    cx.note(format!(
        "B with A's key and body: {} as B; with another body: {}",
        b1.status, b2.status
    ));
    cx.expect_state(&model);
    cx.expect_writes(&expected);
    // The audit trail names each caller for their own changes.
    let callers: Vec<String> = cx
        .w()
        .audit("change")
        .await
        .iter()
        .map(|c| c["caller"]["principal_id"].as_str().unwrap_or("?").to_owned())
        .collect();
    let bobs = callers.iter().filter(|c| c.as_str() == BOB.principal).count();
    cx.check(bobs == 2 && callers.len() == 4, || {
        format!("audit callers: {callers:?}")
    });
}

fn scan_env(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut env = vec![("AUTO_TOP_UP_TO", "200")];
    env.extend_from_slice(GENEROUS);
    env.extend_from_slice(extra);
    env
}

/// 13: the scan's top-up killed at its write; the same scheduled event redelivered to a new
/// process. While the killed run's lease is live the redelivery fails `TopUpInProgress` (so
/// Lambda delivers it again); once the lease is over, a redelivery finishes the top-up, once,
/// without email.
async fn top_up_redelivered(cx: &mut Cx, phase: HoldPhase, seed: u64) {
    cx.world(200, seed).await;
    let mut model = Model::of(cx.w());
    let expected = model.top_up(200);
    if expected.is_empty() {
        cx.fail("no critical member to top up");
        return;
    }
    let env = scan_env(&[]);
    let run = scheduled_event(&now_minute());
    let first = cx.start(SCAN, &env, Duration::from_secs(10));
    let hold = cx.w().sim.hold(HoldSpec {
        endpoint: ASSIGN.into(),
        nth: 1,
        phase,
    });
    if !cx.invoke_and_kill(first, SCAN, &run, &hold).await {
        return;
    }
    let _second = cx.start(SCAN, &env, SCAN_TIMEOUT);
    // At once: the killed run's lease (its 10 s deadline) is still live.
    let (early, ok) = cx.scan(&run).await;
    let refused_early = !ok && early["errorType"] == "TopUpInProgress";
    if ok {
        // Only if the kill and restart took the whole lease.
        cx.check(early["top_up"]["status"] == "applied", || {
            format!("a redelivery inside the lease answered success without the top-up: {early}")
        });
    } else {
        cx.check(refused_early, || format!("the redelivery inside the lease: {early}"));
    }
    let top_up = if refused_early {
        // Lambda's next retry comes after the lease.
        cx.lapse_leases().await;
        let (summary, ok) = cx.scan(&run).await;
        if !ok {
            cx.fail(format!("the redelivery after the lease failed: {summary}"));
            return;
        }
        cx.check(summary["duplicate_of"].is_object(), || {
            format!("the redelivery was not recognised as one: {}", summary["duplicate_of"])
        });
        summary["top_up"].clone()
    } else {
        early["top_up"].clone()
    };
    let when = if phase == HoldPhase::BeforeProcessing {
        "before"
    } else {
        "after"
    };
    cx.note(format!(
        "killed {when} the write: inside the lease {}; after it top-up {}, resumed {}",
        if refused_early { "TopUpInProgress" } else { "finished" },
        top_up["status"],
        top_up["resumed"]
    ));
    cx.check(top_up["status"] == "applied" && top_up["resumed"] == true, || {
        format!("the redelivery's top-up: {top_up}")
    });
    cx.check(
        top_up["applied"] == expected.len() && top_up["incomplete"] == false,
        || format!("top-up {top_up}, expected {} applied", expected.len()),
    );
    // Once more: nothing left to do.
    let (again, _) = cx.scan(&run).await;
    cx.check(again["top_up"]["status"] != "applied", || {
        format!("a later redelivery applied again: {}", again["top_up"])
    });
    let mails = cx.w().sim.notifications().len();
    cx.check(mails == 0, || format!("{mails} email(s) sent by the redeliveries"));
    cx.expect_state(&model);
    cx.expect_writes(&expected);
    let audited = cx.w().audit("change").await.len();
    cx.check(audited == expected.len(), || {
        format!("{audited} audit entries for {} changes", expected.len())
    });
}

/// 14: allocate on members the top-up also changes, while the top-up runs.
async fn allocate_during_top_up(cx: &mut Cx) {
    // (a) forced: the top-up holds the lock (its write held) when allocate arrives.
    cx.world(200, 22).await;
    let model0 = Model::of(cx.w());
    let critical = model0.critical();
    let other = model0.eligible()[0].clone();
    let ops = vec![
        Op::Add(critical[0].clone(), 100),
        Op::TopUpTo(critical[1].clone(), 300),
        Op::Set(other.clone(), 700),
    ];
    let env = scan_env(&[]);
    let _scan = cx.start(SCAN, &env, SCAN_TIMEOUT);
    let _alloc = cx.start(ALLOCATE, GENEROUS, ALLOCATE_TIMEOUT);
    let hold = cx.w().sim.hold(HoldSpec {
        endpoint: ASSIGN.into(),
        nth: 1,
        phase: HoldPhase::AfterProcessing,
    });
    let run = scheduled_event(&now_minute());
    let invoker = cx.w().invoker();
    let scan = tokio::spawn({
        let invoker = invoker.clone();
        let run = run.clone();
        async move { tokio::time::timeout(WAIT_LIMIT, invoker.invoke(SCAN, &run)).await }
    });
    if tokio::time::timeout(WAIT_LIMIT, hold.reached()).await.is_err() {
        hold.release();
        cx.fail("the top-up's write was not held");
        return;
    }
    let requests_before = cx.w().ledger_where("REQ#").await.len();
    let request = event(&body(&ops, "fault matrix: during top-up"), "during-top-up", ALICE);
    let (stamped, request_id) = stamp(&request);
    let alloc = tokio::spawn({
        let invoker = invoker.clone();
        async move {
            let started = Instant::now();
            let out = tokio::time::timeout(WAIT_LIMIT, invoker.invoke(ALLOCATE, &stamped)).await;
            (out, started.elapsed())
        }
    });
    // Let the top-up go once allocate has claimed its request (it then waits for the lock).
    let polled = Instant::now();
    while cx.w().ledger_where("REQ#").await.len() == requests_before && polled.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    hold.release();
    let scan_out = scan.await;
    let alloc_out = alloc.await;
    let (Ok(Ok(scan_out)), Ok((Ok(alloc_out), elapsed))) = (scan_out, alloc_out) else {
        cx.fail("an invocation did not answer");
        return;
    };
    cx.texts.push(scan_out.payload.to_string());
    cx.texts.push(alloc_out.payload.to_string());
    let reply = Reply::from(&alloc_out, request_id, elapsed);
    cx.note(format!(
        "forced overlap: top-up {}, allocate {}",
        scan_out.payload["top_up"]["status"],
        reply.label()
    ));
    cx.check(scan_out.payload["top_up"]["status"] == "applied", || {
        format!("top-up: {}", scan_out.payload["top_up"])
    });
    cx.check(reply.status == 200 || reply.busy(), || {
        format!("allocate: {}", reply.brief())
    });
    let mut model = model0.clone();
    let mut expected = model.top_up(200);
    if reply.status == 200 {
        expected.extend(model.apply_all(&ops));
    }
    let wrong = cx.expect_state(&model);
    cx.report.counts.lost += wrong.len();
    cx.expect_writes(&expected);

    // (b) a race: both at once, with jitter; the audit trail's plan times say who went first.
    cx.world(200, 23).await;
    let model0 = Model::of(cx.w());
    let critical = model0.critical();
    let ops = vec![Op::Add(critical[0].clone(), 100), Op::Add(critical[1].clone(), 50)];
    let _scan = cx.start(SCAN, &env, SCAN_TIMEOUT);
    let _alloc = cx.start(ALLOCATE, GENEROUS, ALLOCATE_TIMEOUT);
    cx.w().sim.set_faults(Faults {
        latency_jitter_ms: 150,
        ..Faults::default()
    });
    let invoker = cx.w().invoker();
    let run = scheduled_event(&now_minute());
    let request = event(&body(&ops, "fault matrix: race with top-up"), "race-top-up", ALICE);
    let (stamped, request_id) = stamp(&request);
    let started = Instant::now();
    let (scan_out, alloc_out) = tokio::join!(
        tokio::time::timeout(WAIT_LIMIT, invoker.invoke(SCAN, &run)),
        tokio::time::timeout(WAIT_LIMIT, invoker.invoke(ALLOCATE, &stamped)),
    );
    cx.w().sim.clear_faults();
    let (Ok(scan_out), Ok(alloc_out)) = (scan_out, alloc_out) else {
        cx.fail("an invocation did not answer");
        return;
    };
    cx.texts.push(scan_out.payload.to_string());
    cx.texts.push(alloc_out.payload.to_string());
    let reply = Reply::from(&alloc_out, request_id.clone(), started.elapsed());
    cx.check(reply.status == 200 || reply.busy(), || {
        format!("allocate: {}", reply.brief())
    });
    let top_up = scan_out.payload["top_up"].clone();
    let busy_top_up = top_up["status"] == "refused";
    cx.check(top_up["status"] == "applied" || busy_top_up, || {
        format!("top-up: {top_up}")
    });
    // Order by plan time.
    let changes = cx.w().audit("change").await;
    let plan_of = |pred: &dyn Fn(&Value) -> bool| {
        changes
            .iter()
            .filter(|c| pred(c))
            .filter_map(|c| c["planned_at"].as_str().map(str::to_owned))
            .next()
    };
    let alloc_at = plan_of(&|c: &Value| c["request_id"] == request_id.as_str());
    let top_up_at = plan_of(&|c: &Value| c["source"] != "allocate");
    let mut model = model0.clone();
    let mut expected = Vec::new();
    let top_up_first = match (&top_up_at, &alloc_at) {
        (Some(t), Some(a)) => t < a,
        _ => true,
    };
    let apply_top_up = |m: &mut Model, e: &mut Vec<Change>| {
        if top_up["status"] == "applied" {
            e.extend(m.top_up(200));
        }
    };
    if top_up_first {
        apply_top_up(&mut model, &mut expected);
    }
    if reply.status == 200 {
        expected.extend(model.apply_all(&ops));
    }
    if !top_up_first {
        apply_top_up(&mut model, &mut expected);
    }
    cx.note(format!(
        "race: {} first; top-up {}, allocate {}",
        if top_up_first { "top-up" } else { "allocate" },
        top_up["status"],
        reply.status
    ));
    let wrong = cx.expect_state(&model);
    cx.report.counts.lost += wrong.len();
    cx.expect_writes(&expected);
}

/// 16: the first `assignUserCredits` answers 503 before ArcGIS processed it: nothing applied,
/// the reply says to retry; the retry with the same key applies it once.
async fn error_before_commit(cx: &mut Cx) {
    cx.world(200, 25).await;
    let mut model = Model::of(cx.w());
    let ops = mixed_request(&model, 12);
    let expected = model.apply_all(&ops);
    cx.w().sim.set_faults(Faults {
        http_error: Some(HttpErrorFault {
            status: 503,
            retry_after_secs: None,
            when: Trigger {
                endpoint: Some(ASSIGN.into()),
                times: Some(1),
                ..Trigger::default()
            },
        }),
        ..Faults::default()
    });
    let _p = cx.start(ALLOCATE, &[], ALLOCATE_TIMEOUT);
    let request = event(
        &body(&ops, "fault matrix: error before commit"),
        "error-before-commit",
        ALICE,
    );
    let first = cx.allocate(&request).await;
    cx.check(
        first.status == 503 && first.body["incomplete"].is_object() && first.header("retry-after").is_some(),
        || format!("first: {} (expected 503 incomplete with Retry-After)", first.brief()),
    );
    for op in &ops {
        let status = first.member_status(op.username()).unwrap_or("missing");
        cx.check(status == "pending", || {
            format!("{}: first reply {status}, expected pending", op.username())
        });
    }
    let written = cx.changing_writes().len();
    cx.check(written == 0, || {
        format!("{written} write(s) after a 503 before processing")
    });
    let (reply, retried) = cx.allocate_until_settled(&request).await;
    cx.note(format!(
        "first {}; retry {} after {retried}",
        first.status, reply.status
    ));
    cx.check(reply.status == 200, || format!("retry: {}", reply.brief()));
    all_assigned(cx, &reply, &ops);
    cx.expect_state(&model);
    cx.expect_writes(&expected);
}

/// 17: a client sends the same request twice at once (a double submit, or a retry after a
/// client-side timeout while the first still runs): applied once; the other answer is "in
/// progress", and its retry a replay.
async fn same_key_at_once(cx: &mut Cx) {
    cx.world(200, 26).await;
    let mut model = Model::of(cx.w());
    let ops = mixed_request(&model, 15);
    let expected = model.apply_all(&ops);
    let procs = [
        cx.start(ALLOCATE, &[], ALLOCATE_TIMEOUT),
        cx.start(ALLOCATE, &[], ALLOCATE_TIMEOUT),
    ];
    cx.wait_idle(&procs).await;
    cx.w().sim.set_faults(Faults {
        latency_ms: 100,
        latency_jitter_ms: 100,
        ..Faults::default()
    });
    let request = event(&body(&ops, "fault matrix: double submit"), "double-submit", ALICE);
    let replies = concurrently(cx, &[request.clone(), request.clone()]).await;
    cx.w().sim.clear_faults();
    let statuses: Vec<String> = replies.iter().map(Reply::label).collect();
    let applied = replies
        .iter()
        .filter(|r| r.status == 200 && r.header("idempotent-replayed").is_none())
        .count();
    cx.check(applied == 1, || {
        format!("{applied} of the two answered as applied: {statuses:?}")
    });
    for r in replies.iter().filter(|r| r.status != 200) {
        cx.check(r.status == 409 && r.code() == "idempotency_key_in_progress", || {
            format!("the other answer: {}", r.brief())
        });
    }
    let (replay, retried) = cx.allocate_until_settled(&request).await;
    cx.check(
        replay.status == 200 && replay.header("idempotent-replayed") == Some("true"),
        || format!("the retry: {}", replay.brief()),
    );
    cx.note(format!(
        "at once: {}; then a replay after {retried}",
        statuses.join(", ")
    ));
    cx.expect_state(&model);
    cx.expect_writes(&expected);
}

/// 18: request A is killed at its write and left in doubt; after its lease, request B (another
/// caller) adds to the same member; then A is retried. Serialized, both adds apply; A must not
/// be told "assigned" for a change that is not there, nor "conflict" for one that is.
async fn in_doubt_overtaken(cx: &mut Cx, phase: HoldPhase, seed: u64) {
    cx.world(200, seed).await;
    let model0 = Model::of(cx.w());
    let member = model0.eligible()[0].clone();
    let initial = model0.allocation(&member).unwrap_or(0);
    let a_ops = vec![Op::Add(member.clone(), 100)];
    let b_ops = vec![Op::Add(member.clone(), 100)];
    let a = event(&body(&a_ops, "request A"), "in-doubt-a", ALICE);
    let b = event(&body(&b_ops, "request B"), "in-doubt-b", BOB);
    let first = cx.start(ALLOCATE, &[], KILLED_TIMEOUT);
    let hold = cx.w().sim.hold(HoldSpec {
        endpoint: ASSIGN.into(),
        nth: 1,
        phase,
    });
    if !cx.invoke_and_kill(first, ALLOCATE, &a, &hold).await {
        return;
    }
    let _second = cx.start(ALLOCATE, &[], ALLOCATE_TIMEOUT);
    let (b_reply, b_retried) = cx.allocate_until_settled(&b).await;
    cx.check(b_reply.status == 200, || format!("B: {}", b_reply.brief()));
    let (a_reply, _) = cx.allocate_until_settled(&a).await;
    let a_status = a_reply.member_status(&member).unwrap_or("missing").to_owned();
    let a_written = cx.changing_writes().len();
    let final_alloc = cx.state().get(&member).copied().flatten().unwrap_or(0);
    cx.note(format!(
        "B {} after {b_retried}; A retried: {} ({a_status}); {a_written} write(s); {member} {} → {}",
        b_reply.status,
        a_reply.status,
        show(initial),
        show(final_alloc)
    ));
    // Serialized: B's add always applies; A's applies when A says so.
    let a_applied = a_status == "assigned";
    let a_landed = phase == HoldPhase::AfterProcessing;
    let mut model = model0.clone();
    let mut expected = Vec::new();
    if a_landed {
        expected.extend(model.apply_all(&a_ops));
    }
    expected.extend(model.apply_all(&b_ops));
    if a_applied && !a_landed {
        // A says its change is there: serialized, it must be.
        expected.extend(model.apply_all(&a_ops));
    }
    if a_landed {
        cx.check(a_applied, || {
            format!(
                "A's write was applied (before it was killed) but its retry answers {} ({a_status}): \
                 the caller is told its change is not there",
                a_reply.status
            )
        });
    }
    if model.allocation(&member) != Some(final_alloc) {
        cx.report.counts.lost += 1;
        cx.fail(format!(
            "A was told {a_status} but {member} ended at {} (from {}): only one of the two adds of 100 is there",
            show(final_alloc),
            show(initial)
        ));
    }
    if cx.expect_state(&model).is_empty() {
        cx.expect_writes(&expected);
    }
}

/// 19: scan-credits (template timeout 300 s, two async retries, 1 and 2 minutes apart) is
/// killed at its top-up's write long before its deadline. The top-up's lease is capped well
/// below the function timeout, but a retry can still arrive while it is live: that retry
/// must fail (so that Lambda delivers the event again), not answer success, since after a
/// success nothing would ever finish the top-up or audit its write. The next retry, after
/// the lease, finishes it.
async fn scan_retry_within_lease(cx: &mut Cx) {
    cx.world(200, 29).await;
    let mut model = Model::of(cx.w());
    let expected = model.top_up(200);
    let env = scan_env(&[]);
    let run = scheduled_event(&now_minute());
    let first = cx.start(SCAN, &env, Duration::from_secs(300));
    let hold = cx.w().sim.hold(HoldSpec {
        endpoint: ASSIGN.into(),
        nth: 1,
        phase: HoldPhase::AfterProcessing,
    });
    if !cx.invoke_and_kill(first, SCAN, &run, &hold).await {
        return;
    }
    // A retry inside the lease.
    let _second = cx.start(SCAN, &env, Duration::from_secs(300));
    let (summary, succeeded) = cx.scan(&run).await;
    let top_up = summary["top_up"].clone();
    let finished = top_up["status"] == "applied" && top_up["incomplete"] == false;
    if succeeded && !finished {
        cx.fail(format!(
            "the retry answered success with the top-up {} ({}): Lambda stops retrying, so the top-up is \
             never finished and its write never audited",
            top_up["status"],
            top_up["reason"].as_str().unwrap_or("")
        ));
        return;
    }
    cx.check(succeeded || summary["errorType"] == "TopUpInProgress", || {
        format!("the retry inside the lease failed otherwise: {summary}")
    });
    // Lambda's next retry, after the lease.
    let (last, last_ok) = if succeeded {
        (summary.clone(), true)
    } else {
        cx.lapse_leases().await;
        cx.scan(&run).await
    };
    cx.note(format!(
        "retry inside the lease: {}; next retry: {} with top-up {}",
        if succeeded { "success" } else { "TopUpInProgress" },
        if last_ok { "success" } else { "function error" },
        last["top_up"]["status"]
    ));
    cx.check(
        last_ok && last["top_up"]["status"] == "applied" && last["top_up"]["incomplete"] == false,
        || format!("the retry after the lease: {last}"),
    );
    cx.expect_state(&model);
    cx.expect_writes(&expected);
    let audited = cx.w().audit("change").await.len();
    cx.check(audited == expected.len(), || {
        format!("{audited} audit entries for {} changes", expected.len())
    });
}

/// 20: the connection drops, or the reply is cut short, after ArcGIS applied the write.
async fn broken_reply_after_commit(cx: &mut Cx) {
    cx.world(200, 30).await;
    let mut model = Model::of(cx.w());
    let _p = cx.start(ALLOCATE, &[], ALLOCATE_TIMEOUT);
    let after = Trigger {
        endpoint: Some(ASSIGN.into()),
        after_processing: true,
        ..Trigger::default()
    };
    let mut expected = Vec::new();
    let mut notes = Vec::new();
    for (i, (label, faults)) in [
        (
            "dropped connection",
            Faults {
                drop_connection: Some(after.clone()),
                ..Faults::default()
            },
        ),
        (
            "malformed JSON",
            Faults {
                malformed_json: Some(after.clone()),
                ..Faults::default()
            },
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let ops = mixed_request(&model, 3 * i);
        expected.extend(model.apply_all(&ops));
        cx.w().sim.set_faults(faults);
        let reply = cx
            .allocate(&event(&body(&ops, label), &format!("broken-reply-{i}"), ALICE))
            .await;
        cx.check(reply.status == 200, || format!("{label}: {}", reply.brief()));
        all_assigned(cx, &reply, &ops);
        notes.push(format!("{label}: {}", reply.status));
    }
    cx.w().sim.clear_faults();
    cx.note(notes.join(", "));
    cx.expect_state(&model);
    cx.expect_writes(&expected);
    let calls = cx.w().sim.allocation_calls().len();
    cx.check(calls == 2, || {
        format!("{calls} assignUserCredits calls processed, expected 2")
    });
}

// ---------------------------------------------------------------------------------------
// The runner.

/// 21: 150 members answered 202; the worker killed while the second batch is held, then the
/// message delivered again (twice, as SQS may) to a new worker: every change once, the
/// second batch sent only once, the job done.
async fn queued_job_killed(cx: &mut Cx) {
    cx.world(360, 31).await;
    let queue = support::Queue::create().await;
    let mut model = Model::of(cx.w());
    let members = model.limited();
    if members.len() < 150 {
        cx.fail(format!("only {} eligible members", members.len()));
        return;
    }
    let ops: Vec<Op> = members[..150].iter().map(|u| Op::Add(u.clone(), 10)).collect();
    let expected = model.apply_all(&ops);
    let _api = cx.start(ALLOCATE, &[("ALLOCATION_QUEUE_URL", &queue.url)], ALLOCATE_TIMEOUT);
    let accepted = cx
        .allocate(&event(&body(&ops, "fault matrix: queued"), "queued-job", ALICE))
        .await;
    let Some(job_id) = accepted.body["job_id"].as_str().map(str::to_owned) else {
        cx.fail(format!("not accepted: {}", accepted.brief()));
        return;
    };
    cx.check(accepted.status == 202, || format!("accepted: {}", accepted.brief()));
    let messages = queue.receive().await;
    if messages.len() != 1 {
        cx.fail(format!("{} message(s) queued, expected 1", messages.len()));
        return;
    }
    let delivery = queue.event(&messages);
    let first = cx.start(JOBS, &[], KILLED_TIMEOUT);
    let hold = cx.w().sim.hold(HoldSpec {
        endpoint: ASSIGN.into(),
        nth: 2,
        phase: HoldPhase::BeforeProcessing,
    });
    if !cx.invoke_and_kill(first, JOBS, &delivery, &hold).await {
        return;
    }
    let calls = cx.w().sim.allocation_calls().len();
    cx.check(calls == 1, || {
        format!("{calls} call(s) before the kill, expected the first batch")
    });
    cx.lapse_leases().await;

    // The message comes back after its visibility timeout; SQS may hand it out twice.
    let _second = cx.start(JOBS, &[], ALLOCATE_TIMEOUT);
    let invoker = cx.w().invoker();
    let started = Instant::now();
    let mut finished = 0;
    let mut redelivered = 0;
    while finished < 2 && started.elapsed() < RETRY_LIMIT {
        redelivered += 1;
        let out = match tokio::time::timeout(WAIT_LIMIT, invoker.invoke(JOBS, &delivery)).await {
            Ok(out) => out,
            Err(_) => {
                cx.fail(format!("{JOBS} did not answer within {WAIT_LIMIT:?}"));
                return;
            }
        };
        cx.texts.push(out.payload.to_string());
        match out.payload["batchItemFailures"].as_array() {
            Some(failures) if failures.is_empty() => finished += 1,
            Some(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            None => {
                cx.fail(format!("{JOBS} failed: {}", out.payload));
                return;
            }
        }
    }
    cx.note(format!("{redelivered} deliveries after the kill"));
    cx.check(finished == 2, || {
        "the job was not finished within the retry limit".into()
    });
    let calls = cx.w().sim.allocation_calls();
    cx.check(calls.len() == 2 && calls[1].entries.len() == 50, || {
        format!(
            "{} call(s) of {:?} entries, expected batches of 100 and 50",
            calls.len(),
            calls.iter().map(|c| c.entries.len()).collect::<Vec<_>>()
        )
    });
    let status = cx
        .allocate(&support::job_status_event(&job_id, "faults-job-status"))
        .await;
    cx.check(status.body["status"] == "done", || format!("job: {}", status.brief()));
    cx.check(status.body["result"]["summary"]["assigned"] == 150, || {
        format!("job result: {}", status.body["result"]["summary"])
    });
    cx.expect_state(&model);
    cx.expect_writes(&expected);
}

async fn run(id: u32) -> Report {
    let mut cx = Cx::new();
    match id {
        1 => kill_at_assign(&mut cx, HoldPhase::BeforeProcessing).await,
        2 => kill_at_assign(&mut cx, HoldPhase::AfterProcessing).await,
        3 => kill_between_batches(&mut cx).await,
        4 => kill_before_audit(&mut cx).await,
        5 => error_after_commit(&mut cx, 429, Some(10)).await,
        6 => error_after_commit(&mut cx, 503, None).await,
        7 => token_expiry(&mut cx).await,
        8 => deadline(&mut cx).await,
        9 => concurrent_writers(&mut cx).await,
        10 => daily_budget(&mut cx).await,
        11 => replay_after_cold_start(&mut cx).await,
        12 => per_caller_keys(&mut cx).await,
        13 => {
            top_up_redelivered(&mut cx, HoldPhase::BeforeProcessing, 21).await;
            if !cx.worlds.is_empty() {
                cx.close_world().await;
            }
            top_up_redelivered(&mut cx, HoldPhase::AfterProcessing, 24).await;
        }
        14 => allocate_during_top_up(&mut cx).await,
        16 => error_before_commit(&mut cx).await,
        19 => scan_retry_within_lease(&mut cx).await,
        20 => broken_reply_after_commit(&mut cx).await,
        21 => queued_job_killed(&mut cx).await,
        17 => same_key_at_once(&mut cx).await,
        18 => {
            in_doubt_overtaken(&mut cx, HoldPhase::BeforeProcessing, 27).await;
            if !cx.worlds.is_empty() {
                cx.close_world().await;
            }
            in_doubt_overtaken(&mut cx, HoldPhase::AfterProcessing, 28).await;
        }
        _ => unreachable!("no scenario {id}"),
    }
    while !cx.worlds.is_empty() {
        cx.close_world().await;
    }
    cx.report
}

fn line(ok: bool, id: u32, name: &str, secs: f64, text: &str) {
    println!(
        "{:<6} {id:>2}  {name:<52} {secs:>6.1} s  {text}",
        if ok { "ok" } else { "FAILED" }
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> ExitCode {
    let verbose = std::env::var_os("FAULTS_VERBOSE").is_some_and(|v| v != "0");
    let wanted: Vec<u32> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let selected: Vec<(u32, &str)> = SCENARIOS
        .iter()
        .copied()
        .filter(|(id, _)| wanted.is_empty() || wanted.contains(id) || *id == 15)
        .collect();
    // The function binaries, built once (as the e2e tests get them).
    tokio::task::spawn_blocking(testkit::lambda::function_binaries)
        .await
        .expect("the function binaries build");
    let started = Instant::now();
    let mut total = Counts::default();
    let mut failed = 0;
    let mut ran = 0;
    let (mut texts, mut tokens) = (0, 0);
    let mut secrets_found = 0;
    for (id, name) in selected {
        ran += 1;
        if id == 15 {
            let ok = secrets_found == 0 && texts > 0 && tokens > 0;
            if !ok {
                failed += 1;
            }
            let text = if ok {
                format!("{texts} outputs and replies checked against the password and {tokens} issued tokens")
            } else if secrets_found > 0 {
                format!("{secrets_found} secret(s) found (see the scenarios above)")
            } else {
                "nothing was checked".to_owned()
            };
            line(ok, id, name, 0.0, &text);
            continue;
        }
        let t = Instant::now();
        let mut task = tokio::spawn(run(id));
        let report = match tokio::time::timeout(SCENARIO_LIMIT, &mut task).await {
            Ok(Ok(report)) => report,
            Ok(Err(e)) => Report {
                failures: vec![format!("panicked: {e}")],
                ..Report::default()
            },
            Err(_) => {
                task.abort();
                Report {
                    failures: vec![format!("did not finish within {SCENARIO_LIMIT:?}")],
                    ..Report::default()
                }
            }
        };
        total += report.counts;
        secrets_found += report.counts.secrets;
        texts += report.texts_checked;
        tokens += report.tokens_known;
        let ok = report.failures.is_empty();
        if !ok {
            failed += 1;
        }
        let text = if ok {
            report.notes.join("; ")
        } else {
            let first: String = report.failures[0].chars().take(220).collect();
            match report.failures.len() {
                1 => first,
                n => format!("{first} (+{} more)", n - 1),
            }
        };
        line(ok, id, name, t.elapsed().as_secs_f64(), &text);
        if verbose && !ok {
            for f in &report.failures {
                println!("{:>12}{f}", "- ");
            }
            if !report.notes.is_empty() {
                println!("{:>12}notes: {}", "", report.notes.join("; "));
            }
        }
    }
    println!(
        "faults: {ran} scenarios, {} double applications, {} lost updates, {} guardrail breaches, {} unaudited writes, {} secrets in output",
        total.double, total.lost, total.guardrail, total.unaudited, total.secrets
    );
    eprintln!("({failed} failed; {:.0} s)", started.elapsed().as_secs_f64());
    let violations = total.double + total.lost + total.guardrail + total.unaudited + total.secrets;
    if failed == 0 && violations == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

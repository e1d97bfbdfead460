//! Allocation planning: turn requests into the exact allocations to set, checked against
//! guardrails, before anything is sent.
//!
//! `assignUserCredits` *sets* a member's allocation: sending `200` to "top up" a member
//! resets a 1000-credit allocation with 950 consumed to 200 (−750 available). Here every
//! request is resolved against the member's current balance into a new absolute
//! allocation, and [`Plan::assignments`] yields only those absolute values. Amounts are exact
//! [`Credits`], so what is sent is the decimal that was meant (`250.1`, never
//! `250.10000000000002`).
//!
//! Rules, per request (in the order given, one entry each):
//! - unknown username (exact, case-sensitive match) → [`Outcome::UnknownUser`], never applied;
//! - disabled members and viewers → [`Outcome::Skipped`]: they cannot spend credits;
//! - [`Request::Set`] `x` → allocation `x`; it may go below what the member already
//!   consumed (allowed, but flagged with `below_consumed`);
//! - [`Request::Add`] `x` → allocation `assigned + x`;
//! - [`Request::TopUpTo`] `x` → allocation `consumed + x` (= `assigned − available + x`) so that
//!   `x` credits are available; [`Outcome::NoChange`] when `x` or more are already available;
//! - an unlimited member named in a request becomes limited at `x` for all three kinds
//!   (ArcGIS sets the allocation; what the member already consumed while unlimited is not
//!   known to us, so `available` afterwards may be below `x`). This is only allowed with
//!   [`Guardrails::allow_unlimited_change`]; policy-built requests ([`critical_top_up`])
//!   never name unlimited members;
//! - a new allocation equal to the current one → [`Outcome::NoChange`].
//!
//! # Guardrails
//!
//! Allocations are limits, not reservations: ArcGIS debits the org only when credits are
//! spent, so the org's `availableCredits` does not move when an allocation grows and cannot
//! tell how much has already been promised. The guardrails therefore count what a plan
//! *promises* ("increase": how much it raises a member's allocation, `new − assigned` when
//! positive; for an unlimited member made limited, the whole new allocation) and check it
//! against ([`OrgPosition`] holds the figures read for the plan):
//! - `max_per_member`: one member's increase;
//! - `max_per_plan`: the plan's total increase;
//! - `max_per_day`: everything credit-steward granted in the last 24 hours plus this plan
//!   (the cumulative budget shared by `allocate` and the automatic top-up, kept in the
//!   ledger, so five requests of 250 cannot hand out 1,250 under a per-plan limit of 300);
//! - `org_reserve`: the org's credits minus what limited members may still spend (their
//!   positive `available`, already promised) minus the plan's increase must stay at or above
//!   the reserve: even if everyone spends everything they were given, the reserve is left.
//!
//! Decreases never offset increases. Every breach is listed with its numbers.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::amount::{Credits, InvalidCredits};
use super::classify::{Level, Thresholds, classify};
use super::member::{Allocation, Balance, Member};

/// What an administrator (or a policy) asks for one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Request {
    /// Set the allocation to exactly `credits`.
    Set {
        /// Exact username.
        username: String,
        /// The new allocation.
        credits: Credits,
    },
    /// Raise the allocation by `credits`.
    Add {
        /// Exact username.
        username: String,
        /// The increase.
        credits: Credits,
    },
    /// Raise the allocation so that `credits` are available.
    TopUpTo {
        /// Exact username.
        username: String,
        /// The credits that should be available afterwards.
        credits: Credits,
    },
}

impl Request {
    /// The member the request is about.
    pub fn username(&self) -> &str {
        match self {
            Request::Set { username, .. } | Request::Add { username, .. } | Request::TopUpTo { username, .. } => {
                username
            }
        }
    }

    /// The request's amount.
    pub fn credits(&self) -> Credits {
        match *self {
            Request::Set { credits, .. } | Request::Add { credits, .. } | Request::TopUpTo { credits, .. } => credits,
        }
    }

    /// The action's name as requests spell it (`set`, `add`, `top_up_to`).
    pub fn action(&self) -> &'static str {
        match self {
            Request::Set { .. } => "set",
            Request::Add { .. } => "add",
            Request::TopUpTo { .. } => "top_up_to",
        }
    }
}

/// Limits on what plans may do, so that a typo, a runaway policy or a burst of requests
/// cannot drain the org (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guardrails {
    /// Largest increase a single request may give one member (not the resulting allocation:
    /// members with large allocations must still be topped up by small steps).
    pub max_per_member: Credits,
    /// Largest sum of increases in one plan.
    pub max_per_plan: Credits,
    /// Largest sum of increases granted in any 24 hours, this plan included.
    pub max_per_day: Credits,
    /// Org credits that must stay unpromised after the plan.
    pub org_reserve: Credits,
    /// Whether a request may turn an unlimited member into a limited one.
    pub allow_unlimited_change: bool,
}

/// The org-wide figures a plan is checked against, read after the allocation lock was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgPosition {
    /// The org's credits (`portals/self` `availableCredits`).
    pub available: Credits,
    /// What limited members may still spend: the sum of their positive `available`.
    pub promised: Credits,
    /// What credit-steward granted in the last 24 hours (the ledger's budget window).
    pub granted_last_24h: Credits,
}

impl OrgPosition {
    /// The org's credits and what `members` (the whole org) were promised.
    pub fn from_members(available: Credits, members: &[Member], granted_last_24h: Credits) -> OrgPosition {
        OrgPosition {
            available,
            promised: members.iter().filter_map(|m| m.balance.headroom()).sum(),
            granted_last_24h,
        }
    }
}

/// Why a request for a known member is not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanSkip {
    /// Disabled members cannot sign in or spend.
    Disabled,
    /// Viewers cannot use credit-consuming tools; credits given to them are wasted.
    Viewer,
}

impl fmt::Display for PlanSkip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PlanSkip::Disabled => "disabled",
            PlanSkip::Viewer => "viewer: cannot consume credits",
        })
    }
}

/// What the plan does for one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// The allocation changes; sent by [`Plan::assignments`].
    Change {
        /// The member's balance when the plan was made.
        before: Balance,
        /// The new allocation (always limited: every request kind sets a limit).
        after: Allocation,
        /// `after − assigned`; `None` when the member was unlimited.
        delta: Option<Credits>,
        /// What counts against the guardrails (see [`Guardrails`]).
        increase: Credits,
        /// Expected available credits afterwards; `None` when the member was unlimited.
        available_after: Option<Credits>,
        /// The new allocation is below what the member already consumed: they will be
        /// overspent (and suspended) right away. Only a `Set` can do this on purpose.
        below_consumed: bool,
    },
    /// Nothing to send: the allocation already satisfies the request.
    NoChange {
        /// The member's balance when the plan was made.
        before: Balance,
    },
    /// A known member the plan deliberately leaves alone.
    Skipped {
        /// The member's balance when the plan was made.
        before: Balance,
        /// Why.
        reason: PlanSkip,
    },
    /// No member has this exact username.
    UnknownUser,
}

/// One request and what the plan does with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanEntry {
    /// The member the request names.
    pub username: String,
    /// The request as received.
    pub request: Request,
    /// What the plan does.
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl PlanEntry {
    /// The absolute allocation this entry sets, when it changes one.
    pub fn target(&self) -> Option<Credits> {
        match &self.outcome {
            Outcome::Change {
                after: Allocation::Limited(c),
                ..
            } => Some(*c),
            _ => None,
        }
    }
}

/// A checked plan: printable as a dry run, storable, and applied later with
/// [`Plan::assignments`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// One entry per request, in request order.
    pub entries: Vec<PlanEntry>,
    /// Sum of increases (what the guardrails checked).
    pub total_increase: Credits,
    /// Sum of decreases (reported, never offset against increases).
    pub total_decrease: Credits,
    /// The org-wide figures the plan was checked against.
    pub org: OrgPosition,
    /// `org.available − org.promised − total_increase`: what would stay unpromised.
    pub org_unpromised_after: Credits,
    /// The guardrails the plan was checked against.
    pub guardrails: Guardrails,
}

/// One `userAssignments` element for `assignUserCredits`: serializes to
/// `{"username": ..., "credits": ...}` with the exact decimal.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Assignment<'a> {
    /// Exact username.
    pub username: &'a str,
    /// The new absolute allocation (never a delta), zero or more.
    pub credits: Credits,
}

impl Plan {
    /// The absolute allocations to send, one per changing entry, in request order.
    /// `assignUserCredits` sets allocations, so this is the new allocation, never the delta.
    pub fn assignments(&self) -> impl Iterator<Item = Assignment<'_>> {
        self.entries.iter().filter_map(|e| {
            e.target().map(|credits| Assignment {
                username: &e.username,
                credits,
            })
        })
    }
}

/// A request that cannot be planned at all.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum RequestProblem {
    /// No username: nobody to allocate to.
    #[error("request #{index}: the username is empty; name the member by exact username")]
    EmptyUsername {
        /// 0-based position in the request list.
        index: usize,
    },
    /// A negative amount, or a result that is negative.
    #[error("request #{index} for {username:?}: {reason}")]
    BadCredits {
        /// 0-based position in the request list.
        index: usize,
        /// The member named.
        username: String,
        /// What is wrong with the number.
        reason: InvalidCredits,
    },
    /// Two requests for one member would be applied in an arbitrary order.
    #[error("requests #{first} and #{second} both name {username:?}; send one request per member")]
    Duplicate {
        /// The member named twice.
        username: String,
        /// 0-based position of the first request.
        first: usize,
        /// 0-based position of the repeated request.
        second: usize,
    },
}

/// A guardrail the plan would break, with the numbers that break it.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[serde(tag = "guardrail", rename_all = "snake_case")]
pub enum Breach {
    /// One member's increase is above `max_per_member`.
    #[error(
        "{username}: the allocation would grow by {increase} credits, above the per-member limit of {limit} \
         (MAX_CREDITS_PER_MEMBER); ask for less or have the limit raised"
    )]
    MaxPerMember {
        /// The member.
        username: String,
        /// The requested increase.
        increase: Credits,
        /// The guardrail.
        limit: Credits,
    },
    /// The plan's total increase is above `max_per_plan`.
    #[error(
        "the plan adds {total_increase} credits in all, above the per-request limit of {limit} \
         (MAX_CREDITS_PER_PLAN); send fewer or smaller requests"
    )]
    MaxPerPlan {
        /// Sum of increases.
        total_increase: Credits,
        /// The guardrail.
        limit: Credits,
    },
    /// The last 24 hours' grants plus this plan are above `max_per_day`.
    #[error(
        "{granted_last_24h} credits were already granted in the last 24 hours; adding {total_increase} \
         would exceed the daily limit of {limit} (MAX_CREDITS_PER_DAY), leaving {left} to grant today; \
         ask for less, wait, or have the limit raised"
    )]
    MaxPerDay {
        /// What was granted in the window before this plan.
        granted_last_24h: Credits,
        /// This plan's increase.
        total_increase: Credits,
        /// What may still be granted in the window.
        left: Credits,
        /// The guardrail.
        limit: Credits,
    },
    /// The org would keep less unpromised than its reserve.
    #[error(
        "the org has {org_available} credits, of which {promised} are already promised to limited members; \
         adding {total_increase} would leave {unpromised_after} unpromised, below the reserve of {reserve} \
         (ORG_RESERVE_CREDITS); allocate less, lower other allocations, or buy credits"
    )]
    OrgReserve {
        /// The org's credits.
        org_available: Credits,
        /// What limited members may still spend.
        promised: Credits,
        /// Sum of increases.
        total_increase: Credits,
        /// What would stay unpromised.
        unpromised_after: Credits,
        /// The guardrail.
        reserve: Credits,
    },
    /// The plan would impose a limit on an unlimited member.
    #[error(
        "{username} has no credit limit; setting one is a policy change this API does not make \
         (leave the member out, or set the limit in ArcGIS Online)"
    )]
    UnlimitedChange {
        /// The unlimited member.
        username: String,
    },
}

impl Breach {
    /// The guardrail's name, as in replies (`max_per_member`, …).
    pub fn guardrail(&self) -> &'static str {
        match self {
            Breach::MaxPerMember { .. } => "max_per_member",
            Breach::MaxPerPlan { .. } => "max_per_plan",
            Breach::MaxPerDay { .. } => "max_per_day",
            Breach::OrgReserve { .. } => "org_reserve",
            Breach::UnlimitedChange { .. } => "unlimited_change",
        }
    }

    /// The member concerned, for per-member guardrails.
    pub fn username(&self) -> Option<&str> {
        match self {
            Breach::MaxPerMember { username, .. } | Breach::UnlimitedChange { username } => Some(username),
            _ => None,
        }
    }
}

/// Why no plan was produced. Every problem is listed, so a caller can answer with one 4xx
/// naming each of them.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[serde(tag = "error", content = "problems", rename_all = "snake_case")]
pub enum PlanError {
    /// The requests themselves are invalid.
    #[error("{} invalid request(s): {}", .0.len(), list(.0))]
    InvalidRequests(Vec<RequestProblem>),
    /// The plan is well-formed but breaks guardrails.
    #[error("the plan breaks {} guardrail(s): {}", .0.len(), list(.0))]
    GuardrailBreaches(Vec<Breach>),
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// Resolves `requests` against `members` (matched by exact username; should a username be
/// listed twice, the first member wins) and checks the result against `guardrails` and the
/// org's position. See the module documentation for the rules.
///
/// Errors come in stages, each listing every problem of its stage: invalid requests, then
/// guardrail breaches.
pub fn plan(
    requests: &[Request],
    members: &[Member],
    org: &OrgPosition,
    guardrails: &Guardrails,
) -> Result<Plan, PlanError> {
    validate(requests)?;
    let by_name: HashMap<&str, &Member> = members.iter().rev().map(|m| (m.username.as_str(), m)).collect();

    let mut entries = Vec::with_capacity(requests.len());
    let mut problems = Vec::new();
    let mut breaches = Vec::new();
    for (index, request) in requests.iter().enumerate() {
        let username = request.username();
        let outcome = match by_name.get(username) {
            None => Outcome::UnknownUser,
            Some(member) => match resolve(member, request) {
                Ok(outcome) => outcome,
                Err(reason) => {
                    problems.push(RequestProblem::BadCredits {
                        index,
                        username: username.to_owned(),
                        reason,
                    });
                    continue;
                }
            },
        };
        if let Outcome::Change {
            before: Balance::Unlimited,
            ..
        } = outcome
            && !guardrails.allow_unlimited_change
        {
            breaches.push(Breach::UnlimitedChange {
                username: username.to_owned(),
            });
        }
        if let Outcome::Change { increase, .. } = outcome
            && increase > guardrails.max_per_member
        {
            breaches.push(Breach::MaxPerMember {
                username: username.to_owned(),
                increase,
                limit: guardrails.max_per_member,
            });
        }
        entries.push(PlanEntry {
            username: username.to_owned(),
            request: request.clone(),
            outcome,
        });
    }
    if !problems.is_empty() {
        return Err(PlanError::InvalidRequests(problems));
    }

    let (mut total_increase, mut total_decrease) = (Credits::ZERO, Credits::ZERO);
    for entry in &entries {
        if let Outcome::Change { increase, delta, .. } = entry.outcome {
            total_increase += increase;
            total_decrease += delta.map_or(Credits::ZERO, |d| (-d).at_least_zero());
        }
    }
    let org_unpromised_after = org.available - org.promised - total_increase;
    if total_increase > guardrails.max_per_plan {
        breaches.push(Breach::MaxPerPlan {
            total_increase,
            limit: guardrails.max_per_plan,
        });
    }
    if total_increase.is_positive() && org.granted_last_24h + total_increase > guardrails.max_per_day {
        breaches.push(Breach::MaxPerDay {
            granted_last_24h: org.granted_last_24h,
            total_increase,
            left: (guardrails.max_per_day - org.granted_last_24h).at_least_zero(),
            limit: guardrails.max_per_day,
        });
    }
    if total_increase.is_positive() && org_unpromised_after < guardrails.org_reserve {
        breaches.push(Breach::OrgReserve {
            org_available: org.available,
            promised: org.promised,
            total_increase,
            unpromised_after: org_unpromised_after,
            reserve: guardrails.org_reserve,
        });
    }
    if !breaches.is_empty() {
        return Err(PlanError::GuardrailBreaches(breaches));
    }
    Ok(Plan {
        entries,
        total_increase,
        total_decrease,
        org: *org,
        org_unpromised_after,
        guardrails: *guardrails,
    })
}

/// Checks usernames and amounts of every request; all problems together.
fn validate(requests: &[Request]) -> Result<(), PlanError> {
    let mut problems = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (index, request) in requests.iter().enumerate() {
        let username = request.username();
        if username.trim().is_empty() {
            problems.push(RequestProblem::EmptyUsername { index });
        } else if let Some(&first) = seen.get(username) {
            problems.push(RequestProblem::Duplicate {
                username: username.to_owned(),
                first,
                second: index,
            });
        } else {
            seen.insert(username, index);
        }
        if let Err(reason) = request.credits().non_negative() {
            problems.push(RequestProblem::BadCredits {
                index,
                username: username.to_owned(),
                reason,
            });
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(PlanError::InvalidRequests(problems))
    }
}

/// The outcome of one validated request for a known member.
fn resolve(member: &Member, request: &Request) -> Result<Outcome, InvalidCredits> {
    let before = member.balance;
    let x = request.credits();
    let skip = |reason| Ok(Outcome::Skipped { before, reason });
    if member.disabled {
        return skip(PlanSkip::Disabled);
    }
    if member.is_viewer() {
        return skip(PlanSkip::Viewer);
    }
    let (assigned, available) = match before {
        Balance::Unlimited => {
            return Ok(Outcome::Change {
                before,
                after: Allocation::limited(x)?,
                delta: None,
                increase: x,
                available_after: None,
                below_consumed: false,
            });
        }
        Balance::Limited { assigned, available } => (assigned, available),
    };
    let consumed = assigned - available;
    let new = match request {
        Request::Set { .. } => x,
        Request::Add { .. } => assigned + x,
        Request::TopUpTo { .. } if available >= x => return Ok(Outcome::NoChange { before }),
        Request::TopUpTo { .. } => consumed + x,
    };
    let after = Allocation::limited(new)?;
    if new == assigned {
        return Ok(Outcome::NoChange { before });
    }
    let delta = new - assigned;
    Ok(Outcome::Change {
        before,
        after,
        delta: Some(delta),
        increase: delta.at_least_zero(),
        available_after: Some(new - consumed),
        below_consumed: new < consumed,
    })
}

/// The critical policy: a [`Request::TopUpTo`] `top_up_to` for every member currently
/// [`Level::Critical`] (never a bare "set to `top_up_to`", which leaves a member who already
/// consumed more than that below zero). Classification never rates unlimited, disabled or
/// viewer members, so none of them is ever included. Sorted by username, one per member.
pub fn critical_top_up(members: &[Member], thresholds: &Thresholds, top_up_to: Credits) -> Vec<Request> {
    members
        .iter()
        .filter(|m| classify(m, thresholds).level() == Some(Level::Critical))
        .map(|m| m.username.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|username| Request::TopUpTo {
            username: username.to_owned(),
            credits: top_up_to,
        })
        .collect()
}

#[cfg(test)]
mod tests;

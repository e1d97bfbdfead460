//! Allocation planning: turn requests into the exact allocations to set, checked against
//! guardrails, before anything is sent.
//!
//! `assignUserCredits` *sets* a member's allocation. The notebook sent `200` to "top up"
//! members, which reset a 1000-credit allocation with 950 consumed to 200 (−750 available).
//! Here every request is resolved against the member's current balance into a new absolute
//! allocation, and [`Plan::assignments`] yields only those absolute values.
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

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::classify::{Level, Thresholds, classify};
use super::member::{Allocation, Balance, Credits, InvalidCredits, Member};
use super::tolerance::{approx_eq, definitely_less};

/// What an administrator (or a policy) asks for one member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Request {
    /// Set the allocation to exactly `credits`.
    Set {
        /// Exact username.
        username: String,
        /// The new allocation.
        credits: f64,
    },
    /// Raise the allocation by `credits`.
    Add {
        /// Exact username.
        username: String,
        /// The increase.
        credits: f64,
    },
    /// Raise the allocation so that `credits` are available.
    TopUpTo {
        /// Exact username.
        username: String,
        /// The credits that should be available afterwards.
        credits: f64,
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

    /// The request's number, before validation.
    pub fn credits(&self) -> f64 {
        match *self {
            Request::Set { credits, .. } | Request::Add { credits, .. } | Request::TopUpTo { credits, .. } => credits,
        }
    }
}

/// Limits on what one plan may do, so that a typo or a runaway policy cannot drain the org.
///
/// Allocations are limits, not reservations: ArcGIS only debits the org when credits are
/// spent. The guardrails conservatively assume every newly allocated credit will be spent.
/// "Increase" below means how much a request raises a member's allocation (`new − assigned`
/// when positive, else 0; for an unlimited member made limited, the whole new allocation).
/// Decreases never offset increases.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Guardrails {
    /// Largest increase a single request may give one member (not the resulting allocation:
    /// members with large allocations must still be topped up by small steps).
    pub max_per_member: Credits,
    /// Largest sum of increases in one plan.
    pub max_total: Credits,
    /// Org available credits minus the plan's total increase must stay at or above this.
    pub org_reserve_floor: Credits,
    /// Whether a request may turn an unlimited member into a limited one.
    pub allow_unlimited_change: bool,
}

/// Why a request for a known member is not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanSkip {
    /// Disabled members cannot sign in or spend.
    Disabled,
    /// Viewers cannot use credit-consuming tools; credits given to them are wasted.
    Viewer,
    /// The member's balance is NaN or infinite: re-read the member instead of guessing.
    InvalidBalance,
}

impl fmt::Display for PlanSkip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PlanSkip::Disabled => "disabled",
            PlanSkip::Viewer => "viewer: cannot consume credits",
            PlanSkip::InvalidBalance => "invalid balance: not a finite number",
        })
    }
}

/// What the plan does for one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// The allocation changes; sent by [`Plan::assignments`].
    Change {
        /// The member's balance when the plan was made.
        before: Balance,
        /// The new allocation (always limited: every request kind sets a limit).
        after: Allocation,
        /// `after − assigned`; `None` when the member was unlimited.
        delta: Option<f64>,
        /// What counts against the guardrails (see [`Guardrails`]).
        increase: f64,
        /// Expected available credits afterwards; `None` when the member was unlimited.
        available_after: Option<f64>,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanEntry {
    /// The member the request names.
    pub username: String,
    /// The request as received.
    pub request: Request,
    /// What the plan does.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// A checked plan: printable as a dry run, storable, and applied later with
/// [`Plan::assignments`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// One entry per request, in request order.
    pub entries: Vec<PlanEntry>,
    /// Sum of increases (what the guardrails checked).
    pub total_increase: f64,
    /// Sum of decreases (reported, never offset against increases).
    pub total_decrease: f64,
    /// Org available credits when the plan was made.
    pub org_available_before: f64,
    /// `org_available_before − total_increase`: the worst case if every new credit is spent.
    pub org_available_after: f64,
    /// The guardrails the plan was checked against.
    pub guardrails: Guardrails,
}

/// One `userAssignments` element for `assignUserCredits`: serializes to
/// `{"username": ..., "credits": ...}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Assignment<'a> {
    /// Exact username.
    pub username: &'a str,
    /// The new absolute allocation (never a delta), validated like every [`Credits`].
    pub credits: Credits,
}

impl Plan {
    /// The absolute allocations to send, one per changing entry, in request order.
    /// `assignUserCredits` sets allocations, so this is the new allocation, never the delta.
    pub fn assignments(&self) -> impl Iterator<Item = Assignment<'_>> {
        self.entries.iter().filter_map(|e| match &e.outcome {
            Outcome::Change {
                after: Allocation::Limited(c),
                ..
            } => Some(Assignment {
                username: &e.username,
                credits: *c,
            }),
            _ => None,
        })
    }

    /// Usernames of changing entries whose member no longer has the balance the plan was
    /// made from (or has disappeared), so a stored plan can be re-made before it is applied.
    pub fn stale_entries<'a>(&'a self, members: &[Member]) -> Vec<&'a str> {
        let current: HashMap<&str, &Balance> = members.iter().map(|m| (m.username.as_str(), &m.balance)).collect();
        self.entries
            .iter()
            .filter(|e| match &e.outcome {
                Outcome::Change { before, .. } => current.get(e.username.as_str()) != Some(&before),
                _ => false,
            })
            .map(|e| e.username.as_str())
            .collect()
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
    /// A negative, NaN or infinite number of credits (or a result that overflows).
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

/// A guardrail the plan would break.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[serde(tag = "guardrail", rename_all = "snake_case")]
pub enum Breach {
    /// One member's increase is above `max_per_member`.
    #[error(
        "{username}: the allocation would grow by {increase} credits, above max_per_member ({limit}); \
         ask for less or have the guardrail raised"
    )]
    MaxPerMember {
        /// The member.
        username: String,
        /// The requested increase.
        increase: f64,
        /// The guardrail.
        limit: f64,
    },
    /// The plan's total increase is above `max_total`.
    #[error("the plan adds {total_increase} credits in all, above max_total ({limit}); send fewer or smaller requests")]
    MaxTotal {
        /// Sum of increases.
        total_increase: f64,
        /// The guardrail.
        limit: f64,
    },
    /// The org would keep less than its reserve.
    #[error(
        "the org would keep {org_available_after} credits ({org_available} available − {total_increase} allocated), \
         below the reserve floor ({floor}); allocate less or buy credits"
    )]
    OrgReserveFloor {
        /// Org available credits now.
        org_available: f64,
        /// Sum of increases.
        total_increase: f64,
        /// What would remain.
        org_available_after: f64,
        /// The guardrail.
        floor: f64,
    },
    /// The plan would impose a limit on an unlimited member.
    #[error(
        "{username} has no credit limit; setting one needs allow_unlimited_change, which is off \
         (leave the member out, or enable it for this request)"
    )]
    UnlimitedChange {
        /// The unlimited member.
        username: String,
    },
}

/// Why no plan was produced. Every problem is listed, so a caller can answer with one 4xx
/// naming each of them.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[serde(tag = "error", content = "problems", rename_all = "snake_case")]
pub enum PlanError {
    /// The requests themselves are invalid.
    #[error("{} invalid request(s): {}", .0.len(), list(.0))]
    InvalidRequests(Vec<RequestProblem>),
    /// The org balance given to the planner is NaN or infinite.
    #[error("the org's available credits must be a finite number, got {0}; re-read portals/self")]
    InvalidOrgCredits(f64),
    /// The plan is well-formed but breaks guardrails.
    #[error("the plan breaks {} guardrail(s): {}", .0.len(), list(.0))]
    GuardrailBreaches(Vec<Breach>),
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// Resolves `requests` against `members` (matched by exact username; should a username be
/// listed twice, the first member wins) and checks the result against `guardrails`, given the
/// org's current `org_available` credits. See the module documentation for the rules.
///
/// Errors come in stages, each listing every problem of its stage: invalid org credits, then
/// invalid requests, then guardrail breaches.
pub fn plan(
    requests: &[Request],
    members: &[Member],
    org_available: f64,
    guardrails: &Guardrails,
) -> Result<Plan, PlanError> {
    if !org_available.is_finite() {
        return Err(PlanError::InvalidOrgCredits(org_available));
    }
    let targets = validate(requests)?;
    let by_name: HashMap<&str, &Member> = members.iter().rev().map(|m| (m.username.as_str(), m)).collect();

    let mut entries = Vec::with_capacity(requests.len());
    let mut problems = Vec::new();
    let mut breaches = Vec::new();
    for (index, (request, target)) in requests.iter().zip(targets).enumerate() {
        let username = request.username();
        let outcome = match by_name.get(username) {
            None => Outcome::UnknownUser,
            Some(member) => match resolve(member, request, target) {
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
            && definitely_less(guardrails.max_per_member.get(), increase)
        {
            breaches.push(Breach::MaxPerMember {
                username: username.to_owned(),
                increase,
                limit: guardrails.max_per_member.get(),
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

    let (mut total_increase, mut total_decrease) = (0.0, 0.0);
    for entry in &entries {
        if let Outcome::Change { increase, delta, .. } = entry.outcome {
            total_increase += increase;
            total_decrease += delta.map_or(0.0, |d| (-d).max(0.0));
        }
    }
    let org_available_after = org_available - total_increase;
    if definitely_less(guardrails.max_total.get(), total_increase) {
        breaches.push(Breach::MaxTotal {
            total_increase,
            limit: guardrails.max_total.get(),
        });
    }
    if total_increase > 0.0 && definitely_less(org_available_after, guardrails.org_reserve_floor.get()) {
        breaches.push(Breach::OrgReserveFloor {
            org_available,
            total_increase,
            org_available_after,
            floor: guardrails.org_reserve_floor.get(),
        });
    }
    if !breaches.is_empty() {
        return Err(PlanError::GuardrailBreaches(breaches));
    }
    Ok(Plan {
        entries,
        total_increase,
        total_decrease,
        org_available_before: org_available,
        org_available_after,
        guardrails: *guardrails,
    })
}

/// Checks every request, returning each one's validated number or all the problems.
fn validate(requests: &[Request]) -> Result<Vec<Credits>, PlanError> {
    let mut problems = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut targets = Vec::with_capacity(requests.len());
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
        match Credits::new(request.credits()) {
            Ok(c) => targets.push(c),
            Err(reason) => problems.push(RequestProblem::BadCredits {
                index,
                username: username.to_owned(),
                reason,
            }),
        }
    }
    if problems.is_empty() {
        Ok(targets)
    } else {
        Err(PlanError::InvalidRequests(problems))
    }
}

/// The outcome of one validated request for a known member.
fn resolve(member: &Member, request: &Request, x: Credits) -> Result<Outcome, InvalidCredits> {
    let before = member.balance;
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
                after: Allocation::Limited(x),
                delta: None,
                increase: x.get(),
                available_after: None,
                below_consumed: false,
            });
        }
        Balance::Limited { assigned, available } => (assigned, available),
    };
    if !(assigned.is_finite() && available.is_finite()) {
        return skip(PlanSkip::InvalidBalance);
    }
    let consumed = assigned - available;
    let new = match request {
        Request::Set { .. } => x.get(),
        Request::Add { .. } => assigned + x.get(),
        Request::TopUpTo { .. } if !definitely_less(available, x.get()) => {
            return Ok(Outcome::NoChange { before });
        }
        Request::TopUpTo { .. } => consumed + x.get(),
    };
    let new = Credits::new(new)?;
    if approx_eq(new.get(), assigned) {
        return Ok(Outcome::NoChange { before });
    }
    let delta = new.get() - assigned;
    Ok(Outcome::Change {
        before,
        after: Allocation::Limited(new),
        delta: Some(delta),
        increase: delta.max(0.0),
        available_after: Some(new.get() - consumed),
        below_consumed: definitely_less(new.get(), consumed),
    })
}

/// The notebook's re-allocation policy, fixed: a [`Request::TopUpTo`] `top_up_to` for every
/// member currently [`Level::Critical`]. Classification never rates unlimited, disabled or
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
            credits: top_up_to.get(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(username: &str, balance: Balance) -> Member {
        Member {
            username: username.into(),
            full_name: None,
            email: None,
            disabled: false,
            user_type: Some("creatorUT".into()),
            role: Some("org_user".into()),
            balance,
        }
    }

    fn limited(username: &str, assigned: f64, available: f64) -> Member {
        member(username, Balance::Limited { assigned, available })
    }

    fn credits(x: f64) -> Credits {
        Credits::new(x).unwrap()
    }

    fn loose() -> Guardrails {
        Guardrails {
            max_per_member: credits(1e6),
            max_total: credits(1e7),
            org_reserve_floor: credits(0.0),
            allow_unlimited_change: false,
        }
    }

    fn set(u: &str, c: f64) -> Request {
        Request::Set {
            username: u.into(),
            credits: c,
        }
    }
    fn add(u: &str, c: f64) -> Request {
        Request::Add {
            username: u.into(),
            credits: c,
        }
    }
    fn top_up(u: &str, c: f64) -> Request {
        Request::TopUpTo {
            username: u.into(),
            credits: c,
        }
    }

    fn only_outcome(requests: &[Request], members: &[Member]) -> Outcome {
        let plan = plan(requests, members, 1e9, &loose()).unwrap();
        plan.entries[0].outcome.clone()
    }

    fn sent(plan: &Plan) -> Vec<(String, f64)> {
        plan.assignments()
            .map(|a| (a.username.to_owned(), a.credits.get()))
            .collect()
    }

    #[test]
    fn top_up_sends_the_absolute_allocation_not_the_target() {
        // The notebook's case: 1000 assigned, 950 consumed; allocate(u, 200) left −750.
        let members = [limited("jdoe", 1000.0, 50.0)];
        let p = plan(&[top_up("jdoe", 200.0)], &members, 5000.0, &loose()).unwrap();
        assert_eq!(sent(&p), [("jdoe".to_owned(), 1150.0)]);
        let Outcome::Change {
            delta,
            increase,
            available_after,
            below_consumed,
            ..
        } = p.entries[0].outcome
        else {
            panic!("expected a change");
        };
        assert_eq!(
            (delta, increase, available_after, below_consumed),
            (Some(150.0), 150.0, Some(200.0), false)
        );
        assert_eq!((p.total_increase, p.org_available_after), (150.0, 4850.0));
    }

    #[test]
    fn set_and_add_arithmetic() {
        let members = [limited("a", 1000.0, 50.0), limited("b", 100.0, 100.0)];
        let p = plan(&[set("a", 1200.0), add("b", 25.5)], &members, 5000.0, &loose()).unwrap();
        assert_eq!(sent(&p), [("a".to_owned(), 1200.0), ("b".to_owned(), 125.5)]);
        assert_eq!(p.total_increase, 225.5);
        assert_eq!(p.total_decrease, 0.0);
    }

    #[test]
    fn top_up_is_a_no_change_when_enough_is_available() {
        let members = [
            limited("a", 1000.0, 200.0),
            limited("b", 1000.0, 250.0),
            limited("c", 0.3, 0.1 + 0.2),
        ];
        let p = plan(
            &[top_up("a", 200.0), top_up("b", 200.0), top_up("c", 0.3)],
            &members,
            1e4,
            &loose(),
        )
        .unwrap();
        assert!(p.entries.iter().all(|e| matches!(e.outcome, Outcome::NoChange { .. })));
        assert_eq!(p.assignments().count(), 0);
        assert_eq!(p.total_increase, 0.0);
    }

    #[test]
    fn same_allocation_is_a_no_change() {
        let members = [limited("a", 100.0, 10.0)];
        assert!(matches!(
            only_outcome(&[set("a", 100.0)], &members),
            Outcome::NoChange { .. }
        ));
        assert!(matches!(
            only_outcome(&[add("a", 0.0)], &members),
            Outcome::NoChange { .. }
        ));
    }

    #[test]
    fn set_below_consumed_is_allowed_but_flagged() {
        let members = [limited("a", 1000.0, 50.0)];
        let p = plan(&[set("a", 200.0)], &members, 100.0, &loose()).unwrap();
        let Outcome::Change {
            delta,
            increase,
            available_after,
            below_consumed,
            ..
        } = p.entries[0].outcome
        else {
            panic!("expected a change");
        };
        assert_eq!(
            (delta, increase, available_after, below_consumed),
            (Some(-800.0), 0.0, Some(-750.0), true)
        );
        assert_eq!((p.total_increase, p.total_decrease), (0.0, 800.0));
        assert_eq!(sent(&p), [("a".to_owned(), 200.0)]);
    }

    #[test]
    fn unknown_users_are_reported_and_never_sent() {
        let members = [limited("jdoe", 100.0, 0.0)];
        let p = plan(&[top_up("JDoe", 50.0), top_up("jdoe2", 50.0)], &members, 1e4, &loose()).unwrap();
        assert!(p.entries.iter().all(|e| e.outcome == Outcome::UnknownUser));
        assert_eq!(p.assignments().count(), 0);
    }

    #[test]
    fn disabled_and_viewer_members_are_skipped() {
        let mut disabled = limited("d", 100.0, 0.0);
        disabled.disabled = true;
        let mut viewer = limited("v", 100.0, 0.0);
        viewer.user_type = Some("viewerUT".into());
        let p = plan(&[add("d", 10.0), add("v", 10.0)], &[disabled, viewer], 1e4, &loose()).unwrap();
        let reasons: Vec<_> = p
            .entries
            .iter()
            .map(|e| match e.outcome {
                Outcome::Skipped { reason, .. } => Some(reason),
                _ => None,
            })
            .collect();
        assert_eq!(reasons, [Some(PlanSkip::Disabled), Some(PlanSkip::Viewer)]);
        assert_eq!(p.assignments().count(), 0);
    }

    #[test]
    fn unlimited_members_need_the_explicit_guardrail() {
        let members = [member("u", Balance::Unlimited)];
        let err = plan(&[top_up("u", 200.0)], &members, 1e4, &loose()).unwrap_err();
        assert_eq!(
            err,
            PlanError::GuardrailBreaches(vec![Breach::UnlimitedChange { username: "u".into() }])
        );

        let allowed = Guardrails {
            allow_unlimited_change: true,
            ..loose()
        };
        for request in [set("u", 200.0), add("u", 200.0), top_up("u", 200.0)] {
            let p = plan(&[request], &members, 1e4, &allowed).unwrap();
            let Outcome::Change {
                after,
                delta,
                increase,
                available_after,
                ..
            } = p.entries[0].outcome
            else {
                panic!("expected a change");
            };
            assert_eq!(after, Allocation::limited(200.0).unwrap());
            assert_eq!((delta, increase, available_after), (None, 200.0, None));
            assert_eq!(sent(&p), [("u".to_owned(), 200.0)]);
        }
    }

    #[test]
    fn invalid_requests_are_all_listed() {
        let members = [limited("a", 1.0, 1.0)];
        let requests = [
            set("a", -5.0),
            add("b", f64::NAN),
            top_up("c", f64::INFINITY),
            set("", 1.0),
            add("a", 1.0),
        ];
        let Err(PlanError::InvalidRequests(problems)) = plan(&requests, &members, 1e4, &loose()) else {
            panic!("expected validation errors");
        };
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(matches!(
            problems[0],
            RequestProblem::BadCredits {
                index: 0,
                reason: InvalidCredits::Negative(_),
                ..
            }
        ));
        assert!(matches!(
            problems[1],
            RequestProblem::BadCredits {
                index: 1,
                reason: InvalidCredits::NotFinite(_),
                ..
            }
        ));
        assert!(matches!(problems[2], RequestProblem::BadCredits { index: 2, .. }));
        assert_eq!(problems[3], RequestProblem::EmptyUsername { index: 3 });
        assert_eq!(
            problems[4],
            RequestProblem::Duplicate {
                username: "a".into(),
                first: 0,
                second: 4
            }
        );
        let message = PlanError::InvalidRequests(problems).to_string();
        assert!(
            message.starts_with("5 invalid request(s)") && message.contains("both name \"a\""),
            "{message}"
        );
    }

    #[test]
    fn overflowing_results_are_rejected() {
        let members = [limited("a", f64::MAX, 0.0)];
        let err = plan(&[add("a", f64::MAX)], &members, 1e4, &loose()).unwrap_err();
        assert!(matches!(err, PlanError::InvalidRequests(ref p) if matches!(p[0], RequestProblem::BadCredits { .. })));
    }

    #[test]
    fn every_guardrail_breach_is_listed() {
        let members = [
            limited("a", 100.0, 0.0),
            limited("b", 100.0, 0.0),
            member("u", Balance::Unlimited),
        ];
        let guardrails = Guardrails {
            max_per_member: credits(300.0),
            max_total: credits(500.0),
            org_reserve_floor: credits(1000.0),
            allow_unlimited_change: false,
        };
        let requests = [add("a", 400.0), add("b", 250.0), set("u", 10.0)];
        let Err(PlanError::GuardrailBreaches(breaches)) = plan(&requests, &members, 1500.0, &guardrails) else {
            panic!("expected breaches");
        };
        assert_eq!(
            breaches,
            [
                Breach::MaxPerMember {
                    username: "a".into(),
                    increase: 400.0,
                    limit: 300.0
                },
                Breach::UnlimitedChange { username: "u".into() },
                Breach::MaxTotal {
                    total_increase: 660.0,
                    limit: 500.0
                },
                Breach::OrgReserveFloor {
                    org_available: 1500.0,
                    total_increase: 660.0,
                    org_available_after: 840.0,
                    floor: 1000.0
                },
            ]
        );
        let json = serde_json::to_value(PlanError::GuardrailBreaches(breaches)).unwrap();
        assert_eq!(json["error"], "guardrail_breaches");
        assert_eq!(json["problems"][0]["guardrail"], "max_per_member");
        assert_eq!(json["problems"][0]["username"], "a");
    }

    #[test]
    fn guardrails_allow_their_exact_limits() {
        // Top-up arithmetic (consumed + x) can land a hair above the limit: not a breach.
        let members = [limited("a", 0.1, 0.1)];
        let raw_increase = std::hint::black_box(12.345) - 0.1;
        assert!(raw_increase > 12.245, "the raw increase must exceed the decimal limit");
        assert!(
            20.0 - raw_increase < 7.755,
            "the raw remainder must fall below the decimal floor"
        );
        let guardrails = Guardrails {
            max_per_member: credits(12.245),
            max_total: credits(12.245),
            org_reserve_floor: credits(7.755),
            allow_unlimited_change: false,
        };
        let p = plan(&[top_up("a", 12.345)], &members, 20.0, &guardrails).unwrap();
        assert_eq!(p.assignments().count(), 1);
    }

    #[test]
    fn org_floor_only_binds_plans_that_add_credits() {
        let members = [limited("a", 100.0, 50.0)];
        let guardrails = Guardrails {
            org_reserve_floor: credits(1000.0),
            ..loose()
        };
        assert!(plan(&[set("a", 80.0)], &members, -20.0, &guardrails).is_ok());
        assert!(plan(&[set("a", 120.0)], &members, -20.0, &guardrails).is_err());
        assert!(matches!(
            plan(&[], &members, f64::NAN, &guardrails),
            Err(PlanError::InvalidOrgCredits(_))
        ));
    }

    #[test]
    fn critical_top_up_targets_only_critical_rated_members() {
        let mut disabled = limited("dis", 100.0, 1.0);
        disabled.disabled = true;
        let mut viewer = limited("view", 100.0, 1.0);
        viewer.user_type = Some("viewerUT".into());
        let members = [
            limited("zed", 100.0, 5.0),
            limited("amy", 1000.0, -750.0),
            limited("ten", 300.0, 30.0),
            limited("ok", 100.0, 90.0),
            limited("zero", 0.0, 0.0),
            member("unl", Balance::Unlimited),
            disabled,
            viewer,
            limited("zed", 100.0, 5.0),
        ];
        let requests = critical_top_up(&members, &Thresholds::default(), credits(200.0));
        assert_eq!(requests, [top_up("amy", 200.0), top_up("zed", 200.0)]);
        let p = plan(&requests, &members, 1e4, &loose()).unwrap();
        assert_eq!(sent(&p), [("amy".to_owned(), 1950.0), ("zed".to_owned(), 295.0)]);
    }

    #[test]
    fn plans_round_trip_through_json_and_detect_staleness() {
        let members = [limited("a", 100.0, 10.0), limited("b", 100.0, 90.0)];
        let p = plan(
            &[top_up("a", 50.0), top_up("b", 50.0), set("x", 1.0)],
            &members,
            1e4,
            &loose(),
        )
        .unwrap();
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["entries"][0]["status"], "change");
        assert_eq!(json["entries"][0]["request"]["action"], "top_up_to");
        assert_eq!(
            json["entries"][0]["after"],
            serde_json::json!({"kind": "limited", "credits": 140.0})
        );
        assert_eq!(json["entries"][1]["status"], "no_change");
        assert_eq!(json["entries"][2]["status"], "unknown_user");
        let back: Plan = serde_json::from_value(json).unwrap();
        assert_eq!(back, p);
        let wire = serde_json::to_string(&p.assignments().collect::<Vec<_>>()).unwrap();
        assert_eq!(wire, r#"[{"username":"a","credits":140.0}]"#);

        assert!(p.stale_entries(&members).is_empty());
        let moved = [limited("a", 100.0, 5.0), limited("b", 100.0, 90.0)];
        assert_eq!(p.stale_entries(&moved), ["a"]);
        assert_eq!(p.stale_entries(&[]), ["a"]);
    }

    #[test]
    fn requests_deserialize_from_the_api_shape() {
        let r: Vec<Request> = serde_json::from_str(
            r#"[{"action":"set","username":"a","credits":5},{"action":"top_up_to","username":"b","credits":2.5}]"#,
        )
        .unwrap();
        assert_eq!(r, [set("a", 5.0), top_up("b", 2.5)]);
    }
}

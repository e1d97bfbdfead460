//! Org members: the complete paged listing and the exact single-member lookup.
//!
//! Search is the wrong tool here: it is fuzzy (`search(username)[0]` can return `jdoe2` for
//! `jdoe`), stops at 10,000 results, and fetching each result again costs one request per
//! member; a listing capped at 1000 members silently drops the rest (see docs/arcgis.md,
//! "Members: listing and exact lookup"). Here the listing is `portals/self/users` (100 per
//! page, no cap), pages after the first are fetched concurrently, and a member is looked up by
//! its exact username at `community/users/<name>`.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::credits::amount::Credits;
use crate::credits::member::{Balance, Member};

use super::client::{Client, DecodeError};
use super::endpoint::{ORG_USERS, USER};
use super::error::{ApiError, Error};
use super::wire;

/// The most members ArcGIS returns per page.
pub const PAGE_SIZE: u64 = 100;

/// Every member of the org, each once, in username order, with whatever went wrong on the way.
#[derive(Debug)]
pub struct MemberList {
    /// Members sorted by username (byte order), unique.
    pub members: Vec<Member>,
    /// The member count ArcGIS announced on the first page.
    pub reported_total: u64,
    /// Listing pages fetched.
    pub pages: u64,
    /// Records seen more than once (members shifting between pages) and dropped.
    pub duplicates_dropped: u64,
    /// Problems that make the list incomplete or suspect; empty when all is well.
    pub problems: Vec<ListingProblem>,
}

impl MemberList {
    /// True when every announced member was listed with its credits.
    pub fn is_complete(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Something that went wrong for part of a listing, without failing all of it.
#[derive(Debug, thiserror::Error)]
pub enum ListingProblem {
    /// ArcGIS announced one count and the pages held another (members added or removed
    /// while listing, or a server bug): the scan may have missed someone.
    #[error(
        "portals/self/users announced {reported_total} members but the pages held {listed}: \
        members changed during the listing or some were not returned; run the scan again"
    )]
    CountMismatch {
        /// `total` from the first page.
        reported_total: u64,
        /// Distinct usernames actually seen.
        listed: u64,
    },
    /// A record without a username could not be used.
    #[error("portals/self/users page starting at {start}: a record has no username; it was skipped")]
    Unreadable {
        /// The page's `start`.
        start: u64,
    },
    /// The record lacked credit fields and the exact lookup for it failed.
    #[error("member '{username}': the listing had no credit fields and the lookup failed: {error}")]
    Lookup {
        /// The member.
        username: String,
        /// Why the lookup failed.
        #[source]
        error: Error,
    },
}

/// One listing page, already reduced to records: the raw JSON (≈1 KB per member) is dropped
/// as each page arrives, so a 25,000-member listing holds members, not 25 MB of JSON.
struct Page {
    start: u64,
    total: u64,
    next_start: i64,
    records: Vec<Record>,
}

/// The pages' records, deduplicated.
struct Merged {
    members: BTreeMap<String, Member>,
    /// Usernames listed without credit fields.
    lookups: BTreeSet<String>,
    problems: Vec<ListingProblem>,
    duplicates_dropped: u64,
}

/// Merges pages in `start` order, so which copy of a duplicate wins (the lowest page's) does
/// not depend on the order pages arrived in.
fn merge(mut pages: Vec<Page>) -> Merged {
    pages.sort_by_key(|p| p.start);
    let mut merged = Merged {
        members: BTreeMap::new(),
        lookups: BTreeSet::new(),
        problems: Vec::new(),
        duplicates_dropped: 0,
    };
    for page in pages {
        let start = page.start;
        for record in page.records {
            let (username, member) = match record {
                Record::Complete(m) => (m.username.clone(), Some(m)),
                Record::NeedsLookup(u) => (u, None),
                Record::Unreadable => {
                    merged.problems.push(ListingProblem::Unreadable { start });
                    continue;
                }
            };
            if merged.members.contains_key(&username) || merged.lookups.contains(&username) {
                merged.duplicates_dropped += 1;
                continue;
            }
            match member {
                Some(m) => {
                    merged.members.insert(username, m);
                }
                None => {
                    merged.lookups.insert(username);
                }
            }
        }
    }
    merged
}

/// A listing record, read as far as possible.
enum Record {
    Complete(Member),
    /// Has a username but no credit fields: needs `community/users/<name>`.
    NeedsLookup(String),
    Unreadable,
}

impl Client {
    /// Lists every member of the org: ceil(N/100) page requests (plus sign-in), pages after
    /// the first fetched `list_concurrency` at a time. Members without credit fields in the
    /// listing are looked up one by one; a failed lookup is reported in
    /// [`MemberList::problems`], not fatal. A page that cannot be fetched is fatal: a partial
    /// list must not pass for a complete one.
    pub async fn list_members(&self) -> Result<MemberList, Error> {
        self.list_members_expecting(None).await
    }

    /// [`Client::list_members`] for an org expected to have `expected` members (the last
    /// complete listing's count): every page that count implies is requested at once with the
    /// first, instead of after the first page gave the total. The listing stays complete
    /// whatever the real count: pages past the end come back empty and missing ones are
    /// fetched once the total is known. A stable org costs the same ceil(N/100) requests and
    /// one round trip less; an org that shrank costs the empty pages once.
    pub async fn list_members_expecting(&self, expected: Option<u64>) -> Result<MemberList, Error> {
        let concurrency = self.inner.list_concurrency;
        let expected_pages = expected.map_or(1, |n| n.div_ceil(PAGE_SIZE).max(1));
        let mut pages = self
            .org_users_pages((0..expected_pages).map(|i| 1 + i * PAGE_SIZE), concurrency)
            .await?;
        // The page at start 1 is always among them, and sorts first.
        let first = &pages[0];
        let total = first.total;
        // Trust the server's page size if it returned fewer than asked on a page that is not
        // the last one, so no member falls between pages.
        let step = match first.records.len() as u64 {
            n if n > 0 && n < PAGE_SIZE && total > n => n,
            _ => PAGE_SIZE,
        };
        let fetched: HashSet<u64> = pages.iter().map(|p| p.start).collect();
        let missing: Vec<u64> = (1..)
            .map(|i| 1 + i * step)
            .take_while(|s| *s <= total)
            .filter(|s| !fetched.contains(s))
            .collect();
        pages.extend(self.org_users_pages(missing, concurrency).await?);
        pages.sort_by_key(|p| p.start);

        // Members added while listing: ArcGIS points past the announced total.
        let mut extra = 0;
        while let Some(last) = pages.last() {
            let next = u64::try_from(last.next_start).unwrap_or(0);
            if next <= last.start || extra > total / PAGE_SIZE {
                break;
            }
            pages.push(self.org_users_page(next).await?);
            extra += 1;
        }
        let page_count = pages.len() as u64;

        let Merged {
            mut members,
            lookups,
            mut problems,
            duplicates_dropped,
        } = merge(pages);
        let listed = (members.len() + lookups.len()) as u64;

        if !lookups.is_empty() {
            tracing::info!(
                count = lookups.len(),
                "listing records without credit fields; looking them up"
            );
        }
        let mut failed = Vec::new();
        for (username, result) in self.members(lookups, concurrency).await {
            match result {
                Ok(m) => {
                    members.insert(username, m);
                }
                Err(error) => failed.push(ListingProblem::Lookup { username, error }),
            }
        }
        // Deterministic order for the report, whatever order lookups finished in.
        failed.sort_by(|a, b| problem_key(a).cmp(problem_key(b)));
        problems.extend(failed);

        if listed != total {
            tracing::warn!(reported_total = total, listed, "member count mismatch");
            problems.push(ListingProblem::CountMismatch {
                reported_total: total,
                listed,
            });
        }
        Ok(MemberList {
            members: members.into_values().collect(),
            reported_total: total,
            pages: page_count,
            duplicates_dropped,
            problems,
        })
    }

    /// Looks up each of `usernames` ([`Client::member`]), `concurrency` at a time, in the order
    /// they finish.
    pub async fn members(
        &self,
        usernames: impl IntoIterator<Item = String>,
        concurrency: usize,
    ) -> Vec<(String, Result<Member, Error>)> {
        stream::iter(usernames)
            .map(|username| async move {
                let result = self.member(&username).await;
                (username, result)
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await
    }

    /// Looks up one member by exact, case-sensitive username (`community/users/<username>`),
    /// never by search. Unknown usernames, private profiles and users of other orgs (public
    /// view: no `orgId`) give [`Error::NotFound`], so one such name never fails a request
    /// about others.
    /// The first lookup also reads the org id (one `portals/self`, then cached).
    pub async fn member(&self, username: &str) -> Result<Member, Error> {
        let what = format!("community/users/{username} (member lookup)");
        if username.trim().is_empty() {
            return Err(Error::InvalidInput {
                what,
                reason: "empty username".into(),
            });
        }
        let url = self.url(&["community", "users", username]);
        let body = match self.call(USER, &url, &[], &what).await {
            Ok(b) => b,
            // ArcGIS answers an unknown or inaccessible user with an error envelope ("User does
            // not exist or is inaccessible."); keyed on the code, not the text.
            Err(e) => {
                return Err(match e.root() {
                    Error::Api { api, .. } if matches!(api.code, None | Some(400 | 404)) => Error::NotFound {
                        username: username.to_owned(),
                        detail: Some(api.clone()),
                    },
                    _ => e,
                });
            }
        };
        // The org's id is needed only when the answer names an org (one cached portals/self).
        let ours = match wire::string(body.get("orgId")) {
            Some(_) => Some(self.org_id().await?),
            None => None,
        };
        read_lookup(&body, username, ours)
    }

    /// The pages at `starts`, `concurrency` at a time, sorted by start. Any failed page
    /// fails them all: a partial list must not pass for a complete one.
    async fn org_users_pages(
        &self,
        starts: impl IntoIterator<Item = u64>,
        concurrency: usize,
    ) -> Result<Vec<Page>, Error> {
        let mut pages: Vec<Page> = stream::iter(starts)
            .map(|start| self.org_users_page(start))
            .buffer_unordered(concurrency)
            .try_collect()
            .await?;
        pages.sort_by_key(|p| p.start);
        Ok(pages)
    }

    async fn org_users_page(&self, start: u64) -> Result<Page, Error> {
        let what = format!("portals/self/users (members from #{start})");
        let url = self.url(&["portals", "self", "users"]);
        let params = [
            ("start", start.to_string()),
            ("num", PAGE_SIZE.to_string()),
            // A stable order, so consecutive pages neither overlap nor skip.
            ("sortField", "username".to_owned()),
            ("sortOrder", "asc".to_owned()),
        ];
        let page = self.call_with(ORG_USERS, &url, &params, &what, decode_page).await?;
        let Some(users) = page.users else {
            return Err(Error::Unexpected {
                what,
                reason: "no 'users' array".into(),
            });
        };
        let Some(total) = page
            .total
            .as_ref()
            .and_then(wire::count)
            .and_then(|t| u64::try_from(t).ok())
        else {
            return Err(Error::Unexpected {
                what,
                reason: "no 'total' member count".into(),
            });
        };
        let next_start = page.next_start.as_ref().and_then(wire::count).unwrap_or(-1);
        let records = users.iter().map(read_record).collect();
        Ok(Page {
            start,
            total,
            next_start,
            records,
        })
    }
}

/// A listing page as sent, decoded straight into the few fields used: the ~25 other fields of
/// each user are skipped without being allocated (a `Value` per page cost the client as much
/// CPU as the rest of the listing).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePage {
    // The error envelope's keys (an error arrives inside HTTP 200).
    error: Option<Value>,
    status: Option<Value>,
    code: Option<Value>,
    message: Option<Value>,
    total: Option<Value>,
    next_start: Option<Value>,
    users: Option<Vec<WireUser>>,
}

/// A user record's fields that matter here; `Value` keeps every spelling readable (numbers
/// as strings, booleans as strings).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireUser {
    username: Option<Value>,
    full_name: Option<Value>,
    email: Option<Value>,
    disabled: Option<Value>,
    user_license_type_id: Option<Value>,
    role: Option<Value>,
    assigned_credits: Option<Value>,
    available_credits: Option<Value>,
}

fn decode_page(body: &Bytes) -> Result<WirePage, DecodeError> {
    let page: WirePage = serde_json::from_slice(body).map_err(DecodeError::Json)?;
    let mut envelope = Map::new();
    for (key, value) in [
        ("error", &page.error),
        ("status", &page.status),
        ("code", &page.code),
        ("message", &page.message),
    ] {
        if let Some(v) = value {
            envelope.insert(key.to_owned(), v.clone());
        }
    }
    match ApiError::from_body(&Value::Object(envelope)) {
        Some(api) => Err(DecodeError::Envelope(Box::new(api))),
        None => Ok(page),
    }
}

fn problem_key(p: &ListingProblem) -> &str {
    match p {
        ListingProblem::Lookup { username, .. } => username,
        _ => "",
    }
}

/// Reads a wire user record into a domain [`Member`].
fn read_record(user: &WireUser) -> Record {
    let Some(username) = wire::string(user.username.as_ref()) else {
        return Record::Unreadable;
    };
    let assigned = user.assigned_credits.as_ref().and_then(Credits::from_json);
    let available = user.available_credits.as_ref().and_then(Credits::from_json);
    let (Some(assigned), Some(available)) = (assigned, available) else {
        return Record::NeedsLookup(username);
    };
    Record::Complete(Member {
        username,
        full_name: wire::string(user.full_name.as_ref()),
        email: wire::string(user.email.as_ref()),
        disabled: wire::boolean(user.disabled.as_ref()).unwrap_or(false),
        user_type: wire::string(user.user_license_type_id.as_ref()),
        role: wire::string(user.role.as_ref()),
        balance: Balance::from_wire(assigned, available),
    })
}

/// Reads a `community/users/<username>` answer as the member `username` of the org whose id
/// is `org_id` (needed only when the answer carries an `orgId`).
///
/// The endpoint also answers for users of other orgs: with their `orgId` when the token may
/// see more than the public view, and without it (nor role, nor credits) otherwise. Either
/// way that is "not a member of this org", never a failure of the request it is part of.
/// A username that differs (a user id or a case-insensitive match) is not the member asked for.
pub(crate) fn read_lookup(body: &Value, username: &str, org_id: Option<&str>) -> Result<Member, Error> {
    let not_found = || Error::NotFound {
        username: username.to_owned(),
        detail: None,
    };
    let their_org = wire::string(body.get("orgId"));
    match (&their_org, org_id) {
        (Some(theirs), Some(ours)) if theirs != ours => return Err(not_found()),
        (Some(_), None) => {
            return Err(Error::Unexpected {
                what: format!("community/users/{username} (member lookup)"),
                reason: "the answer names an org and this org's id is unknown".into(),
            });
        }
        _ => {}
    }
    match read_value(body) {
        Record::Complete(m) if m.username == username => Ok(m),
        Record::NeedsLookup(_) if their_org.is_none() => Err(not_found()),
        Record::NeedsLookup(u) if u == username => Err(Error::Unexpected {
            what: format!("community/users/{username} (member lookup)"),
            reason: "no assignedCredits/availableCredits: the token cannot see this member's private \
                fields (it needs portal:admin:viewUsers)"
                .into(),
        }),
        Record::Complete(_) | Record::NeedsLookup(_) | Record::Unreadable => Err(not_found()),
    }
}

/// Reads a JSON user object; a non-object reads as a record without a username.
fn read_value(user: &Value) -> Record {
    read_record(&WireUser::deserialize(user).unwrap_or_default())
}

/// Converts one ArcGIS user object (listing entry or `community/users/<u>`) into a
/// [`Member`], or `None` when it lacks a username or the credit fields.
pub fn member_from_json(user: &Value) -> Option<Member> {
    match read_value(user) {
        Record::Complete(m) => Some(m),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wire_user_to_member() {
        let m = member_from_json(&json!({
            "username": "jsmith", "fullName": "John Smith", "email": "j@x.org", "role": "org_publisher",
            "userLicenseTypeId": "creatorUT", "disabled": false, "assignedCredits": 500.0,
            "availableCredits": "479.50998", "level": "2"
        }))
        .unwrap();
        assert_eq!(m.username, "jsmith");
        assert_eq!(
            m.balance,
            Balance::Limited {
                assigned: Credits::whole(500),
                available: Credits::parse_exact("479.50998").unwrap()
            }
        );
        assert_eq!(m.user_type.as_deref(), Some("creatorUT"));
    }

    #[test]
    fn minus_one_is_unlimited_and_empty_email_is_none() {
        let m = member_from_json(&json!({"username": "u", "email": "", "disabled": true,
            "assignedCredits": -1, "availableCredits": -1}))
        .unwrap();
        assert_eq!(m.balance, Balance::Unlimited);
        assert_eq!(m.email, None);
        assert!(m.disabled);
    }

    fn page(start: u64, users: Value) -> Page {
        let records = users.as_array().unwrap().iter().map(read_value).collect();
        Page {
            start,
            total: 0,
            next_start: -1,
            records,
        }
    }

    #[test]
    fn merge_dedupes_with_the_lowest_page_winning_whatever_the_arrival_order() {
        let p1 = page(
            1,
            json!([{"username": "a", "assignedCredits": 1, "availableCredits": 1},
            {"username": "b", "assignedCredits": 1, "availableCredits": 1}]),
        );
        // A member shifted from page 1 to page 2 while listing: seen twice, different data.
        let p2 = page(
            101,
            json!([{"username": "b", "assignedCredits": 9, "availableCredits": 9},
            {"username": "c"}, {"fullName": "no username"}, {"username": "c"}]),
        );
        let m = merge(vec![p2, p1]);
        assert_eq!(m.members.keys().collect::<Vec<_>>(), vec!["a", "b"]);
        assert_eq!(
            m.members["b"].balance,
            Balance::Limited {
                assigned: Credits::whole(1),
                available: Credits::whole(1)
            }
        );
        assert_eq!(m.lookups.iter().collect::<Vec<_>>(), vec!["c"]);
        assert_eq!(m.duplicates_dropped, 2);
        assert!(matches!(
            m.problems.as_slice(),
            [ListingProblem::Unreadable { start: 101 }]
        ));
    }

    #[test]
    fn records_without_credit_fields_need_a_lookup() {
        assert!(matches!(read_value(&json!({"username": "u"})), Record::NeedsLookup(u) if u == "u"));
        assert!(matches!(
            read_value(&json!({"username": "u", "assignedCredits": 5})),
            Record::NeedsLookup(_)
        ));
        assert!(matches!(read_value(&json!({"fullName": "x"})), Record::Unreadable));
    }
}

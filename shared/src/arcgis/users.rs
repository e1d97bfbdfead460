//! Org members: the complete paged listing and the exact single-member lookup.
//!
//! Search is the wrong tool here: it is fuzzy (`search(username)[0]` can return `jdoe2` for
//! `jdoe`), stops at 10,000 results, and fetching each result again costs one request per
//! member; a listing capped at 1000 members silently drops the rest (see docs/arcgis.md,
//! "Members: listing and exact lookup"). Here the listing is `portals/self/users` (100 per
//! page, no documented cap), pages after the first are fetched concurrently, and a member is
//! looked up by its exact username at `community/users/<name>`. Whether the listing stops at
//! 10,000 like search is unverified: an org that reaches [`LISTING_CAP`] is listed by role
//! (and, within a role that reaches it too, by user type), and the parts are proven to add
//! up to the org.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::credits::amount::Credits;
use crate::credits::member::{Balance, Member, UserTypes};

use super::client::{Client, DecodeError};
use super::endpoint::{ORG_USERS, ROLES, USER};
use super::error::{ApiError, Error};
use super::wire;

/// The most members ArcGIS returns per page.
pub const PAGE_SIZE: u64 = 100;

/// The `total` from which a `portals/self/users` answer may be capped. Search counts and
/// serves at most 10,000 results ("if the total number is greater than this value, 10,000
/// will be returned"); whether the listing stops there too is **unverified**, so from this
/// many members on the listing goes by partitions small enough to be listed whole (the
/// default of [`crate::arcgis::ClientConfig::listing_cap`]). It must not exceed the real cap:
/// a capped total below it would pass for the org's size.
pub const LISTING_CAP: u64 = 10_000;

/// The built-in roles: `portals/self/roles` lists only the roles that carry a `roleId`
/// (custom roles and named built-in ones such as Viewer).
const BUILT_IN_ROLES: [&str; 3] = ["org_admin", "org_publisher", "org_user"];

/// Which members a listing request selects, through the filters `portals/self/users` takes:
/// the whole org, a role, or a role and a user type. An org too large for one possibly
/// capped listing is listed in such parts.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Partition {
    /// `role`: a built-in role name or a role id; `None` selects every role.
    pub role: Option<String>,
    /// `userLicenseType`: a user type id such as `creatorUT`; `None` selects every type.
    pub user_type: Option<String>,
}

impl Partition {
    fn of_role(role: &str) -> Self {
        Partition {
            role: Some(role.to_owned()),
            user_type: None,
        }
    }

    fn params(&self) -> impl Iterator<Item = (&'static str, String)> + '_ {
        let role = self.role.iter().map(|r| ("role", r.clone()));
        role.chain(self.user_type.iter().map(|t| ("userLicenseType", t.clone())))
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.role, &self.user_type) {
            (None, None) => f.write_str("the whole org"),
            (Some(r), None) => write!(f, "role={r}"),
            (None, Some(t)) => write!(f, "userLicenseType={t}"),
            (Some(r), Some(t)) => write!(f, "role={r}, userLicenseType={t}"),
        }
    }
}

/// Every member of the org, each once, in username order, with whatever went wrong on the way.
#[derive(Debug)]
pub struct MemberList {
    /// Members sorted by username (byte order), unique.
    pub members: Vec<Member>,
    /// The member count ArcGIS announced on the first, unfiltered page. Where the endpoint
    /// caps its totals this is the cap, not the org's size: a complete list's size is
    /// `members.len()`.
    pub reported_total: u64,
    /// Listing pages fetched, filtered ones included.
    pub pages: u64,
    /// Records seen more than once (members shifting between pages, or found in two
    /// partitions) and dropped.
    pub duplicates_dropped: u64,
    /// The partitions the org was listed by, in listing order, when it reached the listing
    /// cap; empty when it was listed whole.
    pub partitions: Vec<Partition>,
    /// The member count each of [`MemberList::partitions`] announced, in the same order.
    pub partition_totals: Vec<u64>,
    /// Problems that make the list incomplete or suspect; empty when all is well.
    pub problems: Vec<ListingProblem>,
}

impl MemberList {
    /// True when every announced member was listed with its credits.
    pub fn is_complete(&self) -> bool {
        self.problems.is_empty()
    }

    /// What the next listing of this org can plan its requests by, when this one is
    /// complete: the org's size, and each part's when it was listed by partition.
    pub fn hint(&self) -> Option<ListingHint> {
        if !self.is_complete() {
            return None;
        }
        Some(ListingHint {
            members: self.members.len() as u64,
            parts: self
                .partitions
                .iter()
                .cloned()
                .zip(self.partition_totals.iter().copied())
                .collect(),
        })
    }
}

/// What the last complete listing of an org found, kept between runs so that the next one
/// requests at once every page it will likely need instead of learning sizes first. It only
/// decides which requests go out together: the listing checks what it reads exactly as
/// without it, and an org that changed costs the pages that changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListingHint {
    /// The org's member count.
    pub members: u64,
    /// Each part the org was listed by (a role, or a user type within a role too large for
    /// one listing) and its member count, when it was listed by partition; empty otherwise.
    pub parts: Vec<(Partition, u64)>,
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
    #[error("portals/self/users ({partition}) page starting at {start}: a record has no username; it was skipped")]
    Unreadable {
        /// The partition the page belongs to.
        partition: Partition,
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
    /// A partition's pages held fewer members than its `total`: members left it while
    /// listing, or the endpoint stops serving at a cap.
    #[error(
        "portals/self/users ({partition}) announced {total} members but its pages held {listed}: members \
        changed during the listing, or the listing stops serving results at a cap; run the scan again, and \
        if this persists these members cannot all be listed"
    )]
    PartitionIncomplete {
        /// The partition.
        partition: Partition,
        /// Its `total`.
        total: u64,
        /// Distinct usernames its pages held.
        listed: u64,
    },
    /// A partition at or above the cap was listed whole anyway (the endpoint may serve past
    /// the cap), and a page past the cap failed.
    #[error(
        "portals/self/users ({partition}) from #{start}, past the {cap} results a listing may be capped \
        at: {error}; the members past the cap were not listed and no finer filter can reach them"
    )]
    PastCap {
        /// The partition.
        partition: Partition,
        /// The first page that failed.
        start: u64,
        /// The cap in force.
        cap: u64,
        /// Why it failed.
        #[source]
        error: Error,
    },
    /// A partition's `total` is exactly the cap and no answer of this listing exceeded it:
    /// the endpoint may cap its totals, so whether it holds more members than were listed
    /// cannot be proven.
    #[error(
        "portals/self/users ({partition}) answered total {total}, the {cap} at which its totals may be \
        capped, and no answer went past it: whether it holds more members than the listing found cannot \
        be proven, so the member list is treated as incomplete"
    )]
    Unprovable {
        /// The partition.
        partition: Partition,
        /// Its `total`.
        total: u64,
        /// The cap in force.
        cap: u64,
    },
    /// A role split by user type: its user types held fewer members than the role did, so
    /// some members have a user type no page of the listing showed.
    #[error(
        "portals/self/users ({partition}) announced {total} members but its user types {user_types:?} \
        held {covered}: {} members have another user type and were not listed; run the scan again",
        total.saturating_sub(*covered)
    )]
    UncoveredUserTypes {
        /// The role.
        partition: Partition,
        /// Its `total`.
        total: u64,
        /// What its user types' totals add up to.
        covered: u64,
        /// The user types tried (every one the listing's pages showed).
        user_types: Vec<String>,
    },
    /// Members the unfiltered listing showed were in no partition.
    #[error(
        "{count} member(s) listed by portals/self/users without filters (such as '{example}') were in no \
        role's listing: the org has a role portals/self/roles did not list, or members changed during the \
        listing; run the scan again"
    )]
    NotInAnyPartition {
        /// How many.
        count: u64,
        /// One of them.
        example: String,
    },
}

/// One listing page, already reduced to records: the raw JSON (≈1 KB per member) is dropped
/// as each page arrives, so a 25,000-member listing holds members, not 25 MB of JSON.
struct Page {
    start: u64,
    total: u64,
    next_start: i64,
    records: Vec<Record>,
    /// The user types its records name (rows without credit fields included): the values a
    /// role too large for one listing is split by.
    user_types: BTreeSet<String>,
}

impl Page {
    fn usernames(&self) -> impl Iterator<Item = &str> {
        self.records.iter().filter_map(|r| match r {
            Record::Complete(m) => Some(m.username.as_str()),
            Record::NeedsLookup(u) => Some(u.as_str()),
            Record::Unreadable => None,
        })
    }
}

/// The starts of the pages that the first of `pages` (sorted, starting at 1) implies and
/// that are not among them. Trusts the server's page size if it returned fewer than asked on
/// a page that is not the last one, so no member falls between pages.
fn missing_starts(pages: &[Page]) -> Vec<u64> {
    let first = &pages[0];
    let total = first.total;
    let step = match first.records.len() as u64 {
        n if n > 0 && n < PAGE_SIZE && total > n => n,
        _ => PAGE_SIZE,
    };
    let fetched: HashSet<u64> = pages.iter().map(|p| p.start).collect();
    (1..)
        .map(|i| 1 + i * step)
        .take_while(|s| *s <= total)
        .filter(|s| !fetched.contains(s))
        .collect()
}

/// One partition being listed.
struct Part {
    partition: Partition,
    /// Its pages so far, the first among them.
    pages: Vec<Page>,
    /// Its total reached the cap: pages past the cap may fail or come back empty.
    oversized: bool,
    /// The first page past the cap that failed, and why.
    failed: Option<(u64, Error)>,
}

/// The pages' records, deduplicated.
struct Merged {
    /// Members listed with credit fields, sorted by username, unique.
    members: Vec<Member>,
    /// Usernames listed without credit fields, sorted, unique, none of them in `members`.
    lookups: Vec<String>,
    problems: Vec<ListingProblem>,
    duplicates_dropped: u64,
    /// Distinct usernames per partition, in the order given.
    listed_per_part: Vec<u64>,
}

impl Merged {
    fn listed(&self) -> u64 {
        (self.members.len() + self.lookups.len()) as u64
    }

    fn contains(&self, username: &str) -> bool {
        self.members
            .binary_search_by(|m| m.username.as_str().cmp(username))
            .is_ok()
            || self.lookups.binary_search_by(|u| u.as_str().cmp(username)).is_ok()
    }
}

/// A record with a username, and where it was listed: its partition's position, its page's
/// start and its position on the page, the order in which copies of a duplicate win.
struct Listed {
    part: u32,
    start: u64,
    at: u32,
    record: Record,
}

impl Listed {
    fn username(&self) -> &str {
        match &self.record {
            Record::Complete(m) => &m.username,
            Record::NeedsLookup(u) => u,
            Record::Unreadable => "",
        }
    }
}

/// Merges the partitions' pages: of the copies of a member, the first partition's, its lowest
/// page's wins, whatever order the pages arrived in. The records are moved into one list
/// that is sorted and deduplicated in place, so the merge holds each member once (not a map
/// beside the pages, nor a second copy of every username per partition): at 100,000 members
/// the listing is most of a scan's memory.
fn merge(parts: Vec<(Partition, Vec<Page>)>) -> Merged {
    let records = parts.iter().flat_map(|(_, pages)| pages).map(|p| p.records.len()).sum();
    let mut listed: Vec<Listed> = Vec::with_capacity(records);
    let mut problems = Vec::new();
    let mut partitions = Vec::with_capacity(parts.len());
    for (part, (partition, mut pages)) in (0u32..).zip(parts) {
        pages.sort_by_key(|p| p.start);
        for page in pages {
            let start = page.start;
            for (at, record) in (0u32..).zip(page.records) {
                if let Record::Unreadable = record {
                    problems.push(ListingProblem::Unreadable {
                        partition: partition.clone(),
                        start,
                    });
                    continue;
                }
                listed.push(Listed {
                    part,
                    start,
                    at,
                    record,
                });
            }
        }
        partitions.push(partition);
    }
    sort_listed(&mut listed);
    let mut listed_per_part = vec![0u64; partitions.len()];
    let mut duplicates_dropped = 0;
    let mut last_part = listed.first().map_or(0, |first| first.part);
    if !listed.is_empty() {
        listed_per_part[last_part as usize] += 1;
    }
    // Within a username the copies come in partition order: a partition not counted for it
    // yet shows as a change from the copy before.
    listed.dedup_by(|later, kept| {
        let same = later.username() == kept.username();
        if !same || later.part != last_part {
            listed_per_part[later.part as usize] += 1;
        }
        last_part = later.part;
        duplicates_dropped += u64::from(same);
        same
    });
    let lookups = listed
        .iter_mut()
        .filter_map(|l| match &mut l.record {
            Record::NeedsLookup(username) => Some(std::mem::take(username)),
            _ => None,
        })
        .collect();
    // Collected in place: the members take over the records' allocation.
    let members = listed
        .into_iter()
        .filter_map(|l| match l.record {
            Record::Complete(m) => Some(m),
            _ => None,
        })
        .collect();
    Merged {
        members,
        lookups,
        problems,
        duplicates_dropped,
        listed_per_part,
    }
}

/// Sorts records by username, then by where they were read (partition, page, position): the
/// keys are unique, so the order is total. Through indices: a record is over a hundred bytes
/// that a sort would move many times, an index four. The pages come sorted by username, so
/// each partition's records are one sorted run, which a stable sort merges in O(n log parts)
/// comparisons instead of O(n log n).
fn sort_listed(listed: &mut [Listed]) {
    let key = |l: &Listed| (l.part, l.start, l.at);
    let mut order: Vec<u32> = (0..listed.len() as u32).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&listed[a as usize], &listed[b as usize]);
        a.username().cmp(b.username()).then_with(|| key(a).cmp(&key(b)))
    });
    // Position i takes the record at order[i]: each cycle of the permutation is applied by
    // swaps, carrying the cycle's first record to where it belongs.
    const PLACED: u32 = u32::MAX;
    for i in 0..order.len() {
        let mut j = i;
        while order[j] != PLACED {
            let from = order[j] as usize;
            order[j] = PLACED;
            if from == i {
                break;
            }
            listed.swap(j, from);
            j = from;
        }
    }
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
    /// list must not pass for a complete one. An org of [`LISTING_CAP`] members or more is
    /// listed by partition (see [`Client::list_members_expecting`]).
    pub async fn list_members(&self) -> Result<MemberList, Error> {
        self.list_members_expecting(None).await
    }

    /// [`Client::list_members`] for an org expected to have `expected` members (the last
    /// complete listing's count): every page that count implies is requested at once with the
    /// first, instead of after the first page gave the total. The listing stays complete
    /// whatever the real count: pages past the end come back empty and missing ones are
    /// fetched once the total is known. A stable org costs the same ceil(N/100) requests and
    /// one round trip less; an org that shrank costs the empty pages once.
    ///
    /// An org whose first page announces the listing cap or more (or expected to) is listed
    /// by role instead, since the endpoint may serve no more than the cap whatever it
    /// announces: `portals/self/roles`, then each role's pages, all `list_concurrency` at a
    /// time. A role at the cap is listed by user type within it (the types the pages read so
    /// far show), and a part still at the cap is listed whole anyway (the endpoint may serve
    /// it). Cost: the paging floor plus one first page per part, the unfiltered first page and
    /// the roles listing. The parts must add up: every one holds what its `total` announced,
    /// and together (duplicates dropped) the org's `total` when that total is above the cap,
    /// at least that otherwise; what cannot be proven is a [`ListingProblem`].
    pub async fn list_members_expecting(&self, expected: Option<u64>) -> Result<MemberList, Error> {
        let hint = expected.map(|members| ListingHint {
            members,
            parts: Vec::new(),
        });
        self.list_members_hinted(hint.as_ref()).await
    }

    /// [`Client::list_members_expecting`] with the last listing's [`ListingHint`]. For an org
    /// listed by partition last time, the roles listing, the unfiltered first page, the first
    /// page of each role split by user type and every page each part's last size implies go
    /// out at once: no round trip to learn the roles, the parts and their sizes first. A part
    /// new since then costs its first page before its others, a part that grew its missing
    /// pages, one that shrank its empty pages.
    pub async fn list_members_hinted(&self, hint: Option<&ListingHint>) -> Result<MemberList, Error> {
        let pipeline = self.pipeline();
        let cap = self.inner.listing_cap;
        let whole = Partition::default();
        let expected = hint.map(|h| h.members);
        let pages = if expected.is_some_and(|n| n >= cap) {
            let planned = hint.map_or(&[][..], |h| h.parts.as_slice());
            if !planned.is_empty() {
                // Boxed: inline, this future's type nests deep enough to exceed the
                // compiler's query depth in the functions that await a listing.
                return Box::pin(self.list_by_plan(planned)).await;
            }
            // Listed by partition last time: unfiltered pages past the cap may not be served.
            let (first, roles) = tokio::try_join!(self.org_users_page(&whole, 1), self.role_keys())?;
            if first.total >= cap {
                return self.list_partitioned(vec![first], Some(roles), Vec::new()).await;
            }
            vec![first]
        } else {
            let expected_pages = expected.map_or(1, |n| n.div_ceil(PAGE_SIZE).max(1));
            let pages = self
                .org_users_pages(&whole, (0..expected_pages).map(|i| 1 + i * PAGE_SIZE), pipeline)
                .await?;
            // The page at start 1 is always among them, and sorts first.
            if pages[0].total >= cap {
                return self.list_partitioned(pages, None, Vec::new()).await;
            }
            pages
        };
        self.list_whole(pages).await
    }

    /// The rest of an org below the cap: every page its first implies, then any page
    /// `nextStart` points to past it.
    async fn list_whole(&self, mut pages: Vec<Page>) -> Result<MemberList, Error> {
        let whole = Partition::default();
        let total = pages[0].total;
        let missing = missing_starts(&pages);
        pages.extend(self.org_users_pages(&whole, missing, self.pipeline()).await?);
        self.follow_next(&whole, &mut pages).await?;
        let page_count = pages.len() as u64;
        let merged = merge(vec![(whole, pages)]);
        let listed = merged.listed();
        let mut checks = Vec::new();
        if listed != total {
            checks.push(ListingProblem::CountMismatch {
                reported_total: total,
                listed,
            });
        }
        Ok(self.finish(merged, total, page_count, Vec::new(), checks).await)
    }

    /// Lists an org by the parts its last listing found ([`ListingHint::parts`]): the roles
    /// listing, the unfiltered first page, the first page of each role split by user type and
    /// each part's pages, all `list_concurrency` at a time, then
    /// [`Client::list_partitioned`] with what was read.
    async fn list_by_plan(&self, planned: &[(Partition, u64)]) -> Result<MemberList, Error> {
        let pipeline = self.pipeline();
        let whole = Partition::default();
        // A split role's own first page: its total is what its types must add up to.
        let split: BTreeSet<Partition> = planned
            .iter()
            .filter(|(p, _)| p.user_type.is_some())
            .filter_map(|(p, _)| p.role.as_deref().map(Partition::of_role))
            .collect();
        let requests: Vec<(Partition, u64)> = std::iter::once((whole.clone(), 1))
            .chain(split.into_iter().map(|p| (p, 1)))
            .chain(
                planned
                    .iter()
                    .filter(|(p, _)| p.role.is_some())
                    .flat_map(|(part, size)| {
                        let pages = size.div_ceil(PAGE_SIZE).max(1);
                        (0..pages).map(move |i| (part.clone(), 1 + i * PAGE_SIZE))
                    }),
            )
            .collect();
        let pages = stream::iter(requests)
            .map(|(partition, start)| async move {
                let page = self.org_users_page(&partition, start).await?;
                Ok::<_, Error>((partition, page))
            })
            .buffer_unordered(pipeline)
            .try_collect::<Vec<_>>();
        let (roles, pages) = tokio::try_join!(self.role_keys(), pages)?;
        let mut first = None;
        let mut read: BTreeMap<Partition, Vec<Page>> = BTreeMap::new();
        for (partition, page) in pages {
            if partition == whole {
                first = Some(page);
            } else {
                read.entry(partition).or_default().push(page);
            }
        }
        let first = first.ok_or_else(|| Error::Unexpected {
            what: "the member listing".into(),
            reason: "the unfiltered first page was requested but not read".into(),
        })?;
        if first.total < self.inner.listing_cap {
            // The org shrank below the cap: listed whole, the role pages read for nothing.
            let wasted = read.values().map(|p| p.len() as u64).sum::<u64>();
            let mut list = self.list_whole(vec![first]).await?;
            list.pages += wasted;
            return Ok(list);
        }
        // A role gone since the last listing: its members are in other roles now.
        read.retain(|p, _| p.role.as_ref().is_some_and(|r| roles.contains(r)));
        for pages in read.values_mut() {
            pages.sort_by_key(|p| p.start);
        }
        self.list_partitioned(vec![first], Some(roles), read.into_iter().collect())
            .await
    }

    /// Lists an org that reached the cap by partition (see
    /// [`Client::list_members_expecting`]). `whole` holds the unfiltered pages read so far
    /// (the first among them): their members must all turn up in some partition. `read`
    /// holds pages of parts already read (roles, and types within roles), each part's first
    /// page first.
    async fn list_partitioned(
        &self,
        whole: Vec<Page>,
        roles: Option<Vec<String>>,
        read: Vec<(Partition, Vec<Page>)>,
    ) -> Result<MemberList, Error> {
        let cap = self.inner.listing_cap;
        let pipeline = self.pipeline();
        let reported_total = whole[0].total;
        let roles = match roles {
            Some(r) => r,
            None => self.role_keys().await?,
        };
        tracing::info!(
            reported_total,
            cap,
            roles = roles.len(),
            "the org reaches the listing cap: listing it by role"
        );
        let mut page_count = whole.len() as u64;
        let mut user_types: BTreeSet<String> = BTreeSet::new();
        user_types.extend(whole.iter().flat_map(|p| p.user_types.iter().cloned()));
        let sample: Vec<String> = whole.iter().flat_map(Page::usernames).map(str::to_owned).collect();
        drop(whole);

        // Each part read already: its first page, and the rest of its pages apart.
        let mut known: BTreeMap<Partition, Page> = BTreeMap::new();
        let mut more: BTreeMap<Partition, Vec<Page>> = BTreeMap::new();
        for (partition, mut pages) in read {
            page_count += pages.len() as u64;
            user_types.extend(pages.iter().flat_map(|p| p.user_types.iter().cloned()));
            if pages.first().is_some_and(|p| p.start == 1) {
                let rest = pages.split_off(1);
                known.insert(partition.clone(), pages.remove(0));
                more.insert(partition, rest);
            }
        }
        // Collected before awaiting: a borrowing iterator held across an await makes the
        // future fail to be `Send` for every lifetime.
        let by_role: Vec<Partition> = roles
            .iter()
            .map(|r| Partition::of_role(r))
            .filter(|p| !known.contains_key(p))
            .collect();
        let mut firsts = self.first_pages(by_role, pipeline).await?;
        page_count += firsts.len() as u64;
        firsts.extend(roles.iter().filter_map(|r| {
            let p = Partition::of_role(r);
            known.remove(&p).map(|first| (p, first))
        }));
        // In the roles' order, as if all were read here.
        firsts.sort_by_key(|(p, _)| roles.iter().position(|r| p.role.as_ref() == Some(r)));
        user_types.extend(firsts.iter().flat_map(|(_, p)| p.user_types.iter().cloned()));
        // A total above the cap cannot be a capped one: then every total is a true count.
        let mut exact = reported_total > cap || firsts.iter().any(|(_, p)| p.total > cap);
        let (mut leaves, split): (Vec<_>, Vec<_>) = firsts.into_iter().partition(|(_, p)| p.total < cap);
        let mut checks = Vec::new();
        if !split.is_empty() {
            let mut children = Vec::new();
            for (role, _) in &split {
                children.extend(user_types.iter().map(|t| Partition {
                    role: role.role.clone(),
                    user_type: Some(t.clone()),
                }));
            }
            // The types read already keep their first page; the others are read now.
            let (read_children, unread): (Vec<Partition>, Vec<Partition>) =
                children.iter().cloned().partition(|c| known.contains_key(c));
            let mut fetched = self.first_pages(unread, pipeline).await?;
            page_count += fetched.len() as u64;
            fetched.extend(
                read_children
                    .into_iter()
                    .filter_map(|c| known.remove(&c).map(|first| (c, first))),
            );
            fetched.sort_by_key(|(p, _)| children.iter().position(|c| c == p));
            let children = fetched;
            exact |= children.iter().any(|(_, p)| p.total > cap);
            for (role, first) in &split {
                let covered: u64 = children
                    .iter()
                    .filter(|(c, _)| c.role == role.role)
                    .map(|(_, p)| p.total)
                    .sum();
                if !exact {
                    checks.push(ListingProblem::Unprovable {
                        partition: role.clone(),
                        total: first.total,
                        cap,
                    });
                } else if covered < first.total {
                    checks.push(ListingProblem::UncoveredUserTypes {
                        partition: role.clone(),
                        total: first.total,
                        covered,
                        user_types: user_types.iter().cloned().collect(),
                    });
                }
            }
            leaves.extend(children);
        }
        let mut parts: Vec<Part> = leaves
            .into_iter()
            .map(|(partition, first)| {
                let mut pages = vec![first];
                pages.extend(more.remove(&partition).unwrap_or_default());
                Part {
                    oversized: pages[0].total >= cap,
                    partition,
                    pages,
                    failed: None,
                }
            })
            .collect();
        for part in parts.iter().filter(|p| p.oversized && !exact) {
            checks.push(ListingProblem::Unprovable {
                partition: part.partition.clone(),
                total: part.pages[0].total,
                cap,
            });
        }

        // Every other page of every part, all at once.
        let requests: Vec<(usize, u64)> = parts
            .iter()
            .enumerate()
            .flat_map(|(i, part)| missing_starts(&part.pages).into_iter().map(move |s| (i, s)))
            .collect();
        let parts_ref = &parts;
        let results: Vec<(usize, u64, Result<Page, Error>)> = stream::iter(requests)
            .map(|(i, start)| async move { (i, start, self.org_users_page(&parts_ref[i].partition, start).await) })
            .buffer_unordered(pipeline)
            .collect()
            .await;
        for (i, start, result) in results {
            let part = &mut parts[i];
            match result {
                Ok(page) => {
                    page_count += 1;
                    part.pages.push(page);
                }
                // Past the cap, a failure is the cap showing, not a broken listing.
                Err(error) if part.oversized && start > cap => {
                    if part.failed.as_ref().is_none_or(|(s, _)| start < *s) {
                        part.failed = Some((start, error));
                    }
                }
                Err(error) => return Err(error),
            }
        }
        for part in parts.iter_mut().filter(|p| p.failed.is_none()) {
            let before = part.pages.len();
            self.follow_next(&part.partition, &mut part.pages).await?;
            page_count += (part.pages.len() - before) as u64;
        }

        let mut totals = Vec::with_capacity(parts.len());
        let mut failures = Vec::new();
        let mut listed_parts = Vec::with_capacity(parts.len());
        for part in parts {
            totals.push((part.partition.clone(), part.pages[0].total, part.failed.is_some()));
            if let Some((start, error)) = part.failed {
                failures.push(ListingProblem::PastCap {
                    partition: part.partition.clone(),
                    start,
                    cap,
                    error,
                });
            }
            listed_parts.push((part.partition, part.pages));
        }
        let merged = merge(listed_parts);
        for ((partition, total, failed), listed) in totals.iter().zip(&merged.listed_per_part) {
            if !failed && listed < total {
                checks.push(ListingProblem::PartitionIncomplete {
                    partition: partition.clone(),
                    total: *total,
                    listed: *listed,
                });
            }
        }
        checks.extend(failures);
        let listed = merged.listed();
        if listed < reported_total || (exact && listed != reported_total) {
            checks.push(ListingProblem::CountMismatch { reported_total, listed });
        }
        let outside: Vec<&String> = sample.iter().filter(|u| !merged.contains(u)).collect();
        if let Some(example) = outside.first() {
            checks.push(ListingProblem::NotInAnyPartition {
                count: outside.len() as u64,
                example: (*example).clone(),
            });
        }
        let parts = totals.into_iter().map(|(p, total, _)| (p, total)).collect();
        Ok(self.finish(merged, reported_total, page_count, parts, checks).await)
    }

    /// Looks up the members listed without credit fields and assembles the list; `checks`
    /// are the listing's own findings, reported after the lookups' failures.
    async fn finish(
        &self,
        merged: Merged,
        reported_total: u64,
        pages: u64,
        parts: Vec<(Partition, u64)>,
        checks: Vec<ListingProblem>,
    ) -> MemberList {
        let Merged {
            mut members,
            lookups,
            mut problems,
            duplicates_dropped,
            ..
        } = merged;
        if !lookups.is_empty() {
            tracing::info!(
                count = lookups.len(),
                "listing records without credit fields; looking them up"
            );
        }
        let mut failed = Vec::new();
        let mut found = false;
        for (username, result) in self.members(lookups, self.pipeline()).await {
            match result {
                Ok(m) => {
                    members.push(m);
                    found = true;
                }
                Err(error) => failed.push(ListingProblem::Lookup { username, error }),
            }
        }
        if found {
            members.sort_unstable_by(|a, b| a.username.cmp(&b.username));
        }
        // Deterministic order for the report, whatever order lookups finished in.
        failed.sort_by(|a, b| problem_key(a).cmp(problem_key(b)));
        problems.extend(failed);
        for problem in &checks {
            tracing::warn!(%problem, "member listing incomplete");
        }
        problems.extend(checks);
        let (partitions, partition_totals) = parts.into_iter().unzip();
        MemberList {
            members,
            reported_total,
            pages,
            duplicates_dropped,
            partitions,
            partition_totals,
            problems,
        }
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

    /// The pages of `partition` at `starts`, `concurrency` at a time, sorted by start. Any
    /// failed page fails them all: a partial list must not pass for a complete one.
    async fn org_users_pages(
        &self,
        partition: &Partition,
        starts: impl IntoIterator<Item = u64>,
        concurrency: usize,
    ) -> Result<Vec<Page>, Error> {
        let mut pages: Vec<Page> = stream::iter(starts)
            .map(|start| self.org_users_page(partition, start))
            .buffer_unordered(concurrency)
            .try_collect()
            .await?;
        pages.sort_by_key(|p| p.start);
        Ok(pages)
    }

    /// The first page of each of `partitions`, `concurrency` at a time, in the order given.
    async fn first_pages(
        &self,
        partitions: impl IntoIterator<Item = Partition>,
        concurrency: usize,
    ) -> Result<Vec<(Partition, Page)>, Error> {
        stream::iter(partitions)
            .map(|partition| async move {
                let page = self.org_users_page(&partition, 1).await?;
                Ok::<_, Error>((partition, page))
            })
            .buffered(concurrency)
            .try_collect()
            .await
    }

    /// Follows `nextStart` past the last of `pages` (sorted) while it points further: members
    /// added while listing.
    async fn follow_next(&self, partition: &Partition, pages: &mut Vec<Page>) -> Result<(), Error> {
        pages.sort_by_key(|p| p.start);
        let bound = pages[0].total / PAGE_SIZE;
        let mut extra = 0;
        while let Some(last) = pages.last() {
            let next = u64::try_from(last.next_start).unwrap_or(0);
            if next <= last.start || extra > bound {
                break;
            }
            pages.push(self.org_users_page(partition, next).await?);
            extra += 1;
        }
        Ok(())
    }

    async fn org_users_page(&self, partition: &Partition, start: u64) -> Result<Page, Error> {
        let what = match partition {
            Partition {
                role: None,
                user_type: None,
            } => format!("portals/self/users (members from #{start})"),
            p => format!("portals/self/users (members with {p} from #{start})"),
        };
        let url = self.url(&["portals", "self", "users"]);
        let mut params = vec![
            ("start", start.to_string()),
            ("num", PAGE_SIZE.to_string()),
            // A stable order, so consecutive pages neither overlap nor skip.
            ("sortField", "username".to_owned()),
            ("sortOrder", "asc".to_owned()),
        ];
        params.extend(partition.params());
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
        let mut types = UserTypes::default();
        let records = users.iter().map(|u| read_record(u, &mut types)).collect();
        // A handful of distinct values: copied once each, not once per member.
        let mut user_types: BTreeSet<String> = BTreeSet::new();
        for t in users
            .iter()
            .filter_map(|u| wire::non_blank(u.user_license_type_id.as_ref()))
        {
            if !user_types.contains(t) {
                user_types.insert(t.to_owned());
            }
        }
        Ok(Page {
            start,
            total,
            next_start,
            records,
            user_types,
        })
    }

    /// The values of the listing's `role` filter that together select every member: the
    /// built-in roles and every role `portals/self/roles` lists, in that order.
    async fn role_keys(&self) -> Result<Vec<String>, Error> {
        let url = self.url(&["portals", "self", "roles"]);
        let mut keys: Vec<String> = BUILT_IN_ROLES.map(String::from).into();
        let mut start = 1u64;
        loop {
            let what = format!("portals/self/roles (roles from #{start}, to list the org by role)");
            let params = [("start", start.to_string()), ("num", PAGE_SIZE.to_string())];
            let body = self.call(ROLES, &url, &params, &what).await?;
            let unexpected = |reason: String| Error::Unexpected {
                what: what.clone(),
                reason,
            };
            let page = WireRoles::deserialize(&body).map_err(|e| unexpected(format!("not a roles page: {e}")))?;
            let roles = page.roles.ok_or_else(|| unexpected("no 'roles' array".into()))?;
            for role in &roles {
                let id = wire::string(role.id.as_ref())
                    .ok_or_else(|| unexpected("a role without an 'id': the org cannot be listed by role".into()))?;
                if !keys.contains(&id) {
                    keys.push(id);
                }
            }
            match page.next_start.as_ref().and_then(wire::count).map(u64::try_from) {
                Some(Ok(next)) if next > start && !roles.is_empty() => start = next,
                _ => return Ok(keys),
            }
        }
    }
}

/// A `portals/self/roles` page: the role ids and where the next page starts.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireRoles {
    roles: Option<Vec<WireRole>>,
    next_start: Option<Value>,
}

/// A role of a `portals/self/roles` page.
#[derive(Deserialize)]
struct WireRole {
    id: Option<Value>,
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
    disabled: Option<Value>,
    user_license_type_id: Option<Value>,
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
fn read_record(user: &WireUser, types: &mut UserTypes) -> Record {
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
        disabled: wire::boolean(user.disabled.as_ref()).unwrap_or(false),
        user_type: wire::non_blank(user.user_license_type_id.as_ref()).map(|t| types.get(t)),
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
    read_record(
        &WireUser::deserialize(user).unwrap_or_default(),
        &mut UserTypes::default(),
    )
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
    fn minus_one_is_unlimited_and_empty_full_name_is_none() {
        let m = member_from_json(&json!({"username": "u", "fullName": "", "disabled": true,
            "assignedCredits": -1, "availableCredits": -1}))
        .unwrap();
        assert_eq!(m.balance, Balance::Unlimited);
        assert_eq!(m.full_name, None);
        assert!(m.disabled);
    }

    fn page(start: u64, users: Value) -> Page {
        let records = users.as_array().unwrap().iter().map(read_value).collect();
        Page {
            start,
            total: 0,
            next_start: -1,
            records,
            user_types: BTreeSet::new(),
        }
    }

    #[test]
    fn records_are_sorted_by_username_then_where_they_were_read_in_any_input_order() {
        // Three partitions whose pages hold overlapping, partly unsorted usernames.
        let listed = || -> Vec<Listed> {
            (0u32..600)
                .map(|i| Listed {
                    part: i % 3,
                    start: 1 + u64::from(i / 100) * 100,
                    at: i % 100,
                    record: Record::NeedsLookup(format!("user_{:03}", (i * 7) % 250)),
                })
                .collect()
        };
        let key = |l: &Listed| (l.username().to_owned(), l.part, l.start, l.at);
        let mut expected: Vec<_> = listed().iter().map(key).collect();
        expected.sort();
        for rotation in [0, 1, 299, 599] {
            let mut records = listed();
            records.rotate_left(rotation);
            sort_listed(&mut records);
            assert_eq!(
                records.iter().map(key).collect::<Vec<_>>(),
                expected,
                "rotated by {rotation}"
            );
        }
        let mut reversed = listed();
        reversed.reverse();
        sort_listed(&mut reversed);
        assert_eq!(reversed.iter().map(key).collect::<Vec<_>>(), expected);
        sort_listed(&mut []);
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
        let m = merge(vec![(Partition::default(), vec![p2, p1])]);
        let usernames: Vec<&str> = m.members.iter().map(|m| m.username.as_str()).collect();
        assert_eq!(usernames, vec!["a", "b"]);
        assert_eq!(
            m.members[1].balance,
            Balance::Limited {
                assigned: Credits::whole(1),
                available: Credits::whole(1)
            }
        );
        assert_eq!(m.lookups.iter().collect::<Vec<_>>(), vec!["c"]);
        assert_eq!(m.duplicates_dropped, 2);
        assert!(matches!(
            m.problems.as_slice(),
            [ListingProblem::Unreadable { start: 101, partition }] if *partition == Partition::default()
        ));
    }

    #[test]
    fn merge_counts_each_partition_whole_and_keeps_the_first_partitions_copy() {
        // A member who changed role while listing shows in both roles' pages.
        let admins = page(
            1,
            json!([{"username": "m", "assignedCredits": 1, "availableCredits": 1}]),
        );
        let users = page(
            1,
            json!([{"username": "a", "assignedCredits": 5, "availableCredits": 5},
            {"username": "m", "assignedCredits": 2, "availableCredits": 2}]),
        );
        let m = merge(vec![
            (Partition::of_role("org_admin"), vec![admins]),
            (Partition::of_role("org_user"), vec![users]),
        ]);
        assert_eq!(m.listed_per_part, vec![1, 2], "each partition counts what it held");
        assert_eq!((m.listed(), m.duplicates_dropped), (2, 1));
        assert_eq!(
            m.members.iter().find(|m| m.username == "m").unwrap().balance,
            Balance::Limited {
                assigned: Credits::whole(1),
                available: Credits::whole(1)
            }
        );
    }

    #[test]
    fn merge_counts_a_member_once_per_partition_it_shows_in() {
        let x = |n: i64| json!({"username": "x", "assignedCredits": n, "availableCredits": n});
        let m = merge(vec![
            (Partition::of_role("a"), vec![page(1, json!([x(1)]))]),
            // Twice in one partition (shifted between its pages), then in a third.
            (
                Partition::of_role("b"),
                vec![page(101, json!([x(3)])), page(1, json!([x(2)]))],
            ),
            (Partition::of_role("c"), vec![page(1, json!([x(4), {"username": "y"}]))]),
        ]);
        assert_eq!(m.listed_per_part, vec![1, 1, 2]);
        assert_eq!((m.listed(), m.duplicates_dropped), (2, 3));
        assert_eq!(m.members[0].balance.consumed(), Some(Credits::ZERO));
        assert_eq!(m.members[0].balance.headroom(), Some(Credits::whole(1)));
        assert!(m.contains("x") && m.contains("y") && !m.contains("z"));
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

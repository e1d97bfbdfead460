//! Step 3 of the apply path: everything a plan needs, read after the lock was taken.

use std::collections::HashSet;

use chrono::Utc;

use super::{Applier, ApplyError, Ask, Planned};
use crate::arcgis::{self, Capability, Client};
use crate::credits::member::Member;
use crate::credits::plan::{self, OrgPosition, PlanError, Request, critical_top_up};
use crate::ledger::Ledger;

impl Applier {
    /// Reads everything a plan needs, after the lock: org, all members, the day's grants.
    pub(super) async fn read_and_plan(
        &self,
        client: &Client,
        ledger: &Ledger,
        ask: &Ask,
    ) -> Result<Planned, ApplyError> {
        let (org, listing, granted) = tokio::join!(
            client.org_properties(),
            client.list_members(),
            ledger.granted_since(Utc::now())
        );
        let org = org.map_err(|e| match e {
            // This account may not manage credits: a 403, not ArcGIS failing.
            e @ (arcgis::Error::MissingPrivileges { .. } | arcgis::Error::NotAdminView { app_token: true, .. }) => {
                ApplyError::MissingPrivileges(e)
            }
            e => ApplyError::Arcgis(e),
        })?;
        org.ensure(Capability::ManageCredits)
            .map_err(ApplyError::MissingPrivileges)?;
        if !org.budgeting_enabled {
            return Err(ApplyError::BudgetingDisabled);
        }
        let granted = granted.map_err(ApplyError::Ledger)?;
        let listing = listing.map_err(ApplyError::Arcgis)?;
        let mut warnings = Vec::new();
        let mut members = listing.members;
        if !listing.problems.is_empty() {
            warnings.push(format!(
                "the member listing was incomplete ({} member(s) unreadable): what other members were \
                 promised may be understated, and the critical policy may miss some members",
                listing.problems.len()
            ));
            if let Ask::Explicit(requests) = ask {
                // An incomplete listing must not make a real member look unknown.
                let listed: HashSet<&str> = members.iter().map(|m| m.username.as_str()).collect();
                let missing: Vec<String> = requests
                    .iter()
                    .map(Request::username)
                    .filter(|n| !listed.contains(n))
                    .map(str::to_owned)
                    .collect();
                members.extend(self.look_up(client, &missing).await?);
            }
        }
        let requests = match ask {
            Ask::Explicit(requests) => requests.clone(),
            Ask::CriticalPolicy { top_up_to, thresholds } => critical_top_up(&members, thresholds, *top_up_to),
        };
        if requests.len() > self.max_members {
            return Err(ApplyError::TooManyMembers {
                selected: requests.len(),
                cap: self.max_members,
            });
        }
        let position = OrgPosition::from_members(org.available_credits, &members, granted);
        let plan = plan::plan(&requests, &members, &position, &self.guardrails).map_err(|e| match e {
            PlanError::GuardrailBreaches(b) => ApplyError::Guardrails(b),
            other => ApplyError::Plan(other),
        })?;
        Ok(Planned { plan, warnings })
    }

    /// Exact lookups; not found → absent; any other failure fails the read (a plan from a
    /// guessed balance could overspend).
    async fn look_up(&self, client: &Client, names: &[String]) -> Result<Vec<Member>, ApplyError> {
        let mut found = Vec::new();
        for (_, result) in client.members(names.to_vec(), self.lookup_concurrency).await {
            match result {
                Ok(m) => found.push(m),
                Err(arcgis::Error::NotFound { .. }) => {}
                Err(e) => return Err(ApplyError::Arcgis(e)),
            }
        }
        Ok(found)
    }
}

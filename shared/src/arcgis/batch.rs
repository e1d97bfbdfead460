//! Write operations that ArcGIS caps per request (100 allocations, 25 notification
//! recipients), sent batch by batch with a per-member account of what happened.

use std::sync::Arc;

use super::error::Error;

/// What happened to each member of a batched write.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Members the operation was applied to.
    pub succeeded: Vec<String>,
    /// Members ArcGIS refused inside a successful call (`notAssignedUsers`,
    /// `notUnAssignedUsers`): unknown users, users outside the org.
    pub rejected: Vec<String>,
    /// Batches that failed as a whole, or were not attempted after an error that would fail
    /// them too.
    pub failed: Vec<FailedBatch>,
}

/// A batch that did not go through.
#[derive(Debug, Clone)]
pub struct FailedBatch {
    /// Its members.
    pub usernames: Vec<String>,
    /// Why (shared when later batches were skipped for the same reason).
    pub error: Arc<Error>,
    /// False when the batch was never sent: skipped because an earlier one failed in a way
    /// that would fail it too (bad credentials, missing privilege), or refused before sending
    /// because the invocation's time was up.
    pub attempted: bool,
}

impl BatchOutcome {
    /// True when every member succeeded.
    pub fn is_complete(&self) -> bool {
        self.rejected.is_empty() && self.failed.is_empty()
    }

    /// Members for which the operation was not applied, rejected or failed.
    pub fn not_applied(&self) -> impl Iterator<Item = &str> {
        self.rejected
            .iter()
            .map(String::as_str)
            .chain(self.failed.iter().flat_map(|f| f.usernames.iter().map(String::as_str)))
    }
}

/// Runs `send` over `items` in chunks of `size`, one chunk at a time (writes are few and
/// sequential calls keep ArcGIS's throttling out of the way). `send` returns the usernames
/// ArcGIS rejected inside a successful call.
pub(crate) async fn run<'a, T, F, Fut>(items: &'a [T], size: usize, username: fn(&T) -> &str, send: F) -> BatchOutcome
where
    F: Fn(&'a [T]) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<String>, Error>>,
{
    let mut outcome = BatchOutcome::default();
    let mut fatal: Option<Arc<Error>> = None;
    for chunk in items.chunks(size.max(1)) {
        let names: Vec<String> = chunk.iter().map(|i| username(i).to_owned()).collect();
        if let Some(error) = &fatal {
            outcome.failed.push(FailedBatch {
                usernames: names,
                error: error.clone(),
                attempted: false,
            });
            continue;
        }
        match send(chunk).await {
            Ok(rejected) => {
                outcome
                    .succeeded
                    .extend(names.into_iter().filter(|n| !rejected.contains(n)));
                outcome.rejected.extend(rejected);
            }
            Err(error) => {
                tracing::warn!(members = names.len(), error = %error, "batch failed");
                let error = Arc::new(error);
                if error.affects_every_call() {
                    fatal = Some(error.clone());
                }
                let attempted = !matches!(error.root(), Error::DeadlineReached { .. });
                outcome.failed.push(FailedBatch {
                    usernames: names,
                    error,
                    attempted,
                });
            }
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arcgis::ApiError;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("u{i:03}")).collect()
    }

    #[tokio::test]
    async fn batches_and_rejections() {
        let items = names(250);
        let calls = std::sync::Mutex::new(Vec::new());
        let outcome = run(
            &items,
            100,
            |s| s.as_str(),
            async |chunk: &[String]| {
                calls.lock().unwrap().push(chunk.len());
                Ok(if chunk[0] == "u100" {
                    vec!["u150".to_owned()]
                } else {
                    vec![]
                })
            },
        )
        .await;
        assert_eq!(*calls.lock().unwrap(), vec![100, 100, 50]);
        assert_eq!(outcome.succeeded.len(), 249);
        assert_eq!(outcome.rejected, vec!["u150"]);
        assert!(!outcome.is_complete());
        assert_eq!(outcome.not_applied().collect::<Vec<_>>(), vec!["u150"]);
    }

    #[tokio::test]
    async fn a_failed_batch_does_not_stop_others_unless_it_would_fail_them_too() {
        let items = names(60);
        let transient = run(
            &items,
            25,
            |s| s.as_str(),
            async |chunk: &[String]| {
                if chunk[0] == "u000" {
                    Err(Error::Unexpected {
                        what: "x".into(),
                        reason: "y".into(),
                    })
                } else {
                    Ok(vec![])
                }
            },
        )
        .await;
        assert_eq!(transient.succeeded.len(), 35);
        assert_eq!(transient.failed.len(), 1);
        assert!(transient.failed[0].attempted);

        let forbidden = run(
            &items,
            25,
            |s| s.as_str(),
            async |_chunk: &[String]| {
                Err(Error::Api {
                    what: "createNotification".into(),
                    http_status: 200,
                    api: Box::new(ApiError {
                        code: Some(403),
                        ..Default::default()
                    }),
                })
            },
        )
        .await;
        assert_eq!(forbidden.failed.len(), 3);
        assert!(forbidden.failed[0].attempted && !forbidden.failed[1].attempted && !forbidden.failed[2].attempted);
        assert_eq!(forbidden.not_applied().count(), 60);
    }
}

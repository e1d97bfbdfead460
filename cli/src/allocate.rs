//! `allocate`: changes allocations through the deployed API, never around it, so every
//! change takes the one apply path (guardrails, lock, journal, audit) whoever asks.
//!
//! The request is SigV4-signed with the AWS credential chain (API Gateway's IAM authorizer
//! records the caller). A dry run always goes first and is shown; the change is applied only
//! after a confirmation (or `--yes`), under one Idempotency-Key, so repeating the apply after
//! a timeout or a 503 can never apply it twice.

use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, anyhow, bail};
use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use serde_json::{Value, json};
use shared::credits::amount::Credits;
use shared::i18n::Lang;

use crate::args::AllocateArgs;
use crate::context::Context;
use crate::table::Table;

/// API Gateway's signing name.
const SERVICE: &str = "execute-api";
/// How often a background job's status is read while waiting for it.
const POLL_EVERY: Duration = Duration::from_secs(2);
/// Applies retried on 503 (the API's "retry with the same key" answer) before giving up.
const APPLY_ATTEMPTS: u32 = 3;

/// `allocate`.
pub async fn allocate(ctx: &Context, args: &AllocateArgs, json: bool) -> anyhow::Result<()> {
    let body = plan(args)?;
    let api = ctx
        .api()
        .await?
        .ok_or_else(|| anyhow!("no API to call: give --api URL or --stack NAME (its ApiUrl output)"))?;
    let api = Api::new(ctx, &api, args.region.as_deref()).await?;
    let lang = ctx.lang();

    let mut dry = body.clone();
    dry["dry_run"] = json!(true);
    let (status, preview) = api.call("POST", "allocations", Some(&dry), None).await?;
    if status != 200 {
        bail!("the dry run was refused ({status}): {}", message(&preview));
    }
    if !json {
        print_plan(&preview, lang);
    }
    let changes = preview["summary"]["would_assign"].as_u64().unwrap_or(0);
    if args.dry_run || changes == 0 {
        if json {
            println!("{}", serde_json::to_string_pretty(&preview)?);
        } else if changes == 0 {
            println!("{}", lang.t("cli.allocate.nothing"));
        }
        return Ok(());
    }
    if !args.yes && !confirm(changes, lang)? {
        println!("{}", lang.t("cli.allocate.not_applied"));
        return Ok(());
    }

    let key = idempotency_key();
    let mut attempt = 0;
    let (status, mut answer) = loop {
        attempt += 1;
        let (status, answer) = api.call("POST", "allocations", Some(&body), Some(&key)).await?;
        if status != 503 || attempt == APPLY_ATTEMPTS {
            break (status, answer);
        }
        eprintln!("not finished ({}); resuming with the same key", message(&answer));
        tokio::time::sleep(POLL_EVERY).await;
    };
    if status == 202 {
        answer = wait_for_job(&api, &answer, Duration::from_secs(args.wait), lang).await?;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print_result(&answer, lang);
    }
    match status {
        200 | 202 => Ok(()),
        _ => bail!(
            "the allocation ended with status {status}: see each member's status above. Members marked \
             assigned are done; running the command again retries the others (a --set or --top-up-to \
             already met is skipped, while an \"add\" in a plan adds again)"
        ),
    }
}

/// The request body: the `--plan` file as written, or one line per `--set`/`--top-up-to`.
fn plan(args: &AllocateArgs) -> anyhow::Result<Value> {
    let mut body = match &args.plan {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("could not read the plan {}", path.display()))?;
            serde_json::from_str::<Value>(&text).with_context(|| format!("the plan {} is not JSON", path.display()))?
        }
        None => {
            let mut lines = Vec::new();
            for (action, pairs) in [("set", &args.set), ("top_up_to", &args.top_up_to)] {
                for pair in pairs {
                    let (user, credits) = member_credits(pair)?;
                    lines.push(json!({ "username": user, (action): credits }));
                }
            }
            if lines.is_empty() {
                bail!("nothing to allocate: give --set USER=CREDITS, --top-up-to USER=CREDITS or --plan FILE");
            }
            json!({ "allocations": lines })
        }
    };
    if !body.is_object() {
        bail!("the plan must be a JSON object like {{\"allocations\": [{{\"username\": \"jdoe\", \"set\": 500}}]}}");
    }
    if let Some(reason) = &args.reason {
        body["reason"] = json!(reason);
    }
    body.as_object_mut().map(|b| b.remove("dry_run"));
    Ok(body)
}

/// `USER=CREDITS`, the credits exact and not negative.
fn member_credits(pair: &str) -> anyhow::Result<(String, Value)> {
    let (user, credits) = pair
        .rsplit_once('=')
        .filter(|(u, c)| !u.trim().is_empty() && !c.trim().is_empty())
        .ok_or_else(|| anyhow!("'{pair}' is not USER=CREDITS"))?;
    let exact = Credits::parse_exact(credits.trim())
        .ok()
        .and_then(|c| c.non_negative().ok())
        .ok_or_else(|| anyhow!("'{credits}' for {user} is not a number of credits (0 or more, at most 6 decimals)"))?;
    let number: Value = serde_json::from_str(&exact.to_string()).map_err(|_| anyhow!("'{credits}' is not a number"))?;
    Ok((user.trim().to_owned(), number))
}

/// Asks on the terminal; refuses to guess when nobody is there.
fn confirm(changes: u64, lang: Lang) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("not applied: confirm on a terminal, or pass --yes to apply without asking");
    }
    eprint!(
        "{} ",
        lang.f("cli.allocate.confirm", &[("changes", &changes.to_string())])
    );
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "o" | "oui"))
}

/// A fresh key for one apply (and its resumptions): 128 bits from the standard library's
/// randomly seeded hasher (unique, not secret: the key is scoped by the caller anyway).
fn idempotency_key() -> String {
    use std::hash::{BuildHasher, Hasher};
    let random = || std::collections::hash_map::RandomState::new().build_hasher().finish();
    format!("cli-{:016x}{:016x}", random(), random())
}

async fn wait_for_job(api: &Api, accepted: &Value, wait: Duration, lang: Lang) -> anyhow::Result<Value> {
    let path = accepted["status_url"]
        .as_str()
        .ok_or_else(|| anyhow!("the API answered 202 without a status_url"))?
        .trim_start_matches('/')
        .to_owned();
    eprintln!(
        "Applying in the background (job {}).",
        accepted["job_id"].as_str().unwrap_or("?")
    );
    let until = tokio::time::Instant::now() + wait;
    loop {
        let (status, job) = api.call("GET", &path, None, None).await?;
        if status != 200 {
            bail!("could not read the job ({status}): {}", message(&job));
        }
        match job["status"].as_str() {
            Some("done" | "refused" | "incomplete") => {
                return Ok(job.get("result").cloned().filter(|r| !r.is_null()).unwrap_or(job));
            }
            _ if tokio::time::Instant::now() >= until => {
                let status = job["status"].as_str().unwrap_or("running");
                let secs = wait.as_secs().to_string();
                println!(
                    "{}",
                    lang.f("cli.allocate.still", &[("status", status), ("secs", &secs)])
                );
                return Ok(job);
            }
            _ => tokio::time::sleep(POLL_EVERY).await,
        }
    }
}

fn message(body: &Value) -> String {
    body["message"]
        .as_str()
        .or_else(|| body["error"]["message"].as_str())
        .or_else(|| body["error"].as_str())
        .map_or_else(|| body.to_string(), str::to_owned)
}

fn credits(v: &Value, lang: Lang) -> String {
    Credits::from_json(v).map_or_else(|| "–".to_owned(), |c| lang.credits_short(c))
}

fn print_plan(preview: &Value, lang: Lang) {
    let col = |c: &str| lang.t(&format!("cli.col.{c}"));
    let mut table = Table::new(&[
        col("member"),
        col("allocation_now"),
        col("after"),
        col("available_after"),
        col("status"),
    ]);
    for m in preview["members"].as_array().into_iter().flatten() {
        table.row(vec![
            m["username"].as_str().unwrap_or("?").to_owned(),
            credits(&m["before"]["allocation"], lang),
            credits(&m["after"]["allocation"], lang),
            credits(&m["after"]["available"], lang),
            m["status"].as_str().unwrap_or("?").replace('_', " "),
        ]);
    }
    print!("{}", table.render());
    let summary = lang.f(
        "cli.allocate.dry_run",
        &[
            ("changes", &preview["summary"]["would_assign"].to_string()),
            ("credits", &credits(&preview["summary"]["total_increase"], lang)),
            ("left", &credits(&preview["org"]["available_before"], lang)),
            ("unpromised", &credits(&preview["org"]["unpromised_after"], lang)),
        ],
    );
    println!("{summary}");
    for w in preview["warnings"].as_array().into_iter().flatten() {
        println!(
            "{}",
            lang.f("cli.allocate.warning", &[("warning", w.as_str().unwrap_or_default())])
        );
    }
}

fn print_result(answer: &Value, lang: Lang) {
    let col = |c: &str| lang.t(&format!("cli.col.{c}"));
    let mut table = Table::new(&[col("member"), col("allocation"), col("available"), col("status")]);
    for m in answer["members"].as_array().into_iter().flatten() {
        table.row(vec![
            m["username"].as_str().unwrap_or("?").to_owned(),
            credits(&m["after"]["allocation"], lang),
            credits(&m["after"]["available"], lang),
            m["status"].as_str().unwrap_or("?").replace('_', " "),
        ]);
    }
    print!("{}", table.render());
    let s = &answer["summary"];
    let failed = ["failed", "not_assigned", "conflict"]
        .iter()
        .map(|k| s[*k].as_u64().unwrap_or(0))
        .sum::<u64>();
    let line = lang.f(
        "cli.allocate.applied",
        &[
            ("assigned", &s["assigned"].to_string()),
            ("failed", &failed.to_string()),
            ("caller", answer["caller"].as_str().unwrap_or("?")),
        ],
    );
    println!("{line}");
}

/// The deployed API, signed for.
struct Api {
    http: reqwest::Client,
    base: reqwest::Url,
    region: String,
    credentials: aws_credential_types::provider::SharedCredentialsProvider,
}

impl Api {
    async fn new(ctx: &Context, url: &str, region: Option<&str>) -> anyhow::Result<Api> {
        let mut base = reqwest::Url::parse(url).map_err(|_| anyhow!("the API URL '{url}' is not a URL"))?;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let sdk = ctx.aws().await;
        let region = region
            .map(str::to_owned)
            .or_else(|| region_of(&base))
            .or_else(|| sdk.region().map(|r| r.to_string()))
            .ok_or_else(|| anyhow!("no AWS region for the API: pass --region or set AWS_REGION"))?;
        let credentials = sdk
            .credentials_provider()
            .ok_or_else(|| anyhow!("no AWS credentials: sign in (aws sso login, or AWS_PROFILE)"))?;
        shared::arcgis::client::install_ring_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(40))
            .build()
            .map_err(|e| anyhow!("could not build the HTTP client: {e}"))?;
        Ok(Api {
            http,
            base,
            region,
            credentials,
        })
    }

    /// Sends a signed request to `path` (relative to the API's root); the status and the
    /// JSON body (a body that is not JSON as a string).
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        let url = self.base.join(path).map_err(|e| anyhow!("bad API path {path}: {e}"))?;
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let host = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let mut headers = vec![("host", host)];
        if body.is_some() {
            headers.push(("content-type", "application/json".to_owned()));
        }
        if let Some(key) = key {
            headers.push(("idempotency-key", key.to_owned()));
        }
        let creds = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| anyhow!("no AWS credentials: {e}. Sign in (aws sso login, or AWS_PROFILE) and retry"))?;
        let identity = creds.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(SERVICE)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| anyhow!("could not sign the request: {e}"))?
            .into();
        let signable = SignableRequest::new(
            method,
            url.as_str(),
            headers.iter().map(|(k, v)| (*k, v.as_str())),
            SignableBody::Bytes(&bytes),
        )
        .map_err(|e| anyhow!("could not sign the request: {e}"))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| anyhow!("could not sign the request: {e}"))?
            .into_parts();
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| anyhow!("{e}"))?;
        let mut request = self.http.request(method, url.clone()).body(bytes);
        for (name, value) in headers.iter().filter(|(k, _)| *k != "host") {
            request = request.header(*name, value);
        }
        for (name, value) in instructions.headers() {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(|e| {
            anyhow!(
                "the API at {} did not answer: {e}",
                shared::arcgis::redact_url(url.as_str())
            )
        })?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status == 403 || status == 401 {
            bail!(
                "the API refused your credentials ({status}): {}. Your identity needs execute-api:Invoke on the \
                 stack's AllocationsInvokeArn",
                message(&value)
            );
        }
        Ok((status, value))
    }
}

/// The region in an API Gateway host (`<id>.execute-api.<region>.amazonaws.com`).
fn region_of(url: &reqwest::Url) -> Option<String> {
    let host = url.host_str()?;
    let mut parts = host.split('.');
    parts.next()?;
    (parts.next()? == SERVICE).then(|| parts.next().map(str::to_owned))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_credits_are_exact_and_not_negative() {
        assert_eq!(member_credits("jdoe=500").unwrap(), ("jdoe".into(), json!(500)));
        assert_eq!(member_credits("a=b=12.5").unwrap(), ("a=b".into(), json!(12.5)));
        assert!(member_credits("jdoe=-1").is_err());
        assert!(member_credits("jdoe=").is_err());
        assert!(member_credits("=5").is_err());
        assert!(member_credits("jdoe=1e400").is_err());
    }

    #[test]
    fn the_region_comes_from_an_api_gateway_host() {
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        assert_eq!(
            region_of(&url("https://abc123.execute-api.eu-west-1.amazonaws.com/")).as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(region_of(&url("http://127.0.0.1:9000/")), None);
    }
}

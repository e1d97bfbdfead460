//! One isolated world per test: a simulator, a ledger table and a secret of its own, a Runtime
//! API emulator, and the function processes configured for them.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use portal_sim::{Org, SimHandle, generate::*};
use serde_json::{Value, json};
use testkit::lambda::{FunctionProcess, Invocation, Invoker, RuntimeEmulator};
use testkit::moto::moto;

/// AWS SDK config for moto, built explicitly (no process-environment mutation).
pub async fn aws() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&moto().endpoint)
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testing", "testing", None, None, "e2e",
        ))
        .http_client(shared::aws::http::http_client())
        .load()
        .await
}

pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Everything one test needs.
pub struct World {
    pub sim: SimHandle,
    pub emulator: RuntimeEmulator,
    pub table: String,
    pub secret_id: String,
    pub dynamo: aws_sdk_dynamodb::Client,
}

impl World {
    /// A world around `org`, signed in as its administrator.
    pub async fn new(org: Org) -> World {
        let sim = portal_sim::start(org).await.expect("portal-sim starts");
        let config = aws().await;
        let dynamo = aws_sdk_dynamodb::Client::new(&config);
        let table = unique("ledger");
        dynamo
            .create_table()
            .table_name(&table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("pk")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("sk")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("pk")
                    .key_type(KeyType::Hash)
                    .build()
                    .unwrap(),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("sk")
                    .key_type(KeyType::Range)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .expect("ledger table created in moto");
        let secret_id = unique("credit-steward/arcgis");
        let secret = json!({"portal_url": sim.base_url(), "username": ADMIN_USERNAME, "password": ADMIN_PASSWORD});
        aws_sdk_secretsmanager::Client::new(&config)
            .create_secret()
            .name(&secret_id)
            .secret_string(secret.to_string())
            .send()
            .await
            .expect("secret created in moto");
        World {
            sim,
            emulator: RuntimeEmulator::start().await,
            table,
            secret_id,
            dynamo,
        }
    }

    /// Adds `keys` (a JSON object) to this world's secret, as an administrator setting up a
    /// channel's webhook would.
    pub async fn add_to_secret(&self, keys: Value) {
        let secrets = aws_sdk_secretsmanager::Client::new(&aws().await);
        let current = secrets
            .get_secret_value()
            .secret_id(&self.secret_id)
            .send()
            .await
            .expect("the world's secret")
            .secret_string
            .expect("a string secret");
        let mut value: Value = serde_json::from_str(&current).expect("JSON secret");
        for (k, v) in keys.as_object().expect("an object of keys") {
            value[k] = v.clone();
        }
        secrets
            .put_secret_value()
            .secret_id(&self.secret_id)
            .secret_string(value.to_string())
            .send()
            .await
            .expect("secret updated in moto");
    }

    /// The environment a function gets: loopback AWS, this world's secret and table, `extra`.
    pub fn env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env = testkit::env::aws_local(&moto().endpoint);
        env.push(("ARCGIS_SECRET_ID".into(), self.secret_id.clone()));
        env.push(("LEDGER_TABLE".into(), self.table.clone()));
        env.push(("RUST_LOG".into(), "info".into()));
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    }

    /// Starts function `name` with this world's environment plus `extra`.
    pub fn start(&self, name: &str, extra: &[(&str, &str)]) -> FunctionProcess {
        FunctionProcess::spawn(&self.emulator, name, &self.env(extra))
    }

    /// Starts function `name` like [`World::start`], behind a Runtime API proxy that gives each
    /// invocation `timeout` (a real context deadline, as Lambda sends, instead of the
    /// emulator's placeholder). Used by the fault matrix (`tests/faults`).
    #[allow(dead_code)]
    pub fn start_with_timeout(
        &self,
        name: &str,
        extra: &[(&str, &str)],
        timeout: std::time::Duration,
    ) -> FunctionProcess {
        FunctionProcess::spawn_with_timeout(&self.emulator, name, &self.env(extra), timeout)
    }

    /// Invokes `name` with `payload`.
    pub async fn invoke(&self, name: &str, payload: &Value) -> Invocation {
        self.emulator.invoke(name, payload).await
    }

    /// An owned invoker for concurrent invocations (moved into tasks). Used by the fault
    /// matrix (`tests/faults`).
    #[allow(dead_code)]
    pub fn invoker(&self) -> Invoker {
        self.emulator.invoker()
    }

    /// The audit trail's items of `kind` (`change` or `intent`): each item's `record` (the
    /// JSON of the entry), in sort-key order.
    pub async fn audit(&self, kind: &str) -> Vec<Value> {
        let mut items: Vec<_> = self
            .ledger_where("AUDIT#")
            .await
            .into_iter()
            .filter(|i| attr(i, "kind") == Some(kind))
            .collect();
        items.sort_by(|a, b| attr(a, "sk").cmp(&attr(b, "sk")));
        items
            .iter()
            .map(|i| {
                let record = attr(i, "record").unwrap_or("null");
                serde_json::from_str(record).unwrap_or_else(|e| panic!("audit record is not JSON ({e}): {record}"))
            })
            .collect()
    }

    /// Every ledger item, as plain maps.
    pub async fn ledger(&self) -> Vec<HashMap<String, AttributeValue>> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .dynamo
                .scan()
                .table_name(&self.table)
                .set_exclusive_start_key(start)
                .send()
                .await
                .expect("ledger scan");
            items.extend(page.items.unwrap_or_default());
            start = page.last_evaluated_key;
            if start.is_none() {
                return items;
            }
        }
    }

    /// Ledger items whose `pk` starts with `prefix`.
    pub async fn ledger_where(&self, prefix: &str) -> Vec<HashMap<String, AttributeValue>> {
        self.ledger()
            .await
            .into_iter()
            .filter(|i| {
                i.get("pk")
                    .and_then(|v| v.as_s().ok())
                    .is_some_and(|p| p.starts_with(prefix))
            })
            .collect()
    }
}

/// A string attribute of a ledger item.
pub fn attr<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str)
}

/// An S3 bucket of its own in moto, and a path-style client to read it back (moto serves one
/// host, not `<bucket>.<host>`).
pub struct Bucket {
    pub name: String,
    pub s3: aws_sdk_s3::Client,
}

impl Bucket {
    /// Creates a fresh, empty bucket.
    pub async fn create() -> Bucket {
        let config = aws_sdk_s3::config::Builder::from(&aws().await)
            .force_path_style(true)
            .build();
        let s3 = aws_sdk_s3::Client::from_conf(config);
        let name = unique("reports");
        s3.create_bucket()
            .bucket(&name)
            .send()
            .await
            .expect("bucket created in moto");
        Bucket { name, s3 }
    }

    /// An object's bytes and content type; `None` when there is no such key.
    pub async fn object(&self, key: &str) -> Option<(Vec<u8>, Option<String>)> {
        match self.s3.get_object().bucket(&self.name).key(key).send().await {
            Ok(out) => {
                let content_type = out.content_type().map(str::to_owned);
                let bytes = out.body.collect().await.expect("object body").to_vec();
                Some((bytes, content_type))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => None,
            Err(e) => panic!("s3://{}/{key}: {e:?}", self.name),
        }
    }

    /// Every key in the bucket.
    pub async fn keys(&self) -> Vec<String> {
        let out = self
            .s3
            .list_objects_v2()
            .bucket(&self.name)
            .send()
            .await
            .expect("bucket listing");
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    }
}

/// A fixture event from `tests/fixtures`.
pub use testkit::fixtures::fixture;

/// The IAM-authorized API Gateway v2 request to `POST /allocations` carrying `body`, with
/// `key` as its Idempotency-Key (none when `None`) and `request_id` as API Gateway's id.
pub fn allocation_event(body: &str, key: Option<&str>, request_id: &str) -> Value {
    let mut event = fixture("apigw-v2-allocations-iam.json");
    event["body"] = json!(body);
    event["headers"]["content-length"] = json!(body.len().to_string());
    match key {
        Some(key) => event["headers"]["idempotency-key"] = json!(key),
        None => {
            event["headers"].as_object_mut().map(|h| h.remove("idempotency-key"));
        }
    }
    event["requestContext"]["requestId"] = json!(request_id);
    event
}

/// The HTTP answer of an allocate invocation, `(status, body)` (a body that is not JSON
/// as a string); `None` when the function failed instead of answering.
pub fn http_reply(out: &Invocation) -> Option<(u16, Value)> {
    if out.function_error.is_some() {
        return None;
    }
    let status = u16::try_from(out.payload.get("statusCode")?.as_u64()?).ok()?;
    let raw = out.payload["body"].as_str().unwrap_or("null");
    Some((status, serde_json::from_str(raw).unwrap_or_else(|_| json!(raw))))
}

/// An SQS queue of its own in moto, and the part of Lambda's SQS event source mapping a test
/// plays: receive, invoke the function with the event Lambda would build, delete what the
/// function did not report as a batch item failure.
pub struct Queue {
    pub url: String,
    pub arn: String,
    pub sqs: aws_sdk_sqs::Client,
}

impl Queue {
    /// Creates a fresh, empty queue.
    pub async fn create() -> Queue {
        let sqs = aws_sdk_sqs::Client::new(&aws().await);
        let url = sqs
            .create_queue()
            .queue_name(unique("allocation-jobs"))
            .send()
            .await
            .expect("queue created in moto")
            .queue_url
            .expect("a queue URL");
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("queue attributes")
            .attributes
            .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn).cloned())
            .expect("the queue's ARN");
        Queue { url, arn, sqs }
    }

    /// The messages available now (the function sent them before answering).
    pub async fn receive(&self) -> Vec<aws_sdk_sqs::types::Message> {
        self.sqs
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(10)
            .send()
            .await
            .expect("receive from moto")
            .messages
            .unwrap_or_default()
    }

    /// The SQS event Lambda's event source mapping builds from `messages`.
    pub fn event(&self, messages: &[aws_sdk_sqs::types::Message]) -> Value {
        let records: Vec<Value> = messages
            .iter()
            .map(|m| {
                json!({
                    "messageId": m.message_id(),
                    "receiptHandle": m.receipt_handle(),
                    "body": m.body(),
                    "attributes": {"ApproximateReceiveCount": "1"},
                    "messageAttributes": {},
                    "md5OfBody": m.md5_of_body(),
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self.arn,
                    "awsRegion": "us-east-1",
                })
            })
            .collect();
        json!({ "Records": records })
    }

    /// Settles one invocation as the event source mapping does: deletes every message the
    /// function finished, and returns the ids it reported as batch item failures.
    pub async fn settle(&self, messages: &[aws_sdk_sqs::types::Message], out: &Invocation) -> Vec<String> {
        assert!(out.function_error.is_none(), "the worker failed: {}", out.payload);
        let failed: Vec<String> = out.payload["batchItemFailures"]
            .as_array()
            .unwrap_or_else(|| panic!("no batchItemFailures in {}", out.payload))
            .iter()
            .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_owned))
            .collect();
        for m in messages {
            if !failed.iter().any(|id| Some(id.as_str()) == m.message_id()) {
                self.sqs
                    .delete_message()
                    .queue_url(&self.url)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .expect("delete from moto");
            }
        }
        failed
    }
}

/// The IAM-authorized API Gateway v2 request to `GET /allocations/{job_id}`.
pub fn job_status_event(job_id: &str, request_id: &str) -> Value {
    let mut event = fixture("apigw-v2-allocations-iam.json");
    let path = format!("/allocations/{job_id}");
    event["routeKey"] = json!("GET /allocations/{job_id}");
    event["requestContext"]["routeKey"] = json!("GET /allocations/{job_id}");
    event["rawPath"] = json!(path);
    event["requestContext"]["http"]["method"] = json!("GET");
    event["requestContext"]["http"]["path"] = json!(path);
    event["pathParameters"] = json!({ "job_id": job_id });
    event["requestContext"]["requestId"] = json!(request_id);
    for h in ["content-length", "content-type", "idempotency-key"] {
        event["headers"].as_object_mut().map(|m| m.remove(h));
    }
    event.as_object_mut().map(|m| m.remove("body"));
    event
}

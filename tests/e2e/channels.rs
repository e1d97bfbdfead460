//! The alert channels end to end: the real scan-credits binary publishing to an SNS topic in
//! moto (read back from an SQS queue subscribed to it, as moto delivers to subscribers) and
//! posting to a signed webhook on a loopback receiver, with the webhook's URL and key in the
//! Secrets Manager secret; a webhook that fails once delivers on the next run, exactly once,
//! and neither the URL nor the key ever reaches the function's output.

use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::{Value, json};
use testkit::receiver::Receiver;

use crate::support::*;

const KEY: &str = "e2e-hmac-key-5f1c0d9a7b";
/// The webhook path carries a token, as real webhook URLs do: it must never be printed.
const HOOK: &str = "/hooks/T0001/s3cr3t-webhook-token";

/// A topic with an SQS queue subscribed to it: what SNS delivers lands in the queue.
struct Topic {
    arn: String,
    queue_url: String,
    sqs: aws_sdk_sqs::Client,
}

impl Topic {
    async fn create() -> Topic {
        let config = aws().await;
        let sns = aws_sdk_sns::Client::new(&config);
        let sqs = aws_sdk_sqs::Client::new(&config);
        let arn = sns
            .create_topic()
            .name(unique("credit-alerts"))
            .send()
            .await
            .expect("topic created in moto")
            .topic_arn
            .expect("a topic ARN");
        let queue_url = sqs
            .create_queue()
            .queue_name(unique("alert-inbox"))
            .send()
            .await
            .expect("queue created in moto")
            .queue_url
            .expect("a queue URL");
        let queue_arn = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("queue attributes")
            .attributes
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .expect("a queue ARN");
        sns.subscribe()
            .topic_arn(&arn)
            .protocol("sqs")
            .endpoint(queue_arn)
            .send()
            .await
            .expect("queue subscribed to the topic");
        Topic { arn, queue_url, sqs }
    }

    /// The notifications delivered since the last call (SNS's JSON envelope: `Subject`,
    /// `Message`), taken off the queue.
    async fn take(&self) -> Vec<Value> {
        let mut got = Vec::new();
        loop {
            let out = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .send()
                .await
                .expect("receive from the queue");
            let messages = out.messages.unwrap_or_default();
            if messages.is_empty() {
                return got;
            }
            for m in messages {
                got.push(serde_json::from_str(m.body().unwrap_or_default()).expect("an SNS envelope"));
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .expect("delete from the queue");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sns_and_a_signed_webhook_get_each_alert_once_and_a_failed_webhook_delivers_next_run() {
    let today = chrono::Utc::now().date_naive();
    let world = World::new(portal_sim::generate(&portal_sim::GenParams::new(80, 37, today))).await;
    let topic = Topic::create().await;
    let receiver = Receiver::start();
    receiver.answer(HOOK, 503);
    world
        .add_to_secret(json!({"webhook_url": receiver.url(HOOK), "webhook_hmac_key": KEY}))
        .await;
    let function = world.start(
        "scan-credits",
        // Every log level, the AWS SDK's and the HTTP clients' included: no secret at any.
        &[
            ("ALERT_TOPIC_ARN", topic.arn.as_str()),
            ("LANGUAGE", "fr"),
            ("RUST_LOG", "trace"),
        ],
    );
    let event = json!({"scheduled_time": format!("{today}T06:00:00Z")});

    // The webhook is down: the ArcGIS alert and SNS go out, the run reports the webhook.
    let first = world.invoke("scan-credits", &event).await;
    assert!(
        first.function_error.is_some(),
        "{:?}\n{}",
        first.payload,
        function.output()
    );
    assert_eq!(first.payload["errorType"], "ChannelFailed", "{}", first.payload);
    let error = first.payload["errorMessage"].as_str().unwrap_or_default();
    assert!(error.contains("webhook: HTTP 503"), "{error}");
    let mails = world.sim.notifications();
    assert_eq!(mails.len(), 1);
    let published = topic.take().await;
    assert_eq!(published.len(), 1, "{published:?}");
    // SNS takes subjects under 100 characters: the email's, down to its whole first parts.
    let subject = published[0]["Subject"].as_str().unwrap_or_default();
    assert!(subject.chars().count() < 100, "{subject}");
    let kept = subject.trim_end_matches(" …");
    assert!(
        kept == mails[0].subject || mails[0].subject.starts_with(&format!("{kept} · ")),
        "{subject} / {}",
        mails[0].subject
    );
    assert_eq!(published[0]["Message"], mails[0].message.as_str());
    assert!(mails[0].subject.starts_with("Crédits ArcGIS Online :"));
    assert_eq!(receiver.received().len(), 1);
    assert!(receiver.accepted(HOOK).is_empty());

    // The same scheduled run again: nothing anywhere.
    let retry = world.invoke("scan-credits", &event).await;
    assert!(retry.payload["duplicate_of"].is_object(), "{}", retry.payload);
    assert!(topic.take().await.is_empty());
    assert_eq!(receiver.received().len(), 1);

    // The webhook is back: the next run (nothing new) delivers the owed message once.
    receiver.answer(HOOK, 200);
    let next_event = json!({"scheduled_time": format!("{}T06:00:00Z", today + chrono::Days::new(1))});
    let next = world.invoke("scan-credits", &next_event).await;
    assert!(
        next.function_error.is_none(),
        "{:?}\n{}",
        next.payload,
        function.output()
    );
    let hook = receiver.accepted(HOOK);
    assert_eq!(hook.len(), 1);
    let body = hook[0].json();
    assert_eq!(body["schema"], "credit-steward.alert.v1");
    assert_eq!(body["run_key"], format!("{today}T06:00:00Z"));
    assert_eq!(body["late"], true);
    assert_eq!(body["subject"], mails[0].subject.as_str());
    let timestamp = &hook[0].headers["x-credit-steward-timestamp"];
    assert_eq!(
        hook[0].headers["x-credit-steward-signature"],
        shared::channels::sign(KEY.as_bytes(), timestamp, &hook[0].body)
    );
    assert_eq!(next.payload["channels"][0]["channel"], "webhook", "{}", next.payload);
    assert!(topic.take().await.is_empty(), "SNS had nothing owed");
    assert!(
        world
            .ledger_where("ALERT")
            .await
            .iter()
            .all(|i| !attr(i, "sk").unwrap_or_default().starts_with("OUTBOX#")),
        "nothing left owed"
    );

    // And then nothing, on any channel.
    let later = json!({"scheduled_time": format!("{}T06:00:00Z", today + chrono::Days::new(2))});
    let quiet = world.invoke("scan-credits", &later).await;
    assert!(quiet.function_error.is_none(), "{:?}", quiet.payload);
    assert!(topic.take().await.is_empty());
    assert_eq!(receiver.received().len(), 2);
    assert_eq!(world.sim.notifications().len(), 1);

    // No secret in any log line (at trace level) or reply.
    let output = function.output();
    assert!(
        output.contains("alert channel failed"),
        "the failure is logged:\n{output}"
    );
    for shown in [output.as_str(), &first.payload.to_string(), &next.payload.to_string()] {
        assert!(
            !shown.contains("s3cr3t-webhook-token"),
            "the webhook URL leaked:\n{shown}"
        );
        assert!(!shown.contains(KEY), "the HMAC key leaked:\n{shown}");
    }
}

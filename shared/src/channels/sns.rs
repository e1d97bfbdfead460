//! The SNS channel: the alert published to a topic (`ALERT_TOPIC_ARN`), whose subscriptions
//! (email, SMS, an on-call tool's HTTPS endpoint, a queue) fan it out.
//!
//! The subject is the alert's subject cut under SNS's 100 characters; the message is the
//! plain-text alert. The client is the other AWS clients' ring-only one, and
//! `AWS_ENDPOINT_URL_SNS` / `AWS_ENDPOINT_URL` point it at an emulator in tests.

use aws_sdk_sns::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use super::{AlertMessage, Failure};

/// SNS error codes that say the message itself is invalid: sending it again cannot succeed.
const REFUSED: [&str; 2] = ["InvalidParameter", "InvalidParameterValue"];

/// A topic to publish alerts to.
#[derive(Debug, Clone)]
pub struct SnsTopic {
    client: aws_sdk_sns::Client,
    arn: String,
}

impl SnsTopic {
    /// The topic `arn`, through `client`.
    pub fn new(client: aws_sdk_sns::Client, arn: impl Into<String>) -> SnsTopic {
        SnsTopic {
            client,
            arn: arn.into(),
        }
    }

    /// The topic `arn` with the AWS configuration of the environment.
    pub fn from_env(arn: impl Into<String>) -> SnsTopic {
        let config = crate::aws::lambda_config();
        let sns = aws_sdk_sns::config::Builder::from(&config)
            .timeout_config(
                aws_sdk_sns::config::timeout::TimeoutConfig::builder()
                    .operation_timeout(super::DELIVERY_TIMEOUT)
                    .build(),
            )
            .build();
        SnsTopic::new(aws_sdk_sns::Client::from_conf(sns), arn)
    }

    /// The topic's ARN (not a secret: it names the topic; publishing needs IAM).
    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// Publishes `message`.
    pub(super) async fn publish(&self, message: &AlertMessage, late: bool) -> Result<(), Failure> {
        match self
            .client
            .publish()
            .topic_arn(&self.arn)
            .subject(message.sns_subject())
            .message(message.display_text(late))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(classify(&e)),
        }
    }
}

fn classify<E>(e: &SdkError<E>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let code = e.as_service_error().and_then(|s| s.code()).map(str::to_owned);
    let detail = format!("publishing to the alert topic failed: {}", DisplayErrorContext(e));
    match code.as_deref() {
        Some(c) if REFUSED.contains(&c) => Failure::Refused(format!("{detail}; the message is not sent again")),
        Some("AuthorizationError") => Failure::Retry(format!(
            "{detail}; the function's role needs sns:Publish on the topic, the next run delivers"
        )),
        _ => Failure::Retry(detail),
    }
}

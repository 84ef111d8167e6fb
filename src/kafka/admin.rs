//! The internal topic of the recipient-rate stage, created when missing
//! (as Kafka Streams creates its repartition topics): as many partitions as
//! the event topic, retention longer than the windows it restores.

use crate::config::Settings;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Partitions of `topic`, or `None` when the cluster does not know it.
fn partitions(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
) -> Result<Option<usize>, KafkaError> {
    let md = admin.inner().fetch_metadata(Some(topic), TIMEOUT)?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
        .filter(|n| *n > 0))
}

/// Partition counts the recipient-rate progress reports need.
#[derive(Debug, Clone, Copy)]
pub struct Topology {
    pub event_partitions: usize,
    pub rate_partitions: usize,
}

/// Creates the recipient-rate topic unless it exists. `retention_ms` must
/// cover the windows a new owner of a partition replays.
pub async fn ensure_rate_topic(
    settings: &Settings,
    retention_ms: i64,
) -> Result<Topology, KafkaError> {
    let admin: AdminClient<DefaultClientContext> = super::client_config(settings).create()?;
    // Metadata look-ups block: off the runtime's workers.
    let (n, rate) = tokio::task::block_in_place(|| {
        Ok::<_, KafkaError>((
            partitions(&admin, &settings.topics.events)?,
            partitions(&admin, &settings.topics.recipient_rate)?,
        ))
    })?;
    let topic = settings.topics.recipient_rate.as_str();
    let n = n.unwrap_or(1);
    if let Some(rate) = rate {
        tracing::debug!(topic, partitions = rate, "recipient-rate topic present");
        return Ok(Topology {
            event_partitions: n,
            rate_partitions: rate,
        });
    }
    let retention = retention_ms.to_string();
    let new = NewTopic::new(topic, n as i32, TopicReplication::Fixed(-1))
        .set("retention.ms", &retention)
        .set("cleanup.policy", "delete");
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let results = admin.create_topics([&new], &opts).await?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(KafkaError::AdminOp(code)).inspect_err(|_| {
                    tracing::error!(topic = %t, error = %code, "cannot create the recipient-rate topic; create it with as many partitions as the event topic")
                });
            }
        }
    }
    tracing::info!(
        topic,
        partitions = n,
        retention_ms,
        "recipient-rate topic created"
    );
    Ok(Topology {
        event_partitions: n,
        rate_partitions: n,
    })
}

//! An embedded Kafka: librdkafka's in-process mock cluster, for the demo
//! (no broker installed). Groups of several members do not share
//! partitions there: the tests of groups use a real broker.

use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

pub struct Embedded {
    mock: MockCluster<'static, DefaultProducerContext>,
}

impl Embedded {
    pub fn new() -> Result<Embedded, KafkaError> {
        Ok(Embedded {
            mock: MockCluster::new(1)?,
        })
    }

    pub fn bootstrap_servers(&self) -> String {
        self.mock.bootstrap_servers()
    }

    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), KafkaError> {
        self.mock.create_topic(topic, partitions, 1)
    }
}

//! Kafka: client configurations and consumer contexts ([`clients`]), offset commits whose
//! answers can be awaited ([`commit`]), the producer whose sends
//! are awaited as one batch of acknowledgements or a transaction ([`producer`]), and the
//! topics' checks, creation and deletion ([`topics`]). Nothing about guests or state.

pub mod clients;
pub mod commit;
pub mod producer;
pub mod topics;

/// How to reach the cluster.
#[derive(Clone, Debug)]
pub struct Connection {
    /// Bootstrap servers.
    pub brokers: String,
    /// The user's librdkafka properties (SASL/SSL and the like), applied last to every client
    /// so they win over the host's defaults.
    pub properties: Vec<(String, String)>,
}

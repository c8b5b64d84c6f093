//! Kafka: client configurations and consumer contexts ([`clients`]), the producer whose sends
//! are awaited as one batch of acknowledgements or a transaction ([`producer`]), and the
//! topics' checks, creation and deletion ([`topics`]). Nothing about guests or state.

pub mod clients;
pub mod producer;
pub mod topics;

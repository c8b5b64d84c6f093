//! Offset commits whose answers the caller can wait for without blocking on them.
//!
//! rust-rdkafka reports no answer of an asynchronous manual commit (librdkafka posts one only
//! to a queue given with `rd_kafka_commit_queue`, which rust-rdkafka does not wrap), and a
//! synchronous commit waits with no bound: for ever on a coordinator that is away, and until
//! the group has settled while it rebalances (the broker reads a connection's requests one at
//! a time, so a commit waits behind the member's own pending JoinGroup). Here a commit goes
//! out with a queue of our own, and the caller polls that queue for its answer while it keeps
//! serving the consumer.

use std::marker::PhantomData;
use std::time::Duration;

use rdkafka::TopicPartitionList;
use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};

/// A queue that receives the answers of the commits sent through it; it lives no longer than
/// the consumer it was made for.
pub struct AnsweredCommits<'c> {
    client: *mut rd::rd_kafka_t,
    queue: *mut rd::rd_kafka_queue_t,
    _consumer: PhantomData<&'c ()>,
}

impl<'c> AnsweredCommits<'c> {
    pub fn new<C: ConsumerContext>(consumer: &'c BaseConsumer<C>) -> AnsweredCommits<'c> {
        let client = consumer.client().native_ptr();
        // SAFETY: `client` is a live handle for 'c; the queue is destroyed in `drop`, within 'c.
        let queue = unsafe { rd::rd_kafka_queue_new(client) };
        AnsweredCommits { client, queue, _consumer: PhantomData }
    }

    /// Sends a commit of `offsets` (with their metadata); its answer comes from [`Self::answer`].
    pub fn send(&self, offsets: &TopicPartitionList) -> KafkaResult<()> {
        // SAFETY: both handles are live; librdkafka copies `offsets` before returning.
        let err =
            unsafe { rd::rd_kafka_commit_queue(self.client, offsets.ptr(), self.queue, None, std::ptr::null_mut()) };
        if err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            Ok(())
        } else {
            Err(KafkaError::ConsumerCommit(err.into()))
        }
    }

    /// The answer to the oldest commit not yet answered, if it came within `wait`.
    pub fn answer(&self, wait: Duration) -> Option<KafkaResult<()>> {
        // SAFETY: the queue is live; the event, when there is one, is ours to destroy.
        unsafe {
            let event = rd::rd_kafka_queue_poll(self.queue, wait.as_millis().min(i32::MAX as u128) as i32);
            if event.is_null() {
                return None;
            }
            let err = rd::rd_kafka_event_error(event);
            rd::rd_kafka_event_destroy(event);
            Some(if err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                Ok(())
            } else {
                Err(KafkaError::ConsumerCommit(err.into()))
            })
        }
    }
}

impl Drop for AnsweredCommits<'_> {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once; an answer still on its way is dropped by
        // librdkafka.
        unsafe { rd::rd_kafka_queue_destroy(self.queue) }
    }
}

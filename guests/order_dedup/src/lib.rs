//! Forwards each order once per `order_id` within a day to the output `deduped`, unchanged:
//! a producer that retries, or a shop that sends an order twice, no longer inflates what is
//! downstream (run the drink count on `deduped`). State: `seen/<order_id>` -> the record's
//! timestamp (ms, 8 bytes big-endian) when the order was first seen, forgotten by a
//! stream-time timer a day (`RETENTION_MS`) later, so state does not grow without bound. An
//! order that is not a JSON object with a non-empty string `order_id` is refused (skipped,
//! counted, dead-lettered).

use serde::Deserialize;
use streamhost_processor_sdk::{InputRecord, TimeKind, emit, state, timers};

/// How long an order id is remembered, in stream time (record timestamps).
pub const RETENTION_MS: i64 = 24 * 3_600_000;

#[derive(Deserialize)]
struct Order<'a> {
    #[serde(borrow)]
    order_id: std::borrow::Cow<'a, str>,
}

/// The state key of an order id.
fn seen_key(order_id: &str) -> Vec<u8> {
    [b"seen/".as_slice(), order_id.as_bytes()].concat()
}

/// The order id of a record, or why it has none.
pub fn order_id(value: Option<&[u8]>) -> Result<String, String> {
    let value = value.ok_or("record has no value")?;
    let order: Order<'_> = serde_json::from_slice(value).map_err(|e| format!("not an order: {e}"))?;
    if order.order_id.is_empty() {
        return Err("order_id is empty".into());
    }
    Ok(order.order_id.into_owned())
}

// Called only by the export glue, which exists on wasm targets alone.
#[cfg_attr(not(target_family = "wasm"), allow(dead_code))]
fn process(input: InputRecord) -> Result<(), String> {
    let id = order_id(input.value.as_deref())?;
    let key = seen_key(&id);
    if state::get(&key).is_some() {
        return Ok(());
    }
    state::put(&key, &input.timestamp.to_be_bytes())?;
    timers::set(&key, input.timestamp.saturating_add(RETENTION_MS), TimeKind::StreamTime)?;
    emit("deduped", Some(id.as_bytes()), input.value.as_deref())
}

/// An order id's day is over: forget it.
#[cfg_attr(not(target_family = "wasm"), allow(dead_code))]
fn forget(key: Vec<u8>, _at: i64, _kind: TimeKind) -> Result<(), String> {
    state::delete(&key);
    Ok(())
}

streamhost_processor_sdk::processor_guest!(
    OrderDedup,
    outputs = ["deduped"],
    state_version = 1,
    process = process,
    on_timer = forget
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_is_known_by_its_id() {
        assert_eq!(order_id(Some(br#"{"order_id":"7-1","items":[]}"#)), Ok("7-1".into()));
        assert!(order_id(Some(br#"{"order_id":""}"#)).is_err());
        assert!(order_id(Some(br#"{"order_id":7}"#)).is_err());
        assert!(order_id(Some(b"not json")).is_err());
        assert!(order_id(None).is_err());
    }
}

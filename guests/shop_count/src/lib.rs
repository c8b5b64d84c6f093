//! Counts orders per shop: `{"shop_id": 7, ...}` adds 1 to key `"7"`. A second guest that runs
//! on the same host binary as drink_count, to show guests are swapped without a rebuild.

use serde::Deserialize;
use streamhost_guest_sdk::{Delta, Entry, Guest, process_each, rank_by_count};

#[derive(Deserialize)]
#[serde(untagged)]
enum ShopId {
    Number(u64),
    Text(String),
}

#[derive(Deserialize)]
struct Order {
    shop_id: ShopId,
}

/// The order's shop as a key, or why the order is malformed.
pub fn count_shop(record: &[u8]) -> Result<Vec<Delta>, String> {
    let order: Order = serde_json::from_slice(record).map_err(|e| format!("order is not valid: {e}"))?;
    let key = match order.shop_id {
        ShopId::Number(n) => n.to_string(),
        ShopId::Text(s) if !s.is_empty() => s,
        ShopId::Text(_) => return Err("shop_id is empty".into()),
    };
    Ok(vec![Delta { key, amount: 1 }])
}

// Constructed only by the export glue, which exists on wasm targets alone.
#[cfg_attr(not(target_family = "wasm"), allow(dead_code))]
struct ShopCount;

impl Guest for ShopCount {
    fn process(record: Vec<u8>) -> Result<Vec<Delta>, String> {
        count_shop(&record)
    }

    fn process_batch(records: Vec<Vec<u8>>) -> Vec<Result<Vec<Delta>, String>> {
        process_each(records, |r| count_shop(&r))
    }

    fn top_n(counts: Vec<Entry>, n: u32) -> Vec<Entry> {
        rank_by_count(counts, n)
    }
}

streamhost_guest_sdk::export_guest!(ShopCount);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_and_text_shop_ids() {
        assert_eq!(count_shop(br#"{"shop_id":7,"items":[]}"#).unwrap()[0].key, "7");
        assert_eq!(count_shop(br#"{"shop_id":"north"}"#).unwrap()[0].key, "north");
        assert!(count_shop(br#"{"shop_id":""}"#).is_err());
        assert!(count_shop(br#"{"order_id":1}"#).is_err());
    }
}

//! Counts orders per shop: `{"shop_id": 7, ...}` adds 1 to key `"7"`. A second guest that runs
//! on the same host binary as drink_count, to show guests are swapped without a rebuild.

use serde::Deserialize;
use streamhost_guest_sdk::Deltas;

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

/// Counts the order under its shop, or says why the order is malformed.
pub fn count_shop(record: &[u8], deltas: &mut Deltas<'_>) -> Result<(), String> {
    let order: Order = serde_json::from_slice(record).map_err(|e| format!("order is not valid: {e}"))?;
    let key = match order.shop_id {
        ShopId::Number(n) => n.to_string(),
        ShopId::Text(s) if !s.is_empty() => s,
        ShopId::Text(_) => return Err("shop_id is empty".into()),
    };
    deltas.add(key, 1);
    Ok(())
}

streamhost_guest_sdk::counting_guest!(ShopCount, count_shop);

#[cfg(test)]
mod tests {
    use super::*;
    use streamhost_guest_sdk::{Delta, process_one};

    fn shop(json: &[u8]) -> Result<Vec<Delta>, String> {
        process_one(json, count_shop)
    }

    #[test]
    fn numeric_and_text_shop_ids() {
        assert_eq!(shop(br#"{"shop_id":7,"items":[]}"#).unwrap()[0].key, "7");
        assert_eq!(shop(br#"{"shop_id":"north"}"#).unwrap()[0].key, "north");
        assert!(shop(br#"{"shop_id":""}"#).is_err());
        assert!(shop(br#"{"order_id":1}"#).is_err());
    }
}

//! The drink count's logic, as a plain library: an order `{"items": [{"drink": "latte",
//! "quantity": 2}, ...]}` becomes one delta per distinct drink. One bad item rejects the whole order, so counts
//! never hold half an order.

use std::borrow::Cow;

use serde::Deserialize;
use streamhost_guest_sdk::Deltas;

/// The largest quantity one item may carry.
pub const MAX_QUANTITY: u64 = 1_000_000;

#[derive(Deserialize)]
struct Order<'a> {
    #[serde(borrow)]
    items: Vec<Item<'a>>,
}

struct Item<'a> {
    drink: Cow<'a, str>,
    quantity: serde_json::Number,
}

#[derive(Deserialize)]
struct ItemFields<'a> {
    #[serde(borrow)]
    drink: Cow<'a, str>,
    quantity: serde_json::Number,
}

/// An item is a JSON object: serde would also build the struct from an array
/// (`["latte", 2]`), which the contract does not allow.
impl<'de: 'a, 'a> Deserialize<'de> for Item<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectOnly;
        impl<'de> serde::de::Visitor<'de> for ObjectOnly {
            type Value = Item<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an item object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Item<'de>, A::Error> {
                let fields = ItemFields::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(Item { drink: fields.drink, quantity: fields.quantity })
            }
        }
        deserializer.deserialize_map(ObjectOnly)
    }
}

/// When an order was placed: its `created_at` field, in milliseconds since the Unix epoch,
/// if it has one (an integer); the host uses it with `--event-time guest`. An order without
/// one (or that is not JSON) has none: the host then uses the record's Kafka timestamp.
pub fn event_time(record: &[u8]) -> Option<i64> {
    #[derive(Deserialize)]
    struct Placed {
        created_at: Option<serde_json::Value>,
    }
    serde_json::from_slice::<Placed>(record).ok()?.created_at?.as_i64()
}

/// Adds one order's drinks to `deltas`, or says why the order is malformed.
pub fn count_drinks<'r>(record: &'r [u8], deltas: &mut Deltas<'r>) -> Result<(), String> {
    // serde would also accept a JSON array for a struct; the contract says object.
    match record.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        _ => return Err("order is not a JSON object".into()),
    }
    let order: Order<'r> = serde_json::from_slice(record).map_err(|e| format!("order is not valid: {e}"))?;
    if order.items.is_empty() {
        return Err("order has no items".into());
    }
    for (i, item) in order.items.into_iter().enumerate() {
        if item.drink.is_empty() {
            return Err(format!("item {i}: drink is empty"));
        }
        let quantity =
            item.quantity.as_u64().filter(|q| (1..=MAX_QUANTITY).contains(q)).ok_or_else(|| {
                format!("item {i}: quantity {} is not an integer in 1..={MAX_QUANTITY}", item.quantity)
            })?;
        deltas.add(item.drink, quantity);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamhost_guest_sdk::process_one;

    fn ok(json: &str) -> Vec<(String, u64)> {
        process_one(json.as_bytes(), count_drinks)
            .unwrap_or_else(|e| panic!("{json} rejected: {e}"))
            .into_iter()
            .map(|d| (d.key, d.amount))
            .collect()
    }

    fn err(json: &str) -> String {
        match process_one(json.as_bytes(), count_drinks) {
            Ok(d) => panic!("{json} accepted with {} deltas", d.len()),
            Err(e) => e,
        }
    }

    #[test]
    fn event_time_is_created_at_in_milliseconds() {
        assert_eq!(event_time(br#"{"created_at":1700000000123,"items":[]}"#), Some(1_700_000_000_123));
        assert_eq!(event_time(br#"{"items":[{"drink":"a","quantity":1}]}"#), None);
        assert_eq!(event_time(br#"{"created_at":"2023-11-14T22:13:20Z"}"#), None, "an integer only");
        assert_eq!(event_time(br#"{"created_at":1.5}"#), None);
        assert_eq!(event_time(b"not json"), None);
    }

    #[test]
    fn one_delta_per_distinct_drink_summed() {
        let got = ok(
            r#"{"order_id":"o1","shop_id":7,"items":[{"drink":"latte","quantity":2},{"drink":"mocha","quantity":1},{"drink":"latte","quantity":3}]}"#,
        );
        assert_eq!(got, vec![("latte".into(), 5), ("mocha".into(), 1)]);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        assert_eq!(ok(r#"{"x":[1,{}],"items":[{"drink":"tea","quantity":1,"size":"L"}]}"#), vec![("tea".into(), 1)]);
    }

    #[test]
    fn names_are_byte_exact() {
        let got = ok(
            r#"{"items":[{"drink":" Latte","quantity":1},{"drink":"latte","quantity":1},{"drink":"caf\u00e9","quantity":1}]}"#,
        );
        assert_eq!(got, vec![(" Latte".into(), 1), ("latte".into(), 1), ("café".into(), 1)]);
    }

    #[test]
    fn quantity_bounds_both_sides() {
        assert_eq!(ok(r#"{"items":[{"drink":"a","quantity":1}]}"#), vec![("a".into(), 1)]);
        assert_eq!(ok(r#"{"items":[{"drink":"a","quantity":1000000}]}"#), vec![("a".into(), 1_000_000)]);
        assert!(err(r#"{"items":[{"drink":"a","quantity":0}]}"#).contains("quantity 0"));
        assert!(err(r#"{"items":[{"drink":"a","quantity":1000001}]}"#).contains("quantity 1000001"));
        assert!(err(r#"{"items":[{"drink":"a","quantity":-1}]}"#).contains("quantity -1"));
    }

    #[test]
    fn quantity_must_be_an_integer() {
        err(r#"{"items":[{"drink":"a","quantity":2.5}]}"#);
        err(r#"{"items":[{"drink":"a","quantity":2.0}]}"#);
        err(r#"{"items":[{"drink":"a","quantity":"2"}]}"#);
        err(r#"{"items":[{"drink":"a","quantity":null}]}"#);
        err(r#"{"items":[{"drink":"a"}]}"#);
        err(r#"{"items":[{"drink":"a","quantity":18446744073709551616}]}"#);
    }

    #[test]
    fn drink_must_be_a_non_empty_string() {
        assert!(err(r#"{"items":[{"drink":"","quantity":1}]}"#).contains("drink is empty"));
        err(r#"{"items":[{"drink":5,"quantity":1}]}"#);
        err(r#"{"items":[{"drink":null,"quantity":1}]}"#);
        err(r#"{"items":[{"quantity":1}]}"#);
    }

    #[test]
    fn items_must_be_a_non_empty_array() {
        assert!(err(r#"{"items":[]}"#).contains("no items"));
        err(r#"{"order_id":1}"#);
        err(r#"{"items":null}"#);
        err(r#"{"items":{"drink":"a","quantity":1}}"#);
        err(r#"{"items":["latte"]}"#);
    }

    #[test]
    fn an_item_must_be_an_object_not_an_array() {
        assert!(err(r#"{"items":[["latte",2]]}"#).contains("an item object"));
        err(r#"{"items":[{"drink":"latte","quantity":1},["mocha",1]]}"#);
    }

    #[test]
    fn one_bad_item_rejects_the_whole_order() {
        err(r#"{"items":[{"drink":"latte","quantity":1},{"drink":"","quantity":1}]}"#);
        err(r#"{"items":[{"drink":"latte","quantity":1},{"drink":"mocha","quantity":0}]}"#);
    }

    #[test]
    fn not_an_object_or_not_json() {
        assert!(err(r#"[[{"drink":"a","quantity":1}]]"#).contains("not a JSON object"));
        err("");
        err("not json");
        err(r#"{"items":[{"drink":"a","quantity":1}]"#);
        err(r#"{"items":[{"drink":"a","quantity":1}]} trailing"#);
        assert!(process_one(b"{\"items\":[{\"drink\":\"\xff\",\"quantity\":1}]}", count_drinks).is_err());
    }
}

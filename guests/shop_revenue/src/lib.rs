//! Revenue per shop per hour. Each order's items are priced with the `menu` table (drink ->
//! price in cents, as decimal text), the shop's hour (by the record's timestamp) keeps
//! `{"cents", "orders", "alerted"}` as JSON state under `revenue/<shop>/<hour start ms>`,
//! every order emits the hour's running total to `totals`, and the first order that takes an
//! hour to `ALERT_CENTS` or more emits one record to `alerts`. An order that is not one, or
//! that has a drink the menu does not price, is refused (the whole order: no half-priced
//! orders). An hour's state is forgotten a day after the hour ends (a stream-time timer).

use serde::{Deserialize, Serialize};
use streamhost_processor_sdk::{InputRecord, TimeKind, emit, state, tables, timers};

pub const HOUR_MS: i64 = 3_600_000;
/// An hour's revenue that raises an alert: 100.00 in cents.
pub const ALERT_CENTS: u64 = 10_000;
/// How long after its end an hour is kept.
pub const KEEP_MS: i64 = 24 * HOUR_MS;
pub const MAX_QUANTITY: u64 = 1_000_000;

#[derive(Deserialize)]
struct Order {
    shop_id: serde_json::Value,
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    drink: String,
    quantity: u64,
}

/// One shop's hour, as kept in state.
#[derive(Serialize, Deserialize, Default, Debug, PartialEq)]
pub struct Hour {
    pub cents: u64,
    pub orders: u64,
    pub alerted: bool,
}

/// The shop and the (drink, quantity) items of an order, or why it is not one.
pub fn parse(value: Option<&[u8]>) -> Result<(String, Vec<(String, u64)>), String> {
    let order: Order =
        serde_json::from_slice(value.ok_or("record has no value")?).map_err(|e| format!("not an order: {e}"))?;
    let shop = match order.shop_id {
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(s) if !s.is_empty() => s,
        _ => return Err("shop_id is not a number or a non-empty string".into()),
    };
    if order.items.is_empty() {
        return Err("order has no items".into());
    }
    let mut items = Vec::new();
    for item in order.items {
        if item.drink.is_empty() || item.quantity == 0 || item.quantity > MAX_QUANTITY {
            return Err(format!(
                "item {:?} x {} is not a drink and a quantity of 1..={MAX_QUANTITY}",
                item.drink, item.quantity
            ));
        }
        items.push((item.drink, item.quantity));
    }
    Ok((shop, items))
}

/// What the order's items cost, priced by `price` (drink -> cents).
pub fn cost(
    items: &[(String, u64)],
    mut price: impl FnMut(&str) -> Result<Option<u64>, String>,
) -> Result<u64, String> {
    let mut cents: u64 = 0;
    for (drink, quantity) in items {
        let each = price(drink)?.ok_or_else(|| format!("{drink:?} is not on the menu"))?;
        cents = cents.saturating_add(each.saturating_mul(*quantity));
    }
    Ok(cents)
}

fn menu_price(drink: &str) -> Result<Option<u64>, String> {
    match tables::lookup("menu", drink.as_bytes())? {
        None => Ok(None),
        Some(text) => {
            let text = String::from_utf8(text).map_err(|_| format!("the menu's price of {drink:?} is not text"))?;
            text.trim().parse().map(Some).map_err(|_| format!("the menu's price of {drink:?} is `{text}`, not cents"))
        }
    }
}

#[cfg_attr(not(target_family = "wasm"), allow(dead_code))]
fn process(input: InputRecord) -> Result<(), String> {
    let (shop, items) = parse(input.value.as_deref())?;
    let cents = cost(&items, menu_price)?;
    let hour_start = input.timestamp - input.timestamp.rem_euclid(HOUR_MS);
    let key = format!("revenue/{shop}/{hour_start}");
    let mut hour: Hour = match state::get(key.as_bytes()) {
        Some(json) => serde_json::from_slice(&json).map_err(|e| format!("state of {key} is not an hour: {e}"))?,
        None => Hour::default(),
    };
    hour.cents = hour.cents.saturating_add(cents);
    hour.orders += 1;
    let total =
        serde_json::json!({ "shop": shop, "hour_start_ms": hour_start, "cents": hour.cents, "orders": hour.orders });
    let id = format!("{shop}/{hour_start}");
    emit("totals", Some(id.as_bytes()), Some(total.to_string().as_bytes()))?;
    if hour.cents >= ALERT_CENTS && !hour.alerted {
        hour.alerted = true;
        let alert = serde_json::json!({ "shop": shop, "hour_start_ms": hour_start, "cents": hour.cents, "threshold": ALERT_CENTS });
        emit("alerts", Some(id.as_bytes()), Some(alert.to_string().as_bytes()))?;
    }
    state::put(key.as_bytes(), &serde_json::to_vec(&hour).map_err(|e| e.to_string())?)?;
    timers::set(key.as_bytes(), hour_start + HOUR_MS + KEEP_MS, TimeKind::StreamTime)
}

/// An hour is a day past its end: forget it.
#[cfg_attr(not(target_family = "wasm"), allow(dead_code))]
fn forget(key: Vec<u8>, _at: i64, _kind: TimeKind) -> Result<(), String> {
    state::delete(&key);
    Ok(())
}

streamhost_processor_sdk::processor_guest!(
    ShopRevenue,
    outputs = ["totals", "alerts"],
    tables = ["menu"],
    state_version = 1,
    process = process,
    on_timer = forget
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_priced_whole_or_refused() {
        let (shop, items) =
            parse(Some(br#"{"shop_id":3,"items":[{"drink":"latte","quantity":2},{"drink":"tea","quantity":1}]}"#))
                .unwrap();
        assert_eq!(shop, "3");
        let menu = |d: &str| {
            Ok(match d {
                "latte" => Some(450),
                "tea" => Some(300),
                _ => None,
            })
        };
        assert_eq!(cost(&items, menu), Ok(1200));
        let unknown = vec![("latte".to_string(), 1), ("soup".to_string(), 1)];
        assert_eq!(cost(&unknown, menu), Err("\"soup\" is not on the menu".into()));
        assert!(parse(Some(br#"{"shop_id":3,"items":[]}"#)).is_err());
        assert!(parse(Some(br#"{"shop_id":3,"items":[{"drink":"latte","quantity":0}]}"#)).is_err());
        assert!(parse(Some(br#"{"items":[{"drink":"latte","quantity":1}]}"#)).is_err());
    }
}

//! Test orders with their expected outcome, computed here independently of any guest.

use std::collections::BTreeMap;

pub const DRINKS: [&str; 8] = ["latte", "mocha", "flat white", "espresso", "tea", "cold brew", "café au lait", "chai"];

/// Orders and what counting them must give.
#[derive(Default, Clone)]
pub struct Orders {
    pub values: Vec<String>,
    pub counts: BTreeMap<String, u64>,
    pub valid: u64,
    pub malformed: u64,
}

impl Orders {
    pub fn extend(&mut self, other: Orders) {
        self.values.extend(other.values);
        for (k, v) in other.counts {
            *self.counts.entry(k).or_default() += v;
        }
        self.valid += other.valid;
        self.malformed += other.malformed;
    }

    /// Top `n` by count descending, ties by key ascending.
    pub fn top(&self, n: usize) -> Vec<(String, u64)> {
        let mut all: Vec<_> = self.counts.iter().map(|(k, v)| (k.clone(), *v)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }
}

/// A tiny deterministic generator (tests must not depend on a random crate's stream).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

/// Malformed orders, one of each kind the contract rejects.
pub const MALFORMED: [&str; 10] = [
    "not json at all",
    r#"{"order_id":"m1","items":[]}"#,
    r#"{"order_id":"m2"}"#,
    r#"{"order_id":"m3","items":[{"drink":"latte","quantity":0}]}"#,
    r#"{"order_id":"m4","items":[{"drink":"latte","quantity":1000001}]}"#,
    r#"{"order_id":"m5","items":[{"drink":"","quantity":1}]}"#,
    r#"{"order_id":"m6","items":[{"drink":"latte","quantity":2},{"drink":"mocha","quantity":-1}]}"#,
    r#"{"order_id":"m7","items":[{"drink":"latte","quantity":1.5}]}"#,
    r#"[{"drink":"latte","quantity":1}]"#,
    r#"{"order_id":"m9","items":[{"drink":7,"quantity":1}]}"#,
];

/// `n` valid orders (1-3 items, quantities 1-5, drinks from `DRINKS`), plus one malformed
/// order after every `malformed_every` valid ones (0: none).
pub fn generate(seed: u64, n: usize, malformed_every: usize) -> Orders {
    let mut rng = Lcg(seed);
    let mut orders = Orders::default();
    for i in 0..n {
        let items: Vec<_> = (0..1 + rng.next(3))
            .map(|_| {
                let drink = DRINKS[rng.next(DRINKS.len() as u64) as usize];
                let quantity = 1 + rng.next(5);
                *orders.counts.entry(drink.to_owned()).or_default() += quantity;
                serde_json::json!({ "drink": drink, "quantity": quantity })
            })
            .collect();
        let order =
            serde_json::json!({ "order_id": format!("{seed}-{i}"), "shop_id": 1 + rng.next(4), "items": items });
        orders.values.push(order.to_string());
        orders.valid += 1;
        if malformed_every > 0 && (i + 1) % malformed_every == 0 {
            orders.values.push(MALFORMED[(i / malformed_every) % MALFORMED.len()].to_owned());
            orders.malformed += 1;
        }
    }
    orders
}

/// Orders per shop in `orders` (what the shop_count guest must give).
pub fn shops(orders: &Orders) -> BTreeMap<String, u64> {
    let mut shops = BTreeMap::new();
    for value in &orders.values {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(value)
            && let Some(shop) = v.get("shop_id").and_then(|s| s.as_u64())
        {
            *shops.entry(shop.to_string()).or_default() += 1;
        }
    }
    shops
}

//! The drink count as a component: counts servings per drink, and ranks the board by count;
//! an order's `created_at` (ms) is its event time. The logic is the `drinks` crate; this
//! crate only exports it.

use drinks::{count_drinks, event_time};

streamhost_guest_sdk::counting_guest!(DrinkCount, count_drinks, event_time = event_time);

#[cfg(test)]
mod tests {
    use super::*;
    use streamhost_guest_sdk::{Entry, Guest};

    #[test]
    fn ranking_ties_by_key() {
        let e = |k: &str, c| Entry { key: k.into(), count: c };
        let top = DrinkCount::top_n(vec![e("mocha", 3), e("latte", 3), e("tea", 5), e("chai", 1)], 3);
        let got: Vec<_> = top.iter().map(|x| (x.key.as_str(), x.count)).collect();
        assert_eq!(got, [("tea", 5), ("latte", 3), ("mocha", 3)]);
    }

    #[test]
    fn a_batch_sums_the_accepted_orders_and_lists_the_refused() {
        let orders = [
            r#"{"items":[{"drink":"latte","quantity":2}]}"#,
            r#"{"items":[{"drink":"latte","quantity":0}]}"#,
            r#"{"items":[{"drink":"mocha","quantity":1},{"drink":"latte","quantity":1}]}"#,
            "not json",
        ];
        let (mut data, mut ends) = (Vec::new(), Vec::new());
        for o in orders {
            data.extend_from_slice(o.as_bytes());
            ends.push(data.len() as u32);
        }
        let result = DrinkCount::process_batch(data, ends);
        let mut deltas: Vec<_> = result.deltas.iter().map(|d| (d.key.as_str(), d.amount)).collect();
        deltas.sort();
        assert_eq!(deltas, [("latte", 3), ("mocha", 1)]);
        let refused: Vec<_> = result.rejected.iter().map(|r| r.index).collect();
        assert_eq!(refused, [1, 3]);
        assert!(result.rejected[0].reason.contains("quantity 0"), "{}", result.rejected[0].reason);
    }
}

//! Poison input: every kind of bad record is skipped, counted and dead-lettered with its
//! reason and source; valid oddities (unicode, long names, huge records) count correctly;
//! the partition keeps moving and the host never crashes.

use std::collections::BTreeMap;
use std::time::Duration;

use integration_tests::TestEnv;

fn counts(drink: &str, quantity: u64) -> Option<(String, u64)> {
    Some((drink.to_owned(), quantity))
}

fn order(drink: &str, quantity: u64) -> Vec<u8> {
    serde_json::json!({ "order_id": "ok", "items": [{ "drink": drink, "quantity": quantity }] })
        .to_string()
        .into_bytes()
}

/// One case of the corpus: what it is, the record value, and the (drink, quantity) it must
/// count or `None` when it must be skipped.
type Case = (&'static str, Option<Vec<u8>>, Option<(String, u64)>);

/// The corpus.
fn corpus() -> Vec<Case> {
    let s = |v: &str| Some(v.as_bytes().to_vec());
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    // Valid: the nesting sits in an unknown field, which the parser walks without recursing.
    let nested_valid = format!(r#"{{"items":[{{"drink":"latte","quantity":1}}],"pad":{}}}"#, deep(50_000));
    let nested_items = format!(r#"{{"items":{}}}"#, deep(50_000));
    let mut huge_valid =
        serde_json::json!({ "items": [{ "drink": "latte", "quantity": 1 }], "pad": "x".repeat(1 << 20) }).to_string();
    huge_valid.shrink_to_fit();
    vec![
        ("not JSON", s("this is not json"), None),
        ("JSON array", s(r#"[{"drink":"latte","quantity":1}]"#), None),
        ("JSON string", s(r#""latte""#), None),
        ("items missing", s(r#"{"order_id":1}"#), None),
        ("items empty", s(r#"{"items":[]}"#), None),
        ("items not an array", s(r#"{"items":{"drink":"latte","quantity":1}}"#), None),
        ("quantity 0", s(r#"{"items":[{"drink":"latte","quantity":0}]}"#), None),
        ("quantity negative", s(r#"{"items":[{"drink":"latte","quantity":-3}]}"#), None),
        ("quantity fractional", s(r#"{"items":[{"drink":"latte","quantity":1.5}]}"#), None),
        ("quantity a string", s(r#"{"items":[{"drink":"latte","quantity":"2"}]}"#), None),
        ("quantity above bound", s(r#"{"items":[{"drink":"latte","quantity":1000001}]}"#), None),
        ("quantity beyond u64", s(r#"{"items":[{"drink":"latte","quantity":18446744073709551616}]}"#), None),
        ("drink empty", s(r#"{"items":[{"drink":"","quantity":1}]}"#), None),
        ("drink not a string", s(r#"{"items":[{"drink":["latte"],"quantity":1}]}"#), None),
        ("drink missing", s(r#"{"items":[{"quantity":1}]}"#), None),
        ("invalid UTF-8", Some(b"{\"items\":[{\"drink\":\"\xff\xfe\",\"quantity\":1}]}".to_vec()), None),
        ("empty value", Some(Vec::new()), None),
        ("null value", None, None),
        ("1 MiB of garbage", Some(vec![b'{'; 1 << 20]), None),
        ("deeply nested items", Some(nested_items.into_bytes()), None),
        ("drink name over the 64 KiB key limit", Some(order(&"m".repeat(70_000), 1)), None),
        ("1 MiB valid order", Some(huge_valid.into_bytes()), counts("latte", 1)),
        ("deeply nested unknown field", Some(nested_valid.into_bytes()), counts("latte", 1)),
        ("long drink name", Some(order(&"l".repeat(10_000), 2)), counts(&"l".repeat(10_000), 2)),
        ("unicode drink", Some(order("抹茶ラテ", 3)), counts("抹茶ラテ", 3)),
        ("emoji drink", Some(order("🧋 bubble tea", 1)), counts("🧋 bubble tea", 1)),
        ("accented drink", Some(order("café crème", 4)), counts("café crème", 4)),
        ("last plain order", Some(order("latte", 5)), counts("latte", 5)),
    ]
}

/// Each record of the corpus is skipped and dead-lettered with its reason, partition and
/// offset, or counted when valid; the host keeps running and drains the partition.
#[test]
fn every_bad_record_is_skipped_counted_and_dead_lettered() {
    let env = TestEnv::new("poison");
    env.create_topics(1);
    let corpus = corpus();
    let values: Vec<_> = corpus.iter().map(|(_, v, _)| v.clone()).collect();
    env.produce_raw(&values);

    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for (drink, quantity) in corpus.iter().filter_map(|c| c.2.clone()) {
        *expected.entry(drink).or_default() += quantity;
    }
    let bad: Vec<_> = corpus.iter().enumerate().filter(|(_, c)| c.2.is_none()).collect();

    // Small batches so bad records share batches with good ones in different ways.
    env.run_until_drained("drink_count", &["--max-batch", "4"], Duration::from_secs(60));

    let dump = env.dump();
    assert_eq!(dump.counts, expected);
    assert_eq!(dump.records_processed, (corpus.len() - bad.len()) as u64);
    assert_eq!(dump.records_skipped, bad.len() as u64);

    let dead = env.read(&env.dead_letter);
    assert_eq!(dead.len(), bad.len(), "one dead letter per bad record");
    for (letter, (offset, (what, value, _))) in dead.iter().zip(&bad) {
        assert_eq!(letter.header("source.offset"), Some(offset.to_string()), "{what}");
        assert_eq!(letter.header("source.partition"), Some("0".into()), "{what}");
        assert_eq!(letter.header("source.topic").as_deref(), Some(env.input.as_str()), "{what}");
        assert!(letter.header("error").is_some_and(|e| !e.is_empty()), "{what}: a reason");
        assert_eq!(&letter.value, value.as_ref().unwrap_or(&Vec::new()), "{what}: original bytes");
    }
    let reason = |what: &str| {
        let i = bad.iter().position(|(_, c)| c.0 == what).unwrap();
        dead[i].header("error").unwrap()
    };
    assert!(reason("null value").contains("no value"));
    assert!(reason("items empty").contains("no items"));
    assert!(reason("quantity above bound").contains("1000001"));
    assert!(reason("deeply nested items").contains("invalid type"), "{}", reason("deeply nested items"));
    assert!(reason("drink name over the 64 KiB key limit").contains("longer than the limit"));
}

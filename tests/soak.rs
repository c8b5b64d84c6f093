//! Randomised `kill -9` soak: orders keep arriving while the host is killed at random
//! moments and restarted; at the end every counter is exact.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use integration_tests::{TestEnv, orders};

/// 100,000 orders produced over ~30 s while the host is SIGKILLed at least 10 times at
/// random moments (random batch sizes too) and restarted each time. After the lag reaches
/// zero: no counter is below its expected value and none is above it (the guarantee table's
/// bound with the state dir intact is zero), the changelog's latest values equal `host dump`,
/// and `host restore` into a fresh dir equals `host dump`.
#[test]
fn random_kill_9_soak_counts_exactly() {
    soak("soak", &[]);
}

/// The same soak under `--guarantee exactly-once` (a transaction every 50 ms).
#[test]
fn random_kill_9_soak_counts_exactly_under_exactly_once() {
    soak("soak-eos", &["--guarantee", "exactly-once", "--commit-interval", "50ms"]);
}

/// The same soak counting in 2-second windows (by record timestamp: when the test produced
/// each order), under exactly-once: every window's counts are exact, as computed here from
/// the input topic's records and their timestamps.
#[test]
fn random_kill_9_soak_counts_windows_exactly() {
    let mode =
        ["--guarantee", "exactly-once", "--commit-interval", "50ms", "--window", "2s", "--window-retention", "1h"];
    let env = soak("soak-windows", &mode);
    let mut want: BTreeMap<(i64, String), u64> = BTreeMap::new();
    for record in env.read(&env.input) {
        let Some(items) = valid_order(&record.value) else { continue };
        let start = record.timestamp.expect("a timestamp").div_euclid(2_000) * 2_000;
        for (drink, quantity) in items {
            *want.entry((start, drink)).or_default() += quantity;
        }
    }
    assert_eq!(env.dump().windows, want);
}

/// The drinks of an order as the drink count reads it, `None` for one it refuses (the test
/// orders' malformed ones).
fn valid_order(value: &[u8]) -> Option<Vec<(String, u64)>> {
    let order: serde_json::Value = serde_json::from_slice(value).ok()?;
    let items = order.as_object()?.get("items")?.as_array()?;
    let parsed: Option<Vec<(String, u64)>> = items
        .iter()
        .map(|item| {
            let drink = item.get("drink")?.as_str().filter(|d| !d.is_empty())?;
            let quantity = item.get("quantity")?.as_u64().filter(|q| (1..=1_000_000).contains(q))?;
            Some((drink.to_owned(), quantity))
        })
        .collect();
    parsed.filter(|p| !p.is_empty())
}

/// Runs the soak in `mode`, checks what every mode must give, and returns the test's env.
fn soak(name: &str, mode: &[&str]) -> TestEnv {
    let mut random = integration_tests::random_source("soak (random kill moments and batch sizes)");

    let env = TestEnv::new(name);
    env.create_topics(3);
    let expected = orders::generate(90, 100_000, 97);
    let producer = integration_tests::produce_over_time(
        &env.brokers,
        &env.input,
        &expected.values,
        4_000,
        Duration::from_millis(1_200),
    );

    let started = Instant::now();
    let mut kills = 0;
    while kills < 10 || !producer.is_finished() {
        assert!(started.elapsed() < Duration::from_secs(240), "soak took too long");
        let batch = ["50", "500", "5000"][random(3) as usize];
        let args: Vec<&str> = ["--max-batch", batch].iter().chain(mode).copied().collect();
        let host = env.spawn_host("drink_count", &args);
        std::thread::sleep(Duration::from_millis(500 + random(2_500)));
        host.kill9();
        kills += 1;
    }
    producer.join().unwrap();
    eprintln!("soak: {kills} kills in {:?}", started.elapsed());
    let partial = env.dump();
    assert!(partial.records_processed > 0, "the host made progress between kills");

    env.run_until_drained("drink_count", mode, Duration::from_secs(180));

    let dump = env.dump();
    let mut inflation = 0;
    // With windows, every order is in some window: the windows' sums are the totals.
    let windowed = mode.contains(&"--window");
    let totals: BTreeMap<String, u64> = if windowed {
        dump.windows.iter().fold(BTreeMap::new(), |mut sums, ((_, key), count)| {
            *sums.entry(key.clone()).or_default() += count;
            sums
        })
    } else {
        dump.counts.clone()
    };
    for (key, want) in &expected.counts {
        let got = totals.get(key).copied().unwrap_or(0);
        assert!(got >= *want, "{key}: {got} is below the expected {want}");
        inflation += got - want;
    }
    assert_eq!(inflation, 0, "total inflation over the bound of 0 (state dir intact)");
    assert_eq!(totals, expected.counts);
    if !windowed {
        // (Windowed keys are not UTF-8: the windows test compares its changelog.)
        assert_eq!(env.changelog_latest(), dump.counts);
    }
    assert_eq!((dump.records_processed, dump.records_skipped), (expected.valid, expected.malformed));
    assert_eq!(env.restore_into(&env.dir.path().join("restored")), dump);
    env
}

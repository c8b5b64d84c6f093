//! Guests are swapped without rebuilding the host.

use std::time::Duration;

use integration_tests::{TestEnv, host_bin, orders};

/// A second guest in its own crate (orders per shop) runs on the same host binary, which
/// is not rebuilt: same file, same modification time before and after.
#[test]
fn another_guest_runs_on_the_same_binary() {
    let binary = host_bin();
    let built = std::fs::metadata(&binary).unwrap().modified().unwrap();

    let env = TestEnv::new("shop-count");
    env.create_topics(2);
    let orders = orders::generate(50, 500, 50);
    env.produce(&orders.values);
    env.run_until_drained("shop_count", &[], Duration::from_secs(60));

    let dump = env.dump();
    assert_eq!(dump.counts, orders::shops(&orders));
    // shop_count accepts any order with a shop_id; the malformed ones here have none.
    assert_eq!(dump.records_processed, orders.valid);
    assert_eq!(std::fs::metadata(&binary).unwrap().modified().unwrap(), built);
}

/// The Python and JavaScript drink counts run on the same host binary against the broker,
/// over 3 partitions with malformed orders among them: counts, skips and dead letters are
/// exactly what the Rust guest gives.
#[test]
fn python_and_javascript_guests_count_exactly_on_the_broker() {
    let orders = orders::generate(71, 2_000, 40);
    for guest in ["drink_count_py", "drink_count_js"] {
        let env = TestEnv::new(&format!("lang-{guest}"));
        env.create_topics(3);
        env.produce(&orders.values);
        // The first load compiles a 12-18 MB component (later runs load it from the cache).
        env.run_until_drained(guest, &[], Duration::from_secs(180));
        let dump = env.dump();
        assert_eq!(dump.counts, orders.counts, "{guest}");
        assert_eq!((dump.records_processed, dump.records_skipped), (orders.valid, orders.malformed), "{guest}");
        assert_eq!(env.read(&env.dead_letter).len() as u64, orders.malformed, "{guest}");
    }
}

/// A guest built against WIT 0.2.0 (before `event-time` was added in 0.2.1) still runs on
/// this host: the change is backward compatible.
#[test]
fn a_guest_built_against_an_older_wit_still_runs() {
    let env = TestEnv::new("wit-020");
    env.create_topics(2);
    let orders = orders::generate(72, 500, 50);
    env.produce(&orders.values);
    env.run_until_drained("test_wit_020", &[], Duration::from_secs(60));
    let dump = env.dump();
    assert_eq!(dump.counts, orders.counts);
    assert_eq!((dump.records_processed, dump.records_skipped), (orders.valid, orders.malformed));
}

/// Copies `from` over `to` as a deployment would: written next to it, then renamed over it.
fn deploy(from: &std::path::Path, to: &std::path::Path) {
    let staging = to.with_extension("staging");
    std::fs::copy(from, &staging).unwrap();
    std::fs::rename(&staging, to).unwrap();
}

/// The guest file is replaced while the host runs: a version that does not fit is refused
/// (the running guest stays), a version that fits is swapped in between batches. Drinks stay
/// exact across the swap, and the new version's extra key counts exactly the orders that came
/// after it: no record lost, none counted twice, state kept.
#[test]
fn hot_swap_mid_stream_loses_and_doubles_nothing() {
    let env = TestEnv::new("hot-swap");
    env.create_topics(3);
    let live = env.dir.path().join("live-guest.wasm");
    deploy(&integration_tests::guest("drink_count"), &live);
    let live_arg = live.display().to_string();
    let mut host = env.spawn_host("drink_count", &["--guest", &live_arg, "--max-batch", "100"]);
    host.wait_for_log("host running", Duration::from_secs(60));

    let before = orders::generate(70, 3_000, 50);
    env.produce(&before.values);
    env.wait_committed(Duration::from_secs(60));

    deploy(&integration_tests::guest("test_wrong_version"), &live);
    host.wait_for_log("new guest refused", Duration::from_secs(30));
    assert!(host.is_running(), "a refused guest does not stop the host");

    deploy(&integration_tests::guest("test_drinks_v2"), &live);
    host.wait_for_log("guest swapped in", Duration::from_secs(30));
    let after = orders::generate(71, 3_000, 50);
    env.produce(&after.values);
    env.wait_committed(Duration::from_secs(60));
    assert!(host.terminate().success());

    let mut dump = env.dump();
    let orders_counted_by_v2 = dump.counts.remove("(orders)");
    assert_eq!(orders_counted_by_v2, Some(after.valid), "v2 counted exactly the orders after the swap");
    let mut expected = before;
    expected.extend(after);
    assert_eq!(dump.counts, expected.counts, "drinks exact across the swap");
    assert_eq!((dump.records_processed, dump.records_skipped), (expected.valid, expected.malformed));
}

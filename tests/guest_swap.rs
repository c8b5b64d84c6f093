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

//! The data path end to end: orders in, exact counts out in state, changelog and board.

use std::time::Duration;

use integration_tests::{TestEnv, orders, wait_until};

/// Known orders with malformed ones mixed in give exactly the expected counts in `host dump`,
/// in the changelog (latest value per key), on the board, and in the dead-letter topic.
#[test]
fn counts_are_exact_in_state_changelog_and_board() {
    let env = TestEnv::new("pipeline");
    env.create_topics(3);
    let orders = orders::generate(1, 600, 20);
    env.produce(&orders.values);

    let host = env.spawn_host("drink_count", &["--top-n", "5"]);
    env.wait_committed(Duration::from_secs(60));
    // The board is published every 500 ms; wait for one that has seen every record.
    wait_until(Duration::from_secs(30), "a board that saw every record", || {
        env.boards().last().is_some_and(|b| b["records_processed"] == orders.valid)
    });
    let status = host.terminate();
    assert!(status.success(), "clean stop exits 0, got {status}");

    let dump = env.dump();
    assert_eq!(dump.counts, orders.counts);
    assert_eq!(dump.records_processed, orders.valid);
    assert_eq!(dump.records_skipped, orders.malformed);
    assert_eq!(env.changelog_latest(), orders.counts);

    let board = env.boards().pop().unwrap();
    assert_eq!(board["records_skipped"], orders.malformed);
    assert!(board["generated_at_ms"].as_u64().unwrap() > 1_600_000_000_000);
    let top: Vec<(String, u64)> = board["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["key"].as_str().unwrap().to_owned(), e["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(top, orders.top(5));

    let dead = env.read(&env.dead_letter);
    assert_eq!(dead.len() as u64, orders.malformed);
    assert!(dead.iter().all(|r| r.header("error").is_some()));
}

/// The board printed on stdout shows rank, key, count and the totals.
#[test]
fn board_is_printed_for_people() {
    let env = TestEnv::new("board-print");
    env.create_topics(1);
    let orders = orders::generate(2, 50, 10);
    env.produce(&orders.values);
    let host = env.spawn_host("drink_count", &["--top-n", "3"]);
    env.wait_committed(Duration::from_secs(60));
    wait_until(Duration::from_secs(30), "a printed board with every record", || {
        host.stdout_text().contains(&format!("{} records counted · {} skipped", orders.valid, orders.malformed))
    });
    let (first_key, first_count) = orders.top(1)[0].clone();
    let text = host.stdout_text();
    let line = text.lines().rev().find(|l| l.trim_start().starts_with("1.")).expect("a rank-1 line");
    assert!(line.contains(&first_key) && line.contains(&first_count.to_string()), "rank line: {line}");
    assert!(host.terminate().success());
}

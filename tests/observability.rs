//! `--http`: health, readiness, Prometheus metrics with exact counters, and state queries
//! that agree with `host dump`.

use std::time::{Duration, Instant};

use integration_tests::{HostProcess, TestEnv, http_get as get, orders};

/// Starts the host with `--http` on a free local port; returns it and the address.
fn spawn_with_http(env: &TestEnv, extra: &[&str]) -> (HostProcess, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let args: Vec<&str> = ["--http", addr.as_str()].into_iter().chain(extra.iter().copied()).collect();
    let mut host = env.spawn_host("drink_count", &args);
    host.wait_for_log("host running", Duration::from_secs(60));
    (host, addr)
}

/// The value of an unlabelled metric line `name value`.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} not in:\n{text}"))
        .trim()
        .parse::<f64>()
        .unwrap() as u64
}

#[test]
fn metrics_are_exact_and_state_queries_agree_with_dump() {
    let env = TestEnv::new("http");
    env.create_topics(3);
    let expected = orders::generate(80, 2_000, 40);
    env.produce(&expected.values);
    let (host, addr) = spawn_with_http(&env, &[]);

    assert_eq!(get(&addr, "/healthz").0, 200);
    let started = Instant::now();
    while get(&addr, "/readyz").0 != 200 {
        assert!(started.elapsed() < Duration::from_secs(60), "never ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    env.wait_committed(Duration::from_secs(60));

    let (status, text) = get(&addr, "/metrics");
    assert_eq!(status, 200);
    let total = expected.valid + expected.malformed;
    assert_eq!(metric(&text, "streamhost_records_consumed_total"), total);
    assert_eq!(metric(&text, "streamhost_records_counted_total"), expected.valid);
    assert_eq!(metric(&text, "streamhost_records_skipped_total"), expected.malformed);
    assert_eq!(metric(&text, "streamhost_records_dead_lettered_total"), expected.malformed);
    assert_eq!(metric(&text, "streamhost_guest_traps_total"), 0);
    assert_eq!(metric(&text, r#"streamhost_records_skipped_by_reason_total{reason="refused"}"#), expected.malformed);
    assert!(metric(&text, "streamhost_changelog_records_total") > 0);
    assert_eq!(metric(&text, "streamhost_state_keys"), expected.counts.len() as u64);
    assert!(metric(&text, "streamhost_state_size_bytes") > 0);
    assert!(text.contains(r#"streamhost_batch_step_seconds_count{step="changelog"}"#), "{text}");
    assert_eq!(metric(&text, "streamhost_batch_records_sum"), total);

    let dump = env.dump();
    for (key, count) in &dump.counts {
        let (status, body) = get(&addr, &format!("/state/{}", key.replace(' ', "%20").replace('é', "%C3%A9")));
        assert_eq!(status, 200, "{key}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!((v["key"].as_str().unwrap(), v["count"].as_u64().unwrap()), (key.as_str(), *count));
    }
    assert_eq!(get(&addr, "/state/no-such-drink").0, 404);

    let (status, body) = get(&addr, "/top?n=3");
    assert_eq!(status, 200);
    let top: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut ranked: Vec<(&String, &u64)> = dump.counts.iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let want: Vec<serde_json::Value> =
        ranked.iter().take(3).map(|(k, c)| serde_json::json!({ "key": k, "count": c })).collect();
    assert_eq!(top["top"], serde_json::Value::Array(want));
    assert!(host.terminate().success());
}

/// `1234567` as en-US formats it: `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The live board page, loaded in headless Chromium (Debian's `chromium`, installed by
/// `make test`), shows the top drinks with their counts; a screenshot is kept in the test
/// output (`board.png` under cargo's target tmp dir).
#[test]
fn the_board_page_shows_the_top_drinks() {
    let env = TestEnv::new("board-page");
    env.create_topics(3);
    let expected = orders::generate(81, 3_000, 40);
    env.produce(&expected.values);
    let (host, addr) = spawn_with_http(&env, &["--flush-interval", "300ms"]);
    env.wait_committed(Duration::from_secs(60));
    let started = Instant::now();
    loop {
        let (_, body) = get(&addr, "/board.json");
        let board: serde_json::Value = serde_json::from_str(&body).unwrap();
        if board["records_processed"].as_u64() == Some(expected.valid) {
            assert_eq!(board["lag"].as_i64(), Some(0), "{board}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no board with every order: {board}");
        std::thread::sleep(Duration::from_millis(200));
    }

    let chromium = std::env::var("STREAMHOST_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let browse = |extra: &[&str]| {
        std::process::Command::new(&chromium)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"])
            .args(extra)
            .arg(format!("http://{addr}/"))
            .output()
            .unwrap_or_else(|e| panic!("running {chromium} (make test installs Debian's chromium): {e}"))
    };
    let dom = String::from_utf8_lossy(&browse(&["--dump-dom"]).stdout).into_owned();
    let mut ranked: Vec<(&String, &u64)> = expected.counts.iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    for (key, count) in ranked.iter().take(5) {
        let row = dom
            .split(&format!(r#"data-key="{key}""#))
            .nth(1)
            .unwrap_or_else(|| panic!("{key} not on the page:\n{dom}"));
        let row = row.split("</tr>").next().unwrap();
        assert!(row.contains(&format!(">{}<", thousands(**count))), "{key} should show {count}: {row}");
    }
    assert!(dom.contains(&format!(r#"id="counted">{}<"#, thousands(expected.valid))), "{dom}");

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("board.png");
    let taken = browse(&["--window-size=420,760", &format!("--screenshot={}", shot.display())]);
    assert!(taken.status.success(), "{}", String::from_utf8_lossy(&taken.stderr));
    assert!(std::fs::metadata(&shot).unwrap().len() > 1_000, "a real screenshot");
    eprintln!("board screenshot: {}", shot.display());
    assert!(host.terminate().success());
}

/// With `--window`, `/state/{key}` and `/top` answer for the window given by `window=START`,
/// agreeing with `host dump`; late records show in the skipped counter under `reason="late"`.
#[test]
fn windowed_state_queries_agree_with_dump() {
    let env = TestEnv::new("http-windows");
    env.create_topics(1);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let t0 = now - now % 60_000 - 3_600_000;
    let order = |drink: &str| format!(r#"{{"items":[{{"drink":"{drink}","quantity":1}}]}}"#);
    let input: Vec<(i64, String)> = [(1, "latte"), (2, "mocha"), (3, "latte"), (65, "tea"), (4, "latte")]
        .map(|(s, drink)| (t0 + s * 1000, order(drink)))
        .to_vec();
    env.produce_at(&input);
    let (host, addr) = spawn_with_http(&env, &["--window", "1m", "--window-retention", "1h"]);
    env.wait_committed(Duration::from_secs(60));

    let (status, body) = get(&addr, &format!("/top?n=5&window={t0}"));
    assert_eq!(status, 200, "{body}");
    let top: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(top["top"], serde_json::json!([{"key": "latte", "count": 2}, {"key": "mocha", "count": 1}]));
    assert_eq!(get(&addr, &format!("/state/tea?window={}", t0 + 60_000)).1, r#"{"count":1,"key":"tea"}"#);
    assert_eq!(get(&addr, "/state/latte").0, 404, "no cumulative counters with --window");
    // The board page's data names the window in progress, [60 s, 120 s).
    let started = Instant::now();
    let board = loop {
        let board: serde_json::Value = serde_json::from_str(&get(&addr, "/board.json").1).unwrap();
        if board["window"].is_object() {
            break board;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no windowed board: {board}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let start = std::time::UNIX_EPOCH + Duration::from_millis((t0 + 60_000) as u64);
    assert_eq!(board["window"]["start"], humantime::format_rfc3339_millis(start).to_string());
    assert_eq!(board["top"][0]["key"], "tea");
    let metrics = get(&addr, "/metrics").1;
    assert!(metrics.contains(r#"reason="late"} 1"#), "the order at 4 s came after stream time 65 s:\n{metrics}");
    assert!(host.terminate().success());
    let dump = env.dump();
    assert_eq!(dump.windows.get(&(t0, "latte".to_string())), Some(&2));
    assert_eq!(dump.records_skipped, 1);
}

/// Two `--scale-out` hosts with `--http`: each key's `/state/{key}` answers 200 with its exact
/// count on the host that holds the key's shard, and 404 naming that shard on the other (the
/// shard `host dump` files the key under); each host's `/top` ranks the keys of the shards it
/// holds, and says which they are.
#[test]
fn scale_out_hosts_answer_state_queries_for_the_shards_they_hold() {
    let env = TestEnv::new("http-scale");
    integration_tests::scale_out::create_topics(&env);
    let expected = orders::generate(82, 3_000, 0);
    env.produce(&expected.values);
    let mut hosts = Vec::new();
    let mut addrs = Vec::new();
    for h in 0..2 {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let mut host = integration_tests::scale_out::spawn(&env, h, &["--http", &addr]);
        host.wait_for_log("serving /healthz", Duration::from_secs(60));
        hosts.push(host);
        addrs.push(addr);
    }
    let state = |addr: &str, key: &str| {
        let encoded: String = key
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect();
        let (status, body) = get(addr, &format!("/state/{encoded}"));
        (status, serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default())
    };
    // Until every count is in: exactly one host answers for each key, with its exact count.
    let started = Instant::now();
    let holders = loop {
        assert!(started.elapsed() < Duration::from_secs(90), "the hosts never answered every key exactly");
        let answers: Vec<Vec<(u16, serde_json::Value)>> =
            expected.counts.keys().map(|key| addrs.iter().map(|addr| state(addr, key)).collect()).collect();
        let exact = expected.counts.values().zip(&answers).all(|(want, per_host)| {
            per_host.iter().filter(|(status, body)| *status == 200 && body["count"].as_u64() == Some(*want)).count()
                == 1
        });
        if exact {
            break answers;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let mut shard_of = std::collections::BTreeMap::new();
    for (key, per_host) in expected.counts.keys().zip(&holders) {
        let holder = per_host.iter().position(|(status, _)| *status == 200).unwrap();
        let shard = per_host[holder].1["shard"].as_i64().expect("the answer names the shard");
        let (status, other) = &per_host[1 - holder];
        assert_eq!(*status, 404, "{key}: the other host does not hold it: {other}");
        assert_eq!(other["shard"].as_i64(), Some(shard), "{key}: both name the same shard: {other}");
        assert!(other["shards"].as_array().is_some_and(|held| !held.contains(&shard.into())), "{other}");
        shard_of.insert(key.clone(), shard);
    }
    for (h, addr) in addrs.iter().enumerate() {
        let (status, body) = get(addr, "/top?n=100");
        assert_eq!(status, 200, "{body}");
        let top: serde_json::Value = serde_json::from_str(&body).unwrap();
        let mine: Vec<&String> =
            expected.counts.keys().zip(&holders).filter(|(_, per_host)| per_host[h].0 == 200).map(|(k, _)| k).collect();
        let ranked: Vec<&str> = top["top"].as_array().unwrap().iter().map(|e| e["key"].as_str().unwrap()).collect();
        assert_eq!(ranked.len(), mine.len(), "host {h}'s /top holds its own keys: {body}");
        assert!(mine.iter().all(|k| ranked.contains(&k.as_str())), "{body}");
        assert!(top["shards"].is_array(), "{body}");
    }
    for host in hosts {
        assert!(host.terminate().success());
    }
    // The shard each answer named is the one `host dump` files the key under.
    for h in 0..2 {
        let dir = integration_tests::scale_out::state_dir(&env, h).display().to_string();
        let out = env.host(&["dump", "--state-dir", &dir]);
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(key) = v["key"].as_str() {
                assert_eq!(v["shard"].as_i64(), shard_of.get(key).copied(), "{key} in host {h}'s dump");
            }
        }
    }
}

/// Requests the client got wrong are the client's error: a malformed number or window start
/// is a 400 naming it, an unknown path a 404, another method than GET a 405 with `Allow`.
#[test]
fn malformed_requests_are_answered_4xx() {
    let env = TestEnv::new("http-4xx");
    env.create_topics(1);
    env.produce(&orders::generate(5, 50, 0).values);
    let (mut host, addr) = spawn_with_http(&env, &[]);
    host.wait_for_log("ready: partitions assigned", Duration::from_secs(60));
    for (path, names) in [
        ("/top?n=abc", "n=abc"),
        ("/top?n=-1", "n=-1"),
        ("/state/latte?window=abc", "window=abc"),
        ("/top?window=soon", "window=soon"),
    ] {
        let (status, body) = get(&addr, path);
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(names), "{path}: the reason names the parameter: {body}");
    }
    let (status, body) = get(&addr, "/nope");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("/state/{key}"), "a 404 says what there is: {body}");
    let (status, _) = get(&addr, "/top?n=3");
    assert_eq!(status, 200);
    // Another method than GET.
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(stream, "POST /top HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.0 405") || response.starts_with("HTTP/1.1 405"), "{response}");
    assert!(response.lines().any(|l| l.eq_ignore_ascii_case("allow: get")), "{response}");
    assert!(host.terminate().success());
}

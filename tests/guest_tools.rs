//! `host check` and `host test`: a guest author's tools, offline (no broker, no state).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use integration_tests::{guest, host_bin, repo_root};

fn host(args: &[&str]) -> Output {
    Command::new(host_bin()).args(args).env("RUST_LOG", "warn").output().expect("running host")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn conformance(case: &str) -> PathBuf {
    repo_root().join("guests/conformance/drink_count").join(case)
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// `host test --guest wasm --input input --expect expect`.
fn host_test(wasm: &Path, input: &Path, expect: &Path) -> Output {
    host(&["test", "--guest", &path(wasm), "--input", &path(input), "--expect", &path(expect)])
}

/// `check` says what a fitting guest exports, and loads it from its cache the second time.
#[test]
fn check_describes_a_guest_and_caches_its_compiled_form() {
    let cache = tempfile::tempdir().unwrap();
    let out = host(&["check", "--guest", &path(&guest("drink_count")), "--guest-cache", &path(cache.path())]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("fits     this host (WIT streamhost:counter@0.2.1)"), "{stdout}");
    assert!(stdout.contains("streamhost:counter/counter@0.2.1 (process, process-batch, top-n)"), "{stdout}");
    assert!(stdout.contains("(compiled)"), "the first load compiles: {stdout}");
    assert!(stdout.contains("cached   "), "{stdout}");
    let cached = std::fs::read_dir(cache.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "cwasm"))
        .count();
    assert_eq!(cached, 1, "one compiled component in the cache");

    let again = host(&["check", "--guest", &path(&guest("drink_count")), "--guest-cache", &path(cache.path())]);
    assert!(text(&again.stdout).contains("(from the cache)"), "{}", text(&again.stdout));
}

/// `check` refuses a guest built against another WIT version, naming both.
#[test]
fn check_refuses_a_guest_that_does_not_fit() {
    let out = host(&["check", "--guest", &path(&guest("test_wrong_version")), "--guest-cache", "none"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("WIT version 0.0.9") && err.contains("expects 0.2.1"), "{err}");
}

/// The drink-count conformance suite passes through `host test` with every implementation:
/// Rust, Python (componentize-py) and JavaScript (componentize-js).
#[test]
fn every_drink_count_passes_the_conformance_suite() {
    for (implementation, case) in ["drink_count", "drink_count_py", "drink_count_js"]
        .iter()
        .flat_map(|i| ["orders", "malformed"].map(|case| (*i, case)))
    {
        let out = host_test(
            &guest(implementation),
            &conformance(&format!("{case}.jsonl")),
            &conformance(&format!("{case}.expected.json")),
        );
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{implementation} {case}:\n{stdout}{stderr}");
        assert!(stderr.contains("as expected"), "{implementation} {case}: {stderr}");
    }
}

/// A wrong expectation fails with the difference shown; `--json` prints the expectation format.
#[test]
fn test_shows_what_differs_from_the_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let expect = dir.path().join("wrong.json");
    std::fs::write(&expect, r#"{"counts": {"latte": 8, "tea": 1000001}, "records_skipped": 0}"#).unwrap();
    let input = conformance("orders.jsonl");
    let out = host_test(&guest("drink_count"), &input, &expect);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("NOT as expected"), "{stderr}");
    assert!(stderr.contains(r#"count of "latte": expected 8, got 7"#), "{stderr}");
    assert!(stderr.contains(r#"count of "chai": expected 0, got 6"#), "{stderr}");
    assert!(!stderr.contains("tea"), "equal counts are not reported: {stderr}");

    let json = host(&["test", "--guest", &path(&guest("drink_count")), "--input", &path(&input), "--json"]);
    assert!(json.status.success());
    let outcome: serde_json::Value = serde_json::from_slice(&json.stdout).expect("--json prints JSON");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(conformance("orders.expected.json")).unwrap()).unwrap();
    assert_eq!(outcome, expected);
}

/// A guest whose `process-batch` disagrees with its `process` fails `host test`, with why.
#[test]
fn test_catches_a_guest_that_breaks_the_batch_contract() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("records.txt");
    std::fs::write(&input, "a\nb\n\na\n").unwrap();
    let out = host(&["test", "--guest", &path(&guest("test_split_brain")), "--input", &path(&input)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("CONTRACT: process-batch disagrees with process"), "{stderr}");
    assert!(stderr.contains("process refuses #3; process-batch refuses "), "{stderr}");
    assert!(stderr.contains(r#"count of "a": expected 2, got 4"#), "{stderr}");
}

/// `host new-guest` writes a crate that builds into a component which fits the host and
/// passes its own example through `host test`, for either world.
#[test]
fn a_new_guest_builds_and_passes_its_example() {
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = dir.path().join("my_events");
    let out = host(&["new-guest", "my_events", "--dir", &path(&crate_dir)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        host(&["new-guest", "my_events", "--dir", &path(&crate_dir)]).status.code() == Some(1),
        "refuses to overwrite"
    );
    assert!(!host(&["new-guest", "My-Events"]).status.success(), "refuses a name that is not a crate name");

    // The guests' build cache, so the SDK's dependencies are not compiled again.
    let target = std::env::var("GUEST_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/streamhost/target-guests"));
    let wasm = build_crate(&crate_dir, &target, "my_events");

    let check = host(&["check", "--guest", &path(&wasm), "--guest-cache", "none"]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    let tested = host_test(&wasm, &crate_dir.join("examples/input.jsonl"), &crate_dir.join("examples/expected.json"));
    assert!(tested.status.success(), "{}{}", text(&tested.stdout), text(&tested.stderr));

    // A processor (`--world processor`): its crate builds and passes its own example too.
    let crate_dir = dir.path().join("my_totals");
    let out = host(&["new-guest", "my_totals", "--world", "processor", "--dir", &path(&crate_dir)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // What the project builds from comes along: the host's WIT and the SDK's sources (no
    // path into the host's source tree).
    assert!(crate_dir.join("wit/processor/processor.wit").exists());
    let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
    assert!(manifest.contains(r#"path = "vendor/streamhost-processor-sdk""#), "{manifest}");
    let sdk = std::fs::read_to_string(crate_dir.join("vendor/streamhost-processor-sdk/Cargo.toml")).unwrap();
    assert!(!sdk.contains(".workspace"), "the vendored SDK stands alone: {sdk}");
    let wasm = build_crate(&crate_dir, &target, "my_totals");
    let check = host(&["check", "--guest", &path(&wasm), "--guest-cache", "none"]);
    assert!(
        text(&check.stdout).contains("fits     this host (WIT streamhost:processor@0.1.0)"),
        "{}",
        text(&check.stdout)
    );
    let tested = host_test(&wasm, &crate_dir.join("examples/input.jsonl"), &crate_dir.join("examples/expected.json"));
    assert!(tested.status.success(), "{}{}", text(&tested.stdout), text(&tested.stderr));
}

/// Builds the guest crate in `dir` (release, into `target`); its component `NAME.wasm`.
fn build_crate(dir: &Path, target: &Path, name: &str) -> PathBuf {
    let built = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--quiet"])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .output()
        .expect("running cargo");
    assert!(built.status.success(), "{}", text(&built.stderr));
    target.join(format!("wasm32-unknown-unknown/release/{name}.wasm"))
}

/// The tools `make guests` installed outside the clone (componentize-py, componentize-js).
fn tools_cache() -> PathBuf {
    std::env::var("STREAMHOST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/streamhost"))
}

/// `host new-guest --lang python|js`, of either world, writes a project that builds (with
/// the same pinned tools as the repo's own Python and JavaScript guests) into a component
/// that passes its own example through `host test`.
#[test]
fn new_python_and_javascript_guests_build_and_pass_their_example() {
    let dir = tempfile::tempdir().unwrap();
    let languages = [("python", ["./build.sh"].as_slice()), ("js", ["npm", "run", "build", "--silent"].as_slice())];
    let worlds = [("counting", "wit/counter.wit"), ("processor", "wit/processor/processor.wit")];
    for ((lang, build), (world, wit)) in languages.into_iter().flat_map(|l| worlds.map(|w| (l, w))) {
        let name = format!("{world}_{lang}");
        let project = dir.path().join(&name);
        let out = host(&["new-guest", &name, "--lang", lang, "--world", world, "--dir", &path(&project)]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(project.join(wit).exists(), "{name}: the host's WIT comes along");
        // Instead of `npm install` / a new venv: the tools `make guests` installed.
        let cache = tools_cache();
        if lang == "js" {
            std::os::unix::fs::symlink(cache.join("js-tools/node_modules"), project.join("node_modules")).unwrap();
        }
        let built = Command::new(build[0])
            .args(&build[1..])
            .current_dir(&project)
            .env("COMPONENTIZE_PY", cache.join("py-venv/bin/componentize-py"))
            .output()
            .expect("running the build");
        assert!(built.status.success(), "{name}: {}{}", text(&built.stdout), text(&built.stderr));
        let wasm = project.join(format!("{name}.wasm"));
        let check = host(&["check", "--guest", &path(&wasm)]);
        let world_line = if world == "processor" { "streamhost:processor@0.1.0" } else { "streamhost:counter@" };
        assert!(text(&check.stdout).contains(world_line), "{name}: {}{}", text(&check.stdout), text(&check.stderr));
        let tested = host_test(&wasm, &project.join("examples/input.jsonl"), &project.join("examples/expected.json"));
        assert!(tested.status.success(), "{name}: {}{}", text(&tested.stdout), text(&tested.stderr));
    }
}

/// A processor guest: `check` names its outputs, state version and the host calls it
/// imports; `host test` runs its example (each record's writes and emits, from empty state)
/// and meets the expectation; a wrong expectation shows the difference.
#[test]
fn a_processor_guest_is_checked_and_tested_offline() {
    let out = host(&["check", "--guest", &path(&guest("order_dedup")), "--guest-cache", "none"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("fits     this host (WIT streamhost:processor@0.1.0)"), "{stdout}");
    assert!(stdout.contains("outputs  deduped"), "{stdout}");
    assert!(stdout.contains("state    version 1"), "{stdout}");
    assert!(stdout.contains("streamhost:processor/processor@0.1.0 (describe, process, on-timer)"), "{stdout}");
    assert!(stdout.contains("imports  the host's calls: streamhost:processor/state@0.1.0"), "{stdout}");

    let examples = integration_tests::repo_root().join("guests/order_dedup/examples");
    let out = host_test(&guest("order_dedup"), &examples.join("input.jsonl"), &examples.join("expected.json"));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success() && stderr.contains("as expected"), "{stdout}{stderr}");
    assert!(stdout.contains("#3     (nothing)"), "a duplicate does nothing: {stdout}");
    assert!(stdout.contains("#4     refused: not an order"), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.json");
    std::fs::write(&wrong, r#"{"emits": [{"output": "deduped", "key": "o-1"}]}"#).unwrap();
    let out = host_test(&guest("order_dedup"), &examples.join("input.jsonl"), &wrong);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("emits: expected [deduped o-1], got [deduped o-1, deduped o-2, deduped o-3]"), "{stderr}");

    // Controlled time: `@<ms>` lines move stream time past a day, so the id is forgotten.
    // The Python order dedup (componentize-py) passes the same cases.
    let retention = path(&examples.join("retention.jsonl"));
    for implementation in ["order_dedup", "order_dedup_py"] {
        let out = host(&["test", "--guest", &path(&guest(implementation)), "--input", &retention, "--json"]);
        let outcome: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let keys: Vec<&str> = outcome["emits"].as_array().unwrap().iter().map(|e| e["key"].as_str().unwrap()).collect();
        assert_eq!(keys, ["a", "b", "a"], "{implementation}: {outcome}");
    }
    let out = host_test(&guest("order_dedup_py"), &examples.join("input.jsonl"), &examples.join("expected.json"));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success() && stderr.contains("as expected"), "order_dedup_py: {stdout}{stderr}");

    // A table given as a file: shop_revenue prices its example with the menu.
    let examples = integration_tests::repo_root().join("guests/shop_revenue/examples");
    let menu = format!("menu={}", path(&examples.join("menu.tsv")));
    let (input, expect) = (path(&examples.join("input.jsonl")), path(&examples.join("expected.json")));
    let args =
        ["test", "--guest", &path(&guest("shop_revenue")), "--input", &input, "--expect", &expect, "--table", &menu];
    let out = host(&args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success() && stderr.contains("as expected"), "{stdout}{stderr}");
    assert!(stdout.contains("#3     refused: \"soup\" is not on the menu"), "{stdout}");
}

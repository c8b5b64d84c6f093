//! Misconfigurations are refused at start-up with a message that says what to do.

use std::time::Duration;

use integration_tests::{TestEnv, guest};

fn refused(env: &TestEnv, args: &[String]) -> String {
    let out = env.host(args);
    assert!(!out.status.success(), "host started but should have refused: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Missing input, changelog or output topics are named, with the ways to create them.
#[test]
fn missing_topics_are_refused() {
    let env = TestEnv::new("missing-topics");
    let err = refused(&env, &env.run_args("drink_count"));
    assert!(err.contains(&format!("input topic `{}`", env.input)), "{err}");
    assert!(err.contains(&format!("changelog topic `{}`", env.changelog)), "{err}");
    assert!(err.contains(&format!("output topic `{}`", env.output)), "{err}");
    assert!(err.contains("--create-topics") && err.contains("host create-topics"), "{err}");
}

/// `--create-topics` creates the missing topics, the changelog compacted: a second start
/// without the flag passes the same checks that refuse missing or non-compacted topics.
#[test]
fn create_topics_flag_creates_them() {
    let env = TestEnv::new("create-flag");
    for extra in [&["--create-topics"][..], &[]] {
        let mut host = env.spawn_host("drink_count", extra);
        host.wait_for_log("host running", Duration::from_secs(60));
        assert!(host.terminate().success());
    }
}

/// A changelog whose cleanup.policy is not `compact` is refused, with the fix.
#[test]
fn non_compacted_changelog_is_refused() {
    let env = TestEnv::new("not-compacted");
    env.create_topics(1);
    // The output topic was created with the default policy (delete): use it as the changelog.
    let mut args = env.run_args("drink_count");
    let at = args.iter().position(|a| a == "--changelog").unwrap();
    args[at + 1] = env.output.clone();
    let err = refused(&env, &args);
    assert!(err.contains("cleanup.policy=delete") && err.contains("must be `compact`"), "{err}");
    assert!(err.contains("cleanup.policy=compact"), "says how to fix it: {err}");
}

/// Files that are not a component, or components of the wrong world or WIT version, are
/// refused before the host touches Kafka.
#[test]
fn wrong_guests_are_refused() {
    let env = TestEnv::new("wrong-guests");
    let with_guest = |path: &str| {
        let mut args = env.run_args("drink_count");
        args[2] = path.to_owned();
        refused(&env, &args)
    };
    let core = env.dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let err = with_guest(&core.display().to_string());
    assert!(err.contains("core WebAssembly module, not a component"), "{err}");

    let text = env.dir.path().join("notes.wasm");
    std::fs::write(&text, "hello").unwrap();
    assert!(with_guest(&text.display().to_string()).contains("not a WebAssembly file"));

    let err = with_guest(&guest("test_wrong_version").display().to_string());
    assert!(err.contains("WIT version 0.0.9") && err.contains("expects 0.2.1"), "{err}");

    let err = with_guest(&guest("test_wrong_world").display().to_string());
    assert!(err.contains("does not export streamhost:counter/counter@0.2.1") && err.contains("greet"), "{err}");

    let err = with_guest("/nonexistent/guest.wasm");
    assert!(err.contains("reading guest /nonexistent/guest.wasm"), "{err}");
}

/// `host --version` names the WIT package version it speaks.
#[test]
fn version_names_the_wit_package() {
    let env = TestEnv::new("version");
    let out = env.host(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("streamhost:counter@0.2.1"));
}

/// A second host joining a group another host is consuming with is refused, naming the
/// group; the first keeps running. (Each host keeps the whole state: two would each count
/// part of the input.)
#[test]
fn a_second_host_in_the_same_group_is_refused() {
    let env = TestEnv::new("two-hosts");
    env.create_topics(2);
    let mut first = env.spawn_host("drink_count", &[]);
    first.wait_for_log("ready: partitions assigned", Duration::from_secs(60));
    let mut args = env.run_args("drink_count");
    args.extend(["--state-dir".to_string(), env.dir.path().join("other-state").display().to_string()]);
    let err = refused(&env, &args);
    assert!(err.contains(&format!("consumer group `{}` is in use by another host", env.group)), "{err}");
    assert!(first.is_running(), "the first host keeps running");
    assert!(first.terminate().success());
}

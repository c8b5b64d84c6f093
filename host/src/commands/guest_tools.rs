//! A guest author's tools, without Kafka or state: `host new-guest` (a crate to start
//! from), `host check` (does the component fit this host?) and `host test` (what does it
//! make of these records?), the counterpart of Kafka Streams' TopologyTestDriver.
//!
//! Both worlds: a processor guest's `host test` shows each record's writes and emits and the
//! state at the end.
//!
//! `host test` also holds a guest to its contract: `process-batch` over the whole file must
//! refuse exactly the records `process` refuses and sum to what `process` returns.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::cli::{CheckArgs, GuestLang, GuestWorld, NewGuestArgs, TestArgs};
use crate::guest::processor::view::{Clock, decode_time, space};
use crate::guest::processor::{self, InputRecord, ProcessorGuest};
use crate::guest::{AnyGuest, Records};
use crate::{WIT_PACKAGE, WIT_VERSION};

/// What a guest project of one world needs from the host: its WIT (written into the
/// project, where the SDK's `generate!` finds it), the world's name, and the Rust SDK's
/// sources (vendored into the project, so that it builds with only the toolchain).
struct WorldKit {
    world: &'static str,
    /// The WIT's path in the project (and in the host's tree) and its text.
    wit_file: &'static str,
    wit: &'static str,
    /// The SDK crate's name, manifest (inheriting from `guests/Cargo.toml`) and source.
    sdk_crate: &'static str,
    sdk_manifest: &'static str,
    sdk_lib: &'static str,
}

/// The guests' workspace manifest, whose package fields and dependencies the SDKs inherit.
const GUESTS_WORKSPACE: &str = include_str!("../../../guests/Cargo.toml");

fn world_kit(world: GuestWorld) -> WorldKit {
    match world {
        GuestWorld::Counting => WorldKit {
            world: "counting-guest",
            wit_file: "wit/counter.wit",
            wit: include_str!("../../../wit/counter.wit"),
            sdk_crate: "streamhost-guest-sdk",
            sdk_manifest: include_str!("../../../guests/sdk/Cargo.toml"),
            sdk_lib: include_str!("../../../guests/sdk/src/lib.rs"),
        },
        GuestWorld::Processor => WorldKit {
            world: "processor-guest",
            wit_file: "wit/processor/processor.wit",
            wit: include_str!("../../../wit/processor/processor.wit"),
            sdk_crate: "streamhost-processor-sdk",
            sdk_manifest: include_str!("../../../guests/processor-sdk/Cargo.toml"),
            sdk_lib: include_str!("../../../guests/processor-sdk/src/lib.rs"),
        },
    }
}

/// An SDK manifest made standalone: every `KEY.workspace = true` replaced by the line
/// `KEY = ...` of the guests' workspace manifest (its `[workspace.package]` or
/// `[workspace.dependencies]`).
fn standalone_manifest(member: &str, workspace: &str) -> Result<String> {
    let mut out = String::new();
    for line in member.lines() {
        match line.strip_suffix(".workspace = true") {
            Some(key) => {
                let inherited = workspace
                    .lines()
                    .find(|l| l.split_once(" = ").is_some_and(|(k, _)| k == key))
                    .with_context(|| format!("the guests' workspace manifest has no `{key}`"))?;
                out.push_str(inherited);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    Ok(out)
}

/// `host new-guest`: writes a guest project from the templates in `host/templates/`, with
/// the world's WIT and (Rust) its SDK, so that it builds on a machine with only the host
/// binary and the language's toolchain.
pub fn new_guest_command(args: NewGuestArgs) -> Result<()> {
    let name = &args.name;
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        bail!("guest name `{name}`: use lowercase letters, digits and `_`, starting with a letter");
    }
    let dir = args.dir.clone().unwrap_or_else(|| name.into());
    if dir.exists() {
        bail!("{} already exists; choose another --dir", dir.display());
    }
    let kit = world_kit(args.world);
    let wit_dir = Path::new(kit.wit_file).parent().expect("a WIT file is in a folder").display().to_string();
    let processor = args.world == GuestWorld::Processor;
    let fill = |template: &str, sdk: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{sdk}}", sdk)
            .replace("{{wit}}", &wit_dir)
            .replace("{{world}}", kit.world)
    };
    // Every project gets the same example records and the host's WIT; what is expected of
    // the example depends on the world.
    let expected = if processor {
        include_str!("../../templates/processor/expected.json")
    } else {
        include_str!("../../templates/guest/expected.json")
    };
    let mut files: Vec<(String, String)> = vec![
        ("examples/input.jsonl".into(), include_str!("../../templates/guest/input.jsonl").to_owned()),
        ("examples/expected.json".into(), expected.to_owned()),
        (kit.wit_file.into(), kit.wit.to_owned()),
    ];
    let mut add = |file: &str, text: String| files.push((file.to_owned(), text));
    let (build, wasm) = match args.lang {
        GuestLang::Rust => {
            // `--sdk`: a checkout's SDK (for working on it); else the SDK comes along.
            let sdk = match &args.sdk {
                Some(path) => std::fs::canonicalize(path)
                    .with_context(|| format!("the guest SDK is not at {} (--sdk)", path.display()))?
                    .display()
                    .to_string(),
                None => {
                    let vendored = format!("vendor/{}", kit.sdk_crate);
                    add(&format!("{vendored}/Cargo.toml"), standalone_manifest(kit.sdk_manifest, GUESTS_WORKSPACE)?);
                    add(&format!("{vendored}/src/lib.rs"), kit.sdk_lib.to_owned());
                    vendored
                }
            };
            add(".cargo/config.toml", fill(include_str!("../../templates/guest/config.toml.in"), &sdk));
            if processor {
                add("Cargo.toml", fill(include_str!("../../templates/processor/Cargo.toml.in"), &sdk));
                add("src/lib.rs", fill(include_str!("../../templates/processor/lib.rs.in"), &sdk));
                add("README.md", fill(include_str!("../../templates/processor/README.md.in"), &sdk));
            } else {
                add("Cargo.toml", fill(include_str!("../../templates/guest/Cargo.toml.in"), &sdk));
                add("src/lib.rs", fill(include_str!("../../templates/guest/lib.rs.in"), &sdk));
                add("README.md", fill(include_str!("../../templates/guest/README.md.in"), &sdk));
            }
            ("cargo build --release", format!("target/wasm32-unknown-unknown/release/{name}.wasm"))
        }
        GuestLang::Python => {
            let (app, readme) = if processor {
                (
                    include_str!("../../templates/processor-python/app.py.in"),
                    include_str!("../../templates/processor-python/README.md.in"),
                )
            } else {
                (
                    include_str!("../../templates/guest-python/app.py.in"),
                    include_str!("../../templates/guest-python/README.md.in"),
                )
            };
            add("app.py", fill(app, ""));
            add("README.md", fill(readme, ""));
            add("build.sh", fill(include_str!("../../templates/guest-python/build.sh.in"), ""));
            add(".gitignore", ".venv/\n.build/\n*.wasm\n".to_owned());
            ("./build.sh", format!("{name}.wasm"))
        }
        GuestLang::Js => {
            let (guest, readme) = if processor {
                (
                    include_str!("../../templates/processor-js/guest.js.in"),
                    include_str!("../../templates/processor-js/README.md.in"),
                )
            } else {
                (
                    include_str!("../../templates/guest-js/guest.js.in"),
                    include_str!("../../templates/guest-js/README.md.in"),
                )
            };
            add("guest.js", fill(guest, ""));
            add("README.md", fill(readme, ""));
            add("build.mjs", fill(include_str!("../../templates/guest-js/build.mjs.in"), ""));
            add("package.json", fill(include_str!("../../templates/guest-js/package.json.in"), ""));
            add(".gitignore", "node_modules/\n*.wasm\n".to_owned());
            ("npm install && npm run build", format!("{name}.wasm"))
        }
    };
    for (file, text) in files {
        let path = dir.join(&file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        if file.ends_with(".sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    println!("created guest `{name}` in {}", dir.display());
    println!("next:  cd {} && {build}", dir.display());
    println!(
        "then:  host test --guest {wasm} --input examples/input.jsonl \\\n         --expect examples/expected.json"
    );
    Ok(())
}

/// `host check`: loads the guest twice (cold, then from the cache) and says what it is.
pub fn check_command(args: CheckArgs) -> Result<()> {
    let source = args.guest.source();
    let (info, world) = match source.load_any()? {
        AnyGuest::Counting(guest) => (guest.info, format!("{WIT_PACKAGE}@{WIT_VERSION}")),
        AnyGuest::Processor(guest) => {
            let d = guest.description();
            let outputs = if d.outputs.is_empty() { "none".to_owned() } else { d.outputs.join(", ") };
            println!("outputs  {outputs} (each mapped to a topic with --output-topic NAME=TOPIC)");
            if !d.tables.is_empty() {
                println!("tables   {} (each a compacted topic: --table NAME=TOPIC)", d.tables.join(", "));
            }
            println!("state    version {}", d.state_version);
            (guest.info, format!("{}@{}", processor::PACKAGE, processor::VERSION))
        }
    };
    println!("guest    {}", args.guest.path.display());
    println!("size     {} bytes", info.bytes);
    println!("fits     this host (WIT {world})");
    for export in &info.exports {
        println!("exports  {export}");
    }
    let (host_calls, wasi): (Vec<&String>, Vec<&String>) =
        info.imports.iter().partition(|i| i.starts_with(&format!("{}/", processor::PACKAGE)));
    if !host_calls.is_empty() {
        let names: Vec<&str> = host_calls.iter().map(|s| s.as_str()).collect();
        println!("imports  the host's calls: {}", names.join(", "));
    }
    match wasi.len() {
        0 if host_calls.is_empty() => println!("imports  nothing"),
        0 => {}
        n => {
            let names: Vec<&str> = wasi.iter().map(|s| s.as_str()).collect();
            println!("imports  {n} WASI interfaces, nothing granted: {}", names.join(", "))
        }
    }
    let how = if info.from_cache { "from the cache" } else { "compiled" };
    println!("load     {:.1} ms ({how})", info.load_ms);
    if let Some(cache) = args.guest.cache_dir() {
        let again = crate::guest::Source { cache: Some(cache.to_owned()), ..source }.load_any()?;
        let load_ms = match &again {
            AnyGuest::Counting(g) => g.info.load_ms,
            AnyGuest::Processor(g) => g.info.load_ms,
        };
        println!("cached   {load_ms:.1} ms (from {})", cache.display());
    }
    Ok(())
}

/// What a guest made of a file of records: the `--expect` format.
#[derive(Serialize, Deserialize, Debug, Default, PartialEq)]
pub struct Outcome {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_processed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_skipped: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<BTreeMap<String, u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top: Option<Vec<BoardRow>>,
    /// A processor guest's state at the end (values as text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<BTreeMap<String, String>>,
    /// A processor guest's emits, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emits: Option<Vec<EmitRow>>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct EmitRow {
    pub output: String,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct BoardRow {
    pub key: String,
    pub count: u64,
}

/// `host test`. Returns whether the run passed (contract kept, expectation met).
pub fn test_command(args: TestArgs) -> Result<bool> {
    let text = std::fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let records = split_records(&text);
    let mut guest = match args.guest.source().load_any()? {
        AnyGuest::Counting(guest) => guest,
        AnyGuest::Processor(guest) => return test_processor(&args, guest, &records),
    };
    let mut passed = true;

    // Record by record, with `process`: what the author wants to see.
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut refused = Vec::new();
    for (index, record) in records.iter().enumerate() {
        match guest.process(record)? {
            Ok(deltas) => {
                if !args.json {
                    let shown: Vec<String> = deltas.iter().map(|d| format!("{} +{}", d.key, d.amount)).collect();
                    println!(
                        "#{:<5} {}",
                        index + 1,
                        if shown.is_empty() { "(no deltas)".into() } else { shown.join(", ") }
                    );
                }
                for d in deltas {
                    let count = counts.entry(d.key).or_default();
                    *count = count.saturating_add(d.amount);
                }
            }
            Err(reason) => {
                if !args.json {
                    println!("#{:<5} refused: {reason}", index + 1);
                }
                refused.push(index);
            }
        }
    }

    // The same records through `process-batch`, as the host runs them: must agree.
    let mut packed = Records::default();
    records.iter().for_each(|r| packed.push(r));
    let batch = guest.process_batch(&packed)?;
    let mut batch_counts: BTreeMap<String, u64> = BTreeMap::new();
    for d in batch.deltas {
        let count = batch_counts.entry(d.key).or_default();
        *count = count.saturating_add(d.amount);
    }
    // `event-time`, when exported: one time per record given, as `host run` holds it.
    if let Some(times) = guest.event_times(&packed)? {
        for (given, answered) in times.wrong_lengths {
            passed = false;
            eprintln!("CONTRACT: event-time returns one time per record given: {answered} times for {given} records");
        }
    }
    let batch_refused: Vec<usize> = batch.rejected.iter().map(|r| r.index as usize).collect();
    if batch_counts != counts || batch_refused != refused {
        passed = false;
        eprintln!("CONTRACT: process-batch disagrees with process over {}:", args.input.display());
        if batch_refused != refused {
            let numbers = |v: &[usize]| v.iter().map(|i| format!("#{}", i + 1)).collect::<Vec<_>>().join(" ");
            eprintln!("  process refuses {}; process-batch refuses {}", numbers(&refused), numbers(&batch_refused));
        }
        for line in diff_counts(&counts, &batch_counts) {
            eprintln!("  {line} (process vs process-batch)");
        }
    }

    let entries = counts.iter().map(|(k, v)| Ok((k.clone(), *v)));
    // `top-n` held to its contract, as `host run` holds it (a broken answer fails the test, naming the rule).
    let checked = &mut |c: &[crate::guest::Entry], n| {
        let answer = guest.top_n(c, n)?;
        crate::board::check_top_n(c, &answer, n)
            .map_err(|(v, detail)| anyhow::anyhow!("CONTRACT: {}: {detail}", v.rule()))?;
        Ok(answer)
    };
    let (top, _) = crate::board::rank(entries, checked, args.top_n)?;
    let outcome = Outcome {
        records_processed: Some((records.len() - refused.len()) as u64),
        records_skipped: Some(refused.len() as u64),
        counts: Some(counts),
        top: Some(top.into_iter().map(|e| BoardRow { key: e.key, count: e.count }).collect()),
        ..Outcome::default()
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        print_outcome(&outcome);
    }

    if let Some(path) = &args.expect {
        passed &= report_expectation(path, &outcome)?;
    }
    Ok(passed)
}

/// `host test` of a processor guest: each record through `process` in order, from empty
/// state, as the host runs them (a refused record leaves nothing behind); what each did, the
/// state at the end and every emit.
fn test_processor(args: &TestArgs, mut guest: ProcessorGuest, records: &[&[u8]]) -> Result<bool> {
    // The tables, each in a store of its own for the run (removed at the end).
    let scratch = std::env::temp_dir().join(format!("streamhost-test-{}", std::process::id()));
    let mut tables = BTreeMap::new();
    for (name, file) in &args.tables {
        let rows = std::fs::read_to_string(file).with_context(|| format!("reading table {name} from {file}"))?;
        let store = crate::state::Store::open(&scratch.join(name))?;
        let mut changes = Vec::new();
        for (number, line) in rows.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
            let (key, value) =
                line.split_once('\t').with_context(|| format!("{file} line {}: a row is KEY<tab>VALUE", number + 1))?;
            let key = crate::guest::processor::view::value_key(key.as_bytes());
            changes.push(crate::state::Change::Value { key, value: Some(value.into()) });
        }
        store.apply(changes, false)?;
        tables.insert(name.clone(), store);
    }
    if !tables.is_empty() {
        guest.set_tables(tables);
    }
    let passed = run_processor(args, &mut guest, records);
    let _ = std::fs::remove_dir_all(&scratch);
    passed
}

/// A `host test` line of a processor: `@<ms> <value>` gives the record its timestamp.
fn timed(line: &[u8]) -> (Option<i64>, &[u8]) {
    let stamped = line.strip_prefix(b"@").and_then(|rest| {
        let space = rest.iter().position(|b| *b == b' ')?;
        let at = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
        Some((at, &rest[space + 1..]))
    });
    match stamped {
        Some((at, value)) => (Some(at), value),
        None => (None, line),
    }
}

/// Bytes shown as text.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run_processor(args: &TestArgs, guest: &mut ProcessorGuest, records: &[&[u8]]) -> Result<bool> {
    let mut state: BTreeMap<String, String> = BTreeMap::new();
    let mut emits = Vec::new();
    let mut refused = 0;
    // Controlled time: a line `@<ms> <value>` is a record with that timestamp; the others
    // keep the one before (0 at first). The wall clock is --now, else the record's time.
    let mut timestamp = 0;
    for (index, record) in records.iter().enumerate() {
        let (at, value) = timed(record);
        timestamp = at.unwrap_or(timestamp);
        let input = InputRecord {
            key: None,
            value: Some(value.to_vec()),
            headers: Vec::new(),
            timestamp,
            partition: 0,
            offset: index as i64,
        };
        // One record per batch, none ever in a store: each reads the ones before.
        let now = args.now.unwrap_or(timestamp);
        let effects = guest.process_batch(index as u64 + 1, std::slice::from_ref(&input), now)?;
        let mut shown = Vec::new();
        if let Some((_, reason)) = effects.rejected.first() {
            refused += 1;
            shown.push(format!("refused: {reason}"));
        }
        for (key, value) in effects.writes {
            match (key.split_first(), value) {
                (Some((&space::VALUE, key)), Some(v)) => {
                    shown.push(format!("put {} = {}", text(key), text(&v)));
                    state.insert(text(key), text(&v));
                }
                (Some((&space::VALUE, key)), None) => {
                    shown.push(format!("delete {}", text(key)));
                    state.remove(&text(key));
                }
                (Some((&space::TIMER_BY_KEY, [clock, key @ ..])), at) => {
                    let clock = if *clock == Clock::Stream as u8 { "stream-time" } else { "wall-clock" };
                    match at.as_deref().and_then(decode_time) {
                        Some(at) => shown.push(format!("timer {clock} {} at {at}", text(key))),
                        None => shown.push(format!("timer {clock} {} gone", text(key))),
                    }
                }
                // The timers by due time, and stream time.
                _ => {}
            }
        }
        if effects.timers_fired > 0 {
            shown.push(format!("{} timers fired", effects.timers_fired));
        }
        for emit in effects.emits {
            let row = EmitRow {
                output: emit.output,
                key: emit.key.as_deref().map(text),
                value: emit.value.as_deref().map(text),
            };
            shown.push(format!("emit {} {}", row.output, row.key.as_deref().unwrap_or("(no key)")));
            emits.push(row);
        }
        if !args.json {
            println!("#{:<5} {}", index + 1, if shown.is_empty() { "(nothing)".into() } else { shown.join(", ") });
        }
    }
    let outcome = Outcome {
        records_processed: Some((records.len() - refused) as u64),
        records_skipped: Some(refused as u64),
        state: Some(state),
        emits: Some(emits),
        ..Outcome::default()
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        println!(
            "\n{} records processed, {} refused; {} emits",
            records.len() - refused,
            refused,
            outcome.emits.as_ref().map_or(0, Vec::len)
        );
        println!("state:");
        for (key, value) in outcome.state.iter().flatten() {
            println!("  {key:<30} {value}");
        }
    }
    match &args.expect {
        None => Ok(true),
        Some(path) => Ok(report_expectation(path, &outcome)?),
    }
}

/// Compares `outcome` with the expectation file at `path`, saying how it went; true if as expected.
fn report_expectation(path: &Path, outcome: &Outcome) -> Result<bool> {
    let expected = read_expected(path)?;
    let differences = compare(&expected, outcome);
    if differences.is_empty() {
        eprintln!("as expected ({})", path.display());
        return Ok(true);
    }
    eprintln!("NOT as expected ({}):", path.display());
    for line in differences {
        eprintln!("  {line}");
    }
    Ok(false)
}

/// One record per line; a final newline does not start another record; `\r\n` is a newline.
fn split_records(text: &[u8]) -> Vec<&[u8]> {
    if text.is_empty() {
        return Vec::new();
    }
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    text.split(|b| *b == b'\n').map(|line| line.strip_suffix(b"\r").unwrap_or(line)).collect()
}

fn read_expected(path: &Path) -> Result<Outcome> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let expected: Outcome =
        serde_json::from_str(&text).with_context(|| format!("{} is not an expectation file", path.display()))?;
    if expected == Outcome::default() {
        bail!(
            "{} expects nothing: give counts, records_processed, records_skipped, top, state or emits",
            path.display()
        );
    }
    Ok(expected)
}

/// What differs between an expectation and an outcome, one line each (only the fields the
/// expectation gives are compared).
pub fn compare(expected: &Outcome, got: &Outcome) -> Vec<String> {
    let mut out = Vec::new();
    for (name, want, have) in [
        ("records_processed", expected.records_processed, got.records_processed),
        ("records_skipped", expected.records_skipped, got.records_skipped),
    ] {
        if want.is_some() && want != have {
            out.push(format!("{name}: expected {}, got {}", want.unwrap_or(0), have.unwrap_or(0)));
        }
    }
    if let (Some(want), Some(have)) = (&expected.counts, &got.counts) {
        out.extend(diff_counts(want, have));
    }
    if let (Some(want), Some(have)) = (&expected.top, &got.top)
        && want != have
    {
        let show =
            |rows: &[BoardRow]| rows.iter().map(|r| format!("{} {}", r.key, r.count)).collect::<Vec<_>>().join(", ");
        out.push(format!("top: expected [{}], got [{}]", show(want), show(have)));
    }
    if let (Some(want), Some(have)) = (&expected.state, &got.state) {
        let keys: std::collections::BTreeSet<&String> = want.keys().chain(have.keys()).collect();
        for key in keys {
            if want.get(key) != have.get(key) {
                out.push(format!("state {key:?}: expected {:?}, got {:?}", want.get(key), have.get(key)));
            }
        }
    }
    if let (Some(want), Some(have)) = (&expected.emits, &got.emits)
        && want != have
    {
        let show = |rows: &[EmitRow]| {
            rows.iter()
                .map(|r| format!("{} {}", r.output, r.key.as_deref().unwrap_or("-")))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push(format!("emits: expected [{}], got [{}]", show(want), show(have)));
    }
    out
}

/// `key: expected X, got Y` for every key whose counts differ (0 where absent).
fn diff_counts(want: &BTreeMap<String, u64>, have: &BTreeMap<String, u64>) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = want.keys().chain(have.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let (w, h) = (want.get(k).copied().unwrap_or(0), have.get(k).copied().unwrap_or(0));
            (w != h).then(|| format!("count of {k:?}: expected {w}, got {h}"))
        })
        .collect()
}

fn print_outcome(outcome: &Outcome) {
    println!();
    println!(
        "{} records counted, {} refused",
        outcome.records_processed.unwrap_or(0),
        outcome.records_skipped.unwrap_or(0)
    );
    println!("counts:");
    for (key, count) in outcome.counts.iter().flatten() {
        println!("  {key:<30} {count:>12}");
    }
    println!("board:");
    for (rank, row) in outcome.top.iter().flatten().enumerate() {
        println!("  {:>3}. {:<30} {:>12}", rank + 1, row.key, row.count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_lines() {
        assert_eq!(split_records(b"a\nb\r\n\nc\n"), vec![&b"a"[..], b"b", b"", b"c"]);
        assert!(split_records(b"").is_empty());
        assert_eq!(split_records(b"\n"), vec![&b""[..]]);
    }

    #[test]
    fn only_expected_fields_are_compared() {
        let got = Outcome {
            records_processed: Some(3),
            records_skipped: Some(1),
            counts: Some(BTreeMap::from([("latte".into(), 4), ("tea".into(), 1)])),
            top: Some(vec![BoardRow { key: "latte".into(), count: 4 }]),
            ..Outcome::default()
        };
        let partial = Outcome { records_skipped: Some(1), ..Outcome::default() };
        assert!(compare(&partial, &got).is_empty());
        let wrong = Outcome { counts: Some(BTreeMap::from([("latte".into(), 5)])), ..Outcome::default() };
        let diff = compare(&wrong, &got);
        assert_eq!(diff.len(), 2, "{diff:?}");
        assert!(diff[0].contains("\"latte\": expected 5, got 4"), "{diff:?}");
        assert!(diff[1].contains("\"tea\": expected 0, got 1"), "{diff:?}");
    }
}

//! A processor driven by commands, one per record, for the host's tests:
//! `put K V` sets K; `emit K` emits K's value (or `none`) under key K to `out`;
//! `stream K AT` / `wall K AT` set K's stream-time / wall-clock timer at AT (ms);
//! `undeclared` emits to an output it did not declare; `big` puts a value over the limit;
//! `budget` puts `y`, then reads until past the state-operation budget; `trap` puts `z`,
//! then panics. A due timer emits `fired/K` -> `<clock> <at>` to `out` and puts the same,
//! except for keys starting `fail`, whose timer puts `failed/K` and then returns an error, and
//! keys starting `loop`, whose timer puts `looped/K` and then never returns.
//! For the benchmark of one host call (`bench/native`, `state-calls`): `gets N K` reads K
//! N times, `puts N K` writes K N times, `noop` does nothing.

use streamhost_processor_sdk::{InputRecord, TimeKind, emit, state, timers};

#[cfg_attr(not(target_family = "wasm"), allow(dead_code))]
fn process(input: InputRecord) -> Result<(), String> {
    let value = input.value.unwrap_or_default();
    let text = String::from_utf8(value).map_err(|_| "not UTF-8".to_string())?;
    let words: Vec<&str> = text.split(' ').collect();
    match words.as_slice() {
        ["put", key, value] => state::put(key.as_bytes(), value.as_bytes()),
        ["emit", key] => {
            let value = state::get(key.as_bytes()).unwrap_or_else(|| b"none".to_vec());
            emit("out", Some(key.as_bytes()), Some(&value))
        }
        ["stream", key, at] => timers::set(key.as_bytes(), parse(at)?, TimeKind::StreamTime),
        ["wall", key, at] => timers::set(key.as_bytes(), parse(at)?, TimeKind::WallClock),
        ["gets", n, key] => {
            for _ in 0..count(n)? {
                std::hint::black_box(state::get(key.as_bytes()));
            }
            Ok(())
        }
        ["puts", n, key] => {
            for i in 0..count(n)? {
                state::put(key.as_bytes(), &i.to_be_bytes())?;
            }
            Ok(())
        }
        ["noop"] => Ok(()),
        ["undeclared"] => emit("elsewhere", None, Some(b"x")),
        ["big"] => state::put(b"big", &vec![0u8; 600 * 1024]),
        ["budget"] => {
            state::put(b"y", b"1")?;
            loop {
                std::hint::black_box(state::get(b"y"));
            }
        }
        ["trap"] => {
            state::put(b"z", b"9")?;
            panic!("this record makes the guest panic");
        }
        _ => Err(format!("unknown command `{text}`")),
    }
}

fn count(n: &str) -> Result<u64, String> {
    n.parse().map_err(|_| format!("`{n}` is not a count"))
}

fn parse(at: &str) -> Result<i64, String> {
    at.parse().map_err(|_| format!("`{at}` is not a time in ms"))
}

#[cfg_attr(not(target_family = "wasm"), allow(dead_code))]
fn on_timer(key: Vec<u8>, at: i64, kind: TimeKind) -> Result<(), String> {
    let key = String::from_utf8_lossy(&key).into_owned();
    let clock = match kind {
        TimeKind::StreamTime => "stream-time",
        TimeKind::WallClock => "wall-clock",
    };
    if key.starts_with("loop") {
        state::put(format!("looped/{key}").as_bytes(), b"1")?;
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
    if key.starts_with("fail") {
        state::put(format!("failed/{key}").as_bytes(), b"1")?;
        return Err(format!("timer {key} fails on purpose"));
    }
    let fired = format!("{clock} {at}");
    state::put(format!("fired/{key}").as_bytes(), fired.as_bytes())?;
    emit("out", Some(format!("fired/{key}").as_bytes()), Some(fired.as_bytes()))
}

streamhost_processor_sdk::processor_guest!(
    TestProcessor,
    outputs = ["out"],
    state_version = 1,
    process = process,
    on_timer = on_timer
);

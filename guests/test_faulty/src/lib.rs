//! Misbehaves on purpose, by record text: `panic` traps, `loop` never returns, `alloc`
//! allocates without bound, `big` adds 2^63 to key `big` (overflows on the 2nd), anything
//! else counts 1 under its own text. For the host's broken-guest tests.

use streamhost_guest_sdk::Deltas;

// Called only by the export glue, which exists on wasm targets alone.
#[cfg_attr(not(target_family = "wasm"), allow(dead_code))]
fn count<'r>(value: &'r [u8], deltas: &mut Deltas<'r>) -> Result<(), String> {
    let text = std::str::from_utf8(value).map_err(|_| "not UTF-8".to_string())?;
    match text {
        "panic" => panic!("this record makes the guest panic"),
        "loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "alloc" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "big" => deltas.add("big", 1 << 63),
        _ => deltas.add(text, 1),
    }
    Ok(())
}

streamhost_guest_sdk::counting_guest!(Faulty, count);

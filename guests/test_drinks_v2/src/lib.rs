//! drink_count, version 2: the same drink counts, plus `(orders)`, the number of valid orders.
//! The hot-swap test swaps it in mid-stream: drinks must stay exact across the swap, and
//! `(orders)` tells how many orders the new version counted.

use streamhost_guest_sdk::Deltas;

/// The key under which version 2 counts valid orders.
pub const ORDERS_KEY: &str = "(orders)";

// Called only by the export glue, which exists on wasm targets alone.
#[cfg_attr(not(target_family = "wasm"), allow(dead_code))]
fn count<'r>(record: &'r [u8], deltas: &mut Deltas<'r>) -> Result<(), String> {
    drinks::count_drinks(record, deltas)?;
    deltas.add(ORDERS_KEY, 1);
    Ok(())
}

streamhost_guest_sdk::counting_guest!(DrinksV2, count);

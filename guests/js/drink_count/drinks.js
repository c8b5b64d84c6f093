// The drink count's logic in JavaScript: a port of guests/drinks/src/lib.rs (with the SDK's
// process_one / sum_batch / rank_by_count), which is the reference. An order
// `{"items": [{"drink": "latte", "quantity": 2}, ...]}` becomes one delta per distinct drink;
// one bad item refuses the whole order.
//
// Plain ES module with no Node or WASI API, so `node --test` runs it natively and
// componentize-js runs it inside the component.
//
// The reference parses with serde_json, and agreeing with it exactly is the point. Each
// record goes through one of two paths:
//  - fast: a native UTF-8 decode and JSON.parse, taken only where they provably give
//    serde_json's answer: valid UTF-8, no backslash escape, no number with a fraction or
//    an exponent, no repeated `items`/`drink`/`quantity` key, no item written as an array.
//    A refusal is always final (serde_json refuses all that JSON.parse refuses, and more).
//  - exact: a byte-level parser that does what serde_json does for the reference's
//    structs, for every other record.
// What serde_json does that JSON.parse does not: it refuses `2.0`, `1e2` as a quantity
// (`serde_json::Number` keeps them as floats), refuses a repeated field, refuses invalid
// UTF-8 and lone surrogate escapes only in the strings it decodes (object keys of the order
// and of its items, and drinks) but not in the values it skips, and refuses an item written
// as an array (`["latte", 2]`: the reference reads items from objects only).

/** The largest quantity one item may carry. */
export const MAX_QUANTITY = 1_000_000;
/** The longest key the host accepts, in UTF-8 bytes (wit/counter.wit). */
export const MAX_KEY_BYTES = 64 * 1024;
const MAX_U64 = (1n << 64n) - 1n;

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

// A number token with a fraction or an exponent has a digit right before its `.`, `e`, `E`.
// The test may also hit text inside a string ("7eleven"): such orders take the exact path.
const FRACTION_OR_EXPONENT = /[0-9][.eE]/;
// serde_json's `Number::as_u64` holds exactly for tokens like this one.
const UNSIGNED_INTEGER = /^(?:0|[1-9][0-9]*)$/;

const NOT_AN_OBJECT = 'order is not a JSON object';
const NO_ITEMS = 'order has no items';
const invalid = (why) => `order is not valid: ${why}`;
const emptyDrink = (i) => `item ${i}: drink is empty`;
const badQuantity = (i, q) => `item ${i}: quantity ${q} is not an integer in 1..=${MAX_QUANTITY}`;
const keyTooLong = (bytes) => `key of ${bytes} bytes is longer than the limit of ${MAX_KEY_BYTES}`;

// Performance: inside the component the JS engine is an interpreter, where every call of a
// built-in costs about as much as parsing a short string, and `for...of`, spreading and
// destructuring run self-hosted iterator code (several microseconds). The hot path below
// therefore uses indexed loops and as few calls per record as it can.

/**
 * Adds one order's drinks to `totals` (Map of drink -> amount, a JS number), or returns why
 * the order is refused, leaving `totals` untouched. Returns null when the order was counted.
 *
 * Amounts stay JS numbers: an item adds at most 1,000,000 and takes at least 7 bytes
 * (`["a",1]`), so a batch of up to 4 GiB (u32 offsets) sums to below 2^53 (6.2e14 < 9e15),
 * where numbers are exact; the u64 saturation of the contract cannot be reached.
 */
export function countOrder(record, totals) {
  // serde would also accept a JSON array for a struct; the contract says object.
  if (record[0] !== 0x7b /* { */ && !startsWithObject(record)) return NOT_AN_OBJECT;

  let text;
  try {
    text = utf8.decode(record);
  } catch {
    return countExact(record, totals); // invalid UTF-8 is fine inside a skipped value
  }
  let order;
  try {
    order = JSON.parse(text);
  } catch (e) {
    // A SyntaxError is one for serde_json too; anything else (too deep for the engine's
    // stack) is for the exact parser, which skips nested values without recursion.
    return e instanceof SyntaxError ? invalid(e.message) : countExact(record, totals);
  }
  // Every refusal from here on is serde_json's too, whatever JSON.parse hid.
  const items = order.items;
  if (items === undefined) return invalid('missing field `items`');
  if (!Array.isArray(items)) return invalid('`items` is not an array');
  const n = items.length;
  if (n === 0) return NO_ITEMS;
  let longest = 0;
  for (let i = 0; i < n; i++) {
    const item = items[i];
    if (typeof item !== 'object' || item === null) return invalid(`item ${i} is not an object`);
    const drink = item.drink;
    const quantity = item.quantity;
    if (typeof drink !== 'string') {
      if (Array.isArray(item)) return invalid(`item ${i} is not an object`);
      return invalid(drink === undefined ? `item ${i}: missing field \`drink\`` : `item ${i}: drink is not a string`);
    }
    if (typeof quantity !== 'number') {
      return invalid(quantity === undefined ? `item ${i}: missing field \`quantity\`` : `item ${i}: quantity is not a number`);
    }
    if (drink === '') return emptyDrink(i);
    if (!(quantity >= 1 && quantity <= MAX_QUANTITY && (quantity | 0) === quantity)) return badQuantity(i, quantity);
    if (drink.length > longest) longest = drink.length;
  }
  // Accepting: only where JSON.parse saw what serde_json sees.
  if (!faithful(text, order, n)) return countExact(record, totals);
  // A UTF-16 code unit is at most 3 UTF-8 bytes: measure only keys that might be too long.
  if (longest * 3 > MAX_KEY_BYTES) {
    for (let i = 0; i < n; i++) {
      const bytes = utf8Length(items[i].drink);
      if (bytes > MAX_KEY_BYTES) return keyTooLong(bytes);
    }
  }
  for (let i = 0; i < n; i++) {
    const item = items[i];
    const total = totals.get(item.drink);
    totals.set(item.drink, total === undefined ? item.quantity : total + item.quantity);
  }
  return null;
}

/**
 * Whether JSON.parse gave what serde_json reads from `text`, for an order it would accept:
 * no escape (a key or drink might decode otherwise, a surrogate be lone), no number with a
 * fraction or an exponent, no repeated `items`, `drink` or `quantity` key.
 */
function faithful(text, order, n) {
  if (text.includes('\\')) return false;
  // Compact JSON as JSON.stringify writes it (so does serde_json's to_string, the load
  // generator's) is faithful if it is what the parsed order writes: it has no repeated key
  // and no number written otherwise. One call instead of the five or more below.
  try {
    if (JSON.stringify(order) === text) return true;
  } catch {
    return false; // too deep for the engine's stack
  }
  // Without escapes a string cannot hold a quote, so `"drink"` in the text is a string token
  // `drink` (a key, or a value): as many as there are items, and every item has the key,
  // means no item has it twice.
  return !FRACTION_OR_EXPONENT.test(text) && once(text, '"items"') && times(text, '"drink"', n) && times(text, '"quantity"', n);
}

function once(text, needle) {
  const first = text.indexOf(needle);
  return first !== -1 && text.indexOf(needle, first + needle.length) === -1;
}

function times(text, needle, n) {
  let at = -needle.length;
  for (let k = 0; k < n; k++) {
    at = text.indexOf(needle, at + needle.length);
    if (at === -1) return false;
  }
  return text.indexOf(needle, at + needle.length) === -1;
}

/** `process`: the order's deltas in first-seen order; throws the reason for a refused order. */
export function process(record) {
  const totals = new Map();
  const refusal = countOrder(record, totals);
  if (refusal !== null) throw refusal; // componentize-js: a thrown string is `result::err`
  return toDeltas(totals);
}

/** `process-batch`: record i is data[ends[i - 1]..ends[i]]; accepted records summed per key. */
export function processBatch(data, ends) {
  const totals = new Map();
  const rejected = [];
  let start = 0;
  for (let index = 0; index < ends.length; index++) {
    const end = ends[index];
    const reason =
      start <= end && end <= data.length
        ? countOrder(data.subarray(start, end), totals)
        : `record bounds ${start}..${end} are outside the batch of ${data.length} bytes`;
    if (reason !== null) rejected.push({ index, reason });
    start = end;
  }
  return { deltas: toDeltas(totals), rejected };
}

function toDeltas(totals) {
  const deltas = [];
  totals.forEach((amount, key) => {
    const big = BigInt(amount);
    deltas.push({ key, amount: big > MAX_U64 ? MAX_U64 : big });
  });
  return deltas;
}

/** `top-n`: count descending, ties by key bytes ascending; at most `n`. */
export function topN(entries, n) {
  if (n === 0) return [];
  if (entries.length <= n) return Array.from(entries).sort(byRank);
  // The best n so far, in order: most entries lose to the last place at once.
  const best = [];
  for (let i = 0; i < entries.length; i++) {
    const entry = entries[i];
    if (best.length === n) {
      if (byRank(entry, best[n - 1]) >= 0) continue;
      best.pop();
    }
    let lo = 0;
    let hi = best.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (byRank(best[mid], entry) < 0) lo = mid + 1;
      else hi = mid;
    }
    best.splice(lo, 0, entry);
  }
  return best;
}

function byRank(a, b) {
  if (a.count !== b.count) return a.count > b.count ? -1 : 1;
  return compareUtf8(a.key, b.key);
}

// UTF-16 order is UTF-8 byte order except between a surrogate pair (U+10000 and up) and a
// unit in U+E000..U+FFFF; strings without units from U+D800 up compare natively.
const HIGH_UNIT = /[\uD800-\uFFFF]/;

/** Compares two strings by their UTF-8 bytes (the same as by code points). */
export function compareUtf8(a, b) {
  if (a === b) return 0;
  if (!HIGH_UNIT.test(a) || !HIGH_UNIT.test(b)) return a < b ? -1 : 1;
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return codePointRank(x) - codePointRank(y);
  }
  return a.length - b.length;
}

function codePointRank(unit) {
  if (unit >= 0xe000) return unit - 0x800;
  if (unit >= 0xd800) return unit + 0x2000;
  return unit;
}

/** The UTF-8 length of a well-formed string. */
export function utf8Length(s) {
  let bytes = 0;
  for (let i = 0; i < s.length; i++) {
    const unit = s.charCodeAt(i);
    // a surrogate pair is 2 units and 4 bytes
    bytes += unit < 0x80 ? 1 : unit < 0x800 || (unit >= 0xd800 && unit <= 0xdfff) ? 2 : 3;
  }
  return bytes;
}

// Rust's `is_ascii_whitespace` (space, \t, \n, form feed, \r) up to a `{`.
function startsWithObject(record) {
  for (let i = 0; i < record.length; i++) {
    const b = record[i];
    if (b === 0x7b) return true;
    if (!(b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0c || b === 0x0d)) return false;
  }
  return false;
}

// --- The exact path: serde_json's reading of the reference's structs, byte by byte. -------

/** Counts a record the way the reference does, for records the fast path cannot judge. */
export function countExact(record, totals) {
  let items;
  try {
    items = new OrderReader(record).order();
  } catch (e) {
    if (e instanceof Refusal) return invalid(e.message);
    throw e;
  }
  if (items.length === 0) return NO_ITEMS;
  for (let i = 0; i < items.length; i++) {
    const { drink, quantity } = items[i];
    if (drink === '') return emptyDrink(i);
    if (!(UNSIGNED_INTEGER.test(quantity) && Number(quantity) >= 1 && Number(quantity) <= MAX_QUANTITY)) {
      return badQuantity(i, quantity);
    }
  }
  for (const { drink } of items) {
    const bytes = utf8Length(drink);
    if (bytes > MAX_KEY_BYTES) return keyTooLong(bytes);
  }
  for (const { drink, quantity } of items) {
    const total = totals.get(drink);
    totals.set(drink, total === undefined ? Number(quantity) : total + Number(quantity));
  }
  return null;
}

class Refusal extends Error {}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/**
 * serde_json's SliceRead + Deserializer, for `Order { items: Vec<Item> }` and
 * `Item { drink: Cow<str>, quantity: Number }`: the strings it decodes (keys of those two
 * structs, drinks) must be valid UTF-8 without lone surrogate escapes; values of unknown
 * fields are only checked for JSON syntax; a struct may also be written as a sequence of its
 * fields (the order itself cannot: countOrder refuses any record not starting with `{`).
 */
class OrderReader {
  constructor(bytes) {
    this.bytes = bytes;
    this.at = 0;
  }

  fail(why) {
    throw new Refusal(`${why} at byte ${this.at}`);
  }

  /** The order's items as [{drink, quantity: the number's text}]. */
  order() {
    let items;
    this.struct('order', ['items'], () => {
      items = this.seq((i) => this.item(i));
    });
    if (items === undefined) this.fail('missing field `items`');
    if (this.peek() !== undefined) this.fail('trailing characters');
    return items;
  }

  item(i) {
    let drink;
    let quantity;
    if (this.peek() === 0x5b /* [ */) this.fail(`item ${i}: invalid type: sequence, expected an item object`);
    this.struct(`item ${i}`, ['drink', 'quantity'], (field) => {
      if (field === 'drink') drink = this.string();
      else quantity = this.number();
    });
    if (drink === undefined) this.fail(`item ${i}: missing field \`drink\``);
    if (quantity === undefined) this.fail(`item ${i}: missing field \`quantity\``);
    return { drink, quantity };
  }

  /** A JSON object: calls `read(field)` for each of `fields` (at most once), skips the rest. */
  struct(what, fields, read) {
    if (this.peek() !== 0x7b /* { */) this.fail(`${what} is not an object`);
    this.at++;
    const seen = new Set();
    if (this.peek() === 0x7d /* } */) {
      this.at++;
      return;
    }
    for (;;) {
      if (this.peek() !== QUOTE) this.fail('key must be a string');
      this.at++;
      const key = this.decodedString();
      this.expect(0x3a /* : */, 'expected `:`');
      if (fields.includes(key)) {
        if (seen.has(key)) this.fail(`duplicate field \`${key}\``);
        seen.add(key);
        read(key);
      } else {
        this.skipValue();
      }
      const next = this.peek();
      this.at++;
      if (next === 0x7d /* } */) return;
      if (next !== 0x2c /* , */) this.fail('expected `,` or `}`');
    }
  }

  /** A JSON array: calls `read(i)` for each element; returns what they returned. */
  seq(read) {
    if (this.peek() !== 0x5b /* [ */) this.fail('expected an array');
    this.at++;
    if (this.peek() === 0x5d /* ] */) {
      this.at++;
      return [];
    }
    const values = [];
    for (;;) {
      values.push(read(values.length));
      const next = this.peek();
      this.at++;
      if (next === 0x5d /* ] */) return values;
      if (next !== 0x2c /* , */) this.fail('expected `,` or `]`');
      if (this.peek() === 0x5d) this.fail('trailing comma');
    }
  }

  /** A string value that serde decodes (a drink). */
  string() {
    if (this.peek() !== QUOTE) this.fail('expected a string');
    this.at++;
    return this.decodedString();
  }

  /** A number that serde keeps as `serde_json::Number`: returns its text. */
  number() {
    const first = this.peek();
    if (first !== 0x2d /* - */ && !isDigit(first)) this.fail('expected a number');
    const start = this.at;
    this.skipNumber();
    return utf8.decode(this.bytes.subarray(start, this.at));
  }

  /** After the opening quote: the string, which must be valid UTF-8 with paired surrogates. */
  decodedString() {
    const { bytes } = this;
    let text = '';
    let run = this.at;
    for (;;) {
      if (this.at >= bytes.length) this.fail('EOF while parsing a string');
      const b = bytes[this.at];
      if (b === QUOTE || b === BACKSLASH) {
        try {
          text += utf8.decode(bytes.subarray(run, this.at));
        } catch {
          this.fail('invalid unicode code point');
        }
        this.at++;
        if (b === QUOTE) return text;
        text += this.escape();
        run = this.at;
      } else if (b < 0x20) {
        this.fail('control character (\\u0000-\\u001F) found while parsing a string');
      } else {
        this.at++;
      }
    }
  }

  /** After a backslash: the escaped text, refusing lone surrogates. */
  escape() {
    const c = this.bytes[this.at++];
    switch (c) {
      case QUOTE: return '"';
      case BACKSLASH: return '\\';
      case 0x2f: return '/';
      case 0x62: return '\b';
      case 0x66: return '\f';
      case 0x6e: return '\n';
      case 0x72: return '\r';
      case 0x74: return '\t';
      case 0x75: { // u
        const unit = this.hex4();
        if (unit >= 0xdc00 && unit <= 0xdfff) this.fail('lone leading surrogate in hex escape');
        if (unit < 0xd800 || unit > 0xdbff) return String.fromCharCode(unit);
        if (this.bytes[this.at] !== BACKSLASH || this.bytes[this.at + 1] !== 0x75) this.fail('unexpected end of hex escape');
        this.at += 2;
        const low = this.hex4();
        if (low < 0xdc00 || low > 0xdfff) this.fail('lone leading surrogate in hex escape');
        return String.fromCharCode(unit, low);
      }
      default:
        if (c === undefined) this.fail('EOF while parsing a string');
        this.fail('invalid escape');
    }
  }

  hex4() {
    if (this.at + 4 > this.bytes.length) this.fail('EOF while parsing a string');
    let value = 0;
    for (let k = 0; k < 4; k++) {
      const digit = hexValue(this.bytes[this.at++]);
      if (digit < 0) this.fail('invalid escape');
      value = value * 16 + digit;
    }
    return value;
  }

  /** Any JSON value, checked for syntax only (serde's ignore_value: no depth limit). */
  skipValue() {
    const open = []; // the enclosing arrays and objects, innermost last
    for (;;) {
      const c = this.peek();
      if (c === 0x5b /* [ */ || c === 0x7b /* { */) {
        this.at++;
        const close = c === 0x5b ? 0x5d : 0x7d;
        if (this.peek() === close) {
          this.at++;
        } else {
          open.push(c);
          if (c === 0x7b) this.skipKey();
          continue;
        }
      } else if (c === QUOTE) {
        this.at++;
        this.skipString();
      } else if (c === 0x2d || isDigit(c)) {
        this.skipNumber();
      } else if (c === 0x74 /* t */) {
        this.literal('true');
      } else if (c === 0x66 /* f */) {
        this.literal('false');
      } else if (c === 0x6e /* n */) {
        this.literal('null');
      } else {
        this.fail(c === undefined ? 'EOF while parsing a value' : 'expected value');
      }
      // A value is done: close what it completes, or go on to the next element.
      for (;;) {
        if (open.length === 0) return;
        const inner = open[open.length - 1];
        const next = this.peek();
        this.at++;
        if (next === 0x2c /* , */) {
          if (inner === 0x7b) this.skipKey();
          break;
        }
        if (next !== (inner === 0x5b ? 0x5d : 0x7d)) this.fail(inner === 0x5b ? 'expected `,` or `]`' : 'expected `,` or `}`');
        open.pop();
      }
    }
  }

  /** In a skipped object: a key and its colon. */
  skipKey() {
    if (this.peek() !== QUOTE) this.fail('key must be a string');
    this.at++;
    this.skipString();
    this.expect(0x3a /* : */, 'expected `:`');
  }

  /** After the opening quote of a skipped string: escapes and control characters are checked, UTF-8 is not. */
  skipString() {
    const { bytes } = this;
    for (;;) {
      if (this.at >= bytes.length) this.fail('EOF while parsing a string');
      const b = bytes[this.at++];
      if (b === QUOTE) return;
      if (b === BACKSLASH) {
        const c = bytes[this.at++];
        if (c === 0x75) this.hex4();
        else if (!(c === QUOTE || c === BACKSLASH || c === 0x2f || c === 0x62 || c === 0x66 || c === 0x6e || c === 0x72 || c === 0x74)) {
          this.fail(c === undefined ? 'EOF while parsing a string' : 'invalid escape');
        }
      } else if (b < 0x20) {
        this.fail('control character (\\u0000-\\u001F) found while parsing a string');
      }
    }
  }

  /** -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
  skipNumber() {
    const { bytes } = this;
    if (bytes[this.at] === 0x2d) this.at++;
    if (bytes[this.at] === 0x30) {
      this.at++;
      if (isDigit(bytes[this.at])) this.fail('invalid number');
    } else if (isDigit(bytes[this.at])) {
      while (isDigit(bytes[this.at])) this.at++;
    } else {
      this.fail('invalid number');
    }
    if (bytes[this.at] === 0x2e /* . */) {
      this.at++;
      if (!isDigit(bytes[this.at])) this.fail('invalid number');
      while (isDigit(bytes[this.at])) this.at++;
    }
    if (bytes[this.at] === 0x65 || bytes[this.at] === 0x45 /* e E */) {
      this.at++;
      if (bytes[this.at] === 0x2b || bytes[this.at] === 0x2d) this.at++;
      if (!isDigit(bytes[this.at])) this.fail('invalid number');
      while (isDigit(bytes[this.at])) this.at++;
    }
  }

  literal(word) {
    for (let k = 0; k < word.length; k++) {
      if (this.bytes[this.at] !== word.charCodeAt(k)) this.fail('expected ident');
      this.at++;
    }
  }

  expect(byte, why) {
    if (this.peek() !== byte) this.fail(why);
    this.at++;
  }

  /** Skips JSON whitespace; the next byte, or undefined at the end. */
  peek() {
    const { bytes } = this;
    while (this.at < bytes.length) {
      const b = bytes[this.at];
      if (b !== 0x20 && b !== 0x0a && b !== 0x09 && b !== 0x0d) return b;
      this.at++;
    }
    return undefined;
  }
}

function isDigit(b) {
  return b >= 0x30 && b <= 0x39;
}

function hexValue(b) {
  if (b >= 0x30 && b <= 0x39) return b - 0x30;
  if (b >= 0x61 && b <= 0x66) return b - 0x57;
  if (b >= 0x41 && b <= 0x46) return b - 0x37;
  return -1;
}

// The drink count as a component (world `counting-guest` of wit/counter.wit): the logic is
// drinks.js; this module only exports it as the interface `counter`. componentize-js maps
// `list<u8>` to a Uint8Array, u64 to a BigInt, `result<T, string>` to returning T or
// throwing the string.
import { process, processBatch, topN } from './drinks.js';

export const counter = { process, processBatch, topN };

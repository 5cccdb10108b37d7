#!/usr/bin/env node
/*
 * Throughput benchmark of the official Node KPL aggregation library.
 *
 * Measures npm `aws-kinesis-agg` 4.2.8 (pinned in package.json beside this
 * file; installed by setup.sh) as a reference point for our own
 * aggregator/deaggregator (`kinesis-cat perf agg`):
 *
 *   node scripts/bench-official/agg_bench.js \
 *       --record-size 100 --keys 1000 --records 2000000 [--runs 5] [--mode kpl|native]
 *
 * The workload is built in memory before any timing: N distinct random
 * 16-character ASCII partition keys, and per record fresh random data bytes
 * of the given size and a key picked uniformly at random.
 *
 * Timed phases (each run; the median of --runs runs is reported):
 *  (a) aggregate, collecting every finished aggregate ({partitionKey, data}
 *      with data = magic + protobuf + MD5):
 *      --mode kpl (default): the library hard-codes its maximum aggregate size
 *        (1 MiB - 20 bytes of protobuf, a module constant that no API sets),
 *        so the KPL default of 51,200 bytes is applied with its public
 *        RecordAggregator methods: calculateUserRecordSize() on the record,
 *        build() when totalBytes + that size would exceed 51,200 - 20 (the
 *        20 bytes are magic + MD5, which the library's totalBytes leaves out),
 *        then addUserRecord(). addUserRecord() computes the size once more
 *        internally; that double work is the price of the library's API.
 *      --mode native: the library's own aggregate(records, handler, done,
 *        onError) entry point with its fixed ~1 MiB aggregates (it runs a
 *        synchronous aggregation pass and hands the aggregates to an
 *        async.queue; the timing ends in the `done` callback).
 *  (b) deaggregate: deaggregateSync(record, true, cb) per aggregate with the
 *      v2 / Lambda record shape {partitionKey, sequenceNumber, data: base64
 *      string} (the base64 strings are made outside the timing, as Lambda
 *      delivers them). It measured about 2x faster than the v3 (AWS SDK v3)
 *      shape {PartitionKey, SequenceNumber, Data: Uint8Array}, whose per-user-
 *      record key re-capitalisation costs more than the base64 decoding it
 *      saves. MD5 checksums are verified (computeChecksums = true). The
 *      library always returns each user record's data as a base64 string.
 *      Every user record is counted and the count is checked.
 * Outside the timing, the first run's output is checked record by record
 * against the input (partition key and data).
 *
 * The last stdout line is a JSON object with the figures; MB = 10^6 bytes of
 * user data (records * record_size).
 */
'use strict';

const crypto = require('crypto');
const path = require('path');

let agg;
try {
  agg = require('aws-kinesis-agg');
} catch (e) {
  console.error(`cannot load aws-kinesis-agg (${e.message}); run ${path.join(__dirname, 'setup.sh')}`);
  process.exit(2);
}
const VERSION = require('aws-kinesis-agg/package.json').version;
const IMPL = `node aws-kinesis-agg ${VERSION}`;
const KPL_MAX_AGG_SIZE = 51200;
const AGG_OVERHEAD = 4 + 16; // magic + MD5, not counted in RecordAggregator.totalBytes
const KEY_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

function parseArgs(argv) {
  const a = { runs: 5, mode: 'kpl', seed: 1 };
  const names = { '--record-size': 'recordSize', '--keys': 'keys', '--records': 'records', '--runs': 'runs', '--seed': 'seed' };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--mode') {
      a.mode = argv[++i];
    } else if (names[arg]) {
      a[names[arg]] = Number(argv[++i]);
    } else {
      throw new Error(`unknown argument ${arg}`);
    }
  }
  for (const k of ['recordSize', 'keys', 'records', 'runs']) {
    if (!Number.isInteger(a[k]) || a[k] < 1) throw new Error(`--${k.replace('S', '-s')} must be an integer >= 1`);
  }
  if (a.mode !== 'kpl' && a.mode !== 'native') throw new Error('--mode must be kpl or native');
  return a;
}

// Small seeded PRNG (mulberry32) for keys and key choice; data comes from crypto.
function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function buildWorkload(recordSize, nKeys, nRecords, seed) {
  const rand = rng(seed);
  const keys = new Set();
  while (keys.size < nKeys) {
    let k = '';
    for (let i = 0; i < 16; i++) k += KEY_ALPHABET[Math.floor(rand() * KEY_ALPHABET.length)];
    keys.add(k);
  }
  const keyList = [...keys];
  const records = new Array(nRecords);
  // one big random pool, sliced: every record has its own random bytes
  const CHUNK = Math.max(1, Math.floor((64 << 20) / recordSize));
  let pool = null;
  for (let i = 0; i < nRecords; i++) {
    const j = i % CHUNK;
    if (j === 0) pool = crypto.randomBytes(Math.min(CHUNK, nRecords - i) * recordSize);
    records[i] = {
      partitionKey: keyList[Math.floor(rand() * keyList.length)],
      data: pool.subarray(j * recordSize, (j + 1) * recordSize),
    };
  }
  return records;
}

function aggregateKpl(records) {
  const limit = KPL_MAX_AGG_SIZE - AGG_OVERHEAD;
  const ra = new agg.RecordAggregator();
  const out = [];
  for (let i = 0; i < records.length; i++) {
    const r = records[i];
    if (ra.length() > 0 && ra.totalBytes + ra.calculateUserRecordSize(r) > limit) {
      out.push(ra.build());
    }
    ra.addUserRecord(r);
  }
  if (ra.length() > 0) out.push(ra.build());
  return out;
}

function aggregateNative(records) {
  return new Promise((resolve, reject) => {
    const out = [];
    agg.aggregate(
      records,
      (encoded, cb) => {
        out.push(encoded);
        cb();
      },
      () => resolve(out),
      (err) => reject(err),
    );
  });
}

function toLambdaRecords(aggregates) {
  return aggregates.map((e, i) => ({
    partitionKey: e.partitionKey,
    sequenceNumber: String(i),
    approximateArrivalTimestamp: 0,
    data: e.data.toString('base64'),
  }));
}

function deaggregate(kinesisRecords) {
  let n = 0;
  let error = null;
  const cb = (err, userRecords) => {
    if (err) error = err;
    else n += userRecords.length;
  };
  for (let i = 0; i < kinesisRecords.length; i++) {
    agg.deaggregateSync(kinesisRecords[i], true, cb);
  }
  if (error) throw error;
  return n;
}

function verify(records, kinesisRecords) {
  let n = 0;
  for (const kr of kinesisRecords) {
    agg.deaggregateSync(kr, true, (err, urs) => {
      if (err) throw err;
      for (const ur of urs) {
        const want = records[n];
        if (!want || ur.partitionKey !== want.partitionKey || !Buffer.from(ur.data, 'base64').equals(want.data)) {
          throw new Error(`verification failed at user record ${n}`);
        }
        n++;
      }
    });
  }
  if (n !== records.length) throw new Error(`verification failed: ${n} of ${records.length} records`);
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const now = () => Number(process.hrtime.bigint()) / 1e9;

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const records = buildWorkload(a.recordSize, a.keys, a.records, a.seed);
  const aggTimes = [];
  const deaggTimes = [];
  let nAggs = 0;
  let aggBytes = 0;
  let maxAgg = 0;
  for (let run = 0; run < a.runs; run++) {
    if (global.gc) global.gc();
    let t0 = now();
    const aggregates = a.mode === 'kpl' ? aggregateKpl(records) : await aggregateNative(records);
    aggTimes.push(now() - t0);

    const kinesisRecords = toLambdaRecords(aggregates);
    if (run === 0) {
      verify(records, kinesisRecords);
      nAggs = aggregates.length;
      aggBytes = aggregates.reduce((s, e) => s + e.data.length, 0);
      maxAgg = aggregates.reduce((m, e) => Math.max(m, e.data.length), 0);
    }
    if (global.gc) global.gc();
    t0 = now();
    const n = deaggregate(kinesisRecords);
    deaggTimes.push(now() - t0);
    if (n !== a.records) throw new Error(`deaggregated ${n} user records, expected ${a.records}`);
    console.error(`run ${run + 1}: aggregate ${aggTimes[run].toFixed(3)}s, deaggregate ${deaggTimes[run].toFixed(3)}s`);
  }
  const ta = median(aggTimes);
  const td = median(deaggTimes);
  const userMb = (a.records * a.recordSize) / 1e6;
  const r1 = (x) => Math.round(x * 10) / 10;
  const r3 = (x) => Math.round(x * 1000) / 1000;
  console.log(
    `# mode ${a.mode}: ${nAggs} aggregates, ${aggBytes} bytes total, ` +
      `${(a.records / nAggs).toFixed(1)} user records and ${(aggBytes / nAggs).toFixed(0)} bytes per aggregate on average, largest ${maxAgg} bytes`,
  );
  console.log(
    JSON.stringify({
      impl: a.mode === 'kpl' ? IMPL : `${IMPL} (native 1 MiB aggregate())`,
      record_size: a.recordSize,
      keys: a.keys,
      records: a.records,
      aggregate_records_per_sec: r1(a.records / ta),
      deaggregate_records_per_sec: r1(a.records / td),
      aggregate_mb_per_sec: r3(userMb / ta),
      deaggregate_mb_per_sec: r3(userMb / td),
    }),
  );
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});

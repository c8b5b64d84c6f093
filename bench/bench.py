#!/usr/bin/env python3
"""`make bench`: the host measured against the machine's ceiling, on one broker, in one run.

Modes, each from its first consumed record until everything is committed:
  raw     rdkafka consume-and-drop of the input topic (loadgen drain): the ceiling
          (first to last record; it has nothing to commit but its final position).
  native  the host pipeline with drink_count compiled in (bench/native): the WASM-free baseline.
  wasm    the host with drink_count.wasm.
  eos     the same with --guarantee exactly-once (default --commit-interval).
  window  the same with tumbling 1-minute event-time windows (--window 1m); the input's
          timestamps advance 10 ms per order, so 1M orders span 2.8 hours of event time.
  hopping the same with 10-minute windows every minute (--window 10m --advance 1m): each
          order counts in 10 windows. Both report the state left at the end (bounded by
          the retention, however long the run).
  python, javascript  the host with the drink count in Python (componentize-py) and in
          JavaScript (componentize-js): what a guest author pays per language (one run each).
  scale1, scale2, scale3  `--scale-out` with 1, 2 and 3 host processes in one group on this
          machine (README, "Scale-out"): the job from its first consumed record (any host) to
          its last commit (any host), and the CPU of all its hosts.
  restore `host restore` of a changelog holding 1,000,000 distinct keys (vs raw drain of it);
          and of one shard of it (`--scale-out --partition 0`: a sixth of the keys).
  restart exactly-once restart with those keys in state, after a crash between a transaction's
          commit and its state write: time to ready (tail replayed) and to the first commit.
  dedup   a processor guest (guests/order_dedup: keyed state, an emit per new order id, a
          stream-time timer per order) over the same orders, at-least-once: what a host call
          per state operation costs next to the counting world's one call per batch.
  revenue the processor guests/shop_revenue over the same orders: a `menu` table lookup per
          item (50 drinks priced by `loadgen menu`), JSON state per shop and hour, a running
          total emitted per order, alerts; at-least-once.
  state-calls  ns per processor host call (state get / put) across the boundary: the
          test_processor guest makes the same call 100,000 times in one `process` call over a
          store of BENCH_KEYS values (bench/native/src/bin/state-calls.rs).
  latency wasm host at a fixed offered load; record timestamp -> changelog acknowledged
          (the run with the median p99 of BENCH_RUNS runs, each on fresh topics).
With --peers (`make bench-peers`), on the same broker and data, one after another:
  kstreams  the same drink count in Kafka Streams (bench/peers/kstreams), its defaults:
            at-least-once, 30 s commit interval, record caching on; 2 stream threads.
  go-seed   the tutorial's Go design (bench/peers/go-seed): franz-go + Pebble, the seed's loop.
  kstreams-dedup  the order dedup in Kafka Streams' Processor API (OrderDedupStreams: two
            persistent KeyValueStores, a stream-time punctuator), at-least-once,
            commit.interval.ms=100; next to the `dedup` row.
A peer's time runs from the first record it reports consuming to the moment the driver sees
its group's commits reach the end of the input (polled every 50 ms).

Each of raw/native/wasm/eos runs 3 times, interleaved; the table shows medians. CPU seconds and
peak RSS come from the kernel's accounting of each child process (wait4). Results go to
bench/RESULTS.md (git keeps the history).

Environment: BENCH_ORDERS (1000000), BENCH_RUNS (3), BENCH_KEYS (1000000), BENCH_PROFILE (release),
BENCH_LATENCY_RATE (50000), BENCH_LATENCY_SECONDS (60), STREAMHOST_BROKERS (127.0.0.1:9092).
"""

import datetime
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.path.join(TARGET, os.environ.get("BENCH_PROFILE", "release"))
HOST, NATIVE, LOADGEN, STATE_CALLS = (os.path.join(BIN, b) for b in ("host", "host-native", "loadgen", "state-calls"))
GUEST = os.path.join(ROOT, "build", "guests", "drink_count.wasm")
LANGUAGE_GUESTS = {lang: os.path.join(ROOT, "build", "guests", f"drink_count_{suffix}.wasm")
                   for lang, suffix in (("python", "py"), ("javascript", "js"))}
EVENT_TIME_STEP_MS = 10
WINDOW_FLAGS = {"window": ["--window", "1m"], "hopping": ["--window", "10m", "--advance", "1m"]}
DEDUP, REVENUE, TEST_PROCESSOR = (os.path.join(ROOT, "build", "guests", f"{g}.wasm")
                                  for g in ("order_dedup", "shop_revenue", "test_processor"))
BROKERS = os.environ.get("STREAMHOST_BROKERS", "127.0.0.1:9092")
ORDERS = int(os.environ.get("BENCH_ORDERS", 1_000_000))
RUNS = int(os.environ.get("BENCH_RUNS", 3))
EVENT_SPAN_MIN = ORDERS * EVENT_TIME_STEP_MS / 60_000
KEYS = int(os.environ.get("BENCH_KEYS", 1_000_000))
LATENCY_RATE = int(os.environ.get("BENCH_LATENCY_RATE", 50_000))
LATENCY_SECONDS = int(os.environ.get("BENCH_LATENCY_SECONDS", 60))
PEERS = "--peers" in sys.argv
# `--probe native,wasm`: only those modes (any of the table's, and `restart`: the exactly-once
# restart with 1M keys), rates and step times printed,
# RESULTS.md left alone. For trying a change quickly; `make bench` is the measurement of record.
PROBE = sys.argv[sys.argv.index("--probe") + 1].split(",") if "--probe" in sys.argv else None
CACHE = os.environ.get("CACHE", os.path.join(os.path.expanduser("~"), ".cache", "streamhost"))
GO_SEED = os.path.join(CACHE, "peers", "go-seed")
KSTREAMS_CP = os.path.join(ROOT, "bench", "peers", "kstreams", "target", "drink-count-streams-1.jar") + ":" + \
    os.path.join(CACHE, "peers", "kstreams-deps", "*")
RUN_ID = uuid.uuid4().hex[:8]
WORK = tempfile.mkdtemp(prefix="streamhost-bench-")
ORDER_FLAGS = ["--drinks", "50", "--zipf", "1.0", "--malformed-every", "100", "--compression", "lz4", "--seed", "7"]


# The heading under which bench/RESULTS.md keeps before/after comparisons across rewrites.
COMPARISONS = "## Before and after (comparisons kept across runs)"


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


class Measured:
    def __init__(self, code, out, err, cpu, rss_mib, wall):
        self.code, self.out, self.err, self.cpu, self.rss_mib, self.wall = code, out, err, cpu, rss_mib, wall


def run(cmd, stop_after=None, env=None):
    """Runs cmd to completion (or SIGTERM after stop_after()), with its CPU time and peak RSS."""
    out_path, err_path = os.path.join(WORK, "out"), os.path.join(WORK, "err")
    with open(out_path, "w") as out, open(err_path, "w") as err:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env={**os.environ, **(env or {})})
        if stop_after:
            stop_after(proc)
            proc.send_signal(signal.SIGTERM)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
    code = os.waitstatus_to_exitcode(status)
    if stop_after and code in (143, -signal.SIGTERM):
        code = 0  # stopped by us (the JVM reports SIGTERM as 143 even after a clean shutdown hook)
    text_out, text_err = open(out_path).read(), open(err_path).read()
    m = Measured(code, text_out, text_err, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, wall)
    if code != 0:
        raise SystemExit(f"bench: {' '.join(cmd[:2])} failed ({code}):\n{text_err[-3000:]}")
    return m


def topics(name, partitions=6):
    """Creates input/changelog/output topics named after `name`; returns the host flags."""
    flags = ["--brokers", BROKERS, "--input", f"bench-{RUN_ID}.orders", "--changelog", f"bench-{RUN_ID}.{name}.changelog",
             "--output", f"bench-{RUN_ID}.{name}.board"]
    run([HOST, "create-topics", "--partitions", str(partitions)] + flags)
    return flags


def processor_flags(mode, name):
    """The outputs (and for `revenue` the menu table, filled) of a processor mode's run."""
    topic = f"bench-{RUN_ID}.{name}"
    if mode == "dedup":
        return ["--output-topic", f"deduped={topic}.deduped", "--create-topics"]
    flags = ["--output-topic", f"totals={topic}.totals", "--output-topic", f"alerts={topic}.alerts",
             "--table", f"menu={topic}.menu"]
    run([HOST, "create-topics", "--brokers", BROKERS, "--input", f"bench-{RUN_ID}.orders", "--changelog",
         f"{topic}.changelog", "--output", f"{topic}.board"] + flags)
    run([LOADGEN, "--brokers", BROKERS, "--topic", f"{topic}.menu", "menu"])
    return flags


def state_calls():
    """ns per processor host call, from bench/native's state-calls (its own medians)."""
    m = run([STATE_CALLS, "--guest", TEST_PROCESSOR, "--keys", str(KEYS)])
    r = json.loads(m.out.strip().splitlines()[-1])
    log("state calls: " + ", ".join(f"{k} {v}" for k, v in r.items()))
    return r


def summary(stderr):
    for line in stderr.splitlines():
        if '"run summary' in line:
            return json.loads(line)["fields"]
    raise SystemExit("bench: no run summary in the host's log:\n" + stderr[-3000:])


def dump_summary(state):
    """Keys in state, the windows they are in, and the totals line of `host dump`, read from
    a file line by line: this process must stay small, since a child's peak RSS as the kernel
    reports it is at least this process's at the fork (Linux keeps the high-water mark of the
    memory image a child replaces at exec), and a processor's dump has a line per key."""
    path = os.path.join(WORK, "dump")
    with open(path, "w") as out:
        subprocess.run([HOST, "dump", "--state-dir", state], stdout=out, stderr=subprocess.DEVNULL, check=True)
    lines, windows, windowed, last = 0, set(), 0, ""
    with open(path) as dump:
        for line in dump:
            lines += 1
            last = line
            if '"window_start_ms"' in line:
                windowed += 1
                windows.add(json.loads(line)["window_start_ms"])
    os.remove(path)
    return (windowed if windowed else lines - 1), len(windows), json.loads(last)


def pipeline(binary, name, extra=(), guest=GUEST):
    flags = topics(name)
    state = os.path.join(WORK, f"state-{name}")
    subcommand = ["run"] if binary == HOST else []  # host-native takes run's options directly
    m = run([binary] + subcommand + ["--guest", guest, "--group", f"bench-{RUN_ID}-{name}", "--state-dir", state, "--stop-at-end",
             "--instance-id", "none", "--log-format", "json"] + flags + list(extra),
            env={"RUST_LOG": "info,host::pipeline=debug,host::engine::committer=debug,host::engine::direct=debug"})
    # What state holds at the end: counters, and the windows they are in.
    state_keys, state_windows, totals = dump_summary(state)
    shutil.rmtree(state, ignore_errors=True)
    s = summary(m.err)
    # Where the time goes: the per-batch step timings (debug log). The guest runs on its own
    # thread; the pipeline thread's steps include the part of it that it waited for.
    steps = {k: 0.0 for k in ("guest_wait_ms", "send_ms", "changelog_ms", "state_ms", "commit_ms")}
    guest_busy = 0.0
    for line in m.err.splitlines():
        if '"message":"batch"' in line:
            fields = json.loads(line)["fields"]
            for k in steps:
                steps[k] += fields.get(k, 0) / 1000
            guest_busy += fields["guest_ms"] / 1000
        elif '"message":"transaction committed and applied"' in line:
            fields = json.loads(line)["fields"]
            steps["txn_commit_ms"] = steps.get("txn_commit_ms", 0.0) + fields["commit_ms"] / 1000
            steps["state_ms"] += fields["state_ms"] / 1000
    steps["poll and the rest"] = max(0.0, s["seconds"] - sum(steps.values()))
    return {"rate": s["records_per_second"], "cpu": m.cpu, "rss": m.rss_mib, "records": s["records"],
            "changelog_per_record": s["changelog_records"] / max(1, s["records"]), "batches": s["batches"],
            "seconds": s["seconds"], "steps": steps, "guest_busy": guest_busy, "state_keys": state_keys,
            "state_windows": state_windows, "totals": (totals["records_processed"], totals["records_skipped"])}


def eos_restart(state, keys_topic, name="restart"):
    """exactly-once restart after a crash, with the 1,000,000 restored keys in state: a host
    counts orders into the keys changelog and crashes (fault injection) right after a
    transaction commit, before its state write, so state is behind the changelog; then the
    restarted host's time from spawn to ready (tail replayed) and to its first commit."""
    input_topic = f"bench-{RUN_ID}.{name}.orders"
    flags = ["--brokers", BROKERS, "--input", input_topic, "--changelog", keys_topic,
             "--output", f"bench-{RUN_ID}.{name}.board"]
    run([HOST, "create-topics", "--partitions", "6"] + flags)
    run([LOADGEN, "--brokers", BROKERS, "--topic", input_topic, "fill", "--count", "200000"] + ORDER_FLAGS)
    args = [HOST, "run", "--guest", GUEST, "--group", f"bench-{RUN_ID}-{name}", "--state-dir", state,
            "--guarantee", "exactly-once", "--max-batch", "1000", "--log-format", "json"] + flags
    # A transaction per batch, so the 20th commit comes early in the input.
    crash = subprocess.run(args + ["--commit-interval", "1ms"], env={**os.environ, "STREAMHOST_FAULT": "after-changelog:20"},
                           capture_output=True, text=True, timeout=300)
    if "fault injection: aborting" not in crash.stderr:
        raise SystemExit("bench: the restart benchmark's host did not crash as planned:\n" + crash.stderr[-3000:])
    err_path = os.path.join(WORK, "restart.err")
    with open(err_path, "w") as err:
        started = time.monotonic()
        proc = subprocess.Popen(args + ["--stop-at-end"], stdout=subprocess.DEVNULL, stderr=err,
                                env={**os.environ, "RUST_LOG": "info,host=debug"})
        ready = first_commit = None
        while proc.poll() is None and first_commit is None:
            text = open(err_path).read()
            if ready is None and "host running" in text:
                ready = time.monotonic() - started
            if "transaction committed and applied" in text:
                first_commit = time.monotonic() - started
            time.sleep(0.01)
        proc.wait()
    text = open(err_path).read()
    tail = [json.loads(line)["fields"]["records_read"] for line in text.splitlines()
            if "replayed the changelog's tail" in line]
    if ready is None or first_commit is None or not tail:
        raise SystemExit("bench: the restarted host did not get going:\n" + text[-3000:])
    log(f"exactly-once restart with {KEYS} keys: ready in {ready:.2f} s, first commit at {first_commit:.2f} s, "
        f"tail of {tail[0]} changelog records")
    return {"ready": ready, "first_commit": first_commit, "tail": tail[0]}


def kstreams_restart():
    """Kafka Streams under exactly_once_v2 with KEYS keys in its store, killed (-9) and restarted:
    time from the JVM's spawn to its store's first update (after the store's restore)."""
    input_topic, board = f"bench-{RUN_ID}.ksrestart.orders", f"bench-{RUN_ID}.ksrestart.board"
    run([HOST, "create-topics", "--partitions", "6", "--brokers", BROKERS, "--input", input_topic,
         "--changelog", f"bench-{RUN_ID}.ksrestart.unused", "--output", board])
    run([LOADGEN, "--brokers", BROKERS, "--topic", input_topic, "distinct-orders", "--count", str(KEYS)])
    app, state = f"bench-{RUN_ID}-ksrestart", os.path.join(WORK, "ksrestart")
    cmd = ["java", "-Xmx2g", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", KSTREAMS_CP,
           "streamhost.bench.DrinkCountStreams", "--brokers", BROKERS, "--input", input_topic, "--output", board,
           "--app-id", app, "--state-dir", state, "--guarantee", "exactly_once_v2", "--instance-id", f"ks-{RUN_ID}"]
    log(f"kstreams restart: counting {KEYS} distinct drinks under exactly_once_v2")
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run([LOADGEN, "--brokers", BROKERS, "--topic", input_topic, "wait-committed", "--group", app,
                    "--timeout", "15m"], check=True, capture_output=True)
    first.kill()
    first.wait()
    # Something to process once it is back.
    run([LOADGEN, "--brokers", BROKERS, "--topic", input_topic, "distinct-orders", "--count", "1"])
    started_ms = time.time() * 1000
    again = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    seconds = None
    for line in again.stdout:
        if "first_aggregate_ms" in line:
            seconds = (json.loads(line)["first_aggregate_ms"] - started_ms) / 1000
            break
    again.send_signal(signal.SIGTERM)
    try:
        again.wait(timeout=60)
    except subprocess.TimeoutExpired:
        again.kill()
    shutil.rmtree(state, ignore_errors=True)
    if seconds is None:
        raise SystemExit("bench: the restarted Kafka Streams peer processed nothing")
    log(f"kstreams restart: first record counted in its store {seconds:.2f} s after spawn")
    return {"first_record": seconds}


def scale_out(hosts, name):
    """`hosts` scale-out host processes at once on the input; rate of the whole job."""
    flags = ["--brokers", BROKERS, "--input", f"bench-{RUN_ID}.orders", "--changelog", f"bench-{RUN_ID}.{name}.changelog",
             "--output", f"bench-{RUN_ID}.{name}.board", "--scale-out"]
    run([HOST, "create-topics", "--partitions", "6"] + flags)
    procs = []
    for h in range(hosts):
        out, err = (open(os.path.join(WORK, f"{name}-{h}.{kind}"), "w+") for kind in ("out", "err"))
        cmd = [HOST, "run", "--guest", GUEST, "--group", f"bench-{RUN_ID}-{name}", "--state-dir",
               os.path.join(WORK, f"state-{name}-{h}"), "--stop-at-end", "--log-format", "json"] + flags
        procs.append((subprocess.Popen(cmd, stdout=out, stderr=err), err))
    cpu, rss, first, last = 0.0, 0.0, math.inf, 0.0
    for proc, err in procs:
        _, status, usage = os.wait4(proc.pid, 0)
        err.seek(0)
        text = err.read()
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"bench: scale-out host failed:\n{text[-3000:]}")
        cpu += usage.ru_utime + usage.ru_stime
        rss = max(rss, usage.ru_maxrss / 1024)
        line = next(json.loads(l) for l in text.splitlines() if '"run summary' in l)
        if line["fields"]["records"] == 0:
            continue  # a host that got no partition
        end = datetime.datetime.fromisoformat(line["timestamp"]).timestamp()
        first, last = min(first, end - line["fields"]["seconds"]), max(last, end)
    board = json.loads(run([HOST, "board", "--guest", GUEST, "--brokers", BROKERS, "--output",
                            f"bench-{RUN_ID}.{name}.board", "--json"]).out)
    for h in range(hosts):
        shutil.rmtree(os.path.join(WORK, f"state-{name}-{h}"), ignore_errors=True)
    return {"rate": ORDERS / (last - first), "cpu": cpu, "rss": rss, "records": ORDERS,
            "totals": (board["records_processed"], board["records_skipped"])}


def log_lines(path):
    """A host's JSON log lines so far (the last one may still be half-written)."""
    lines = []
    for text in open(path).read().splitlines():
        try:
            lines.append(json.loads(text))
        except ValueError:
            pass
    return lines


def log_time(line):
    return datetime.datetime.fromisoformat(line["timestamp"]).timestamp()


def failover(replicas, name):
    """Three --scale-out hosts with KEYS keys in their shards' changelog, orders arriving
    (--max-rate), `kill -9` of the host with the most shards once every shard is open (and
    every standby copy warm). Two spans: from the kill to the group handing the dead host's
    shards to the survivors (Kafka's detection: the session timeout, 6 s here), and from that
    to the last of them open on its new host, restored in full or promoted from a warm copy
    (it counts from its next poll)."""
    base = f"bench-{RUN_ID}.{name}"
    flags = ["--brokers", BROKERS, "--input", f"{base}.orders", "--changelog", f"{base}.changelog",
             "--output", f"{base}.board", "--scale-out"]
    run([HOST, "create-topics", "--partitions", "6"] + flags)
    run([LOADGEN, "--brokers", BROKERS, "--topic", f"{base}.changelog", "keys", "--count", str(KEYS)])
    run([LOADGEN, "--brokers", BROKERS, "--topic", f"{base}.orders", "fill", "--count", "1000000"] + ORDER_FLAGS)
    hosts = []
    for h in range(3):
        err = os.path.join(WORK, f"{name}-{h}.err")
        cmd = [HOST, "run", "--guest", GUEST, "--group", f"bench-{RUN_ID}-{name}", "--state-dir",
               os.path.join(WORK, f"state-{name}-{h}"), "--max-rate", "2000", "--log-format", "json",
               "--kafka-config", "session.timeout.ms=6000", "--standby-replicas", str(replicas)] + flags
        if replicas == 0:
            cmd = cmd[:cmd.index("--standby-replicas")] + cmd[cmd.index("--standby-replicas") + 2:]
        hosts.append((subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(err, "w")), err))

    def messages(err, text):
        return [l for l in log_lines(err) if l["fields"].get("message", "").startswith(text)]

    def opened(err):
        return {l["fields"]["shard"] for l in messages(err, "shard open")}

    def held(err):
        """The shards a host holds now: opened and not closed since."""
        shards = set()
        for l in log_lines(err):
            message = l["fields"].get("message", "")
            if message.startswith("shard open"):
                shards.add(l["fields"]["shard"])
            elif message.startswith("shard closed"):
                shards.discard(l["fields"]["shard"])
        return shards

    deadline = time.monotonic() + 300
    while True:
        open_now = set().union(*(opened(err) for _, err in hosts))
        warm = sum(len({l["fields"]["shard"] for l in messages(err, "standby copy kept warm")}) for _, err in hosts)
        settled = sum(len(held(err)) for _, err in hosts) == 6
        if len(open_now) == 6 and settled and warm >= 6 * min(replicas, 2):
            break
        if time.monotonic() > deadline or any(p.poll() is not None for p, _ in hosts):
            raise SystemExit(f"bench: failover hosts did not get going:\n" + open(hosts[0][1]).read()[-3000:])
        time.sleep(0.2)
    time.sleep(2)
    victim = max(range(3), key=lambda h: len(held(hosts[h][1])))
    victim_shards = held(hosts[victim][1])
    killed = time.time()
    hosts[victim][0].kill()
    hosts[victim][0].wait()
    survivors = [err for h, (_, err) in enumerate(hosts) if h != victim]
    while True:
        reopened = {}
        for err in survivors:
            for l in messages(err, "shard open"):
                if log_time(l) > killed and l["fields"]["shard"] in victim_shards:
                    reopened[l["fields"]["shard"]] = l
        if len(reopened) == len(victim_shards):
            break
        if time.monotonic() > deadline + 300:
            raise SystemExit(f"bench: the survivors did not take the shards over:\n" + open(survivors[0]).read()[-3000:])
        time.sleep(0.2)
    assigned = min(log_time(l) for err in survivors for l in messages(err, "partitions assigned")
                   if log_time(l) > killed and any(f"repartition\", {p})" in l["fields"].get("partitions", "")
                                                   for p in victim_shards))
    promoted = sum(1 for err in survivors for l in messages(err, "standby copy promoted")
                   if log_time(l) > killed and l["fields"]["shard"] in victim_shards)
    replayed = sum(l["fields"]["changelog_records_read"] for l in reopened.values())
    for proc, _ in hosts:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait()
    for h in range(3):
        if not os.environ.get("BENCH_KEEP_WORK"):
            shutil.rmtree(os.path.join(WORK, f"state-{name}-{h}"), ignore_errors=True)
    result = {"detect": assigned - killed, "takeover": max(log_time(l) for l in reopened.values()) - assigned,
              "shards": len(victim_shards), "warm": promoted, "replayed": replayed}
    log(f"failover with --standby-replicas {replicas}: detected {result['detect']:.2f} s after the kill, "
        f"{len(victim_shards)} shards open {result['takeover']:.2f} s later ({promoted} from warm copies, "
        f"{replayed:,} changelog records read)")
    return result


def failovers():
    """The failover, without standby replicas, with one and with two (every other host), a
    run each; per mode its spans and what the new owners read."""
    modes = [int(m) for m in os.environ.get("BENCH_FAILOVER_REPLICAS", "0,1,2").split(",")]
    return {replicas: failover(replicas, f"failover{replicas}") for replicas in modes}


def raw(topic, name):
    m = run([LOADGEN, "--brokers", BROKERS, "--topic", topic, "drain", "--group", f"bench-{RUN_ID}-{name}"])
    d = json.loads(m.out.strip().splitlines()[-1])
    return {"rate": d["records_per_second"], "cpu": m.cpu, "rss": m.rss_mib, "records": d["records"]}


def peer(name, cmd, group, input_topic):
    """Runs a peer until its group has committed the whole input; returns its rate and costs."""
    done = {}

    def wait(proc):
        waiter = subprocess.Popen([LOADGEN, "--brokers", BROKERS, "--topic", input_topic, "wait-committed", "--group", group,
                                   "--timeout", "15m"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while waiter.poll() is None:
            if proc.poll() is not None:  # the peer died: say why instead of waiting out the timeout
                waiter.kill()
                raise SystemExit(f"bench: peer {name} exited:\n" + open(os.path.join(WORK, "err")).read()[-3000:])
            time.sleep(0.05)
        out, err = waiter.communicate()
        if waiter.returncode != 0:
            raise SystemExit(f"bench: peer {name} did not finish: {err[-2000:]}")
        done.update(json.loads(out.strip().splitlines()[-1]))

    m = run(cmd, stop_after=wait)
    first = next(json.loads(l)["first_record_ms"] for l in m.out.splitlines() if "first_record_ms" in l)
    seconds = (done["done_ms"] - first) / 1000
    return {"rate": ORDERS / seconds, "cpu": m.cpu, "rss": m.rss_mib, "records": ORDERS}


def run_peers(input_topic, round_no):
    out = {}
    state = os.path.join(WORK, f"kstreams-{round_no}")
    app = f"bench-{RUN_ID}-kstreams{round_no}"
    board = topics(f"kstreams{round_no}")[7]
    out["kstreams"] = peer("kstreams", ["java", "-Xmx2g", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", KSTREAMS_CP,
                                        "streamhost.bench.DrinkCountStreams",
                                        "--brokers", BROKERS, "--input", input_topic, "--output", board,
                                        "--app-id", app, "--state-dir", state], app, input_topic)
    shutil.rmtree(state, ignore_errors=True)
    state = os.path.join(WORK, f"ksdedup-{round_no}")
    app = f"bench-{RUN_ID}-ksdedup{round_no}"
    out["kstreams-dedup"] = peer("kstreams-dedup", ["java", "-Xmx2g", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                                                    "-cp", KSTREAMS_CP, "streamhost.bench.OrderDedupStreams",
                                                    "--brokers", BROKERS, "--input", input_topic,
                                                    "--output", topics(f"ksdedup{round_no}")[7],
                                                    "--app-id", app, "--state-dir", state,
                                                    "--commit-interval-ms", "100"], app, input_topic)
    shutil.rmtree(state, ignore_errors=True)
    name = f"goseed{round_no}"
    flags = topics(name)
    state = os.path.join(WORK, name)
    group = f"bench-{RUN_ID}-{name}"
    out["go-seed"] = peer("go-seed", [GO_SEED, "-brokers", BROKERS, "-input", input_topic, "-changelog", flags[5],
                                      "-output", flags[7], "-group", group, "-state-dir", state], group, input_topic)
    shutil.rmtree(state, ignore_errors=True)
    return out


def med(results, key):
    return statistics.median(r[key] for r in results)


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    mem = next((int(l.split()[1]) // 1024 // 1024 for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    host = subprocess.run([HOST, "--version"], capture_output=True, text=True).stdout.strip()
    kafka = re.search(r"<kafka.version>(.*)</kafka.version>", open(os.path.join(ROOT, "kafka", "pom.xml")).read()).group(1)
    return cpu, os.cpu_count(), mem, rustc, host, kafka


def main():
    for path in (HOST, NATIVE, LOADGEN, STATE_CALLS, GUEST, *LANGUAGE_GUESTS.values(), DEDUP, REVENUE, TEST_PROCESSOR):
        if not os.path.exists(path):
            raise SystemExit(f"bench: {path} is missing (make bench builds it)")
    input_topic = f"bench-{RUN_ID}.orders"
    topics("setup")
    log(f"producing {ORDERS} orders to {input_topic} (6 partitions, lz4, 50 drinks, Zipf 1.0, 1% malformed)")
    run([LOADGEN, "--brokers", BROKERS, "--topic", input_topic, "fill", "--count", str(ORDERS), "--event-time-step", f"{EVENT_TIME_STEP_MS}ms"]
        + ORDER_FLAGS)

    results = {"raw": [], "native": [], "wasm": [], "eos": [], "window": [], "hopping": [], "python": [], "javascript": [],
               "scale1": [], "scale2": [], "scale3": [], "dedup": [], "revenue": []}
    if PEERS:
        results.update({"kstreams": [], "go-seed": [], "kstreams-dedup": []})
        for path in (GO_SEED, KSTREAMS_CP.split(":")[0]):
            if not os.path.exists(path):
                raise SystemExit(f"bench: {path} is missing (make bench-peers builds it)")
    for i in range(RUNS):
        if PEERS:
            for mode, r in run_peers(input_topic, i).items():
                results[mode].append(r)
                log(f"round {i + 1}/{RUNS} {mode}: {r['rate']:,.0f} records/s")
        every = ("raw", "native", "wasm", "eos", "window", "hopping", "python", "javascript", "scale1", "scale2", "scale3",
                 "dedup", "revenue")
        for mode in [m for m in PROBE if m not in ("restart", "state-calls", "failover")] if PROBE else every:
            if mode == "raw":
                r = raw(input_topic, f"raw{i}")
            elif mode.startswith("scale"):
                r = scale_out(int(mode[-1]), f"{mode}{i}")
            elif mode == "eos":
                r = pipeline(HOST, f"{mode}{i}", ["--guarantee", "exactly-once"])
            elif mode in WINDOW_FLAGS:
                r = pipeline(HOST, f"{mode}{i}", WINDOW_FLAGS[mode])
            elif mode in ("dedup", "revenue"):
                guest = DEDUP if mode == "dedup" else REVENUE
                r = pipeline(HOST, f"{mode}{i}", processor_flags(mode, f"{mode}{i}"), guest=guest)
            elif mode in LANGUAGE_GUESTS:
                if i > 0 and not PROBE:
                    continue  # one run: the gap to Rust is far larger than the noise
                r = pipeline(HOST, f"{mode}{i}", guest=LANGUAGE_GUESTS[mode])
            else:
                r = pipeline(NATIVE if mode == "native" else HOST, f"{mode}{i}")
            assert r["records"] == ORDERS, f"{mode} saw {r['records']} of {ORDERS} records"
            # Every mode counts the same records (windowed ones too: no record may be late here).
            if "totals" in r and results["wasm"] and "totals" in results["wasm"][0] and mode != "dedup":
                assert r["totals"] == results["wasm"][0]["totals"], f"{mode} counted {r['totals']}, wasm {results['wasm'][0]['totals']}"
            results[mode].append(r)
            log(f"round {i + 1}/{RUNS} {mode}: {r['rate']:,.0f} records/s, {r['cpu']:.1f} CPU s, {r['rss']:.0f} MiB"
                + (f", guest thread busy {r['guest_busy']:.2f} s; pipeline thread: "
                   + ", ".join(f"{k.replace('_ms', '')} {v:.2f} s" for k, v in r["steps"].items())
                   if "steps" in r else ""))
    if PROBE:
        for mode in (m for m in PROBE if m not in ("restart", "state-calls", "failover")):
            log(f"probe {mode}: median {med(results[mode], 'rate'):,.0f} records/s")
        if "state-calls" in PROBE:
            state_calls()
        if "failover" in PROBE:
            failovers()
        if "restart" in PROBE:
            # The exactly-once restart with KEYS keys in state, as the full run measures it.
            keys_topic = f"bench-{RUN_ID}.keys.changelog"
            run([HOST, "create-topics", "--partitions", "6", "--brokers", BROKERS, "--input", input_topic,
                 "--changelog", keys_topic, "--output", f"bench-{RUN_ID}.keys.board"])
            run([LOADGEN, "--brokers", BROKERS, "--topic", keys_topic, "keys", "--count", str(KEYS)])
            restarts = []
            for i in range(RUNS):
                state = os.path.join(WORK, f"state-restart{i}")
                run([HOST, "restore", "--brokers", BROKERS, "--changelog", keys_topic, "--state-dir", state])
                restarts.append(eos_restart(state, keys_topic, f"restart{i}"))
                shutil.rmtree(state, ignore_errors=True)
            log(f"probe restart: median ready {med(restarts, 'ready'):.2f} s, first commit {med(restarts, 'first_commit'):.2f} s")
        return

    log(f"restore: changelog of {KEYS} distinct keys")
    keys_topic = f"bench-{RUN_ID}.keys.changelog"
    run([HOST, "create-topics", "--partitions", "6", "--brokers", BROKERS, "--input", input_topic,
         "--changelog", keys_topic, "--output", f"bench-{RUN_ID}.keys.board"])
    run([LOADGEN, "--brokers", BROKERS, "--topic", keys_topic, "keys", "--count", str(KEYS)])
    keys_raw = raw(keys_topic, "keysraw")
    state = os.path.join(WORK, "state-restore")
    m = run([HOST, "restore", "--brokers", BROKERS, "--changelog", keys_topic, "--state-dir", state])
    found = re.search(r"restored (?:about )?(\d+) keys from (\d+) changelog records .* in ([\d.]+)s", m.out)
    restore = {"keys": int(found.group(1)), "records": int(found.group(2)), "seconds": float(found.group(3)),
               "cpu": m.cpu, "rss": m.rss_mib}
    restore["rate"] = restore["records"] / restore["seconds"]
    log(f"restore: {restore['rate']:,.0f} records/s ({restore['keys']} keys)")
    # One shard of the same changelog (what a scale-out host restores when a partition moves).
    shard_state = os.path.join(WORK, "state-shard")
    m = run([HOST, "restore", "--brokers", BROKERS, "--changelog", keys_topic, "--state-dir", shard_state,
             "--scale-out", "--partition", "0"])
    found = re.search(r"restored (?:about )?(\d+) keys from (\d+) changelog records .* in ([\d.]+)s", m.out)
    restore["shard"] = {"keys": int(found.group(1)), "seconds": float(found.group(3))}
    shutil.rmtree(shard_state, ignore_errors=True)
    log(f"restore of one shard: {restore['shard']['keys']} keys in {restore['shard']['seconds']:.2f} s")
    restart = eos_restart(state, keys_topic)
    shutil.rmtree(state, ignore_errors=True)
    calls = state_calls()
    failover_runs = failovers()
    if PEERS:
        restart["kstreams"] = kstreams_restart()["first_record"]

    log(f"latency: {LATENCY_RATE} orders/s for {LATENCY_SECONDS}s, {RUNS} runs")
    state = os.path.join(WORK, "state-latency")
    # Latency on this small box varies a lot from run to run: take the run with the median p99.
    # Each run gets fresh topics, so no run starts behind another's records.
    runs = []
    for i in range(RUNS):
        lat_input = f"bench-{RUN_ID}.latency{i}.orders"
        lat_flags = ["--brokers", BROKERS, "--input", lat_input, "--changelog", f"bench-{RUN_ID}.latency{i}.changelog",
                     "--output", f"bench-{RUN_ID}.latency{i}.board"]
        run([HOST, "create-topics", "--partitions", "6"] + lat_flags)

        def load(proc, lat_input=lat_input):
            deadline = time.monotonic() + 60
            while "host running" not in open(os.path.join(WORK, "err")).read():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("bench: latency host did not start")
                time.sleep(0.2)
            subprocess.run([LOADGEN, "--brokers", BROKERS, "--topic", lat_input, "seed", "--rate", str(LATENCY_RATE),
                            "--duration", f"{LATENCY_SECONDS}s", "--linger-ms", "5"] + ORDER_FLAGS,
                           check=True, capture_output=True)
            time.sleep(5)

        m = run([HOST, "run", "--guest", GUEST, "--group", f"bench-{RUN_ID}-latency{i}", "--state-dir", state,
                 "--instance-id", "none", "--log-format", "json"] + lat_flags, stop_after=load)
        lat = summary(m.err)
        runs.append((lat, m))
        shutil.rmtree(state, ignore_errors=True)
        log(f"latency run {i + 1}/{RUNS}: p50 {lat['latency_p50_ms']} ms, p99 {lat['latency_p99_ms']} ms, "
            f"max {lat['latency_max_ms']} ms")
    runs.sort(key=lambda r: r[0]["latency_p99_ms"])
    lat, m = runs[len(runs) // 2]
    lat["p99s"] = [r[0]["latency_p99_ms"] for r in runs]

    write_results(results, restore, keys_raw, lat, m, restart, calls, failover_runs)



def write_results(results, restore, keys_raw, lat, lat_m, restart, calls, failover_runs):
    cpu, cores, mem, rustc, host, kafka = machine()
    raw_rate, native_rate, wasm_rate = (med(results[k], "rate") for k in ("raw", "native", "wasm"))
    wasm_mid = sorted(results["wasm"], key=lambda r: r["rate"])[len(results["wasm"]) // 2]
    def row(name, rs, note):
        per_record = f"{med(rs, 'changelog_per_record'):.5f}" if "changelog_per_record" in rs[0] else "–"
        return f"| {name} | {med(rs, 'rate'):,.0f} | {med(rs, 'cpu'):.1f} | {med(rs, 'rss'):.0f} | {per_record} | {note} |"

    def target(ok, text):
        return f"| {text} | {'met' if ok else '**missed**'} |"

    lines = [
        "# Benchmark results",
        "",
        f"Measured by `make bench` on {datetime.date.today().isoformat()}: {cpu}, {cores} cores, {mem} GiB; "
        f"{rustc}; {host}; Apache Kafka {kafka} (single local KRaft node); release build.",
        "",
        f"Input: {ORDERS:,} orders (6 partitions, lz4, 50 drinks with Zipf(1.0) popularity, 1-3 items, 1% malformed, "
        f"fixed seed). Rates are medians of {RUNS} interleaved runs, each from its first consumed record to its last "
        "commit. CPU seconds and peak RSS are the kernel's accounting of the process.",
        "",
        "| mode | orders/s | CPU s | peak RSS MiB | changelog records per input record | what it is |",
        "|---|---|---|---|---|---|",
        row("raw", results["raw"], "rdkafka consume-and-drop: the ceiling"),
        row("native", results["native"], "host pipeline, drink_count compiled in"),
        row("wasm", results["wasm"], "host pipeline, drink_count.wasm"),
        row("eos", results["eos"], "wasm with --guarantee exactly-once (a Kafka transaction every 100 ms, the default "
            "--commit-interval)"),
        row("window", results["window"], "wasm with --window 1m (tumbling); state at the end: "
            f"{med(results['window'], 'state_keys'):.0f} counters in {med(results['window'], 'state_windows'):.0f} "
            f"windows, of {math.ceil(EVENT_SPAN_MIN)} windows counted"),
        row("hopping", results["hopping"], "wasm with --window 10m --advance 1m (each order in 10 windows); state at the "
            f"end: {med(results['hopping'], 'state_keys'):.0f} counters in {med(results['hopping'], 'state_windows'):.0f} "
            f"windows, of {math.ceil(EVENT_SPAN_MIN) + 9} windows counted"),
        row("python", results["python"], "host pipeline, the drink count in Python (componentize-py 0.25.1; one run)"),
        row("javascript", results["javascript"], "host pipeline, the drink count in JavaScript (componentize-js 0.23.0; "
            "one run)"),
        row("dedup", results["dedup"], "processor guests/order_dedup: per order a `process` call, a state get, a put, a "
            "stream-time timer (day retention) and an emit to its output topic; at-least-once"),
        row("revenue", results["revenue"], "processor guests/shop_revenue: per order a `menu` table lookup per item, "
            "the shop-hour's JSON state read and written, a timer, the running total emitted (and alerts); "
            "at-least-once"),
    ] + ([
        row("kstreams", results["kstreams"], "Kafka Streams 4.1.1: flatMap, groupByKey().aggregate, RocksDB store + "
            "changelog, top-N punctuator; defaults (at-least-once, commit.interval.ms=30000, caching on), "
            "num.stream.threads=2, -Xmx2g; time includes waiting for its next commit"),
        row("go-seed", results["go-seed"], "the tutorial's design: franz-go + Pebble, ProduceSync per poll, "
            "Pebble batch with Sync, CommitUncommittedOffsets; one changelog record per delta"),
        row("kstreams-dedup", results["kstreams-dedup"], "the order dedup in Kafka Streams 4.1.1's Processor API: "
            "two persistent KeyValueStores (id -> first seen; expiry time/id) with changelogs and caching, a "
            "stream-time punctuator every minute forgetting the ids whose day is over, forward to the output; "
            "at-least-once, commit.interval.ms=100, num.stream.threads=2, -Xmx2g; compare with `dedup`"),
    ] if PEERS else []) + [
        row("scale1", results["scale1"], "`--scale-out`, 1 host: the job re-keyed through the repartition topic "
            "(stage A: guest -> repartition; stage B: shards -> changelog), at-least-once"),
        row("scale2", results["scale2"], "`--scale-out`, 2 host processes in one group on this machine (CPU: both; "
            "RSS: the larger)"),
        row("scale3", results["scale3"], "`--scale-out`, 3 host processes in one group on this machine (CPU: all three; "
            "RSS: the largest)"),
        f"| restore | {restore['rate']:,.0f} records/s | {restore['cpu']:.1f} | {restore['rss']:.0f} | – | "
        f"`host restore` of {restore['keys']:,} keys in {restore['seconds']:.2f} s (raw drain of that changelog: "
        f"{keys_raw['rate']:,.0f} records/s) |",
        "",
        f"Scale-out restore: one shard (changelog partition 0 of 6: {restore['shard']['keys']:,} keys) in "
        f"{restore['shard']['seconds']:.2f} s, against {restore['seconds']:.2f} s for the whole state "
        f"({restore['keys']:,} keys): a partition that moves costs its new owner the restore of its shard only. "
        "Scale-out rates run from the first record any host consumed to the last commit of any host (each host "
        "exits once the group has committed every input and repartition partition, checked every 0.5 s).",
        "",
        f"Restart under exactly-once after a crash between a transaction's commit and its state write, with "
        f"{restore['keys']:,} keys in state: ready (the changelog's tail replayed: {restart['tail']} records) "
        f"{restart['ready']:.2f} s after spawn, first transaction committed at {restart['first_commit']:.2f} s; a full "
        f"restore of the same state takes {restore['seconds']:.2f} s. "
        + (f"Kafka Streams (exactly_once_v2, static membership) with {restore['keys']:,} keys in its store, killed "
           f"(-9) and restarted: first record counted in its store {restart['kstreams']:.2f} s after spawn (a task "
           "restores its store from the changelog before it processes)." if "kstreams" in restart else
           "Kafka Streams' figure for the same comes with `make bench-peers`."),
        "",
        "Where the wasm pipeline's time goes (median-rate run; per-batch step timings from the host's debug log): "
        f"the guest thread was busy {wasm_mid['guest_busy']:.2f} s ({100 * wasm_mid['guest_busy'] / wasm_mid['seconds']:.0f}%); "
        "the pipeline thread spent "
        + ", ".join(f"{k.replace('_ms', '')} {v:.2f} s ({100 * v / wasm_mid['seconds']:.0f}%)" for k, v in wasm_mid["steps"].items())
        + f" of {wasm_mid['seconds']:.2f} s, {wasm_mid['batches']} batches. guest_wait: waiting for the guest thread's "
        "result; send: adding deltas to state's values and queueing the changelog; changelog: what is left of the "
        "wait for acknowledgements after the pipeline thread polled and handled the next batches; poll and the rest: "
        "polling, packing records for the guest, the board.",
        "",
        f"Latency at {LATENCY_RATE:,} orders/s offered for {LATENCY_SECONDS} s (record timestamp, set when the load "
        f"generator produces it with linger.ms=5, to changelog acknowledged; wasm): p50 {lat['latency_p50_ms']} ms, p99 {lat['latency_p99_ms']} ms, max {lat['latency_max_ms']} ms "
        f"over {lat['records']:,} records (the median-p99 run of {len(lat['p99s'])}; p99 of each run: "
        f"{', '.join(str(p) for p in lat['p99s'])} ms); host CPU {lat_m.cpu:.1f} s, peak RSS {lat_m.rss_mib:.0f} MiB.",
        "",
        "One processor host call, across the WebAssembly boundary and through the host's layers "
        f"(`state-calls`: the test processor makes the same call {calls['calls']:,} times in one `process` call, "
        f"over a store of {calls['keys']:,} values in RocksDB; medians; the `process` call itself taken off): "
        f"a get of a stored key {calls['get_stored_ns']} ns, of an absent key {calls['get_absent_ns']} ns, of a key "
        f"the batch wrote {calls['get_own_write_ns']} ns; a put {calls['put_ns']} ns; one `process` call with an "
        f"empty body {calls['process_call_ns'] / 1000:.1f} µs.",
        "",
        f"Failover (`--scale-out`, three hosts, {KEYS:,} keys in the job's shards, orders arriving; `kill -9` of the "
        "host with the most shards once every shard is open and every standby copy warm; one run each). Detection "
        "is Kafka's: the group hands the dead host's partitions over after its session timeout (6 s here, the "
        "broker's minimum; 45 s by default). Takeover is ours: from that hand-over to the last of its shards open "
        "on a survivor (restored in full, or promoted from a warm copy and only the changelog's last records read).",
        "",
        "| standby replicas | detection (kill -> hand-over) | takeover (hand-over -> shards open) | shards from warm copies | changelog records read by the new owners |",
        "|---|---|---|---|---|",
    ] + [
        f"| {n} | {r['detect']:.2f} s | {r['takeover']:.2f} s | {r['warm']} of {r['shards']} | {r['replayed']:,} |"
        for n, r in sorted(failover_runs.items())
    ] + [
        "",
        "## Targets",
        "",
        "| target | result |",
        "|---|---|",
        target(wasm_rate >= 0.85 * native_rate, f"wasm >= 0.85 x native: {wasm_rate / native_rate:.2f} x"),
        target(wasm_rate >= 0.6 * raw_rate, f"wasm >= 0.6 x raw: {wasm_rate / raw_rate:.2f} x"),
        target(med(results["eos"], "rate") >= 0.8 * wasm_rate,
               f"exactly-once >= 0.8 x at-least-once: {med(results['eos'], 'rate') / wasm_rate:.2f} x"),
        target(restart["first_commit"] <= 2, f"exactly-once restart to processing with {restore['keys']:,} keys in "
               f"state <= 2 s: {restart['first_commit']:.2f} s"),
        target(restore["rate"] >= 0.5 * keys_raw["rate"], f"restore >= 0.5 x raw consume of the changelog: "
               f"{restore['rate'] / keys_raw['rate']:.2f} x"),
        target(lat["latency_p99_ms"] <= 50, f"p99 latency at {LATENCY_RATE:,}/s <= 50 ms: {lat['latency_p99_ms']} ms"),
        target(restore["rss"] <= 256, f"peak RSS <= 256 MiB at {restore['keys']:,} keys (restore): {restore['rss']:.0f} MiB"),
        target(failover_runs[2]["takeover"] <= 1, "failover takeover with a standby copy on every other host <= 1 s: "
               f"{failover_runs[2]['takeover']:.2f} s ({failover_runs[0]['takeover']:.2f} s without)"),
        target(med(results["wasm"], "changelog_per_record") <= 1,
               "changelog records per batch <= distinct keys touched (one record per changed key and batch, plus "
               "metadata): see the ratio above"),
    ] + ([
        target(wasm_rate >= 2 * med(results["kstreams"], "rate"),
               f"wasm >= 2 x Kafka Streams: {wasm_rate / med(results['kstreams'], 'rate'):.2f} x"),
        target(wasm_rate >= 2 * med(results["go-seed"], "rate"),
               f"wasm >= 2 x the Go design: {wasm_rate / med(results['go-seed'], 'rate'):.2f} x"),
        target(med(results["dedup"], "rate") > med(results["kstreams-dedup"], "rate"),
               "the order dedup as a processor guest ahead of the same in Kafka Streams' Processor API: "
               f"{med(results['dedup'], 'rate') / med(results['kstreams-dedup'], 'rate'):.2f} x"),
    ] if PEERS else []) + [
        "",
        "Where a target is missed, `bench/PROFILE.md` shows why, with a profile and the command that took it.",
        "",
        "" if PEERS else "Peers (Kafka Streams, the seed's Go design) were not run: `make bench-peers` runs them too.",
        "",
    ]
    path = os.path.join(ROOT, "bench", "RESULTS.md")
    # Before/after comparisons of past changes (each with its own machine, date and command)
    # stay below the marker; the rest is this run's.
    kept = ""
    if os.path.exists(path):
        previous = open(path).read()
        if COMPARISONS in previous:
            kept = previous[previous.index(COMPARISONS):]
    with open(path, "w") as f:
        f.write("\n".join(lines))
        if kept:
            f.write("\n" + kept)
    log(f"wrote {path}")
    print("\n".join(lines))


if __name__ == "__main__":
    try:
        main()
    finally:
        if os.environ.get("BENCH_KEEP_WORK"):
            log(f"work dir kept: {WORK}")
        else:
            shutil.rmtree(WORK, ignore_errors=True)
        # This run's topics go, so the broker does not grow from run to run.
        subprocess.run([LOADGEN, "--brokers", BROKERS, "--topic", f"bench-{RUN_ID}", "delete-topics"],
                       capture_output=True)

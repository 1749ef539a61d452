#!/usr/bin/env python3
"""Where a Redis reserve's server time goes: times variants of the store's own function library.

Run under tools/with-redis.sh after a release build (needs redis-cli and redis-benchmark):

    tools/with-redis.sh python3 tools/redis_script_profile.py [--calls 10000] [--rounds 3]

1. Runs build/bench/bench_redis briefly while MONITOR records one real reserve: the FCALL as the
   client sent it and the commands its script ran.
2. Dumps the loaded library (FUNCTION LIST WITHCODE) and loads variants of it under other names:
   the reserve cut short after each step (a `return` inserted after a marker line), and a
   "skeleton" that issues the same commands with the same arguments and no logic. Before each
   measurement the holds of the previous one are deleted (records, deadline index).
3. Times each with `redis-benchmark -c 1` running the captured call (a fresh request id per call)
   and reads the server's own time per call from INFO commandstats (min and median of rounds).

The differences between consecutive cuts are the cost of each step, including the Lua around
its commands; skeleton vs full is commands vs logic. Figures are µs of redis-server CPU per
call on this machine (compare within one run: machines here are noisy). It writes holds under
the benchmark's own key prefix and deletes that prefix's keys at the end.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Cut points in the reserve body: (label, the line after which the variant returns).
CUTS = [
    ("sweep + request record", "  r, rk = getrec(id)"),
    ("+ limits version", "if lv() ~= ARGV[8] then finish(); return reply({'S'}) end"),
    ("+ plan (cached)", "local p = plan_arg(ARGV[7], 18)"),
    ("+ read counters", "local st = states(p, sums(p))"),
    ("+ checks", "local f = first_failing(p, st, need)"),
    ("+ write counters", "add_all(p, d)"),
    ("+ keep plan", "keep_plan(ARGV[7], p, 18)"),
    ("+ record", "     'h3', ARGV[11], 'ca', NOWS, 'ea', ARGV[12], 'm', ARGV[13], 'pr', ARGV[14], 'fp', ARGV[16])"),
    ("+ deadline", "call('ZADD', B .. 'dl', ARGV[12], id)"),
]


def unquote(tokens_line):
    """The arguments of one MONITOR line (C-style quoted strings)."""
    out = []
    for t in re.findall(r'"((?:[^"\\]|\\.)*)"', tokens_line):
        t = re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), t)
        out.append(t.replace("\\n", "\n").replace("\\r", "\r").replace('\\"', '"').replace("\\\\", "\\"))
    return out


def lua_str(s):
    return "'" + "".join(c if c.isalnum() or c in " :{}|_-.,/" else "\\%03d" % ord(c) for c in s) + "'"


class Redis:
    def __init__(self, port):
        self.base = ["redis-cli", "-p", str(port)]
        self.port = port

    def __call__(self, *args, stdin=None):
        r = subprocess.run(self.base + list(args), input=stdin, capture_output=True, text=True)
        if r.returncode != 0 or r.stdout.startswith("ERR") or "(error)" in r.stdout:
            sys.exit("redis-cli %s: %s%s" % (" ".join(args[:2]), r.stdout, r.stderr))
        return r.stdout


def capture(redis, bench):
    """Runs the benchmark briefly under MONITOR; returns (FCALL args, [commands the script ran])."""
    with tempfile.NamedTemporaryFile("w+", suffix=".monitor") as log:
        mon = subprocess.Popen(redis.base + ["monitor"], stdout=log, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        env = dict(os.environ, BUDGET_TEST_REDIS_URL="redis://127.0.0.1:%d/0" % redis.port)
        subprocess.run([bench, "200", "0.1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=300, check=True)
        time.sleep(0.3)
        mon.terminate()
        mon.wait()
        log.seek(0)
        lines = log.read().splitlines()
    # A reserve that held (its script ran XADD) well after the warm-up: the 50th.
    seen = 0
    for i, line in enumerate(lines):
        if '_reserve"' not in line or "[0 lua]" in line:
            continue
        seen += 1
        if seen < 50:
            continue
        call = unquote(line.split("] ", 1)[1])
        cmds = []
        for nxt in lines[i + 1:]:
            if "[0 lua]" not in nxt:
                break
            cmds.append(unquote(nxt.split("] ", 1)[1]))
        if any(c[0] == "XADD" for c in cmds) and call[3 + 17] != "1":  # ARGV[17]: dry run
            return call, cmds
    sys.exit("no reserve captured: is build/bench/bench_redis built (BUDGET_BUILD_BENCH=ON)?")


def library_code(redis, name):
    out = redis("--raw", "function", "list", "withcode", "libraryname", name)
    return out.split("library_code\n", 1)[1].rstrip("\n") + "\n"


def reserve_span(code, lib):
    start = code.index("redis.register_function('%s_reserve'" % lib)
    end = code.index("redis.register_function(", start + 10)
    return start, end


def variant(code, lib, new, cut=None, body=None):
    code = code.replace(lib, new)
    start, end = reserve_span(code, new)
    part = code[start:end]
    if cut is not None:
        at = part.index(cut) + len(cut)
        part = part[:at] + "\ndo return {'A'} end\n" + part[at:]
    if body is not None:
        head = "init(keys, args)\n"
        at = part.index(head) + len(head)
        part = part[:at] + body + "\ndo return {'A'} end\n" + part[at:]
    return code[:start] + part + code[end:]


def skeleton_body(call, cmds):
    """The captured commands with the captured arguments; the request id follows the call's."""
    rid = call[7]
    lines = []
    for c in cmds:
        if c[0] == "INCR":  # the ledger's sequence: the stream id below
            lines.append("local seq = call('INCR', %s)" % lua_str(c[1]))
            continue
        if c[0] == "XADD":  # into a stream of its own (ids growing with the sequence)
            args = [lua_str(c[1] + "_skeleton"), "sfmt('%d', seq) .. '-0'"] + [
                "ARGV[4]" if a == rid else lua_str(a) for a in c[3:]]
        else:
            args = [lua_str(a).replace(lua_str(rid)[1:-1], "' .. ARGV[4] .. '") if rid in a else lua_str(a)
                    for a in c[1:]]
        lines.append("call(%s)" % ", ".join([lua_str(c[0])] + args))
    return "\n".join(lines)


def forget_holds(redis, prefix):
    """Deletes the holds the measurements made (records, deadline index): every variant starts
    from the same small index, as a service whose holds settle would have."""
    keys = subprocess.run(redis.base + ["--scan", "--pattern", prefix + ":r:prof-*"], capture_output=True,
                          text=True).stdout.split()
    for i in range(0, len(keys), 500):
        subprocess.run(redis.base + ["del"] + keys[i:i + 500], capture_output=True)
    subprocess.run(redis.base + ["del", prefix + ":dl"], capture_output=True)


def time_call(redis, call, calls):
    redis("config", "resetstat")
    subprocess.run(["redis-benchmark", "-p", str(redis.port), "-c", "1", "-n", str(calls), "-r", "100000000"] + call,
                   capture_output=True, check=True)
    stats = redis("info", "commandstats")
    fc = re.search(r"cmdstat_fcall:calls=(\d+),usec=\d+,usec_per_call=([\d.]+)", stats)
    total = sum(int(x) for x in re.findall(r"cmdstat_[\w|]+:calls=(\d+)", stats))
    n = int(fc.group(1))
    return float(fc.group(2)), (total - n) / n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=10000, help="calls per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="measurements per variant (min and median)")
    ap.add_argument("--bench", default=os.path.join(ROOT, "build", "bench", "bench_redis"))
    a = ap.parse_args()
    url = os.environ.get("BUDGET_TEST_REDIS_URL", "")
    m = re.match(r"redis://[^/]*:(\d+)", url)
    if not m:
        sys.exit("BUDGET_TEST_REDIS_URL is not set: run under tools/with-redis.sh")
    redis = Redis(int(m.group(1)))

    call, cmds = capture(redis, a.bench)
    lib = call[1][: -len("_reserve")]
    prefix = call[3][: call[3].index("}") + 1]
    code = library_code(redis, lib)
    print("captured: %s with %d arguments; its script ran %d commands: %s" %
          (call[0], len(call) - 2, len(cmds), " ".join(c[0] for c in cmds)))

    variants = [("arguments + init (returns at once)", variant(code, lib, "prof_noop", body=""))]
    for i, (label, cut) in enumerate(CUTS):
        variants.append((label, variant(code, lib, "prof_cut%d" % i, cut=cut)))
    variants.append(("full reserve", variant(code, lib, "prof_full")))
    variants.append(("skeleton: the same commands, no logic",
                     variant(code, lib, "prof_skel", body=skeleton_body(call, cmds))))

    names = []
    for label, text in variants:
        name = re.search(r"#!lua name=(\w+)", text).group(1)
        redis("-x", "function", "load", "replace", stdin=text)
        names.append(name)
    results = {n: [] for n in names}
    commands = {}
    try:
        for _ in range(a.rounds):
            for name in names:
                c = list(call)
                c[1] = name + "_reserve"
                c[7] = "prof-__rand_int__"
                forget_holds(redis, prefix)
                us, per = time_call(redis, c, a.calls)
                results[name].append(us)
                commands[name] = per
        print("\n%-40s %9s %9s %9s %9s" % ("variant (server µs per call)", "min", "median", "step", "commands"))
        prev = None
        for (label, _), name in zip(variants, names):
            v = results[name]
            lo = min(v)
            step = "" if prev is None or label.startswith("skeleton") else "%+.1f" % (lo - prev)
            print("%-40s %9.1f %9.1f %9s %9.1f" % (label, lo, statistics.median(v), step, commands[name]))
            if not label.startswith("skeleton"):
                prev = lo
    finally:
        for name in names:
            subprocess.run(redis.base + ["function", "delete", name], capture_output=True)
        keys = subprocess.run(redis.base + ["--scan", "--pattern", prefix + ":*"], capture_output=True,
                              text=True).stdout.split("\n")
        for i in range(0, len(keys), 500):
            chunk = [k for k in keys[i:i + 500] if k]
            if chunk:
                subprocess.run(redis.base + ["del"] + chunk, capture_output=True)


if __name__ == "__main__":
    main()

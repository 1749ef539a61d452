#!/usr/bin/env python3
"""Independent reference for the PricingEngine exactness sweep.

Reads a LiteLLM model_prices_and_context_window.json with Python's `decimal` (prices parsed
from the JSON text, exactly), and for every chat / completion / responses / embedding entry
writes the expected cost, in nanos, of a set of usages under each service tier, following
the pricing rules of docs/pricing.md:

  * long-context levels: a price field `<f>_above_<N>k_tokens` or a tiered_pricing range
    starting at N applies to the whole request when input_tokens > N;
  * a component's price: the service tier's own price at the selected level or the nearest
    lower level, else the standard price likewise; when the standard price changes at a level
    above the tier's nearest stated one, the tier's price x (standard here / standard at the
    tier's level), the unit price rounded up to 1e-24; components without a price are billed
    with their parent (cache read / cache write / audio input -> input, 1h write -> 5m write,
    reasoning / audio output -> output); input/output/request/image/audio without a price
    cost nothing;
  * each line = quantity x unit price, rounded UP to the nano; audio is priced per second
    and counted in milliseconds.

Output (tab-separated), one line per (entry, tier, usage):
  name  tier  input cache_read cache_write cache_write_1h output reasoning requests images audio_ms
        audio_input audio_output  nanos
or, for an entry that cannot be priced:  name  UNPRICEABLE  reason

Usage: pricing_reference.py <table.json> <out.tsv>
"""
import decimal
import json
import re
import sys

D = decimal.Decimal
decimal.getcontext().prec = 200
NANO = D(10) ** 9
SCALE = D(10) ** 24


class Num(str):
    pass


COMPONENT_FIELDS = [
    ("cache_creation_input_token_cost_above_1hr", "cw1h", 0, False),
    ("cache_creation_input_token_cost", "cw", 0, False),
    ("cache_read_input_token_cost", "cr", 0, False),
    ("input_cost_per_token", "in", 0, False),
    ("output_cost_per_token", "out", 0, False),
    ("output_cost_per_reasoning_token", "rsn", 0, False),
    ("input_cost_per_request", "req", 0, False),
    ("output_cost_per_image", "img", 0, False),
    ("input_cost_per_image", "img", 1, False),
    ("input_cost_per_audio_per_second", "sec", 0, False),
    ("input_cost_per_audio_token", "ain", 0, False),
    ("output_cost_per_audio_token", "aout", 0, False),
    ("input_cost_per_second", "sec", 1, True),
    ("output_cost_per_second", "sec", 2, True),
]
SUFFIX = re.compile(r"^(?:_above_([0-9]{1,9})k_tokens)?(?:_(batches|flex|priority))?$")
TIERS = ["standard", "batch", "flex", "priority"]
SVC = {None: "standard", "batches": "batch", "flex": "flex", "priority": "priority"}
MODES = {"chat", "completion", "responses", "embedding"}


def field_of(name, audio):
    for prefix, comp, rank, audio_only in COMPONENT_FIELDS:
        if name.startswith(prefix):
            if audio_only and not audio:
                return None
            m = SUFFIX.match(name[len(prefix):])
            if not m:
                return None
            n = int(m.group(1)) * 1000 if m.group(1) else 0
            if m.group(1) and n == 0:
                return None
            return comp, SVC[m.group(2)], n, rank
    return None


def load_prices(entry):
    """{(comp, svc, level): Decimal} or raise ValueError(reason)."""
    audio = entry.get("mode") in ("audio_transcription", "audio_speech")
    prices, ranks = {}, {}

    def put(field, value, key, rank, later_wins):
        if value is None:
            return
        if not isinstance(value, Num):
            raise ValueError(field + ": not a number")
        d = D(value)
        if d < 0:
            raise ValueError(field + ": negative")
        if d * SCALE != (d * SCALE).to_integral_value() or d > D(10) ** 12:
            raise ValueError(field + ": not representable")
        if key not in prices or rank < ranks[key] or (rank == ranks[key] and later_wins):
            prices[key], ranks[key] = d, rank

    for f, v in entry.items():
        m = field_of(f, audio)
        if m:
            put(f, v, (m[0], m[1], m[2]), m[3], False)
    tp = entry.get("tiered_pricing")
    if isinstance(tp, list):
        for t in tp:
            if not isinstance(t, dict) or "range" not in t:
                continue
            r = t["range"]
            if not isinstance(r, list) or not r or not isinstance(r[0], Num):
                raise ValueError("bad range")
            lo = D(r[0])
            if lo < 0 or lo != lo.to_integral_value():
                raise ValueError("bad range")
            for f, v in t.items():
                m = field_of(f, audio)
                if m and m[2] == 0:
                    put(f, v, (m[0], m[1], int(lo)), m[3], True)
    if not prices:
        raise ValueError("no price")
    return prices


def ceil_nanos(x):
    return int((x * NANO).to_integral_value(rounding=decimal.ROUND_CEILING))


def cost(prices, u, tier):
    levels = sorted({0} | {k[2] for k in prices})
    level_idx = 0
    for i, t in enumerate(levels):
        if i > 0 and u["in"] > t:
            level_idx = i

    def nearest(comp, svc, top):
        for j in range(top, -1, -1):
            p = prices.get((comp, svc, levels[j]))
            if p is not None:
                return p, j
        return None, None

    def price(comp):
        std, std_at = nearest(comp, "standard", level_idx)
        if tier == "standard":
            return std
        own, own_at = nearest(comp, tier, level_idx)
        if own is None:
            return std
        if std is not None and std_at > own_at:
            # The standard price changes above the tier's last stated level: the tier keeps
            # its ratio to the standard price, the unit price rounded up to 1e-24.
            base, _ = nearest(comp, "standard", own_at)
            if base is not None and base > 0:
                return (std * own / base * SCALE).to_integral_value(rounding=decimal.ROUND_CEILING) / SCALE
        return own

    q = {
        "in": u["in"] - u["cr"] - u["cw"] - u["ain"], "cr": u["cr"], "cw": u["cw"] - u["cw1h"],
        "cw1h": u["cw1h"], "out": u["out"] - u["rsn"] - u["aout"], "rsn": u["rsn"],
        "req": u["req"], "img": u["img"], "sec": u["ms"], "ain": u["ain"], "aout": u["aout"],
    }
    p = {c: price(c) for c in q}
    for child, parent in (("cw1h", "cw"), ("cw", "in"), ("cr", "in"), ("rsn", "out"), ("ain", "in"),
                          ("aout", "out")):
        if p[child] is None:
            q[parent] += q[child]
            q[child] = 0
    total = 0
    for c, qty in q.items():
        if qty == 0 or p[c] is None:
            continue
        amount = D(qty) * p[c]
        if c == "sec":
            amount = amount / 1000
        total += ceil_nanos(amount)
    return total


def usages(thresholds):
    def u(i, cr=0, cw=0, cw1h=0, o=0, rsn=0, req=1, img=0, ms=0, ain=0, aout=0):
        return dict(**{"in": i}, cr=cr, cw=cw, cw1h=cw1h, out=o, rsn=rsn, req=req, img=img, ms=ms,
                    ain=ain, aout=aout)

    out = [
        u(0, req=0),
        u(0),
        u(1, o=1),
        u(7, o=3, rsn=1),
        u(1234, o=567),
        u(10000, cr=6000, cw=2000, cw1h=500, o=800, rsn=300),
        u(987654, cr=400000, cw=100000, cw1h=50000, o=123457, rsn=99999, img=2, ms=61234),
        u(2_000_000_000, cr=3, cw=5, cw1h=1, o=1_000_000_000, rsn=333_333_333, req=3, img=7, ms=3_600_001),
        u(5000, ain=4000, o=900, aout=700),
        u(250000, cr=20000, cw=10000, ain=123457, o=70000, rsn=1000, aout=65432),
    ]
    for t in thresholds:
        if t > 0:
            out.append(u(t, cr=t // 3, cw=t // 7, cw1h=t // 11, o=4321, rsn=1234))
            out.append(u(t + 1, cr=t // 3, cw=t // 7, cw1h=t // 11, o=4321, rsn=1234))
            out.append(u(t + 1, cr=t // 5, ain=t // 2, o=4321, aout=2000))
    return out


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        table = json.load(f, parse_float=Num, parse_int=Num)
    lines = []
    for name, entry in table.items():
        if name == "sample_spec" or not isinstance(entry, dict) or entry.get("mode") not in MODES:
            continue
        try:
            prices = load_prices(entry)
        except ValueError as e:
            lines.append(f"{name}\tUNPRICEABLE\t{e}")
            continue
        thresholds = sorted({k[2] for k in prices})
        for tier in TIERS:
            for u in usages(thresholds):
                c = cost(prices, u, tier)
                lines.append("\t".join([name, tier] + [str(u[k]) for k in
                             ("in", "cr", "cw", "cw1h", "out", "rsn", "req", "img", "ms", "ain", "aout")] + [str(c)]))
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{len(lines)} reference lines")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Generate libbudget's bundled default price table.

Reads a LiteLLM-format `model_prices_and_context_window.json` and writes
src/pricing/bundled_table.cpp: the table in the project's compact format
("!budget-prices 1", see docs/pricing.md), split into string-literal chunks that
PricingEngine::bundled() joins and parses at run time. The generated file is committed.

    python3 tools/gen_price_table.py ../shared/data/model_prices_and_context_window.json \
        [-o src/pricing/bundled_table.cpp] [--compact-out table.txt]

Numbers are copied as their JSON TEXT (json.loads(parse_float=Num)), never through a float,
so the bundled prices are exactly the table's. The field mapping is the same as the C++
LiteLLM loader's (src/pricing/litellm.cpp); entries that map to no price, or whose prices
are not exactly representable at 1e-24, are left out (and listed with --verbose).
"""
import argparse
import decimal
import json
import re
import sys

FIELDS = [  # (prefix, compact component, rank, audio modes only) -- order matters
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
SERVICES = {"_batches": "batch", "_flex": "flex", "_priority": "priority"}
REST = re.compile(r"^(?:_above_([0-9]{1,9})k_tokens)?(_batches|_flex|_priority)?$")
AUDIO_MODES = ("audio_transcription", "audio_speech")
SCALE = decimal.Decimal(10) ** 24
MAX_PRICE = decimal.Decimal(10) ** 12


class Num(str):
    """A JSON number kept as its text (json.loads(parse_float=Num, parse_int=Num))."""


def map_field(name, audio):
    for prefix, comp, rank, audio_only in FIELDS:
        if not name.startswith(prefix):
            continue
        if audio_only and not audio:
            return None
        m = REST.match(name[len(prefix):])
        if not m or (m.group(1) is not None and int(m.group(1)) == 0):
            return None
        threshold = int(m.group(1)) * 1000 if m.group(1) else 0
        return comp, SERVICES.get(m.group(2) or "", ""), threshold, rank
    return None


def check_price(text):
    if not isinstance(text, Num):
        return "not a number"
    try:
        d = decimal.Decimal(text)
    except decimal.InvalidOperation:
        return "not a number"
    if d < 0:
        return "negative price"
    if (d * SCALE) != (d * SCALE).to_integral_value():
        return "not exactly representable: needs more than 24 decimal places"
    if d > MAX_PRICE:
        return "too large"
    return None


def convert(name, v):
    """Returns (compact line, None) or (None, reason)."""
    mode = v.get("mode") if isinstance(v.get("mode"), str) else ""
    provider = v.get("litellm_provider") if isinstance(v.get("litellm_provider"), str) else ""
    audio = mode in AUDIO_MODES
    prices = {}  # (comp, service, threshold) -> (rank, text)

    def add(field, value, comp, svc, thr, rank, override_same_rank):
        if value is None:
            return None
        if not isinstance(value, Num):
            return f"{field}: not a number"
        why = check_price(value)
        if why:
            return f"{field} = {value}: {why}"
        key = (comp, svc, thr)
        if key in prices:
            old_rank = prices[key][0]
            if rank < old_rank or (rank == old_rank and override_same_rank):
                prices[key] = (rank, value)
        else:
            prices[key] = (rank, value)
        return None

    for field, value in v.items():
        m = map_field(field, audio)
        if m:
            err = add(field, value, m[0], m[1], m[2], m[3], False)
            if err:
                return None, err
    tiers = v.get("tiered_pricing")
    if isinstance(tiers, list):
        for tier in tiers:
            if not isinstance(tier, dict) or "range" not in tier:
                continue
            rg = tier["range"]
            if not isinstance(rg, list) or not rg:
                return None, "tiered_pricing: malformed range"
            try:
                lo = decimal.Decimal(rg[0]) if isinstance(rg[0], Num) else None
            except decimal.InvalidOperation:
                lo = None
            if lo is None or lo < 0 or lo != lo.to_integral_value():
                return None, "tiered_pricing: range start is not a non-negative integer"
            for field, value in tier.items():
                m = map_field(field, audio)
                if m and m[2] == 0:
                    err = add("tiered_pricing." + field, value, m[0], m[1], int(lo), m[3], True)
                    if err:
                        return None, err
    if not prices:
        return None, "no price field that the engine understands"
    max_out = 0
    for k in ("max_output_tokens", "max_tokens"):
        x = v.get(k)
        if max_out == 0 and isinstance(x, Num) and re.fullmatch(r"[0-9]+", x) and int(x) > 0:
            max_out = int(x)
    parts = [name]
    if provider:
        parts.append("provider=" + provider)
    if mode:
        parts.append("mode=" + mode)
    if max_out:
        parts.append(f"max_out={max_out}")
    for (comp, svc, thr), (_, text) in prices.items():
        key = comp + ("/" + svc if svc else "") + (f"@{thr}" if thr else "")
        parts.append(f"{key}={text}")
    return " ".join(parts), None


def cxx_chunks(text, size=12000):
    lines = text.splitlines(keepends=True)
    chunks, cur = [], ""
    for line in lines:
        if len(cur) + len(line) > size and cur:
            chunks.append(cur)
            cur = ""
        cur += line
    if cur:
        chunks.append(cur)
    return chunks


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("table", help="LiteLLM model_prices_and_context_window.json")
    ap.add_argument("-o", "--output", default="src/pricing/bundled_table.cpp")
    ap.add_argument("--compact-out", help="also write the compact table to this file")
    ap.add_argument("--verbose", action="store_true", help="list the entries left out")
    args = ap.parse_args()

    with open(args.table, encoding="utf-8") as f:
        data = json.load(f, parse_float=Num, parse_int=Num)
    date = data.get("last_updated") if isinstance(data.get("last_updated"), str) else "undated"
    source = "LiteLLM model_prices_and_context_window.json (BerriAI/litellm, MIT)"
    lines, left_out = [], []
    for name, v in data.items():
        if not isinstance(v, dict) or name in ("sample_spec", "fallback_generalizations"):
            continue
        if any(c.isspace() for c in name) or name.startswith(("!", "#")):
            left_out.append((name, "name not representable in the compact format"))
            continue
        line, why = convert(name, v)
        if line:
            lines.append(line)
        else:
            left_out.append((name, why))
    text = "!budget-prices 1\n!date " + date + "\n!source " + source + "\n" + "\n".join(lines) + "\n"
    if args.compact_out:
        with open(args.compact_out, "w", encoding="utf-8") as f:
            f.write(text)
    if args.verbose:
        for name, why in left_out:
            print(f"left out: {name}: {why}", file=sys.stderr)

    chunks = cxx_chunks(text)
    out = []
    out.append("// GENERATED by tools/gen_price_table.py -- do not edit by hand.\n")
    out.append(f"// Source: {source}, last_updated {date}.\n")
    out.append(f"// {len(lines)} priced entries ({len(left_out)} left out: no supported price).\n")
    out.append("// Regenerate: python3 tools/gen_price_table.py <model_prices_and_context_window.json>\n")
    out.append("#include <cstddef>\n\nnamespace budget::detail {\n\n")
    out.append(f'extern const char* const kBundledTableDate = "{date}";\n')
    out.append(f'extern const char* const kBundledTableSource = "{source}";\n')
    out.append(f"extern const size_t kBundledTableEntries = {len(lines)};\n")
    out.append(f"extern const size_t kBundledTableChunkCount = {len(chunks)};\n")
    out.append("extern const char* const kBundledTableChunks[] = {\n")
    for c in chunks:
        assert ")BUDGET\"" not in c
        out.append('R"BUDGET(' + c + ')BUDGET",\n')
    out.append("};\n\n}  // namespace budget::detail\n")
    with open(args.output, "w", encoding="utf-8") as f:
        f.write("".join(out))
    print(f"wrote {args.output}: {len(lines)} entries, {len(left_out)} left out, date {date}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Checks that a README example is the one a test compiles and runs.

    check_readme_example.py README.md LANG FILE

The first ```LANG block of README.md must equal, line for line, the code of FILE: the lines
of the block that sit at file scope (its leading #include / using lines) must appear in
FILE, and the rest must equal the region between the `README:begin` and `README:end`
comment lines of FILE, with the region's common indentation removed.
"""
import re
import sys
import textwrap


def main() -> int:
    readme, lang, path = sys.argv[1:4]
    md = open(readme, encoding="utf-8").read()
    m = re.search(r"^```" + re.escape(lang) + r"\n(.*?)^```", md, re.S | re.M)
    if not m:
        print(f"{readme}: no ```{lang} block")
        return 1
    block = m.group(1).rstrip("\n").split("\n")
    head = []
    while block and (block[0].startswith("#include") or block[0].startswith("using ") or not block[0].strip()):
        head.append(block.pop(0))
    src = open(path, encoding="utf-8").read()
    lines = src.split("\n")
    missing = [h for h in head if h.strip() and h not in lines]
    def marker(word: str) -> list:
        return [i for i, l in enumerate(lines) if re.fullmatch(r"\s*(//|/\*|#)\s*" + word + r"\s*(\*/)?\s*", l)]

    begin, end = marker("README:begin"), marker("README:end")
    if len(begin) != 1 or len(end) != 1 or end[0] < begin[0]:
        print(f"{path}: needs one README:begin and one README:end marker")
        return 1
    region = textwrap.dedent("\n".join(lines[begin[0] + 1:end[0]])).split("\n")
    status = 0
    if missing:
        print(f"{path}: lacks the README's file-scope lines {missing}")
        status = 1
    if region != block:
        print(f"{path}: the region between the markers differs from README.md's ```{lang} block:")
        import difflib
        sys.stdout.writelines(l + "\n" for l in difflib.unified_diff(block, region, "README.md", path, lineterm=""))
        status = 1
    if status == 0:
        print(f"{path}: the README's ```{lang} example, {len(block)} lines, matches")
    return status


if __name__ == "__main__":
    sys.exit(main())

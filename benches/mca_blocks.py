#!/usr/bin/env python3
"""Per-block cycle estimates of the symbols matching a pattern, from two instruction counts.

    python3 benches/mca_blocks.py BIG.tsv SMALL.tsv K MCPU PATTERN [--top N] [--asm]

BIG.tsv and SMALL.tsv are the counts `../shared/armcount/count_edgevit.sh` (and so
`estimate.sh` and `benches/arm_cost.sh`) keeps under OUT/ for the two runs (e.g.
`edgevit-vit-ti16-int8-cortex-a76-r3.tsv` and `-r1.tsv`, K = 2 inferences apart). For every
basic block whose symbol (demangled) matches PATTERN (a regular expression), this prints its
executions per inference, llvm-mca's cycles per execution on MCPU (`neoverse-n1` for the
Cortex-A76, `cortex-a57` for the A72) and their product, largest first: the figures to read
before crediting or blaming a change the whole-inference estimate cannot resolve (a loop qemu
splits at a page shows up as two blocks). `--asm` prints each block's instructions.

It reuses ../shared/armcount/mca_profile.py (set ARMCOUNT to another copy of the tools).
"""
import argparse
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ.get("ARMCOUNT", os.path.join(HERE, "..", "..", "shared", "armcount")))
import mca_profile as mp  # noqa: E402  (the shared tool's loading, disassembly and llvm-mca)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("big")
    ap.add_argument("small")
    ap.add_argument("k", type=float, help="inferences between the two counts")
    ap.add_argument("mcpu")
    ap.add_argument("pattern")
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--asm", action="store_true")
    a = ap.parse_args()
    mc, mca = mp.tool("MC", "llvm-mc-19"), mp.tool("MCA", "llvm-mca-19")
    for path in (a.big, a.small):
        if not os.path.isfile(path):
            sys.exit(f"mca_blocks: no count file {path} (estimate.sh keeps them under CACHE/out)")
    _, big = mp.load(a.big)
    _, small = mp.load(a.small)
    names = sorted({v["sym"] for v in big.values()})
    demangled = dict(zip(names, mp.demangle(names)))
    rx = re.compile(a.pattern)
    keys = [key for key, v in big.items()
            if rx.search(demangled[v["sym"]]) and v["count"] - small.get(key, {"count": 0})["count"] > 0]
    if not keys:
        sys.exit(f"mca_blocks: no executed block's symbol matches '{a.pattern}'")
    asm = mp.disassemble(mc, [big[key]["words"] for key in keys])
    cycles = mp.mca_cycles(mca, a.mcpu, asm)
    rows = []
    for i, key in enumerate(keys):
        execs = (big[key]["count"] - small.get(key, {"count": 0})["count"]) / a.k
        c = cycles.get(i, 0.0)
        rows.append((execs * c, execs, c, big[key]["n"], big[key]["vaddr"], demangled[big[key]["sym"]], asm[i]))
    rows.sort(key=lambda r: -r[0])
    print(f"{sum(r[0] for r in rows) / 1e6:.2f} M cycles per inference in {len(rows)} blocks ({a.mcpu})")
    for total, execs, c, n, vaddr, name, lines in rows[:a.top]:
        print(f"{total / 1e6:7.2f} M  {execs:10.0f} execs  {c:6.1f} cycles/exec  {n:3d} insns  {vaddr}  {name[:70]}")
        if a.asm:
            print("      " + "\n      ".join(lines))


if __name__ == "__main__":
    main()

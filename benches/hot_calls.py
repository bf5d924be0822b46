#!/usr/bin/env python3
"""Function calls per inference, by call site and callee, from two instruction counts.

    python3 benches/hot_calls.py BINARY BIG.tsv SMALL.tsv K [--top N]

BINARY is the aarch64 `edgevit` that was counted; BIG.tsv, SMALL.tsv and K as for
`benches/mca_blocks.py` (the counts `../shared/armcount/estimate.sh` keeps under CACHE/out, K
inferences apart). Every basic block that ends in `bl` is a call; this prints how often each
one runs per inference, the caller's symbol and the callee's (`memset@plt` for a call into the
C library). Tens of thousands of calls an inference are worth reading: each costs some ten
cycles before the callee does anything (2026-12-02: 55,000 calls of `memset` for zero bytes
and 9,408 of `memcpy` for 64 bytes were 1.2% of ViT-Ti int8's Cortex-A76 cycles). Only the
blocks the counts list are seen (the plugin keeps the most executed), so rare calls are missing.
"""
import argparse
import bisect
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ.get("ARMCOUNT", os.path.join(HERE, "..", "..", "shared", "armcount")))
import mca_profile as mp  # noqa: E402  (the shared tool's loading of count files)


def symbols(binary):
    """Sorted (address, name) of the binary's functions and PLT entries."""
    out = []
    nm = subprocess.run(["aarch64-linux-gnu-nm", "-C", "--defined-only", binary], capture_output=True, text=True, check=True)
    for line in nm.stdout.splitlines():
        addr, _, name = line.split(" ", 2)
        out.append((int(addr, 16), name))
    plt = subprocess.run(["aarch64-linux-gnu-objdump", "-d", "-j", ".plt", binary], capture_output=True, text=True)
    for line in plt.stdout.splitlines():
        m = re.match(r"([0-9a-f]+) <(.+)>:", line)
        if m:
            out.append((int(m.group(1), 16), m.group(2)))
    out.sort()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("binary")
    ap.add_argument("big")
    ap.add_argument("small")
    ap.add_argument("k", type=float, help="inferences between the two counts")
    ap.add_argument("--top", type=int, default=20)
    a = ap.parse_args()
    for path in (a.binary, a.big, a.small):
        if not os.path.isfile(path):
            sys.exit(f"hot_calls: no file {path}")
    syms = symbols(a.binary)
    addrs = [s[0] for s in syms]
    by_name = {}
    for addr, name in syms:
        by_name.setdefault(name, addr)

    def name_at(addr):
        i = bisect.bisect_right(addrs, addr) - 1
        return syms[i][1] if i >= 0 else "?"

    _, big = mp.load(a.big)
    _, small = mp.load(a.small)
    names = sorted({v["sym"] for v in big.values()})
    demangled = dict(zip(names, mp.demangle(names)))
    # The load address under qemu: the least distance from a block to the start of its symbol
    # (some block starts a function), to a page.
    offsets = [int(v["vaddr"], 16) - by_name[demangled[v["sym"]]] for v in big.values() if demangled[v["sym"]] in by_name]
    if not offsets:
        sys.exit("hot_calls: the counts name no symbol of this binary (was it the one counted?)")
    base = min(o for o in offsets if o >= 0) & ~0xFFF
    rows = []
    for key, v in big.items():
        last = int(v["words"][-1], 16)
        if last >> 26 != 0b100101:  # bl imm26
            continue
        execs = (v["count"] - small.get(key, {"count": 0})["count"]) / a.k
        if execs <= 0:
            continue
        pc = int(v["vaddr"], 16) + 4 * (v["n"] - 1) - base
        imm = last & 0x3FFFFFF
        target = pc + 4 * (imm - (1 << 26) if imm >> 25 else imm)
        rows.append((execs, demangled[v["sym"]], name_at(target)))
    rows.sort(key=lambda r: -r[0])
    print(f"{sum(r[0] for r in rows):.0f} calls per inference from {len(rows)} call sites")
    for execs, caller, callee in rows[: a.top]:
        print(f"{execs:9.0f}  {caller[:72]:72}  -> {callee[:72]}")


if __name__ == "__main__":
    main()

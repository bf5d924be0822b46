#!/usr/bin/env python3
"""Inner loops of edgevit's aarch64 microkernels through llvm-mca: MACs per cycle and % of the
core's peak, one table row per kernel and core model.

    python3 benches/mca_inner_loops.py BINARY [SHARED_ARMCOUNT_DIR]

../shared/armcount/mca_kernels.py (whose peak table and MAC counting this reuses) takes a
function's loop with the most multiply-accumulates; where a microkernel is inlined into its
tile loop, that is the outer loop around it. This takes the innermost loops instead (a
backward branch with no other backward branch inside) and, of those, the one with the most
multiply-accumulates: the loop the kernel spends its time in.
"""
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ARMCOUNT = sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, "..", "..", "shared", "armcount")
sys.path.insert(0, ARMCOUNT)
import mca_kernels as mk  # noqa: E402  (the shared tool's peak table and MAC counting)

# (kernel, function that holds its loop (or one of its closures), kind, llvm-mca CPU models).
K = "edgevit_kernels::gemm"
KERNELS = [
    ("i8_gemm_2x16c4_neon", f"{K}::i8::i8_gemm_2x16c4_neon::strip", "int8", ["cortex-a72"]),
    ("i8_gemm_4x16c4_neondot", f"{K}::i8::i8_gemm_4x16c4_neondot::strip", "int8", ["neoverse-n1"]),
    ("i8_gemm_4x16c8_neoni8mm", f"{K}::i8::i8_gemm_4x16c8_neoni8mm::body", "int8mm", ["neoverse-n2"]),
    ("f16_gemm_4x16_neon_fp16", f"{K}::f16::f16_gemm_4x16_neon_fp16::tiles_of_halves::{{{{closure}}}}", "f16", ["neoverse-n1"]),
    ("f16_gemm_4x16_neon_fcvtl", f"{K}::f16::f16_gemm_4x16_neon_fcvtl::run", "f32", ["cortex-a72"]),
    ("f32_gemm_4x16_neon", f"{K}::f32::f32_gemm_4x16_neon::run", "f32", ["cortex-a72", "neoverse-n1"]),
]


def functions(binary):
    """Demangled function name -> [(address, mnemonic, operands)]."""
    dump = subprocess.run([os.environ.get("OBJDUMP", "aarch64-linux-gnu-objdump"), "-d", "-C", "--no-show-raw-insn",
                           binary], capture_output=True, text=True, check=True).stdout
    funcs, cur = {}, None
    for line in dump.splitlines():
        m = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if m:
            cur = funcs.setdefault(re.sub(r"::h[0-9a-f]{16}$", "", m.group(1)), [])
            continue
        m = re.match(r"^\s+([0-9a-f]+):\s+(\S+)\s*(.*)$", line)
        if m and cur is not None:
            cur.append((int(m.group(1), 16), m.group(2), m.group(3)))
    return funcs


def innermost_loop(insns, macs):
    loops = []
    for i, (addr, mn, ops) in enumerate(insns):
        if not (mn.startswith("b.") or mn in ("cbnz", "cbz", "tbnz", "tbz", "b")):
            continue
        t = re.search(r"\b([0-9a-f]+) <", ops)
        if t and int(t.group(1), 16) < addr:
            start = next(j for j, x in enumerate(insns) if x[0] == int(t.group(1), 16))
            loops.append((start, i))
    inner = [(s, e) for s, e in loops if not any(s <= s2 and e2 < e for s2, e2 in loops if (s2, e2) != (s, e))]
    scored = [(sum(mk.count_macs(x, macs) for x in insns[s:e + 1]), insns[s:e + 1]) for s, e in inner]
    return max(scored, key=lambda x: x[0], default=(0, []))


def main():
    binary = sys.argv[1]
    mca = mk.tool("MCA", "llvm-mca-19", "llvm-mca")
    funcs = functions(binary)
    out = os.path.join(os.environ.get("TMPDIR", "/tmp"), "edgevit-mca")
    os.makedirs(out, exist_ok=True)
    print("| kernel | loop insns | MAC/iter | CPU model | cycles/iter | MAC/cycle | % of peak | busiest resources |")
    print("|---|---|---|---|---|---|---|---|")
    for name, func, kind, cpus in KERNELS:
        # The function and its closures: where the compiler inlines the tile loop changes
        # from build to build.
        bodies = [v for k, v in funcs.items() if k == func or k.startswith(func + "::{{closure}}")]
        if not bodies:
            print(f"| {name} | {func} not found |")
            continue
        mac, body = max((innermost_loop(v, mk.MACS_BY_KIND[kind]) for v in bodies), key=lambda x: x[0])
        path = os.path.join(out, f"{name}.s")
        with open(path, "w") as f:
            f.write("loop:\n" + "".join(f"  {mn} {re.sub(r'[0-9a-f]+ <[^>]*>', 'loop', ops)}\n" for _, mn, ops in body))
        for cpu in cpus:
            r = subprocess.run([mca, "-mtriple=aarch64", f"-mcpu={cpu}", "-mattr=+dotprod,+i8mm,+fullfp16",
                                "-iterations=300", "-bottleneck-analysis", path], capture_output=True, text=True)
            cyc = re.search(r"Total Cycles:\s+(\d+)", r.stdout)
            if not cyc:
                print(f"| {name} | {len(body)} | {mac} | {cpu} | mca failed |")
                continue
            per = int(cyc.group(1)) / 300
            peak = mk.PEAK[cpu][kind]
            print(f"| {name} | {len(body)} | {mac} | {cpu} | {per:.1f} | {mac / per:.1f} | "
                  f"{100 * mac / per / peak:.0f}% of {peak} | {mk.resource_pressure(r.stdout)} |")


if __name__ == "__main__":
    main()

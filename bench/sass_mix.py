"""Static instruction mix of kernel 1's loops, compiled offline for sm_90 (no GPU needed).

Compiles the plane kernel-1 launch (`tardis.kernels.blocks.PLANE_LAUNCH` at a batch, with overrides) for
an H100/H200 with Triton's own compiler, disassembles the cubin with the nvdisasm Triton ships, and
prints each loop (a backward branch) with its instruction count and opcode mix; for the predictor's
group loop also the instructions per weight (one iteration is one group of the program's row tiles).
What a rewrite changes in the SASS can be read here before a GPU is spent on timing it.

    cd python-worker && PYTHONPATH=$PWD:../.cache/triton-3.6.0 python ../bench/sass_mix.py --batch 1
    # launch overrides as JSON, e.g. the int8-x predictor: --launch '{"I8": true}'
    # the predictor only or the Wf part only: --part pred / --part wf (the other part's branch is compiled
    # too; its loops are listed as well)

Needs Triton (the interpreter's install in .cache/triton-3.6.0 will do); prints a table, writes JSON with
--out.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python-worker"))

# Falcon-7B: d, f; the kernel's argument types (every pointer 16-byte aligned, as torch allocates)
D, F = 4544, 18176
POINTERS = {
    "x_ptr": "*bf16", "wf_ptr": "*bf16", "bf_ptr": "*bf16", "qw_ptr": "*i32", "qs_ptr": "*fp16",
    "qo_ptr": "*fp16", "b1_ptr": "*bf16", "lo_ptr": "*fp32", "hi_ptr": "*fp32", "y32_ptr": "*fp32",
    "flags_ptr": "*i8", "idx_ptr": "*i32", "ws_ptr": "*i32", "cnt_ptr": "*i64",
    "zacc_ptr": "*fp32", "tick_ptr": "*i32", "xq_ptr": "*i32", "xsx_ptr": "*fp32", "xsum_ptr": "*fp32",
    "pd_ptr": "*i32", "w1_ptr": "*bf16", "zp_ptr": "*fp32", "tr_ptr": "*i64",
}  # fmt: skip
ALIGNED_INTS = ("D", "F", "F_PAD")  # multiples of 16 at every model shape the bench uses
LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")
LABEL = re.compile(r"^\.(L_x_\d+):")


def compile_sass(batch: int, launch: dict[str, Any], bits: int, group_size: int) -> tuple[str, int]:
    """(SASS text, registers) of the plane kernel for this batch and its whole launch (`plane_launch`),
    int2..4 predictor."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from tardis.kernels import decode
    from tardis.kernels.blocks import PRED_ROWS, WF_BLOCK_K, Z_BLOCK_K

    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("sass_mix compiles for the GPU: unset TRITON_INTERPRET (the interpreter has no compiler)")
    kern = decode._stacked_plane_kernel
    per_word = 32 // bits
    wpg = group_size // per_word
    cfg = {"BKF": WF_BLOCK_K} | launch
    num_warps = cfg.pop("num_warps")
    cfg.pop("maxnreg", None)
    const = cfg | {
        "NT": batch, "BITS": bits, "GS": group_size, "WPG": wpg, "NPL": min(per_word, -(-group_size // wpg)),
        "BR": PRED_ROWS, "I8_ASM": True, "PDL": True, "XQW": False, "ZR": False, "SPIN": False, "FENCE": True,
        "UPK1": False, "NKZ": -(-D // Z_BLOCK_K), "TR": False,
    } | {k: v for k, v in cfg.items() if k in ("UPK1", "TR")}  # fmt: skip
    sig: dict[str, str] = {}
    attrs: dict[tuple[int, ...], list] = {}
    for i, p in enumerate(kern.params):
        if p.is_constexpr:
            sig[p.name] = "constexpr"
        elif p.name in POINTERS:
            sig[p.name] = POINTERS[p.name]
            attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            sig[p.name] = "i32"
            if p.name in ALIGNED_INTS:
                attrs[(i,)] = [["tt.divisibility", 16]]
    missing = [k for k, v in sig.items() if v == "constexpr" and k not in const]
    if missing:
        raise SystemExit(f"no value for the kernel's constexpr argument(s) {missing}: pass them in --launch")
    const = {k: v for k, v in const.items() if k in sig}
    src = ASTSource(fn=kern, signature=sig, constexprs=const, attrs=attrs)
    k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})
    bin_dir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as fh:
        fh.write(k.asm["cubin"])
        fh.flush()
        run = {"capture_output": True, "text": True, "check": True}
        sass = subprocess.run([os.path.join(bin_dir, "nvdisasm"), "-c", fh.name], **run).stdout
        usage = subprocess.run([os.path.join(bin_dir, "cuobjdump"), "-res-usage", fh.name], **run).stdout
    regs = re.search(r"REG:(\d+)", usage)
    return sass, int(regs.group(1)) if regs else 0


def plane_launch(batch: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """The whole plane launch at this batch: blocks.PLANE_LAUNCH (PLANE_BASE's keys) with the overrides."""
    from tardis.kernels.blocks import PLANE_BASE, PLANE_LAUNCH

    return PLANE_BASE | PLANE_LAUNCH[min(batch, 4)] | overrides


def loops(sass: str) -> list[dict[str, Any]]:
    """Every backward branch's body [target, branch]: address range, instruction count, opcode mix."""
    instrs: list[tuple[int, str]] = []
    labels: dict[str, int] = {}
    pending: list[str] = []
    for line in sass.splitlines():
        m = LABEL.match(line.strip())
        if m:
            pending.append(m.group(1))
            continue
        m = LINE.search(line)
        if m:
            addr = int(m.group(1), 16)
            for name in pending:
                labels[name] = addr
            pending = []
            instrs.append((addr, m.group(3) + m.group(4)))
    out = []
    for addr, text in instrs:
        if not text.startswith("BRA"):
            continue
        target = re.search(r"\((\.L_x_\d+)\)", text)
        if not target or target.group(1)[1:] not in labels:
            continue
        start = labels[target.group(1)[1:]]
        if start >= addr:
            continue
        body = [t for a, t in instrs if start <= a <= addr]
        mix = collections.Counter(t.split()[0].split(".")[0] for t in body)
        out.append({"start": hex(start), "end": hex(addr), "instructions": len(body), "mix": dict(mix.most_common())})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--launch", default="{}", help="JSON overrides of blocks.PLANE_LAUNCH[batch]")
    ap.add_argument("--bits", type=int, default=2)
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    from tardis.kernels.blocks import PRED_ROWS

    cfg = plane_launch(args.batch, json.loads(args.launch))
    sass, regs = compile_sass(args.batch, cfg, args.bits, args.group_size)
    found = loops(sass)
    # one predictor-loop iteration: one group of T row tiles, spread over the program's threads
    weights_per_thread = cfg["T"] * PRED_ROWS * args.group_size / (32 * cfg["num_warps"])
    print(f"plane kernel, B = {args.batch}, launch {cfg}, int{args.bits} g{args.group_size}: {regs} registers, "
          f"{sum(1 for _ in LINE.finditer(sass))} instructions")  # fmt: skip
    print(f"{'loop':>15} {'instr':>6} {'/weight*':>8}  opcode mix (top 10)")
    for lp in found:
        top = " ".join(f"{k} {v}" for k, v in list(lp["mix"].items())[:10])
        print(f"{lp['start'] + '-' + lp['end']:>15} {lp['instructions']:>6} "
              f"{lp['instructions'] / weights_per_thread:>8.2f}  {top}")  # fmt: skip
    print(f"* instructions over the {weights_per_thread:g} predictor weights a thread takes per group (meaningful "
          "for the predictor's group loop only)")  # fmt: skip
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"batch": args.batch, "launch": cfg, "registers": regs, "loops": found}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""bench/sass_mix.py: finding loops and their opcode mix in nvdisasm output, and (with Triton) the real
kernel 1 compiled offline for sm_90."""

from __future__ import annotations

import os

import pytest
from bench_scripts import load

# nvdisasm's layout: labels on their own line, /*addr*/ then an optional predicate, opcode, operands
SASS = """
        /*0000*/                   S2R R3, SR_CTAID.X ;
        /*0010*/               @P0 BRA `(.L_x_2) ;
.L_x_0:
        /*0020*/                   LDG.E.128 R4, desc[UR4][R2.64] ;
        /*0030*/                   IMAD.SHL.U32 R8, R4, 0x200000, RZ ;
        /*0040*/                   LOP3.LUT R8, R8, 0x600000, R9, 0xf8, !PT ;
        /*0050*/                   FFMA R10, R8, R11, R10 ;
.L_x_1:
        /*0060*/                   FFMA R12, R8, R11, R12 ;
        /*0070*/              @!P1 BRA `(.L_x_1) ;
        /*0080*/               @P2 BRA `(.L_x_0) ;
.L_x_2:
        /*0090*/                   EXIT ;
"""


def test_loops_are_the_backward_branches_with_their_bodies() -> None:
    found = load("sass_mix").loops(SASS)
    # the forward branch to .L_x_2 is no loop; the inner loop is [0x60, 0x70], the outer [0x20, 0x80]
    assert [(lp["start"], lp["end"], lp["instructions"]) for lp in found] == [("0x60", "0x70", 2), ("0x20", "0x80", 7)]
    assert found[1]["mix"] == {"FFMA": 2, "BRA": 2, "LDG": 1, "IMAD": 1, "LOP3": 1}


def test_kernel_one_compiles_for_sm90_and_has_its_group_loop(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("compiles for the GPU; scripts/test_kernels_interp.sh runs it without the interpreter")
    mod = load("sass_mix")
    assert mod.main(["--batch", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("0x")]
    # the predictor's group loop: 64 int2 weights a thread per group, each at least one FFMA
    per_weight = max(float(r[2]) for r in rows)
    assert 2.0 < per_weight < 12.0, out
    assert any("FFMA" in line for line in out.splitlines() if line.strip().startswith("0x")), out

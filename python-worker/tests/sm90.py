"""A Triton kernel compiled for sm_90 by Triton's own compiler, with no GPU: what only a GPU run would otherwise
compile (grid dependency control, inline PTX, software-pipelined loops)."""

from __future__ import annotations

from typing import Any


def compile_sm90(
    kern: Any, const: dict, num_warps: int, pointers: dict[str, str], divisible: tuple[str, ...] = ()
) -> dict[str, Any]:
    """kern's asm (ptx, cubin, …) for sm_90: the parameters named in pointers get those types (e.g. "*bf16"),
    every other non-constexpr one is an i32 ("scale" an fp32); those in divisible are marked as multiples of 16, as
    Triton's launcher marks an argument that is one (it changes vector widths and what the pipeliner may do)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig = {
        p.name: "constexpr" if p.is_constexpr else pointers.get(p.name, "fp32" if p.name == "scale" else "i32")
        for p in kern.params
    }
    missing = [k for k, v in sig.items() if v == "constexpr" and k not in const]
    assert not missing, missing
    names = [p.name for p in kern.params]
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in divisible}
    src = ASTSource(fn=kern, signature=sig, constexprs={k: v for k, v in const.items() if k in sig}, attrs=attrs)
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})
    assert compiled.asm["cubin"]
    return compiled.asm

"""Greedy generation from a TARDIS variant in a real vLLM engine, printed as JSON with the per-layer counters.

    python -m tardis.engines.vllm.run VARIANT_DIR --prompt "The city" --prompt "In 1998," --max-tokens 32

Prints one JSON object: the vLLM version, and per prompt its token ids, the generated ids and the
top-`logprobs` log-probabilities of every step; then the merged TARDIS counters (see `counters`).
The plugin must be registered through its entry point (vLLM loads it in every process it starts).
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def generate(
    variant: str,
    prompts: list[str],
    *,
    max_tokens: int,
    logprobs: int = 2,
    dtype: str = "float32",
    max_model_len: int = 256,
    enforce_eager: bool = False,
) -> dict[str, Any]:
    """Start an engine on `variant`, generate greedily (EOS ignored) and read the counters."""
    import vllm
    from vllm import LLM, SamplingParams

    from tardis.engines.vllm import WORKER_EXTENSION, counters

    llm = LLM(
        model=variant,
        dtype=dtype,
        enforce_eager=enforce_eager,
        max_model_len=max_model_len,
        max_num_seqs=max(1, len(prompts)),
        seed=0,
        worker_extension_cls=WORKER_EXTENSION,
    )
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, logprobs=logprobs, ignore_eos=True)
    outputs = []
    for out in llm.generate(prompts, params, use_tqdm=False):
        gen = out.outputs[0]
        steps = [
            sorted(([int(tok), float(lp.logprob)] for tok, lp in step.items()), key=lambda p: -p[1])
            for step in (gen.logprobs or [])
        ]
        outputs.append(
            {
                "prompt": out.prompt,
                "prompt_token_ids": list(out.prompt_token_ids or []),
                "token_ids": list(gen.token_ids),
                "logprobs": steps,
            }
        )
    return {"vllm": vllm.__version__, "outputs": outputs, "counters": counters(llm)}


def main(argv: list[str] | None = None) -> None:
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variant", help="variant directory written by Variant.save()")
    ap.add_argument("--prompt", action="append", required=True, help="a prompt (repeat for a batch)")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--logprobs", type=int, default=2)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--max-model-len", type=int, default=256)
    ap.add_argument("--enforce-eager", action="store_true", help="no torch.compile (vLLM's CPU default compiles)")
    ap.add_argument("--out", help="write the JSON here instead of stdout")
    args = ap.parse_args(argv)
    result = generate(
        args.variant,
        args.prompt,
        max_tokens=args.max_tokens,
        logprobs=args.logprobs,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        enforce_eager=args.enforce_eager,
    )
    text = json.dumps(result)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        print(text)


if __name__ == "__main__":  # vLLM may start worker processes with spawn: keep the entry under this guard
    main()

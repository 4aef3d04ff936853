"""Train the project's byte-level BPE tokenizer (vocab 8192) and pre-tokenize the corpus.

Reads `<corpus>/train.jsonl` and `<corpus>/heldout.txt` (made by `tardis.train.corpus`), writes
`<corpus>/tokenizer/` (HF files, loadable offline by `AutoTokenizer.from_pretrained`),
`<corpus>/train_ids.npy` (uint16, documents joined by `<|endoftext|>`), `<corpus>/heldout_ids.npy`
(the whole held-out file encoded as one string) and token counts in `<corpus>/meta.json`.

    python -m tardis.train.tokenizer --corpus .corpus
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

EOT = "<|endoftext|>"
VOCAB_SIZE = 8192


def train_bpe(texts: Iterable[str], vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """Train a GPT-2-style byte-level BPE with `<|endoftext|>` as special token id 0."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def save_hf_tokenizer(tok: Tokenizer, out_dir: Path, model_max_length: int = 256) -> None:
    """Save `tok` as HF tokenizer files (tokenizer.json + tokenizer_config.json)."""
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOT,
        eos_token=EOT,
        unk_token=EOT,
        pad_token=EOT,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )
    hf.save_pretrained(str(out_dir))


def encode_documents(tok: Tokenizer, texts: list[str]) -> np.ndarray:
    """Encode documents into one uint16 stream, each document followed by `<|endoftext|>`."""
    eot = tok.token_to_id(EOT)
    if eot is None:
        raise ValueError(f"tokenizer has no {EOT} token: train it with train_bpe()")
    ids: list[int] = []
    for enc in tok.encode_batch(texts):
        ids.extend(enc.ids)
        ids.append(eot)
    return np.asarray(ids, dtype=np.uint16)


def main(argv: list[str] | None = None) -> None:
    """Command line: train the tokenizer and write the token id files."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, default=Path(".corpus"))
    p.add_argument("--vocab-size", type=int, default=VOCAB_SIZE)
    args = p.parse_args(argv)

    rows = [json.loads(line) for line in (args.corpus / "train.jsonl").open(encoding="utf-8")]
    texts = [r["text"] for r in rows]
    tok = train_bpe(texts, args.vocab_size)
    save_hf_tokenizer(tok, args.corpus / "tokenizer")

    train_ids = encode_documents(tok, texts)
    np.save(args.corpus / "train_ids.npy", train_ids)
    heldout_text = (args.corpus / "heldout.txt").read_text(encoding="utf-8")
    heldout_ids = np.asarray(tok.encode(heldout_text).ids, dtype=np.uint16)
    np.save(args.corpus / "heldout_ids.npy", heldout_ids)

    meta = json.loads((args.corpus / "meta.json").read_text())
    per_source: dict[str, int] = {}
    for row, enc in zip(rows, tok.encode_batch(texts), strict=True):
        per_source[row["source"]] = per_source.get(row["source"], 0) + len(enc.ids) + 1
    for source, count in per_source.items():
        meta["sources"][source]["tokens"] = count
    meta["train_tokens"] = int(train_ids.size)
    meta["heldout"]["tokens"] = int(heldout_ids.size)
    meta["heldout"]["bytes"] = len(heldout_text.encode("utf-8"))
    meta["heldout"]["words"] = len(heldout_text.split())
    meta["tokenizer"] = {"type": "byte-level BPE", "vocab_size": tok.get_vocab_size(), "eot": EOT}
    (args.corpus / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()

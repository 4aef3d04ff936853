"""Build the training corpus for the project's small decoder LMs from English text sources.

Sources (none of them is committed; the corpus lands in an ignored folder such as `.corpus/`):

- WikiText-2 *valid* and Tiny Shakespeare from the shared data folder;
- the King James Bible, dumped by the Debian `bible` program (packages `bible-kjv`,
  `bible-kjv-text`);
- the English Wikipedia excerpt and the Lee news corpus inside the PyPI gensim wheel's test data
  (read straight out of the wheel; gensim is never installed).

WikiText-2 *test* is the held-out set: it is never written into the training documents.

    python -m tardis.train.corpus --data ../shared/data --gensim-wheel /tmp/gensim/gensim-*.whl \
        --out .corpus
"""

from __future__ import annotations

import argparse
import bz2
import html
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HELDOUT_RELPATH = "wikitext-2/test.txt"
GENSIM_WIKI = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
GENSIM_LEE = ("gensim/test/test_data/lee_background.cor", "gensim/test/test_data/lee.cor")
BIBLE_RANGE = "Genesis1:1-Revelation22:21"


@dataclass(frozen=True)
class Document:
    """One training document and the source it came from."""

    source: str
    text: str


def split_wikitext(text: str) -> list[str]:
    """Split a WikiText file into articles at its top-level ` = Title = ` headings."""
    docs: list[list[str]] = []
    for line in text.splitlines():
        if re.fullmatch(r" = [^=].* = ", line):
            docs.append([])
        if not docs:
            docs.append([])
        docs[-1].append(line)
    return [d for d in ("\n".join(lines).strip("\n") for lines in docs) if d.strip()]


def split_paragraphs(text: str, min_chars: int = 2000) -> list[str]:
    """Split plain text at blank lines into chunks of at least `min_chars` characters."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for para in re.split(r"\n\s*\n", text):
        if not para.strip():
            continue
        current.append(para.strip("\n"))
        size += len(para)
        if size >= min_chars:
            chunks.append("\n\n".join(current))
            current, size = [], 0
    if current:
        chunks.append("\n\n".join(current))
    return chunks


def parse_bible_dump(dump: str) -> list[str]:
    """Turn the `bible -l1000` dump into one document per chapter, one verse per line."""
    chapters: list[str] = []
    title = ""
    verses: list[str] = []
    for line in dump.splitlines():
        verse = re.match(r"^\s+\d+ (.*)$", line)
        if verse:
            verses.append(verse.group(1).strip())
        elif line.strip():
            if verses:
                chapters.append(title + "\n\n" + "\n".join(verses))
            title, verses = line.strip(), []
    if verses:
        chapters.append(title + "\n\n" + "\n".join(verses))
    return chapters


def dump_bible(program: str = "bible") -> str:
    """Run the Debian `bible` program and return the whole King James text."""
    exe = shutil.which(program)
    if exe is None:
        raise FileNotFoundError(f"'{program}' not found: run `apt-get install -y bible-kjv bible-kjv-text` first")
    out = subprocess.run([exe, "-l1000", BIBLE_RANGE], capture_output=True, text=True, check=True)
    return out.stdout


def _remove_nested(text: str, pattern: str) -> str:
    """Remove innermost matches of `pattern` until none is left (for nested markup)."""
    regex = re.compile(pattern, re.DOTALL)
    while True:
        text, n = regex.subn("", text)
        if n == 0:
            return text


def _replace_links(text: str) -> str:
    """Resolve `[[target|label]]` links to their label; drop File/Category/Image links."""
    inner = re.compile(r"\[\[([^\[\]]*)\]\]")

    def repl(m: re.Match[str]) -> str:
        body = m.group(1)
        target = body.split("|", 1)[0]
        if ":" in target:
            return ""
        return body.split("|")[-1]

    while True:
        text, n = inner.subn(repl, text)
        if n == 0:
            return text


def clean_wiki_markup(markup: str) -> str:
    """Strip MediaWiki markup to plain prose (headings kept WikiText-style as ` = = X = = `)."""
    text = html.unescape(markup)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.DOTALL)
    text = re.sub(r"<ref[^>]*/>", "", text)
    text = re.sub(r"<ref[^>]*>.*?</ref>", "", text, flags=re.DOTALL)
    text = _remove_nested(text, r"\{\{[^{}]*\}\}")
    text = _remove_nested(text, r"\{\|(?:(?!\{\|).)*?\|\}")
    text = _replace_links(text)
    text = re.sub(r"\[https?://[^\s\]]+ ([^\]]*)\]", r"\1", text)
    text = re.sub(r"\[https?://[^\]]*\]", "", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = text.replace("'''", "").replace("''", "")
    lines: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        heading = re.fullmatch(r"(=+)\s*(.*?)\s*=+", line)
        if heading:
            depth = len(heading.group(1))
            marks = " ".join(["="] * depth)
            lines.extend(["", f"{marks} {heading.group(2)} {marks}", ""])
            continue
        if not line or line[0] in "|!{}" or line.startswith("__"):
            continue
        line = line.lstrip("*#:; ").strip()
        if len(line) < 3:
            continue
        lines.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def iter_wiki_articles(xml_bz2: bytes, min_chars: int = 500) -> Iterator[str]:
    """Yield the cleaned text of each main-namespace, non-redirect page of a MediaWiki dump."""
    root = ET.fromstring(bz2.decompress(xml_bz2))
    ns = root.tag.split("}")[0] + "}" if root.tag.startswith("{") else ""
    for page in root.iter(f"{ns}page"):
        if (page.findtext(f"{ns}ns") or "0") != "0" or page.find(f"{ns}redirect") is not None:
            continue
        title = page.findtext(f"{ns}title") or ""
        markup = page.findtext(f"{ns}revision/{ns}text") or ""
        if markup.lstrip().upper().startswith("#REDIRECT"):
            continue
        body = clean_wiki_markup(markup)
        if len(body) >= min_chars:
            yield f"= {title} =\n\n{body}"


def gensim_documents(wheel: Path) -> list[Document]:
    """Read the Wikipedia excerpt and the Lee news corpus out of a gensim wheel."""
    docs: list[Document] = []
    with zipfile.ZipFile(wheel) as zf:
        for article in iter_wiki_articles(zf.read(GENSIM_WIKI)):
            docs.append(Document("gensim-enwiki-excerpt", article))
        for member in GENSIM_LEE:
            for line in zf.read(member).decode("utf-8", errors="replace").splitlines():
                if line.strip():
                    docs.append(Document("gensim-lee-news", line.strip()))
    return docs


def build_documents(data_dir: Path, gensim_wheel: Path | None, bible: bool) -> list[Document]:
    """Collect every training document from the configured sources (never the held-out file)."""
    docs: list[Document] = []
    wiki_valid = (data_dir / "wikitext-2/valid.txt").read_text(encoding="utf-8")
    docs += [Document("wikitext-2-valid", d) for d in split_wikitext(wiki_valid)]
    shakespeare = (data_dir / "tinyshakespeare/input.txt").read_text(encoding="utf-8")
    docs += [Document("tinyshakespeare", d) for d in split_paragraphs(shakespeare)]
    if bible:
        docs += [Document("bible-kjv", d) for d in parse_bible_dump(dump_bible())]
    if gensim_wheel is not None:
        docs += gensim_documents(gensim_wheel)
    return docs


def source_stats(docs: list[Document]) -> dict[str, dict[str, int]]:
    """Count documents and characters per source."""
    stats: dict[str, dict[str, int]] = {}
    for doc in docs:
        entry = stats.setdefault(doc.source, {"documents": 0, "chars": 0})
        entry["documents"] += 1
        entry["chars"] += len(doc.text)
    return stats


def write_corpus(docs: list[Document], out_dir: Path, heldout: Path) -> None:
    """Write `train.jsonl`, the held-out text and `meta.json` into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "train.jsonl").open("w", encoding="utf-8") as f:
        for doc in docs:
            f.write(json.dumps({"source": doc.source, "text": doc.text}) + "\n")
    shutil.copyfile(heldout, out_dir / "heldout.txt")
    meta = {
        "sources": source_stats(docs),
        "heldout": {"file": HELDOUT_RELPATH, "chars": len(heldout.read_text(encoding="utf-8"))},
    }
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    """Command line: build the corpus folder."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data"), help="shared data folder")
    p.add_argument("--gensim-wheel", type=Path, default=None, help="a downloaded gensim wheel")
    p.add_argument("--no-bible", action="store_true", help="skip the King James Bible")
    p.add_argument("--out", type=Path, default=Path(".corpus"))
    args = p.parse_args(argv)
    docs = build_documents(args.data, args.gensim_wheel, bible=not args.no_bible)
    write_corpus(docs, args.out, args.data / HELDOUT_RELPATH)
    print(json.dumps(source_stats(docs), indent=2))


if __name__ == "__main__":
    main()

"""The data step of examples/classify_multilabel_conll.yaml: CoNLL-2003 sentences labelled with the set of
entity types they contain (PER, ORG, LOC, MISC; an empty set when none), derived from the shared copy
and written to runs/data/conll_entity_types/{train,test}.jsonl (not committed).

    .venv/bin/python examples/conll_entity_types.py [--shared ../shared/data/conll2003]

Sentences are the CoNLL token lines joined with spaces (the tokenisation the corpus ships); a tag's type
is what follows its B-/I- prefix.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sentences(path: Path):
    """(tokens, entity types) per sentence of a CoNLL file (word POS tag per line, blank line between)."""
    tokens: list[str] = []
    types: set[str] = set()
    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        parts = line.split()
        if parts and parts[0] != "-DOCSTART-":
            tokens.append(parts[0])
            if parts[-1] != "O":
                types.add(parts[-1].split("-", 1)[1])
        elif tokens:
            yield tokens, sorted(types)
            tokens, types = [], set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", default=str(ROOT.parent / "shared" / "data" / "conll2003"))
    parser.add_argument("--out", default=str(ROOT / "runs" / "data" / "conll_entity_types"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        rows = [
            {"text": " ".join(t), "labels": types}
            for t, types in sentences(Path(args.shared) / f"{split}.txt")
        ]
        with (out / f"{split}.jsonl").open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(
            f"{out / f'{split}.jsonl'}: {len(rows)} sentences, {sum(not r['labels'] for r in rows)} with no entity"
        )


if __name__ == "__main__":
    main()

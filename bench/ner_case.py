"""What capitalisation is worth to the bundled (uncased) MiniLM on CoNLL-2003 NER, measured on the probe.

    .venv/bin/python bench/ner_case.py [--words 50000]

The bundled all-MiniLM-L6-v2 lower-cases its input, so "Apple" and "apple" reach it as the same
sub-words. There is no cased model of its size among the bundled weights, so the cost is shown on what
can be measured: the per-word probe (logistic regression on the frozen body's hidden state at each
word's first sub-word, as token_classify's probe baseline) with and without four case features of the
original word (title case, all capitals, first word of the sentence, has a digit). The difference is
what case information adds for a linear reader of the uncased features; a fine-tuned uncased model
recovers some of it from context, so it is an upper-bound-flavoured indication, not the fine-tuned
model's own cost. Writes bench/results/ner_case.json.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lmtune.assets import resolve_model
from lmtune.config import validate
from lmtune.data.tokens import read_conll
from lmtune.evaluate.metrics import score
from lmtune.models.infer import infer_texts, word_hidden_step
from lmtune.models.load import load_classifier, load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "conll2003"


def case_features(words: list[str]) -> np.ndarray:
    return np.array(
        [
            [
                w[:1].isupper() and not w.isupper(),
                w.isupper() and len(w) > 1,
                i == 0,
                any(c.isdigit() for c in w),
            ]
            for i, w in enumerate(words)
        ],
        dtype=np.float32,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--words", type=int, default=50_000, help="training words for the probe")
    args = parser.parse_args()
    start = time.perf_counter()
    train = list(read_conll(SHARED / "train.txt"))
    test = list(read_conll(SHARED / "test.txt"))
    random.Random(0).shuffle(train)
    chosen, n = [], 0
    for sentence in train:
        if n >= args.words:
            break
        chosen.append(sentence)
        n += len(sentence.tokens)
    labels = ["O", *(f"{p}-{t}" for t in ("LOC", "MISC", "ORG", "PER") for p in "BI")]
    label2id = {label: i for i, label in enumerate(labels)}
    config = validate(
        {"task": "token_classify", "model": {"max_length": 128}, "data": {"train": "x"}}, "bench"
    )
    path = resolve_model("bundled:minilm")
    tokenizer = load_tokenizer(path, words=True)
    model = load_classifier(path, labels, kind="token", new_head=True)

    def features(sentences):
        hidden = infer_texts(
            config, model, tokenizer, [s.tokens for s in sentences], word_hidden_step, "embed"
        )
        return hidden, [case_features(s.tokens)[: len(h)] for s, h in zip(sentences, hidden, strict=True)]

    train_hidden, train_case = features(chosen)
    test_hidden, test_case = features(test)
    y = np.concatenate(
        [[label2id[t] for t in s.tags[: len(h)]] for s, h in zip(chosen, train_hidden, strict=True)]
    )
    gold = [" ".join(s.tags) for s in test]
    result = {"train_words": int(len(y)), "test_sentences": len(test)}
    for name, with_case in (("uncased features", False), ("+ case features", True)):
        x = np.concatenate(
            [np.hstack([h, c]) if with_case else h for h, c in zip(train_hidden, train_case, strict=True)]
        )
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, random_state=0)).fit(x, y)
        pred = []
        for h, c, s in zip(test_hidden, test_case, test, strict=True):
            ids = probe.predict(np.hstack([h, c]) if with_case else h) if len(h) else []
            tags = [labels[i] for i in ids] + ["O"] * (len(s.tokens) - len(h))
            pred.append(" ".join(tags))
        scored = score("entities", {"gold": gold, "pred": pred}, seed=0)
        result[name] = {k: scored[k] for k in ("entity_f1", "entity_precision", "entity_recall")} | {
            "ci": scored["ci"]["entity_f1"]
        }
        print(
            f"{name:18} entity F1 {100 * scored['entity_f1']:.1f} {[round(100 * v, 1) for v in scored['ci']['entity_f1']]}"
        )
    gain = result["+ case features"]["entity_f1"] - result["uncased features"]["entity_f1"]
    result["case_gain_f1"] = gain
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(f"case features add {100 * gain:.1f} entity F1 to the probe ({result['seconds'] / 60:.1f} min)")
    out = ROOT / "bench" / "results" / "ner_case.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

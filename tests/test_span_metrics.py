"""Span-level scores (lmtune.evaluate.spans): SQuAD exact match / F1 against the official scripts'
logic restated here, and entity scores against seqeval itself, on hand cases and seeded fuzz."""

from __future__ import annotations

import random
import re
import string
import warnings
from collections import Counter

import numpy as np
import pytest
from seqeval import metrics as sm
from seqeval.metrics.sequence_labeling import get_entities
from seqeval.scheme import IOB1, IOB2, IOBES, Entities

from lmtune.errors import LmtuneError
from lmtune.evaluate.spans import (
    bootstrap_f1,
    check_tag,
    entities,
    entity_scores,
    exact_match,
    f1,
    normalize_answer,
    qa_scores,
    repair_iob2,
    to_iob2,
)

TYPES = ("PER", "LOC", "ORG")

# ---------------------------------------------------------------------------------- references


def squad_normalize(s: str) -> str:
    """The official SQuAD v1.1 / v2.0 normalize_answer, as the scripts write it."""

    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def squad_v11_f1(prediction: str, ground_truth: str) -> float:
    """evaluate-v1.1.py f1_score: 0 when no token is shared (also when both sides are empty)."""
    pred, gold = squad_normalize(prediction).split(), squad_normalize(ground_truth).split()
    num_same = sum((Counter(pred) & Counter(gold)).values())
    if num_same == 0:
        return 0.0
    precision, recall = num_same / len(pred), num_same / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_v2_scores(prediction: str, answers: list[str]) -> tuple[float, float]:
    """evaluate-v2.0.py: golds that normalise to "" dropped, [""] if none left; an empty side matches
    only an empty side."""
    golds = [a for a in answers if squad_normalize(a)] or [""]

    def one_f1(gold: str) -> float:
        g, p = squad_normalize(gold).split(), squad_normalize(prediction).split()
        if not g or not p:
            return float(g == p)
        same = sum((Counter(g) & Counter(p)).values())
        if same == 0:
            return 0.0
        precision, recall = same / len(p), same / len(g)
        return 2 * precision * recall / (precision + recall)

    em = max(float(squad_normalize(g) == squad_normalize(prediction)) for g in golds)
    return em, max(one_f1(g) for g in golds)


def seqeval_scores(gold: list[list[str]], pred: list[list[str]]) -> dict:
    """seqeval's default-mode (conlleval) scores, zero_division=0 as lmtune's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "X seems not to be NE tag" on the malformed fuzz
        report = sm.classification_report(gold, pred, output_dict=True, zero_division=0)
        return {
            "precision": sm.precision_score(gold, pred, zero_division=0),
            "recall": sm.recall_score(gold, pred, zero_division=0),
            "f1": sm.f1_score(gold, pred, zero_division=0),
            "macro_f1": sm.f1_score(gold, pred, average="macro", zero_division=0),
            "accuracy": sm.accuracy_score(gold, pred),
            "per_type": {
                k: {
                    "precision": v["precision"],
                    "recall": v["recall"],
                    "f1": v["f1-score"],
                    "support": v["support"],
                }
                for k, v in report.items()
                if not k.endswith(" avg")
            },
        }


def seqeval_entities(tags: list[str]) -> list[tuple[str, int, int]]:
    """seqeval's default-mode chunks of one sentence, end made exclusive."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [(t, s, e + 1) for t, s, e in get_entities(list(tags))]


def strict_entities(tags: list[str], scheme) -> list[tuple[str, int, int]]:
    """seqeval's scheme-aware (mode='strict') chunks of one sentence."""
    return [(e.tag, e.start, e.end) for e in Entities([list(tags)], scheme).entities[0]]


def assert_matches_seqeval(gold: list[list[str]], pred: list[list[str]]) -> dict:
    ours, ref = entity_scores(gold, pred), seqeval_scores(gold, pred)
    for key in ("precision", "recall", "f1", "macro_f1", "accuracy"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-12), key
    assert set(ours["per_type"]) == set(ref["per_type"])
    for type_, scores in ref["per_type"].items():
        for key, value in scores.items():
            assert ours["per_type"][type_][key] == pytest.approx(value, abs=1e-12), (type_, key)
    for tags in [*gold, *pred]:
        assert entities(tags) == seqeval_entities(tags), tags
    return ours


# ---------------------------------------------------------------------------------- generators


def random_tags(rng: random.Random, n: int, prefixes: str = "BIO", extra: tuple[str, ...] = ()) -> list[str]:
    """Random tags with no regard for the scheme: I- after O, type switches inside chunks, ..."""
    pool = ["O"] * 3 + [f"{p}-{t}" for p in prefixes if p != "O" for t in TYPES] + list(extra)
    return [rng.choice(pool) for _ in range(n)]


def perturbed(rng: random.Random, tags: list[str], pool: list[str]) -> list[str]:
    """A prediction near `tags`: most tokens kept, some replaced, so that some entities match."""
    return [t if rng.random() < 0.8 else rng.choice(pool) for t in tags]


def random_layout(rng: random.Random, n: int) -> list[tuple[str, int, int]]:
    """Non-overlapping (type, start, end) chunks over n tokens, often adjacent and of the same type."""
    chunks, i = [], 0
    while i < n:
        if rng.random() < 0.4:
            i += 1
            continue
        end = min(n, i + rng.randint(1, 4))
        chunks.append((rng.choice(TYPES[:2]), i, end))
        i = end
    return chunks


def render(chunks: list[tuple[str, int, int]], n: int, scheme: str) -> list[str]:
    """The valid tags of `chunks` in IOB2, IOB1 or BIOES."""
    tags = ["O"] * n
    prev_end, prev_type = -1, None
    for type_, start, end in chunks:
        for i in range(start, end):
            tags[i] = f"I-{type_}"
        if scheme == "IOB2":
            tags[start] = f"B-{type_}"
        elif scheme == "IOB1":
            if prev_end == start and prev_type == type_:
                tags[start] = f"B-{type_}"
        else:
            if end - start == 1:
                tags[start] = f"S-{type_}"
            else:
                tags[start], tags[end - 1] = f"B-{type_}", f"E-{type_}"
        prev_end, prev_type = end, type_
    return tags


# ---------------------------------------------------------------------------------- SQuAD


@pytest.mark.parametrize(
    "text, normalised",
    [
        ("The Eiffel Tower", "eiffel tower"),
        ("An apple, a pear; THE plum.", "apple pear plum"),
        ("  spaced\tout \n words  ", "spaced out words"),
        ("theatre another", "theatre another"),  # articles only as whole words
        ("Hello-World!", "helloworld"),  # punctuation removed, not replaced by a space
        ("U.S. (a) $5", "us 5"),
        ("a an the", ""),
        ("", ""),
    ],
)
def test_normalize_answer(text, normalised):
    assert normalize_answer(text) == normalised == squad_normalize(text)


def test_exact_match_hand_cases():
    assert exact_match("The Eiffel Tower.", ["eiffel tower"]) == 1.0
    assert exact_match("Eiffel   TOWER", ["the Eiffel tower!"]) == 1.0
    assert exact_match("Eiffel", ["Eiffel Tower"]) == 0.0
    assert exact_match("Paris", ["London", "paris.", "Rome"]) == 1.0  # the best of several golds
    assert exact_match("", ["Paris"]) == 0.0
    assert exact_match("Paris", []) == 0.0  # unanswerable: only "" is right
    assert exact_match("", []) == 1.0


def test_f1_hand_cases():
    # pred "the big red dog" -> [big, red, dog]; gold "a red dog barked" -> [red, dog, barked]:
    # 2 shared, P = R = 2/3, F1 = 2/3.
    assert f1("the big red dog", ["a red dog barked"]) == pytest.approx(2 / 3)
    # pred [red, dog], gold [big, red, dog]: P = 2/2, R = 2/3, F1 = 2 * 1 * 2/3 / (5/3) = 0.8.
    assert f1("Red dog!", ["The big red dog"]) == pytest.approx(0.8)
    # tokens count with multiplicity: pred [dog, dog, dog], gold [dog]: 1 shared, P = 1/3, R = 1, F1 = 0.5.
    assert f1("dog dog dog", ["dog"]) == pytest.approx(0.5)
    # the best over golds: 0 ("cat"), 0.8 ("big red dog"), 2 * 1/2 * 1 / 1.5 = 2/3 ("red").
    assert f1("red dog", ["cat", "big red dog", "red"]) == pytest.approx(0.8)
    assert f1("cat", ["dog"]) == 0.0
    assert f1("", ["Paris"]) == 0.0  # an empty prediction against an answer
    assert f1("Paris", []) == 0.0
    assert f1("", []) == 1.0  # SQuAD v2: "no answer" to an unanswerable question


def test_degenerate_answers_follow_squad_v2():
    """What normalises to "" is "no answer" (SQuAD v2): F1 never falls below exact match."""
    assert exact_match(" the. ", []) == f1(" the. ", []) == 1.0
    assert exact_match("The", ["the"]) == f1("The", ["the"]) == 1.0  # v1.1's F1 said 0 here
    assert squad_v11_f1("The", "the") == 0.0  # ... as the reference shows
    assert exact_match("", ["a", "Paris"]) == f1("", ["a", "Paris"]) == 0.0  # "a" is no answer: dropped


def test_gold_must_be_a_list():
    with pytest.raises(LmtuneError, match="list of strings"):
        exact_match("Paris", "Paris")
    with pytest.raises(LmtuneError, match="list of strings"):
        f1("Paris", "Paris")


def random_answer(rng: random.Random) -> str:
    words = ["the", "The", "a", "An", "cat", "Cat", "dog", "red", "big", "Paris", "U.S.", "don't"]
    words += [",", ".", "!", "-", "theatre", "another", "Ünï", "αβ", "dog."]
    seps = [" ", "  ", "\t", "\n", ""]
    return "".join(rng.choice(words) + rng.choice(seps) for _ in range(rng.randint(0, 5)))


def test_squad_matches_official_logic_on_random_pairs():
    rng = random.Random(1234)
    degenerate = 0
    for _ in range(400):
        prediction = random_answer(rng)
        golds = [random_answer(rng) for _ in range(rng.randint(0, 3))]
        assert normalize_answer(prediction) == squad_normalize(prediction)
        em, score = exact_match(prediction, golds), f1(prediction, golds)
        assert (em, score) == pytest.approx(squad_v2_scores(prediction, golds), abs=1e-12)
        assert 0.0 <= em <= score <= 1.0
        if squad_normalize(prediction) and golds and all(squad_normalize(g) for g in golds):
            assert score == pytest.approx(max(squad_v11_f1(prediction, g) for g in golds), abs=1e-12)
            assert em == max(float(squad_normalize(prediction) == squad_normalize(g)) for g in golds)
        else:
            degenerate += 1
    assert 20 < degenerate < 300  # both kinds of pair were drawn


def test_qa_scores():
    predictions = ["Paris", "red dog", "", "Rome"]
    golds = [["paris"], ["big red dog"], [], []]
    out = qa_scores(predictions, golds)
    assert out["em_per_row"] == [1.0, 0.0, 1.0, 0.0]
    assert out["f1_per_row"] == pytest.approx([1.0, 0.8, 1.0, 0.0])
    assert out["exact_match"] == pytest.approx(0.5)
    assert out["f1"] == pytest.approx(2.8 / 4)
    assert out["n"] == 4
    assert out["has_answer_f1"] == pytest.approx(0.9)
    assert out["no_answer_f1"] == pytest.approx(0.5)
    assert "has_answer_f1" not in qa_scores(["Paris"], [["Paris"]])
    assert qa_scores([], [])["exact_match"] == 0.0
    with pytest.raises(LmtuneError, match="1 predictions for 2"):
        qa_scores(["Paris"], [["Paris"], []])


# ---------------------------------------------------------------------------------- entities


@pytest.mark.parametrize(
    "tags, expected",
    [
        (["O", "I-PER", "I-PER", "O"], [("PER", 1, 3)]),  # I- after O starts a chunk
        (["I-PER", "O"], [("PER", 0, 1)]),  # ... so does an I- at the start
        (["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 1), ("LOC", 1, 3)]),  # a type switch splits
        (["B-PER", "B-PER", "B-LOC"], [("PER", 0, 1), ("PER", 1, 2), ("LOC", 2, 3)]),  # adjacent
        (["O", "B-ORG", "I-ORG"], [("ORG", 1, 3)]),  # at the sentence end
        (["B-MISC"], [("MISC", 0, 1)]),  # a single token
        (["O", "O"], []),
        ([], []),
        (["B-PER", "I-PER", "E-PER", "S-LOC", "O", "E-ORG"], [("PER", 0, 3), ("LOC", 3, 4), ("ORG", 5, 6)]),
        (["I-PER", "I-PER", "B-PER", "O", "I-LOC"], [("PER", 0, 2), ("PER", 2, 3), ("LOC", 4, 5)]),  # IOB1
        (["B-PER-X", "I-PER-X"], [("PER-X", 0, 2)]),  # the type is everything after the first "-"
    ],
)
def test_entities_hand_cases(tags, expected):
    assert entities(tags) == expected == seqeval_entities(tags)


def test_entity_scores_hand_case():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "I-ORG"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "I-ORG"]]
    out = assert_matches_seqeval(gold, pred)
    # gold: PER(0,2) LOC(3,4) | ORG(1,2); pred: PER(0,2) ORG(3,4) | ORG(0,2): only PER is right.
    assert (out["correct"], out["pred_entities"], out["true_entities"]) == (1, 3, 3)
    assert out["precision"] == out["recall"] == out["f1"] == pytest.approx(1 / 3)
    assert out["per_type"]["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert out["per_type"]["LOC"]["support"] == 1 and out["per_type"]["LOC"]["f1"] == 0.0
    assert out["per_type"]["ORG"]["precision"] == 0.0 and out["per_type"]["ORG"]["support"] == 1
    assert out["macro_f1"] == pytest.approx(1 / 3)
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["per_sentence"] == [(1, 2, 2), (0, 1, 1)]


@pytest.mark.parametrize("prefixes", ["BIO", "BIOES"])
def test_entity_scores_match_seqeval_on_random_tags(prefixes):
    rng = random.Random(7 + len(prefixes))
    pool = ["O"] * 3 + [f"{p}-{t}" for p in prefixes if p != "O" for t in TYPES]
    gold = [random_tags(rng, rng.randint(0, 12), prefixes) for _ in range(400)]
    pred = [perturbed(rng, tags, pool) for tags in gold]
    out = assert_matches_seqeval(gold, pred)
    assert 0.2 < out["f1"] < 0.95  # neither trivially right nor trivially wrong
    if prefixes == "BIO":
        assert sum(repair_iob2(t)[1] for t in gold) > 100  # many stray I- among them


def test_entity_scores_match_seqeval_on_malformed_tags():
    """Tags check_tag rejects are still chunked as seqeval does (those with a type, or typeless "." ones)."""
    rng = random.Random(3)
    extra = ("PER", "X-LOC", "B-PER-X", ".", "B", "I", "E-", "S-", "O-PER")
    gold = [random_tags(rng, rng.randint(0, 10), "BIOES", extra) for _ in range(300)]
    pred = [perturbed(rng, tags, ["O", "B-PER", "I-LOC", *extra]) for tags in gold]
    assert_matches_seqeval(gold, pred)
    for _ in range(300):  # within one sentence even a bare "X" is chunked as seqeval does
        tags = random_tags(rng, rng.randint(0, 10), "BIOES", (*extra, "X", "Q-"))
        assert entities(tags) == seqeval_entities(tags)


def test_bare_letter_tags_are_where_seqeval_crosses_sentences():
    """The documented exception: seqeval's flattening lets a bare "X" continue a chunk across the O it
    puts between sentences; lmtune chunks each sentence on its own. check_tag rejects such tags."""
    gold = [["O"], ["X", "B-PER"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert get_entities(gold) == [("_", 0, 2), ("PER", 3, 3)]  # "_" from token 0 of sentence 1
    assert entities(gold[1]) == [("_", 0, 1), ("PER", 1, 2)]
    assert check_tag("X") is not None


def test_entity_scores_length_checks():
    with pytest.raises(LmtuneError, match="1 predicted sentences for 2"):
        entity_scores([["O"], ["O"]], [["O"]])
    with pytest.raises(LmtuneError, match="sentence 1: 1 predicted tags for 2"):
        entity_scores([["O"], ["O", "O"]], [["O"], ["O"]])
    with pytest.raises(LmtuneError, match="empty tag"):
        entities(["B-PER", ""])


# ---------------------------------------------------------------------------------- schemes


def test_check_tag():
    for tag in ("O", "B-PER", "I-PER", "B-PER-X"):
        assert check_tag(tag) is None
    assert check_tag("E-PER", "BIOES") is None and check_tag("S-PER", "iobes") is None
    assert check_tag("S-PER", "IOB2") == "tag 'S-PER' is not IOB2 (allowed prefixes: B-, I-, or O)"
    assert "allowed prefixes: B-, I-, E-, S-, or O" in check_tag("U-PER", "BIOES")
    assert "'PER' is not IOB1" in check_tag("PER", "IOB1")
    assert check_tag("B-") == "tag 'B-' has no entity type after B-"
    for bad in ("o", "b-PER", "O-PER", "-PER", ""):
        assert check_tag(bad) is not None, bad
    assert check_tag(None) == "tag None is not a string"
    with pytest.raises(LmtuneError, match="unknown tagging scheme 'BILOU'"):
        check_tag("O", "BILOU")


def test_repair_iob2():
    tags = ["O", "I-PER", "I-PER", "B-LOC", "I-ORG", "I-ORG", "I-LOC"]
    assert repair_iob2(tags) == (["O", "B-PER", "I-PER", "B-LOC", "B-ORG", "I-ORG", "B-LOC"], 3)
    assert repair_iob2(["I-PER"]) == (["B-PER"], 1)
    assert repair_iob2(["B-PER", "I-PER", "O", "B-LOC"]) == (["B-PER", "I-PER", "O", "B-LOC"], 0)
    assert repair_iob2([]) == ([], 0)
    with pytest.raises(LmtuneError, match="token 1: tag 'E-PER' is not IOB2"):
        repair_iob2(["B-PER", "E-PER"])


def test_repair_iob2_keeps_the_entities_and_makes_strict_iob2():
    rng = random.Random(11)
    for _ in range(300):
        tags = random_tags(rng, rng.randint(0, 12))
        fixed, changed = repair_iob2(tags)
        assert changed == sum(a != b for a, b in zip(tags, fixed, strict=True))
        assert entities(fixed) == entities(tags) == strict_entities(fixed, IOB2)
        assert repair_iob2(fixed) == (fixed, 0)


def test_to_iob2_hand_cases():
    assert to_iob2(["B-PER", "I-PER", "E-PER", "S-LOC", "O"], "BIOES") == [
        "B-PER",
        "I-PER",
        "I-PER",
        "B-LOC",
        "O",
    ]
    assert to_iob2(["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-PER"], "IOB1") == [
        "B-PER",
        "I-PER",
        "B-PER",
        "O",
        "B-LOC",
        "B-PER",
    ]
    # off-scheme BIOES keeps seqeval's chunks: a stray E- starts one, an I- after S- starts another
    assert to_iob2(["O", "E-PER"], "BIOES") == ["O", "B-PER"]
    assert to_iob2(["S-PER", "I-PER", "E-PER", "E-PER"], "IOBES") == ["B-PER", "B-PER", "I-PER", "B-PER"]
    assert to_iob2(["O", "I-PER"], "IOB2") == ["O", "I-PER"]  # IOB2 as it is: repair_iob2 is explicit
    with pytest.raises(LmtuneError, match="token 0: tag 'S-PER' is not IOB1"):
        to_iob2(["S-PER"], "IOB1")
    with pytest.raises(LmtuneError, match="unknown tagging scheme"):
        to_iob2(["O"], "BILOU")


def test_to_iob2_on_valid_sequences_matches_seqeval_strict():
    rng = random.Random(5)
    for _ in range(300):
        n = rng.randint(0, 12)
        chunks = random_layout(rng, n)
        iob2, iob1, bioes = (render(chunks, n, s) for s in ("IOB2", "IOB1", "BIOES"))
        assert strict_entities(iob2, IOB2) == chunks
        assert strict_entities(iob1, IOB1) == chunks
        assert strict_entities(bioes, IOBES) == chunks
        assert to_iob2(iob1, "IOB1") == iob2
        assert to_iob2(bioes, "BIOES") == iob2
        assert to_iob2(iob2, "IOB2") == iob2
        for tags, scheme in ((iob2, "IOB2"), (iob1, "IOB1"), (bioes, "BIOES")):
            assert entities(tags, scheme) == chunks


@pytest.mark.parametrize("scheme, prefixes", [("IOB1", "BIO"), ("BIOES", "BIOES")])
def test_to_iob2_keeps_default_mode_entities_on_any_tags(scheme, prefixes):
    rng = random.Random(17)
    for _ in range(300):
        tags = random_tags(rng, rng.randint(0, 12), prefixes)
        out = to_iob2(tags, scheme)
        assert entities(out) == entities(tags) == seqeval_entities(tags)
        assert repair_iob2(out)[1] == 0  # valid IOB2: every chunk starts with B-
        assert strict_entities(out, IOB2) == entities(out)


# ---------------------------------------------------------------------------------- bootstrap


def test_bootstrap_f1():
    rng = random.Random(23)
    pool = ["O"] * 3 + [f"{p}-{t}" for p in "BI" for t in TYPES]
    gold = [random_tags(rng, rng.randint(1, 12)) for _ in range(300)]
    out = entity_scores(gold, [perturbed(rng, tags, pool) for tags in gold])
    low, high = bootstrap_f1(out["per_sentence"], n=400, seed=3)
    assert low < out["f1"] < high
    assert 0.01 < high - low < 0.3
    assert bootstrap_f1(out["per_sentence"], n=400, seed=3) == (low, high)
    assert bootstrap_f1(out["per_sentence"], n=400, seed=4) != (low, high)

    # the same resamples (one block of one seeded draw), F1 recomputed row by row in plain Python
    counts = out["per_sentence"]
    idx = np.random.default_rng(3).integers(0, len(counts), size=(400, len(counts)))
    f1s = []
    for row in idx:
        c, p, g = (sum(counts[i][j] for i in row) for j in range(3))
        f1s.append(2 * c / (p + g) if p + g else 0.0)
    assert (low, high) == pytest.approx(tuple(np.percentile(f1s, [2.5, 97.5])), abs=1e-12)


def test_bootstrap_f1_edges():
    assert bootstrap_f1([(0, 0, 0)] * 5, n=50) == (0.0, 0.0)  # no entity anywhere: F1 0, not NaN
    assert bootstrap_f1([(2, 2, 2)] * 5, n=50) == (1.0, 1.0)
    with pytest.raises(LmtuneError, match="no sentences"):
        bootstrap_f1([])
    with pytest.raises(LmtuneError, match="n >= 1"):
        bootstrap_f1([(1, 1, 1)], n=0)


def test_module_is_torch_free():
    import subprocess
    import sys

    code = "import sys, lmtune.evaluate.spans as s; s.f1('a b', ['b']); print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        == "False\n"
    )

"""Training-data augmentation: text operations, lexicons, back-translation, paraphrasing, balancing."""

from __future__ import annotations

import json
from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from lmtune.data.augment import back_translate, balance, load_lexicon, paraphrase, text_ops, wordnet_lexicon
from lmtune.errors import LmtuneError

TEXTS = [
    "the movie was really good and the actors were great",
    "I did not enjoy the food at this small restaurant",
    "a quiet day with very poor service in the cafe",
]
LEXICON = {"good": ["fine", "decent"], "movie": ["film"], "food": ["meal"], "poor": ["bad"], "day": ["date"]}


# ------------------------------------------------------------------------------ text operations


def test_text_ops_is_deterministic_per_seed():
    first = text_ops(TEXTS, copies=2, lexicon=LEXICON, seed=1)
    assert first == text_ops(TEXTS, copies=2, lexicon=LEXICON, seed=1)
    assert first != text_ops(TEXTS, copies=2, lexicon=LEXICON, seed=2)


def test_text_ops_rows_change_text_and_name_their_origin():
    rows = text_ops(TEXTS, copies=2, p=0.2, lexicon=LEXICON)
    assert {origin for _, _, origin in rows} == {"deletion", "swap", "synonym"}
    for index, new, origin in rows:
        source = TEXTS[index].split()
        words = new.split()
        assert new != TEXTS[index]
        if origin == "deletion":
            assert len(words) < len(source) and not Counter(words) - Counter(source)
        elif origin == "swap":
            assert Counter(words) == Counter(source)
        else:
            assert len(words) == len(source)
            changed = [(a, b) for a, b in zip(source, words, strict=True) if a != b]
            assert changed and all(b in LEXICON[a] for a, b in changed)
    per_source_op = Counter((index, origin) for index, _, origin in rows)
    assert max(per_source_op.values()) <= 2
    assert len({(index, new) for index, new, _ in rows}) == len(rows)  # copies never repeat


def test_text_ops_never_returns_unchanged_copies():
    assert text_ops(["hello", "same same same"], ops=["swap", "deletion"], copies=3) == [
        (1, "same same", "deletion")
    ]


def test_synonym_keeps_case_and_punctuation():
    rows = text_ops(["Good, movie!"], ops=["synonym"], p=1.0, lexicon={"good": ["fine"], "movie": ["film"]})
    assert rows == [(0, "Fine, film!", "synonym")]


def test_text_ops_needs_a_lexicon_only_for_synonyms():
    assert {o for _, _, o in text_ops(TEXTS)} == {"deletion", "swap"}
    with pytest.raises(LmtuneError, match="'synonym' needs a lexicon"):
        text_ops(TEXTS, ops=["synonym"])
    with pytest.raises(LmtuneError, match="data.augment.ops: unknown operation 'shuffle'"):
        text_ops(TEXTS, ops=["shuffle"])
    with pytest.raises(LmtuneError, match="data.augment.p"):
        text_ops(TEXTS, p=0)


# ------------------------------------------------------------------------------------- lexicons


def test_load_lexicon_reads_json_tsv_and_moby_csv(tmp_path):
    (tmp_path / "lex.json").write_text(json.dumps({"Good": ["fine", "good", "decent"]}))
    assert load_lexicon(tmp_path / "lex.json") == {"good": ["fine", "decent"]}
    (tmp_path / "lex.tsv").write_text("# word\tsynonyms\ngood\tfine,decent\n\nmovie\tfilm\tpicture\n")
    assert load_lexicon(tmp_path / "lex.tsv") == {"good": ["fine", "decent"], "movie": ["film", "picture"]}
    (tmp_path / "mthesaur.txt").write_text("abbreviated,brief,cut short\n")
    assert load_lexicon(tmp_path / "mthesaur.txt") == {"abbreviated": ["brief", "cut short"]}


def test_load_lexicon_reports_bad_files_by_line(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("good\tfine\nmovie\n")
    with pytest.raises(LmtuneError, match=rf"^{bad}:2: expected"):
        load_lexicon(bad)
    broken = tmp_path / "broken.json"
    broken.write_text('{"good": ["fine"],\n "movie": [film]}')
    with pytest.raises(LmtuneError, match=rf"^{broken}:2: not valid JSON"):
        load_lexicon(broken)
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"good": "fine"}')
    with pytest.raises(LmtuneError, match="entry 'good' must be a list"):
        load_lexicon(wrong)
    with pytest.raises(LmtuneError, match="no such file"):
        load_lexicon(tmp_path / "missing.json")


def test_wordnet_lexicon_from_nltk(monkeypatch):
    import nltk.corpus

    lemmas = {"good": [["good", "goodness"], ["full", "good"]], "car": [["car", "motor_car"]]}
    synsets = [SimpleNamespace(lemma_names=lambda names=names: names) for names in lemmas["good"]]
    fake = SimpleNamespace(
        synsets=lambda w: synsets if w == "good" else [SimpleNamespace(lemma_names=lambda: lemmas["car"][0])]
    )
    monkeypatch.setattr(nltk.corpus, "wordnet", fake)
    assert wordnet_lexicon(["Good", "car"]) == {"good": ["goodness", "full"], "car": ["motor car"]}


def test_wordnet_lexicon_without_the_corpus_is_one_line():
    try:
        lexicon = wordnet_lexicon(["good"])
    except LmtuneError as exc:
        assert "wordnet corpus is not installed" in str(exc) and "\n" not in str(exc)
    else:
        assert "good" in lexicon  # the corpus happens to be installed here


# ------------------------------------------------------------------------------------ balancing


def test_balance_oversample_equalises_classes():
    labels = ["a"] * 7 + ["b"] * 3 + ["c"] * 1
    extra = balance(labels, "oversample", seed=3)
    assert extra == balance(labels, "oversample", seed=3)
    counts = Counter(labels) + Counter(labels[i] for i in extra)
    assert set(counts.values()) == {7}
    assert Counter(extra)[10] == 6  # the single "c" row repeats
    b_repeats = Counter(i for i in extra if labels[i] == "b")
    assert sorted(b_repeats.values()) == [1, 1, 2]  # as evenly as possible


def test_balance_weights_sum_to_n_with_inverse_frequency():
    labels = ["a"] * 6 + ["b"] * 2
    weights = balance(labels, "weights")
    assert sum(weights) == pytest.approx(len(labels))
    assert weights[0] == pytest.approx(8 / (2 * 6)) and weights[-1] == pytest.approx(8 / (2 * 2))
    with pytest.raises(LmtuneError, match="data.augment.balance"):
        balance(labels, "undersample")


# -------------------------------------------------------------------------------------- models


def test_back_translate_through_two_seq2seq_models(tiny_generative_dir):
    forward, backward = tiny_generative_dir("t5"), tiny_generative_dir("bart")
    assert forward != backward
    out = back_translate(
        TEXTS, forward, backward, batch_size=2, max_new_tokens=6, forward_prefix="translate: "
    )
    assert len(out) == len(TEXTS) and all(isinstance(t, str) for t in out)
    assert out == back_translate(TEXTS, forward, backward, max_new_tokens=6, forward_prefix="translate: ")
    with pytest.raises(LmtuneError, match="data.augment.back_translation.forward: .* not a sequence-to-seq"):
        back_translate(TEXTS, tiny_generative_dir("llama"), backward)


def test_paraphrase_with_a_tiny_llama(tiny_generative_dir):
    model = tiny_generative_dir("llama")
    state = torch.random.get_rng_state()
    rows = paraphrase(TEXTS, model, copies=2, batch_size=2, max_new_tokens=6, seed=0)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is untouched
    assert sorted(index for index, _ in rows) == [0, 0, 1, 1, 2, 2]
    assert all(text.strip() and text not in TEXTS for _, text in rows)
    assert rows == paraphrase(TEXTS, model, copies=2, batch_size=2, max_new_tokens=6, seed=0)
    with pytest.raises(LmtuneError, match="data.augment.paraphrase.model: .* not a decoder-only"):
        paraphrase(TEXTS, tiny_generative_dir("t5"))


@pytest.mark.slow
def test_paraphrase_real_sentences_with_smollm2():
    from lmtune.assets import resolve_model

    texts = [
        "The movie was surprisingly good and the actors were great.",
        "I did not enjoy the food at this restaurant.",
        "The weather today is cold and rainy.",
        "She quickly finished her homework before dinner.",
    ]
    rows = paraphrase(texts, resolve_model("bundled:smollm2-135m-instruct"), copies=2, max_new_tokens=48)
    assert len({index for index, _ in rows}) >= 3
    for index, text in rows:
        assert text and text != texts[index]
        source = {w.strip(".,").lower() for w in texts[index].split()}
        assert source & {w.strip(".,\"'").lower() for w in text.split()}

"""Token-classification data: CoNLL files, tokens + tags records, span annotations, tag schemes and the
sub-word alignment, checked token by token."""

from __future__ import annotations

import pytest
from conftest import SHARED
from transformers import AutoTokenizer

from lmtune.assets import resolve_model
from lmtune.data.formats import Bad
from lmtune.data.tokens import IGNORE, align, from_spans, from_tokens, read_conll, tag_index
from lmtune.errors import LmtuneError

needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER


BRUSSELS NNP B-NP I-LOC
1996-08-22 CD I-NP O
"""


def test_conll_sentences_tags_and_docstart(tmp_path):
    path = tmp_path / "a.conll"
    path.write_text(CONLL)
    sentences = list(read_conll(path))
    assert [s.tokens for s in sentences] == [
        ["EU", "rejects", "German", "call"],
        ["Peter", "Blackburn"],
        ["BRUSSELS", "1996-08-22"],
    ]
    assert [s.tags for s in sentences] == [["B-ORG", "O", "B-MISC", "O"], ["B-PER", "I-PER"], ["B-LOC", "O"]]
    assert [s.where for s in sentences] == [f"{path}:3", f"{path}:8", f"{path}:12"]
    assert [s.repaired for s in sentences] == [0, 0, 1]  # the sentence-initial I-LOC became B-LOC
    chunks = list(read_conll(path, tag=tag_index(["word", "pos", "chunk", "ner"], "chunk")))
    assert chunks[0].tags == ["B-NP", "B-VP", "B-NP", "I-NP"]
    iob1 = list(read_conll(path, scheme="IOB1"))  # IOB1: I- starts a chunk unless it continues one
    assert iob1[2].tags == ["B-LOC", "O"] and iob1[2].repaired == 0
    with pytest.raises(LmtuneError, match=r"data.tag_column = 'ner': not among no data.columns"):
        tag_index(None, "ner")


def test_conll_bad_lines_name_their_line(tmp_path):
    path = tmp_path / "bad.conll"
    path.write_text("EU NNP B-ORG\nrejects VBZ\n\nPeter NNP B-PERSON-\nBlackburn NNP Q-PER\n\nok NN O\n")
    with pytest.raises(LmtuneError, match=rf"^{path}:2: 2 columns, the file's lines have 3"):
        list(read_conll(path))
    found = list(read_conll(path, strict=False))
    assert [type(f).__name__ for f in found] == ["Bad", "Bad", "Sentence"]
    assert str(found[1]) == f"{path}:5: tag 'Q-PER' is not IOB2 (allowed prefixes: B-, I-, or O)"


def test_tokens_records_and_bioes(tmp_path):
    sentence = from_tokens(
        {"tokens": ["New", "York", "is", "big", "Bob"], "tags": ["B-LOC", "E-LOC", "O", "O", "S-PER"]},
        "f.jsonl:1",
        "BIOES",
    )
    assert sentence.tags == ["B-LOC", "I-LOC", "O", "O", "B-PER"]
    with pytest.raises(Bad, match="2 tokens but 1 tags"):
        from_tokens({"tokens": ["a", "b"], "tags": ["O"]}, "w")
    with pytest.raises(Bad, match="field 'tags' must be a non-empty list of strings"):
        from_tokens({"tokens": ["a"], "tags": [3]}, "w")


def test_span_annotations_become_words_with_offsets_and_tags():
    text = "Ada Lovelace met Charles Babbage in London-based circles."
    entities = [
        {"start": 0, "end": 12, "label": "PER"},
        {"start": 17, "end": 24, "label": "PER"},  # Charles
        {"start": 25, "end": 32, "label": "PER"},  # Babbage: adjacent, same type, a second entity
        {"start": 36, "end": 42, "label": "LOC"},  # London, inside the word London-based
    ]
    sentence = from_spans({"text": text, "entities": entities}, "f:1")
    assert sentence.tokens == [
        "Ada",
        "Lovelace",
        "met",
        "Charles",
        "Babbage",
        "in",
        "London",
        "-",
        "based",
        "circles",
        ".",
    ]
    assert sentence.tags == ["B-PER", "I-PER", "O", "B-PER", "B-PER", "O", "B-LOC", "O", "O", "O", "O"]
    assert all(text[a:b] == token for (a, b), token in zip(sentence.offsets, sentence.tokens, strict=True))
    with pytest.raises(Bad, match="entities overlap"):
        from_spans({"text": text, "entities": [entities[0], {"start": 4, "end": 16, "label": "X"}]}, "f")
    with pytest.raises(Bad, match=r"entities\[0\]: start 5 and end 99 must be offsets"):
        from_spans({"text": text, "entities": [{"start": 5, "end": 99, "label": "X"}]}, "f")


def test_subword_alignment_token_by_token():
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model("bundled:minilm")))
    words = ["Kuznetsova", "visited", "Ouagadougou", "."]
    tags = ["B-PER", "O", "B-LOC", "O"]
    label2id = {"O": 0, "B-PER": 1, "I-PER": 2, "B-LOC": 3, "I-LOC": 4}
    encoded = tokenizer(words, is_split_into_words=True)
    word_ids = encoded.word_ids()
    pieces = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    first = align(word_ids, tags, label2id)
    every = align(word_ids, tags, label2id, every=True)
    assert len(first) == len(pieces)
    for piece, word, a, b in zip(pieces, word_ids, first, every, strict=True):
        if word is None:  # [CLS], [SEP]
            assert a == b == IGNORE and piece in ("[CLS]", "[SEP]")
        elif piece.startswith("##"):  # a continuation: ignored, or the word's tag as I-
            assert a == IGNORE and b == label2id["I" + tags[word][1:] if tags[word] != "O" else "O"]
        else:
            assert a == b == label2id[tags[word]]
    assert sum(p.startswith("##") for p in pieces) >= 2  # the words really were split


@needs_shared
def test_conll_2003_has_its_published_counts():
    sentences = list(read_conll(SHARED / "conll2003" / "train.txt"))
    assert len(sentences) == 14041
    assert sum(t.startswith("B-") for s in sentences for t in s.tags) == 23499
    assert sum(len(s.tokens) for s in sentences) == 203621

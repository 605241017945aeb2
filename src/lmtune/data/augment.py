"""Training-split augmentation: text operations, back-translation, paraphrasing, class balancing.

Plain functions over lists of texts; the data pipeline decides which split they run on (the
training split only) and records each new row's origin. Every function is deterministic for its
seed, so a rerun of a config rebuilds the same augmented training set.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from lmtune.errors import LmtuneError
from lmtune.models.load import device as default_device
from lmtune.progress import progress

OPS = ("deletion", "swap", "synonym")
BALANCE = ("oversample", "weights")
PARAPHRASE_PROMPT = "Paraphrase this sentence. Reply with the paraphrase only:\n{text}"
_TRIES = 10  # draws per augmented copy before giving up on a text that every draw leaves unchanged
_WORD = re.compile(r"^(\W*)(.*?)(\W*)$")  # leading punctuation, the word, trailing punctuation

# ------------------------------------------------------------------------------ text operations


def _deletion(words: list[str], p: float, rng: random.Random, lexicon) -> list[str]:
    """Drop each word with probability p, at least one and never all (EDA's random deletion)."""
    if len(words) < 2:
        return words
    kept = [w for w in words if rng.random() >= p]
    if len(kept) == len(words):
        del kept[rng.randrange(len(kept))]
    return kept or [rng.choice(words)]


def _swap(words: list[str], p: float, rng: random.Random, lexicon) -> list[str]:
    """Swap two random positions, max(1, p·n) times."""
    words = list(words)
    if len(words) < 2:
        return words
    for _ in range(max(1, round(p * len(words)))):
        i, j = rng.sample(range(len(words)), 2)
        words[i], words[j] = words[j], words[i]
    return words


def _synonym(words: list[str], p: float, rng: random.Random, lexicon) -> list[str]:
    """Replace max(1, p·n) words that the lexicon knows, keeping punctuation and a capital initial."""
    words = list(words)
    known = [i for i, w in enumerate(words) if lexicon.get(_WORD.match(w).group(2).lower())]
    for i in rng.sample(known, min(len(known), max(1, round(p * len(words))))):
        lead, core, trail = _WORD.match(words[i]).groups()
        new = rng.choice(lexicon[core.lower()])
        if core[:1].isupper():
            new = new[:1].upper() + new[1:]
        words[i] = lead + new + trail
    return words


_OPERATIONS = {"deletion": _deletion, "swap": _swap, "synonym": _synonym}


def text_ops(
    texts: list[str],
    *,
    ops: Sequence[str] | None = None,
    copies: int = 1,
    p: float = 0.1,
    lexicon: dict[str, list[str]] | None = None,
    seed: int = 42,
) -> list[tuple[int, str, str]]:
    """(source index, new text, origin op) for `copies` augmented versions of each text per op.

    ops=None means deletion and swap, plus synonym when a lexicon is given; asking for synonym
    without a lexicon is an error rather than a silent no-op. Texts are split on whitespace and
    rejoined with single spaces. A version equal to its source, or to an earlier version of the same
    source, is not returned (a repeat is oversampling, not augmentation). Each (text, op, copy) has
    its own random stream, so adding a text to the data does not change the others' augmentations.
    """
    if ops is None:
        ops = ("deletion", "swap", "synonym") if lexicon else ("deletion", "swap")
    unknown = [op for op in ops if op not in _OPERATIONS]
    if unknown:
        raise LmtuneError(f"data.augment.ops: unknown operation '{unknown[0]}'; allowed: {', '.join(OPS)}")
    if "synonym" in ops and not lexicon:
        raise LmtuneError("data.augment.ops: 'synonym' needs a lexicon (data.augment.lexicon)")
    if not 0 < p <= 1:
        raise LmtuneError(f"data.augment.p = {p}: must be in (0, 1]")
    if copies < 1:
        raise LmtuneError(f"data.augment.copies = {copies}: must be at least 1")
    lexicon = {k.lower(): v for k, v in (lexicon or {}).items()}
    rows: list[tuple[int, str, str]] = []
    for index, text in enumerate(texts):
        words = text.split()
        seen = {" ".join(words), text}
        for op in ops:
            for copy in range(copies):
                rng = random.Random(f"{seed}:{index}:{op}:{copy}")
                for _ in range(_TRIES):
                    new = " ".join(_OPERATIONS[op](words, p, rng, lexicon))
                    if new not in seen:
                        seen.add(new)
                        rows.append((index, new, op))
                        break
    return rows


# ------------------------------------------------------------------------------------- lexicons


def _add(lexicon: dict[str, list[str]], word: str, synonyms: Iterable[str]) -> None:
    key = word.strip().lower()
    entry = lexicon.setdefault(key, [])
    for syn in synonyms:
        syn = syn.strip()
        if syn and syn.lower() != key and syn not in entry:
            entry.append(syn)
    if not entry:
        del lexicon[key]


def load_lexicon(path: str | Path) -> dict[str, list[str]]:
    """A synonym lexicon from a user file: JSON {word: [synonyms]}, or one entry per line as
    `word<TAB>syn1,syn2` or `word,syn1,syn2` (the Moby thesaurus format); blank and # lines skipped.

    Keys are lower-cased; synonyms keep their case and may be phrases.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LmtuneError(f"data.augment.lexicon: no such file '{path}'") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LmtuneError(f"{path}: cannot read the lexicon ({type(exc).__name__}: {exc})") from None
    lexicon: dict[str, list[str]] = {}
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LmtuneError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(data, dict):
            raise LmtuneError(f"{path}: a JSON lexicon must be an object {{word: [synonyms]}}")
        for word, synonyms in data.items():
            if not isinstance(synonyms, list) or not all(isinstance(s, str) for s in synonyms):
                raise LmtuneError(f"{path}: entry '{word}' must be a list of strings")
            _add(lexicon, word, synonyms)
    else:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            word, sep, rest = line.partition("\t") if "\t" in line else line.partition(",")
            synonyms = re.split(r"[,\t]", rest)
            if not sep or not word.strip() or not any(s.strip() for s in synonyms):
                raise LmtuneError(f"{path}:{number}: expected 'word<TAB>synonym,synonym,...'")
            _add(lexicon, word, synonyms)
    if not lexicon:
        raise LmtuneError(f"{path}: the lexicon has no entries")
    return lexicon


def wordnet_lexicon(words: Iterable[str] | None = None) -> dict[str, list[str]]:
    """A lexicon from nltk's WordNet corpus, where it is installed (nltk cannot fetch it offline).

    `words` (e.g. the training split's vocabulary) limits it to what a run can use: the full
    WordNet has ~150k lemmas. Multi-word lemmas come back with spaces.
    """
    from nltk.corpus import wordnet

    lexicon: dict[str, list[str]] = {}
    try:
        vocabulary = {w.lower() for w in words} if words is not None else set(wordnet.all_lemma_names())
        for word in sorted(vocabulary):
            names = [
                name.replace("_", " ") for synset in wordnet.synsets(word) for name in synset.lemma_names()
            ]
            if names:
                _add(lexicon, word, names)
    except LookupError:
        raise LmtuneError(
            "data.augment.lexicon = 'wordnet': nltk's wordnet corpus is not installed and cannot be "
            "downloaded offline; give a lexicon file instead (JSON or word<TAB>synonyms)"
        ) from None
    return lexicon


# -------------------------------------------------------------------------------- model helpers


def _load(path: str | Path, seq2seq: bool, key: str, device) -> tuple:
    """Tokenizer and fp32 model from a local HF directory, or one line naming the config key."""
    from lmtune.models.load import check_code, check_weights

    check_code(path)  # augmentation models never run a folder's own code
    check_weights(path)
    try:
        config = AutoConfig.from_pretrained(str(path), trust_remote_code=False)
        encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
        if encoder_decoder != seq2seq:
            kind = "sequence-to-sequence (translation)" if seq2seq else "decoder-only (causal)"
            raise LmtuneError(f"{key}: '{path}' is not a {kind} model")
        side = "right" if seq2seq else "left"
        tokenizer = AutoTokenizer.from_pretrained(str(path), padding_side=side, trust_remote_code=False)
        auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
        model = auto.from_pretrained(
            str(path), dtype=torch.float32, trust_remote_code=False, use_safetensors=True
        )
    except (OSError, ValueError, ImportError) as exc:  # ImportError: e.g. Marian needs sentencepiece
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LmtuneError(f"{key}: cannot load a model from '{path}' ({message})") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer, model.eval().to(device or default_device())


def _batches(lengths: list[int], size: int) -> list[list[int]]:
    """Indices grouped by similar length, so a batch carries little padding."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i : i + size] for i in range(0, len(order), size)]


def _translate(texts, path, prefix, key, *, batch_size, max_new_tokens, num_beams, device, desc) -> list[str]:
    tokenizer, model = _load(path, True, key, device)
    inputs = [prefix + text for text in texts]
    out: list[str] = [""] * len(texts)
    with progress(len(texts), desc=desc, unit="text") as bar:
        for index in _batches([len(t) for t in inputs], batch_size):
            batch = tokenizer([inputs[i] for i in index], padding=True, truncation=True, return_tensors="pt")
            with torch.inference_mode():
                ids = model.generate(
                    **batch.to(model.device), max_new_tokens=max_new_tokens, num_beams=num_beams
                )
            for i, text in zip(index, tokenizer.batch_decode(ids, skip_special_tokens=True), strict=True):
                out[i] = text.strip()
            bar.update(len(index))
    return out


def back_translate(
    texts: list[str],
    forward: str | Path,
    backward: str | Path,
    *,
    batch_size: int = 16,
    max_new_tokens: int = 128,
    num_beams: int = 1,
    device=None,
    forward_prefix: str = "",
    backward_prefix: str = "",
) -> list[str]:
    """Each text translated by `forward` and back by `backward` (any two seq2seq model directories,
    e.g. Marian en→de and de→en), one string per input in order; the caller drops those equal to
    their source. T5-style models need a task prefix, e.g. "translate English to German: ".
    Greedy by default: cheap on CPU, and beams add little diversity; other settings are the model's.
    """
    if not texts:
        return []
    options = dict(batch_size=batch_size, max_new_tokens=max_new_tokens, num_beams=num_beams, device=device)
    key = "data.augment.back_translation"
    middle = _translate(texts, forward, forward_prefix, f"{key}.forward", desc="back-translate →", **options)
    return _translate(
        middle, backward, backward_prefix, f"{key}.backward", desc="back-translate ←", **options
    )


def _clean(text: str) -> str:
    """The reply without surrounding whitespace or one pair of quotes around it."""
    text = text.strip()
    if len(text) > 1 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def _norm(text: str) -> str:
    return " ".join(text.casefold().split())


def paraphrase(
    texts: list[str],
    model: str | Path,
    *,
    copies: int = 1,
    batch_size: int = 8,
    max_new_tokens: int = 96,
    temperature: float = 0.7,
    top_p: float = 0.9,
    seed: int = 42,
    prompt: str = PARAPHRASE_PROMPT,
    device=None,
) -> list[tuple[int, str]]:
    """(source index, paraphrase) rows from a decoder-only instruct model, sampled `copies` times
    per text; empty replies, replies that repeat another copy and replies that contain their source
    (small models often echo it: 'The sentence is "..."') are dropped.

    The prompt ({text} is the source) goes through the tokenizer's chat template when it has one,
    else as plain text. Sampling is deterministic for a seed and batch size, and leaves the
    caller's global RNG state alone.
    """
    if "{text}" not in prompt:
        raise LmtuneError("data.augment.paraphrase.prompt: must contain '{text}'")
    if copies < 1:
        raise LmtuneError(f"data.augment.paraphrase.copies = {copies}: must be at least 1")
    if not texts:
        return []
    tokenizer, lm = _load(model, False, "data.augment.paraphrase.model", device)

    def render(text: str) -> list[int]:
        message = prompt.format(text=text)
        if tokenizer.chat_template:
            message = tokenizer.apply_chat_template(
                [{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True
            )
        return tokenizer(message, add_special_tokens=not tokenizer.chat_template)["input_ids"]

    prompts = [render(text) for text in texts]
    replies: dict[int, list[str]] = defaultdict(list)
    gpu = [lm.device] if lm.device.type == "cuda" else []
    with (
        torch.random.fork_rng(devices=gpu),
        progress(len(texts), desc="paraphrase", unit="text") as bar,
    ):
        torch.manual_seed(seed)
        for index in _batches([len(p) for p in prompts], batch_size):
            batch = tokenizer.pad({"input_ids": [prompts[i] for i in index]}, return_tensors="pt")
            with torch.inference_mode():
                ids = lm.generate(
                    **batch.to(lm.device),
                    do_sample=True,
                    temperature=temperature,
                    top_p=top_p,
                    max_new_tokens=max_new_tokens,
                    num_return_sequences=copies,
                    pad_token_id=tokenizer.pad_token_id,
                )
            decoded = tokenizer.batch_decode(ids[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
            for row, text in enumerate(decoded):
                replies[index[row // copies]].append(_clean(text))
            bar.update(len(index))
    rows: list[tuple[int, str]] = []
    for i, text in enumerate(texts):
        seen: set[str] = set()
        for reply in replies[i]:
            if reply and _norm(text) not in _norm(reply) and _norm(reply) not in seen:
                seen.add(_norm(reply))
                rows.append((i, reply))
    return rows


# ------------------------------------------------------------------------------------ balancing


def balance(labels: list[str], how: str, *, seed: int = 42) -> list[int] | list[float]:
    """Class balancing for the training split.

    how="oversample": sorted indices of extra rows to append so every class reaches the largest
    class's count; each class's rows repeat as evenly as possible (whole rounds, then a seeded pick).
    how="weights": one loss weight per row, n / (k · count(label)), summing to n.
    """
    if how not in BALANCE:
        raise LmtuneError(f"data.augment.balance = '{how}': allowed: {', '.join(BALANCE)}")
    counts = Counter(labels)
    if how == "weights":
        n, k = len(labels), len(counts)
        return [n / (k * counts[label]) for label in labels]
    rows: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        rows[label].append(i)
    target = max(counts.values(), default=0)
    extra: list[int] = []
    for label, members in rows.items():
        rounds, rest = divmod(target - len(members), len(members))
        extra += members * rounds + random.Random(f"{seed}:{label}").sample(members, rest)
    return sorted(extra)

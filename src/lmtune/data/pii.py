"""Find and scrub private data (emails, phones, cards, IBANs, IPs, SSNs, URL credentials, names).

Training data that contains private data can be memorised and regurgitated by the model, so rows
are scrubbed before training. Every pattern type is a cheap regex candidate followed by a real
check (Luhn for cards, mod-97 and the country's length for IBANs, `ipaddress` for IPs, the issued
SSN ranges, `phonenumbers` validity for phones), which is what keeps false positives low on
ordinary text full of years, prices, dates and version numbers. Each check runs only when a cheap
pre-check on the row (an '@', a digit, enough digits) says it could match: this runs on every row.

A valid number is not enough for a phone: about 1 in 300 plain 7-digit numbers (1640025, 3100000;
1 in 80 of 100xxxx-449xxxx) and 4 in 5 plain 10-digit ones are valid in a default region. A phone
also needs evidence that it is one: written internationally (a leading + or 00 and the country
code), or with separators (space, dash, dot, slash, brackets) between its digits, grouped as its
country writes them, or a cue word just before it ("phone", "tel.", "call me on", "mobile number
is", "Telefon", "portable", a tel: URI; only connecting words, punctuation and other numbers may
come between the cue and the number, within 32 characters).

Each hit becomes a typed placeholder (`<EMAIL>`, `<PHONE>`, `<CARD>`, `<IBAN>`, `<IP>`, `<SSN>`,
`<PERSON>`); for URL credentials only the `user:password` part is replaced, so
`https://bob:s3cret@host/x` becomes `https://<URL_CREDENTIALS>@host/x` and the URL stays readable.
With action "drop" a row with any hit is dropped instead.

Overlaps: URL credentials beat everything (an email regex would otherwise eat `pass@host` and leak
the user name), then the checksum- or structure-verified types (IBAN, card, SSN, email, IP) beat
phone and person, and within a tier the longer hit wins (an IBAN over the card-like digits in it).

Not covered: phone numbers without an area code (555-0187) or with letters (1-800-FLOWERS), phone
numbers written as bare national digits (2125550187, 02079460958, 442079460958) with no cue word
just before them (they cannot be told from an amount, a count or an ID: a bare 10-digit number is
no longer found on its own), a cue further away ("call me tomorrow at 2125550187"), SSNs written
without dashes, IBANs of countries outside the SWIFT registry, a token alone before '@' in a URL
(https://TOKEN@host: no ':'), names without a recogniser. A number that is grouped like a phone
of a default region is still taken for one ('1743-694768', an Indian landline grouping).
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import phonenumbers

from lmtune.errors import LmtuneError

PII_TYPES: tuple[str, ...] = ("email", "phone", "card", "iban", "ip", "ssn", "url_credentials", "person")
PATTERN_TYPES: tuple[str, ...] = tuple(t for t in PII_TYPES if t != "person")
ACTIONS: tuple[str, ...] = ("replace", "drop")
DEFAULT_PHONE_REGIONS: tuple[str, ...] = ("US", "GB", "DE", "FR", "IN")

# Overlap tier: higher wins before length is compared.
_TIER = {"url_credentials": 3, "iban": 2, "card": 2, "ssn": 2, "email": 2, "ip": 2, "phone": 1, "person": 0}


@dataclass(frozen=True)
class Hit:
    """One piece of private data: its type and where it is (text[start:end] == value)."""

    type: str
    start: int
    end: int
    value: str


# --- patterns -------------------------------------------------------------------------------------

_DIGIT = re.compile(r"[0-9]")
_EMAIL = re.compile(
    r"(?<![\w.%+-])[\w.%+-]+@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}\b"
)
# The credentials of scheme://user:password@host (user may be empty: redis://:pw@host); the password
# may itself hold '@' (greedy up to the last '@' before the path), never whitespace or '/'.
_URL_CREDENTIALS = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://(?P<cred>[^\s/?#@:]*:[^\s/?#]+)@[^\s/?#@]")
_SSN = re.compile(
    r"(?<![0-9])(?<![0-9]-)(?!000|666|9)[0-9]{3}-(?!00)[0-9]{2}-(?!0000)[0-9]{4}(?![0-9]|-[0-9])"
)
# Card: 13-19 digits starting 2-6 (the major networks), single spaces or dashes between digits.
_CARD = re.compile(r"(?<![0-9A-Za-z])(?<![0-9]-)[2-6](?:[ -]?[0-9]){12,18}(?![0-9])")
_SEPARATORS = re.compile(r"[ -]")
_IBAN = re.compile(r"\b[A-Za-z]{2}[0-9]{2}(?: ?[A-Za-z0-9]){11,30}\b")
_IPV4 = re.compile(r"(?<![0-9A-Za-z.])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?![0-9]|\.[0-9])")
_VERSION_BEFORE = re.compile(r"(?:\b(?:version|ver|release|rel|build|firmware)\.?|\bv)\s*$", re.IGNORECASE)
_IPV6 = re.compile(
    r"(?<![0-9A-Za-z:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9A-Fa-f]{1,4})?(?![0-9A-Za-z:]|\.[0-9])"
)
# A run of digits and phone punctuation (with an optional '+' or '(' in front) holding a possible
# phone number: only such runs with >= 7 digits are handed to the (slow) phonenumbers matcher.
_PHONE_RUN = re.compile(r"(?:\+|\()?[0-9][0-9 ()./\u00a0\u2010-\u2015-]*[0-9]\)?")
_AT_LEAST_7_DIGITS = re.compile(r"(?:[^0-9]*[0-9]){7}")
_LENIENCY = phonenumbers.Leniency.STRICT_GROUPING  # valid, and grouped as the country writes it
# Evidence that a valid number is a phone: phone punctuation between two of its digits (the
# extension, from the first other character on, left out), or a cue word close before it followed
# only by connecting words, punctuation and other numbers ("phone number is now", "call me on",
# "Tel.:", "Tel. 2125550187 or ").
_SEPARATED = re.compile(r"[0-9][ ()./\u00a0\u2010-\u2015-]+[0-9]")
_EXTENSION = re.compile(r"[^0-9 ()./\u00a0\u2010-\u2015+-]")
_CUE_WINDOW = 32  # characters before the number that the cue and what follows it must fit in
_CUE = re.compile(
    r"\b(?:(?:tele)?phone(?:number)?|tel|t[ée]l[ée]phone|t[ée]l|telefon(?:nummer)?|mobile?(?:nummer)?|mob"
    r"|cell(?:phone)?|fax(?:nummer)?|call(?:\s+(?:me|us))?|ring(?:\s+(?:me|us))?|text\s+(?:me|us)|sms"
    r"|whats\s?app|contact|dial|hotline|helpline|handy(?:nummer)?|portable|reach\s+(?:me|us)"
    r"|(?:my|our|your|his|her|their)\s+number|(?:meine|unsere)\s+nummer|(?:mon|notre)\s+num[ée]ro)\b"
    r"(?:[\s.:#=()/,>+0-9\u2013\u2014-]|\b(?:is|was|now|me|us|on|at|to|or|and|the|a|my|our|your|number|no|nr"
    r"|num|please|directly|line|home|work|office|mobile|cell|fax|phone|tel|ist|unter|est|au|de)\b)*$",
    re.IGNORECASE,
)
# A decimal (0.63636363636), a range (18755-18761) or a difference (1971 – 2000): numbers, though
# phonenumbers accepts them as a phone number somewhere.
_DECIMAL = re.compile(r"(?:0|[1-9][0-9]*)\.[0-9]+")
_RANGE = re.compile(r"([0-9]+)-([0-9]+)")
_SPACED_DASH = re.compile(r"[0-9]+\s+[-\u2013\u2014]\s+[0-9]+")

# IBAN length by country (SWIFT IBAN registry).
_IBAN_LENGTH = {
    country: int(length)
    for country, length in re.findall(
        r"([A-Z]{2})([0-9]{2})",
        "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BI27 BL27 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 "
        "DJ27 DK18 DO28 EE20 EG29 ES24 FI18 FK18 FO18 FR27 GB22 GE22 GF27 GI23 GL18 GP27 GR27 GT28 "
        "HR21 HU28 IE22 IL23 IQ23 IS26 IT27 JO30 KW30 KZ20 LB28 LC32 LI21 LT20 LU20 LV21 LY25 MC27 "
        "MD24 ME22 MF27 MK19 MN20 MQ27 MR27 MT31 MU30 NC27 NI28 NL18 NO15 OM23 PF27 PK24 PL28 PM27 "
        "PS29 PT25 QA29 RE27 RO24 RS22 RU33 SA24 SC31 SD18 SE24 SI19 SK24 SM27 SO23 ST25 SV28 TF27 "
        "TL23 TN24 TR26 UA29 VA22 VG24 WF27 XK20 YE30 YT27",
    )
}


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _longest_valid(text: str, start: int, end: int, ok: Callable[[str], bool]) -> tuple[int, int]:
    """The longest prefix of text[start:end], cut at a space or dash, that passes `ok`.

    A greedy regex may run on into a following year or word ("... 1111 2020", "... 00 EUR"), so a
    failed candidate is retried without its last group before it is given up. (-1, -1) if none.
    """
    while True:
        if ok(text[start:end]):
            return start, end
        end = max(text.rfind(" ", start, end), text.rfind("-", start, end))
        if end <= start:
            return -1, -1


def _card_ok(raw: str) -> bool:
    """Printed in groups as cards are (4, then 3-6 digits each), Luhn, and a length that the
    network of its prefix issues: a Luhn pass alone is 1 in 10, and the groups keep out runs of
    numbers ('3 6 9 12 15 18 21 24', '302 303 304 305 306')."""
    groups = _SEPARATORS.split(raw)
    if len(groups) > 1 and (len(groups[0]) != 4 or not all(3 <= len(g) <= 6 for g in groups)):
        return False
    digits = "".join(groups)
    n, two = len(digits), digits[:2]
    if digits[0] == "4":  # Visa
        length_ok = n in (13, 16, 19)
    elif digits[0] == "2":  # Mastercard 2-series
        length_ok = n == 16 and "2221" <= digits[:4] <= "2720"
    elif two in ("34", "37"):  # Amex
        length_ok = n == 15
    elif digits[0] == "3":  # Diners, JCB
        length_ok = 14 <= n <= 19 and two in ("30", "35", "36", "38", "39")
    elif "51" <= two <= "55":  # Mastercard
        length_ok = n == 16
    else:  # Maestro, Discover, UnionPay (5x, 6x)
        length_ok = 13 <= n <= 19
    return length_ok and len(set(digits)) > 1 and _luhn_ok(digits)


def _iban_ok(raw: str) -> bool:
    """The country's IBAN length and check digits that make the number mod 97 equal 1."""
    iban = raw.replace(" ", "").upper()
    if _IBAN_LENGTH.get(iban[:2]) != len(iban) or not iban[2:4].isdigit():
        return False
    # Country and check digits to the end, letters to numbers (A=10 ... Z=35).
    return int("".join(str(int(c, 36)) for c in iban[4:] + iban[:4])) % 97 == 1


def _find_checked(pattern: re.Pattern, ok: Callable[[str], bool], ptype: str, text: str) -> list[Hit]:
    hits = []
    for m in pattern.finditer(text):
        s, e = _longest_valid(text, m.start(), m.end(), ok)
        if s >= 0:
            hits.append(Hit(ptype, s, e, text[s:e]))
    return hits


def _find_ips(text: str) -> list[Hit]:
    hits = []
    if "." in text:
        for m in _IPV4.finditer(text):
            # 1.0.5.0 or 'version 10.2.0.1': a version number, not an address.
            if all(len(g) == 1 for g in m.group().split(".")) or _VERSION_BEFORE.search(
                text, max(0, m.start() - 12), m.start()
            ):
                continue
            try:
                ipaddress.IPv4Address(m.group())
            except ValueError:
                continue
            hits.append(Hit("ip", m.start(), m.end(), m.group()))
    if text.count(":") >= 2:
        for m in _IPV6.finditer(text):
            value = m.group()
            if sum(1 for g in re.split(r"[:.]", value) if g) < 2:  # '::', '::1' and the like
                continue
            try:
                ipaddress.IPv6Address(value)
            except ValueError:
                continue
            hits.append(Hit("ip", m.start(), m.end(), value))
    return hits


def _find_phones(text: str, regions: Sequence[str]) -> list[Hit]:
    """Phone numbers valid in one of `regions` (or in any country when written with + or 00) and
    with evidence that they are phones (`_has_evidence`).

    The matcher runs on each run of digits and phone punctuation (plus one character either
    side, which it checks for letters and currency signs) rather than on the whole row, and tries
    the next region only while digits of the run are left unmatched. A run of bare digits with no
    cue word before it cannot hold a phone with evidence, so it never reaches the matcher.
    """
    hits: list[Hit] = []
    for run in _PHONE_RUN.finditer(text):
        if not _AT_LEAST_7_DIGITS.match(run.group()) or _number_like(run.group()):
            continue
        if not (_written_international(run.group()) or _SEPARATED.search(run.group())) and not _cue_before(
            text, run.start()
        ):
            continue
        lo, hi = max(0, run.start() - 1), min(len(text), run.end() + 1)
        window = text[lo:hi]
        n_digits = len(_DIGIT.findall(run.group()))
        spans: list[tuple[int, int, phonenumbers.PhoneNumber]] = []
        found: list[tuple[int, int, phonenumbers.PhoneNumber]] = []
        for region in regions or ("ZZ",):  # ZZ: no national formats, only numbers written with +
            spans += [
                (m.start, m.end, m.number)
                for m in phonenumbers.PhoneNumberMatcher(window, region, leniency=_LENIENCY)
            ]
            found = _longest_first(spans)
            if sum(len(_DIGIT.findall(window[s:e])) for s, e, _ in found) >= n_digits:
                break
        for s, e, number in found:
            value = window[s:e]
            if value.startswith("(") and ")" not in value:  # '(800.537.4941)': keep the brackets
                s, value = s + 1, value[1:]
            # Short numbers (a 4-digit one is valid in Germany) look like years and counts;
            # 9999999999 is a placeholder.
            if (
                _AT_LEAST_7_DIGITS.match(value)
                and not _number_like(value)
                and len(set(_DIGIT.findall(value))) > 1
                and _has_evidence(value, number, text, lo + s)
            ):
                hits.append(Hit("phone", lo + s, lo + e, value))
    return hits


def _written_international(value: str) -> bool:
    value = value.lstrip("(")
    return value.startswith(("+", "00"))


def _has_evidence(value: str, number: phonenumbers.PhoneNumber, text: str, start: int) -> bool:
    """A valid number is a phone only when written internationally (+, or 00 and the country
    code), with separators between its digits (the matcher's STRICT_GROUPING has checked that
    they group it as its country does, and a country code written without + must be set off:
    '1-912-325-4138', not '1912-3254138', a year and a count), or after a cue word."""
    core = _EXTENSION.split(value.lstrip("("), 1)[0]  # the extension left out
    if core.startswith("+"):
        return True
    digits = "".join(_DIGIT.findall(core))
    cc = str(number.country_code)
    if core.startswith("00") and digits[2:].startswith(cc):
        return True
    if _SEPARATED.search(core):
        if digits != cc + phonenumbers.national_significant_number(number):
            return True
        after_cc = [i for i, ch in enumerate(core) if ch.isdigit()][len(cc) - 1] + 1
        if not core[after_cc].isdigit():
            return True
    return _cue_before(text, start)


def _cue_before(text: str, start: int) -> bool:
    """A cue word ("phone", "tel", "call me on" ...) in the characters just before `start`,
    followed only by connecting words and punctuation."""
    return _CUE.search(text, max(0, start - _CUE_WINDOW), start) is not None


def _longest_first(
    spans: list[tuple[int, int, phonenumbers.PhoneNumber]],
) -> list[tuple[int, int, phonenumbers.PhoneNumber]]:
    kept: list[tuple[int, int, phonenumbers.PhoneNumber]] = []
    for s, e, number in sorted(spans, key=lambda span: span[0] - span[1]):
        if all(e <= ks or s >= ke for ks, ke, _ in kept):
            kept.append((s, e, number))
    return kept


def _number_like(value: str) -> bool:
    """A decimal, a range or a difference that phonenumbers would accept as a number somewhere."""
    value = value.strip("()")
    if _DECIMAL.fullmatch(value) or _SPACED_DASH.fullmatch(value):
        return True
    m = _RANGE.fullmatch(value)
    return m is not None and len(m[1]) == len(m[2]) and m[1] < m[2]


# --- person names (optional recogniser) ---------------------------------------------------------

_PERSON_FINDER: Callable[[str], list[tuple[int, int]]] | None = None
_SPACY_MODELS = ("en_core_web_trf", "en_core_web_lg", "en_core_web_md", "en_core_web_sm")


def _person_finder() -> Callable[[str], list[tuple[int, int]]]:
    """Name spans from an installed spaCy English model, through Presidio when that is installed
    too (it adds context scoring); loaded once. Only installed models are used: never a download."""
    global _PERSON_FINDER
    if _PERSON_FINDER is not None:
        return _PERSON_FINDER
    try:
        import spacy
    except ImportError:
        spacy = None
    model = next((m for m in _SPACY_MODELS if spacy.util.is_package(m)), None) if spacy else None
    if model is None:
        raise LmtuneError(
            "data.pii.types: 'person' needs a name recogniser; install spacy and an English model "
            "(pip install spacy && python -m spacy download en_core_web_sm), optionally presidio-analyzer, "
            "or leave 'person' out"
        )
    try:
        from presidio_analyzer import AnalyzerEngine
        from presidio_analyzer.nlp_engine import NlpEngineProvider
    except ImportError:
        nlp = spacy.load(model)

        def find(text: str) -> list[tuple[int, int]]:
            return [(e.start_char, e.end_char) for e in nlp(text).ents if e.label_ == "PERSON"]

    else:
        config = {"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": model}]}
        engine = AnalyzerEngine(nlp_engine=NlpEngineProvider(nlp_configuration=config).create_engine())

        def find(text: str) -> list[tuple[int, int]]:
            return [(r.start, r.end) for r in engine.analyze(text, entities=["PERSON"], language="en")]

    _PERSON_FINDER = find
    return find


# --- public API -----------------------------------------------------------------------------------


def _as_tuple(types: Sequence[str] | str) -> tuple[str, ...]:
    return (types,) if isinstance(types, str) else tuple(types)


def _check(types: tuple[str, ...], phone_regions: Sequence[str], action: str = "replace") -> None:
    for t in types:
        if t not in PII_TYPES:
            raise LmtuneError(f"data.pii.types: unknown type {t!r}; allowed: {', '.join(PII_TYPES)}")
    if action not in ACTIONS:
        raise LmtuneError(f"data.pii.action: unknown action {action!r}; allowed: {', '.join(ACTIONS)}")
    for region in phone_regions:
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise LmtuneError(
                f"data.pii.phone_regions: unknown region {region!r}; allowed: two-letter ISO country codes "
                "such as US, GB, DE, FR, IN"
            )
    if "person" in types:
        _person_finder()


def _find(text: str, types: frozenset[str], phone_regions: Sequence[str]) -> list[Hit]:
    hits: list[Hit] = []
    if "@" in text:
        if "url_credentials" in types and "://" in text:
            hits += [
                Hit("url_credentials", m.start("cred"), m.end("cred"), m.group("cred"))
                for m in _URL_CREDENTIALS.finditer(text)
            ]
        if "email" in types:
            hits += [Hit("email", m.start(), m.end(), m.group()) for m in _EMAIL.finditer(text)]
    if _DIGIT.search(text):
        if "iban" in types:
            hits += _find_checked(_IBAN, _iban_ok, "iban", text)
        if "card" in types:
            hits += _find_checked(_CARD, _card_ok, "card", text)
        if "ssn" in types and "-" in text:
            hits += [Hit("ssn", m.start(), m.end(), m.group()) for m in _SSN.finditer(text)]
        if "ip" in types:
            hits += _find_ips(text)
        if "phone" in types and _AT_LEAST_7_DIGITS.match(text):
            # Phones never beat the hits so far, so their digits are hidden from the slow matcher.
            masked = _masked(text, hits)
            if masked is text or _AT_LEAST_7_DIGITS.match(masked):
                hits += _find_phones(masked, phone_regions)
    if "person" in types:
        hits += [Hit("person", s, e, text[s:e]) for s, e in _person_finder()(text)]
    if len(hits) < 2:
        return hits
    # Overlaps: higher tier first, then longer, then earlier; keep what does not overlap a kept hit.
    kept: list[Hit] = []
    for h in sorted(hits, key=lambda h: (-_TIER[h.type], h.start - h.end, h.start)):
        if all(h.end <= k.start or h.start >= k.end for k in kept):
            kept.append(h)
    return sorted(kept, key=lambda h: h.start)


def _masked(text: str, hits: list[Hit]) -> str:
    """`text` with the hits' characters replaced by NULs, built in one pass (hits may overlap)."""
    if not hits:
        return text
    parts, pos = [], 0
    for h in sorted(hits, key=lambda h: h.start):
        start = max(pos, h.start)
        if h.end > start:
            parts += [text[pos:start], "\0" * (h.end - start)]
            pos = h.end
    parts.append(text[pos:])
    return "".join(parts)


def find_pii(
    text: str, types: Sequence[str] = PATTERN_TYPES, phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS
) -> list[Hit]:
    """Non-overlapping hits of `types` in `text`, sorted by position.

    phone_regions: countries whose national formats count (in this order of preference); numbers
    written with + are found whatever they are, and () finds only those."""
    types = _as_tuple(types)
    _check(types, phone_regions)
    return _find(text, frozenset(types), tuple(phone_regions))


def make_scrubber(
    types: Sequence[str] = PATTERN_TYPES,
    action: str = "replace",
    phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS,
    *,
    tokens: bool = False,
) -> Callable[[str], tuple[str | None, Counter]]:
    """A function text -> (scrubbed text, or None when action is "drop" and something was found;
    hit counts by type). Arguments are checked once here, not per row. `tokens`: the text is tokens
    joined by single spaces (a token-classification row); private data is found in the whole text (a
    phone number may span tokens) and every token it touches becomes the placeholder, so the token
    count, and each token's tag, stay as they were."""
    types = _as_tuple(types)
    _check(types, phone_regions, action)
    wanted = frozenset(types)
    regions = tuple(phone_regions)

    nothing: Counter = Counter()  # shared by every clean row: most rows hold no private data

    def scrub(text: str) -> tuple[str | None, Counter]:
        hits = _find(text, wanted, regions)
        if not hits:
            return text, nothing
        counts = Counter(h.type for h in hits)
        if action == "drop":
            return None, counts
        if tokens:
            return _token_placeholders(text, hits), counts
        parts, pos = [], 0
        for h in hits:
            parts += [text[pos : h.start], f"<{h.type.upper()}>"]
            pos = h.end
        parts.append(text[pos:])
        return "".join(parts), counts

    return scrub


def _token_placeholders(text: str, hits: list[Hit]) -> str:
    """Each space-separated token that overlaps a hit replaced by that hit's placeholder."""
    out, start = [], 0
    for token in text.split(" "):
        end = start + len(token)
        hit = next((h for h in hits if h.start < end and start < h.end), None)
        out.append(token if hit is None else f"<{hit.type.upper()}>")
        start = end + 1
    return " ".join(out)


def scrub_texts(
    texts: list[str], scrubber: Callable[[str], tuple[str | None, Counter]]
) -> tuple[list[str | None], Counter]:
    """Scrub every text; the total hit counts by type."""
    out: list[str | None] = []
    total: Counter = Counter()
    for text in texts:
        scrubbed, counts = scrubber(text)
        out.append(scrubbed)
        total.update(counts)
    return out, total

"""PII scrubbing: recall on planted private data, false positives on clean text, throughput.

    .venv/bin/python bench/pii_recall.py [--per-type 500] [--seed 0] [--numbers 100000] [--baseline REV]

Recall: a seeded synthetic corpus plants one value of a pattern type per row, in varied carrier
sentences and formats (cards of seven networks and three groupings, IBANs of sixteen countries
printed and compact, phones of twenty countries in national, international, E.164, 00-prefixed,
dotted and dashed forms, emails with subdomains and plus-tags, IPv4 and IPv6, SSNs, credential
URLs of several schemes). A planted value counts as found when one hit of its type covers it.
Stray hits are hits in that corpus that cover no planted value (carriers hold dates, times,
prices, order numbers and versions on purpose). Phone recall is also shown by written form
(formatted national, international, E.164, 00-prefixed, bare national digits): only the bare
form needs a cue word ("phone", "tel.", "fax" ...) before it to be found.

False positives: every hit on text without private data, per 100,000 texts by type, with
examples so a person can judge: all of SST-2 (train and dev sentences), all of wikitext-2 (valid,
test, raw test; non-blank lines), Alpaca-1k instruction + input + output (it has a few genuine
example phones and emails), and a seeded synthetic set of numbers in prose (populations, prices,
years, counts, IDs, bare 7- to 11-digit numbers, thousands separators, dates, times, scores, and
words such as "number" or "mobile" that are also phone cues, before ordinary numbers).

Throughput: rows/s of the default scrubber (all pattern types, replace) on each set, one core, best
of 3 passes over its first 10,000 texts, the versions taken in turns (the machine may be shared:
compare the columns of one run, not runs).

--baseline REV loads src/lmtune/data/pii.py as it was at git revision REV and prints its figures
next to the current ones (before/after a change).
"""

from __future__ import annotations

import argparse
import csv
import ipaddress
import json
import random
import re
import subprocess
import sys
import time
import types
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import phonenumbers

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lmtune.data.pii import PATTERN_TYPES, find_pii, make_scrubber, scrub_texts  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"

CARRIERS = [
    "{v}",
    "Please contact me at {v} tomorrow.",
    "My details: {v}.",
    "Sent on 2021-03-04 at 10:30 to {v}, ref 42.",
    "ok so the {k} is {v} thanks!!",
    "{k}: {v}",
    "Order #48213 (3 items, $129.99) - {k} {v}; shipped 12/05/2019.",
    '"{v}" was in the form, version 2.4.1.',
    "Hi team,\nplease use {v}\nfor the 2023 audit.",
    "({v})",
    "Updated {k} -> {v} (was unknown).",
    "In 1998 she moved; her {k} is now {v} and she is 42 years old.",
]
KEYWORD = {
    "email": ["email", "e-mail", "address"],
    "phone": ["phone", "tel.", "mobile number", "fax"],
    "card": ["card", "credit card number", "Visa", "card no."],
    "iban": ["IBAN", "account", "bank account"],
    "ip": ["IP", "server address", "host"],
    "ssn": ["SSN", "social security number"],
    "url_credentials": ["URL", "repo", "connection string"],
}

FIRST = ["john", "maria", "li", "ahmed", "sofia", "jean-luc", "o.brien", "kim", "raj", "anna"]
LAST = ["smith", "garcia", "wang", "khan", "rossi", "dupont", "mueller", "lee", "patel", "novak"]
DOMAINS = [
    "example.com",
    "mail.example.co.uk",
    "cs.uni-example.edu",
    "gmail.com",
    "corp.acme.io",
    "t-online.de",
    "sub.dept.example.org",
    "example.fr",
    "in.example.net",
    "x.co",
]


def _email(rng: random.Random) -> str:
    f, last = rng.choice(FIRST), rng.choice(LAST)
    local = rng.choice(
        [
            f"{f}.{last}",
            f"{f}_{last}",
            f"{f[0]}{last}",
            f"{f}+{rng.choice(['news', 'x', 'tag1'])}",
            f"{f}{rng.randrange(100)}",
            f"{last}.{f}.{rng.randrange(1950, 2010)}",
        ]
    )
    email = f"{local}@{rng.choice(DOMAINS)}"
    return email.upper() if rng.random() < 0.05 else email


PHONE_REGIONS_NATIONAL = ["US", "GB", "DE", "FR", "IN"]  # the scrubber's default regions
PHONE_REGIONS_INTL = [
    "JP",
    "AU",
    "BR",
    "ES",
    "IT",
    "NL",
    "CH",
    "SE",
    "MX",
    "ZA",
    "SG",
    "CA",
    "PL",
    "IE",
    "KR",
]
_PHONE_TYPES = [phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE]


def _phone_number(rng: random.Random, region: str) -> phonenumbers.PhoneNumber:
    """A random valid number of `region`: its example number with the last digits redrawn."""
    example = phonenumbers.example_number_for_type(region, rng.choice(_PHONE_TYPES))
    nsn = phonenumbers.national_significant_number(example)
    for _ in range(100):
        k = min(4, len(nsn) - 3)
        candidate = nsn[:-k] + "".join(rng.choice("0123456789") for _ in range(k))
        num = phonenumbers.parse(f"+{example.country_code}{candidate}")
        if phonenumbers.is_valid_number(num):
            return num
    return example


def _phone(rng: random.Random) -> str:
    """A phone number as phonenumbers formats it, or as people write it: '+44 (0)20 ...',
    '030/901820', '01.23.45.67.89', '(212)555-0187', compact, dotted, dashed, 00-prefixed."""
    F = phonenumbers.PhoneNumberFormat
    if rng.random() < 0.6:
        region = rng.choice(PHONE_REGIONS_NATIONAL)
        num = _phone_number(rng, region)
        intl = phonenumbers.format_number(num, F.INTERNATIONAL)
        national = phonenumbers.format_number(num, F.NATIONAL)
        cc = f"+{num.country_code}"
        forms = [
            intl,
            national,
            phonenumbers.format_number(num, F.E164),
            intl.replace(" ", "-"),
            intl.replace(" ", "."),
            national.replace(" ", "-"),
            national.replace(" ", ""),
        ]
        if region == "US":
            n = str(num.national_number)
            forms += [
                f"({n[:3]}){n[3:6]}-{n[6:]}",
                f"{n[:3]}.{n[3:6]}.{n[6:]}",
                f"1-{n[:3]}-{n[3:6]}-{n[6:]}",
                f"+1 ({n[:3]}) {n[3:6]}-{n[6:]}",
                f"{n[:3]} {n[3:6]} {n[6:]}",
                f"+1.{n[:3]}.{n[3:6]}.{n[6:]}",
            ]
        else:
            forms += ["00" + intl[1:], national.replace(" ", "."), f"({cc}) " + intl[len(cc) + 1 :]]
            if region != "IN":  # the trunk 0 in brackets, and the area code set off by a slash
                forms += [intl.replace(f"{cc} ", f"{cc} (0)", 1), national.replace(" ", "/", 1)]
        return rng.choice(forms)
    num = _phone_number(rng, rng.choice(PHONE_REGIONS_INTL))
    intl = phonenumbers.format_number(num, F.INTERNATIONAL)
    return rng.choice(
        [intl, phonenumbers.format_number(num, F.E164), intl.replace(" ", "-"), "00" + intl[1:]]
    )


def _luhn_complete(body: str) -> str:
    for check in "0123456789":
        digits = body + check
        total = sum(
            (d * 2 - 9 if d * 2 > 9 else d * 2) if i % 2 else d
            for i, d in enumerate(map(int, reversed(digits)))
        )
        if total % 10 == 0:
            return digits
    raise AssertionError


CARD_BRANDS = {  # prefixes, lengths, groupings by length
    "visa": (["4"], [16, 16, 13, 19]),
    "mastercard": (["51", "52", "53", "54", "55", "2221", "2500", "2720"], [16]),
    "amex": (["34", "37"], [15]),
    "discover": (["6011", "65", "644"], [16]),
    "jcb": (["3528", "3566", "3589"], [16]),
    "diners": (["36", "38", "300"], [14]),
    "unionpay": (["62"], [16, 19]),
}
GROUPS = {13: [4, 4, 5], 14: [4, 6, 4], 15: [4, 6, 5], 16: [4, 4, 4, 4], 19: [4, 4, 4, 4, 3]}


def _card(rng: random.Random) -> str:
    prefixes, lengths = CARD_BRANDS[rng.choice(list(CARD_BRANDS))]
    prefix, n = rng.choice(prefixes), rng.choice(lengths)
    digits = _luhn_complete(prefix + "".join(rng.choice("0123456789") for _ in range(n - len(prefix) - 1)))
    sep = rng.choice(["", " ", "-", " "])
    if not sep:
        return digits
    parts, pos = [], 0
    for g in GROUPS[n]:
        parts.append(digits[pos : pos + g])
        pos += g
    return sep.join(parts)


IBAN_FORMATS = {  # the BBAN as runs of count + kind: n digits, a capital letters, c either
    "DE": "18n",
    "GB": "4a14n",
    "FR": "10n11c2n",
    "ES": "20n",
    "IT": "1a10n12c",
    "NL": "4a10n",
    "BE": "12n",
    "CH": "5n12c",
    "PL": "24n",
    "AT": "16n",
    "IE": "4a14n",
    "SE": "20n",
    "NO": "11n",
    "PT": "21n",
    "DK": "14n",
    "SA": "2n18c",
}


def _iban(rng: random.Random) -> str:
    country = rng.choice(list(IBAN_FORMATS))
    alphabet = {
        "n": "0123456789",
        "a": "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "c": "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
    }
    bban = "".join(
        "".join(rng.choice(alphabet[kind]) for _ in range(int(count)))
        for count, kind in re.findall(r"([0-9]+)([nac])", IBAN_FORMATS[country])
    )
    check = 98 - int("".join(str(int(c, 36)) for c in bban + country + "00")) % 97
    iban = f"{country}{check:02d}{bban}"
    if rng.random() < 0.5:
        iban = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
    return iban.lower() if rng.random() < 0.05 else iban


def _ip(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.5:
        return str(ipaddress.IPv4Address(rng.getrandbits(32)))
    if r < 0.6:  # private ranges, the common case in logs and configs
        return rng.choice(["10.{}.{}.{}", "192.168.{}.{}", "172.16.{}.{}"]).format(
            *(rng.randrange(1, 255) for _ in range(3))
        )
    v6 = ipaddress.IPv6Address(rng.getrandbits(128))
    if r < 0.75:
        return v6.exploded if rng.random() < 0.5 else str(v6)
    if r < 0.9:  # compressed with a run of zero groups
        groups = v6.exploded.split(":")
        k = rng.randrange(1, 6)
        start = rng.randrange(0, 8 - k)
        groups[start : start + k] = ["0"] * k
        return str(ipaddress.IPv6Address(":".join(groups)))
    return f"::ffff:{ipaddress.IPv4Address(rng.getrandbits(32))}"


def _ssn(rng: random.Random) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}-{rng.randrange(1, 100):02d}-{rng.randrange(1, 10000):04d}"


def _url_credentials(rng: random.Random) -> tuple[str, str]:
    user = rng.choice(["admin", "bob", "deploy", "x-access-token", "svc_backup", "root", "j.doe"])
    pw_chars = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789!$%*_-.~"
    password = "".join(rng.choice(pw_chars) for _ in range(rng.randrange(6, 24)))
    if rng.random() < 0.1:
        password = password[:3] + "@" + password[3:]  # unencoded '@' in a password
    scheme = rng.choice(
        ["https", "http", "ftp", "postgres", "postgresql", "mysql", "redis", "mongodb+srv", "amqp"]
    )
    host = rng.choice(
        ["db.internal", "example.com", "db.example.net:5432", "git.example.org", "cache.local:6379"]
    )
    path = rng.choice(["", "/", "/app", "/repo.git", "/mydb?sslmode=require"])
    cred = f"{user}:{password}"
    return f"{scheme}://{cred}@{host}{path}", cred


MAKERS = {"email": _email, "phone": _phone, "card": _card, "iban": _iban, "ip": _ip, "ssn": _ssn}
# How values sit in markup, logs and forms; {v} is the planted value (what must be covered).
WRAPPERS = {
    "email": ["<{v}>", "mailto:{v}", "[{v}]", "{v}."],
    "phone": ["tel:{v}", "{v} ext. 12", "Tel.: {v}", "{v}."],
    "card": ["#{v}", "{v}.", "[{v}]"],
    "iban": ["IBAN:{v}", "{v}.", "({v})"],
    "ip": ["{v}.", "http://{v}/admin", "[{v}]", "{v}/32"],
    "ssn": ["#{v}", "{v}.", "SSN:{v}"],
    "url_credentials": ["<{v}>", '"{v}"'],
}


def planted_corpus(n_per_type: int = 300, seed: int = 0) -> list[tuple[str, str, int, int]]:
    """Rows (text, type, start, end): one planted value of `type` at text[start:end] per row,
    n_per_type rows for every pattern type, in a seeded random carrier sentence."""
    rng = random.Random(seed)
    rows = []
    for ptype in PATTERN_TYPES:
        for _ in range(n_per_type):
            if ptype == "url_credentials":
                value, secret = _url_credentials(rng)
            else:
                value = secret = MAKERS[ptype](rng)
            if rng.random() < 0.3:
                value = rng.choice(WRAPPERS[ptype]).replace("{v}", value)
            carrier = rng.choice(CARRIERS).replace("{k}", rng.choice(KEYWORD[ptype]))
            head, tail = carrier.split("{v}")
            start = len(head) + value.index(secret)
            rows.append((head + value + tail, ptype, start, start + len(secret)))
    return rows


def recall(
    rows: list[tuple[str, str, int, int]], find: Callable = find_pii
) -> tuple[dict[str, float], Counter, list]:
    """Recall per type, stray hits (covering no planted value) by type, and the misses."""
    found, total, stray, misses = Counter(), Counter(), Counter(), []
    for text, ptype, start, end in rows:
        total[ptype] += 1
        hits = find(text)
        if any(h.type == ptype and h.start <= start and h.end >= end for h in hits):
            found[ptype] += 1
        else:
            misses.append((ptype, text[start:end], text, hits))
        stray.update(h.type for h in hits if h.end <= start or h.start >= end)
    return {t: found[t] / total[t] for t in total}, stray, misses


PHONE_FORMS = ("formatted national", "international", "E.164", "00-prefixed", "bare national digits")
_BETWEEN_DIGITS = re.compile(r"[0-9][^0-9]+[0-9]")


def phone_form(value: str) -> str:
    """How a planted phone number is written: one of PHONE_FORMS."""
    v = value.lstrip("(")
    if v.startswith("+"):
        return "international" if _BETWEEN_DIGITS.search(v) else "E.164"
    if v.startswith("00"):
        return "00-prefixed"
    return "formatted national" if _BETWEEN_DIGITS.search(v) else "bare national digits"


def phone_recall_by_form(
    rows: list[tuple[str, str, int, int]], find: Callable = find_pii
) -> dict[str, tuple[int, int, list[str]]]:
    """(found, planted, missed values) of the planted phones, by written form."""
    out = {form: [0, 0, []] for form in PHONE_FORMS}
    for text, ptype, start, end in rows:
        if ptype != "phone":
            continue
        entry = out[phone_form(text[start:end])]
        entry[1] += 1
        if any(h.type == "phone" and h.start <= start and h.end >= end for h in find(text)):
            entry[0] += 1
        else:
            entry[2].append(text)
    return {form: tuple(v) for form, v in out.items()}


def clean_sets(limit: int | None = None) -> dict[str, list[str]]:
    """Real text without private data, by name; sets whose files are absent are left out."""
    sets = {}
    for name, path in [("sst2 train", "train.tsv"), ("sst2 dev", "dev.tsv")]:
        if (SHARED / "sst2" / path).exists():
            with (SHARED / "sst2" / path).open(newline="") as f:
                reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
                next(reader)
                sets[name] = [row[0] for row in reader][:limit]
    for name, path in [
        ("wikitext2 valid", "tokens/valid.txt"),
        ("wikitext2 test", "tokens/test.txt"),
        ("wikitext2 raw test", "raw/wiki.test.raw"),
    ]:
        if (SHARED / "wikitext2" / path).exists():
            lines = (SHARED / "wikitext2" / path).read_text().splitlines()
            sets[name] = [line for line in lines if line.strip()][:limit]
    alpaca = SHARED / "alpaca_1k" / "alpaca_data_1k.json"
    if alpaca.exists():
        rows = json.loads(alpaca.read_text())
        sets["alpaca 1k"] = ["\n".join([r["instruction"], r.get("input", ""), r["output"]]) for r in rows][
            :limit
        ]
    return sets


def _bare(rng: random.Random) -> str:
    k = rng.choice([7, 7, 7, 8, 9, 10, 10, 11])
    if k == 7 and rng.random() < 0.5:  # 100xxxx-449xxxx held the most false phones
        return str(rng.randrange(1_000_000, 4_500_000))
    return str(rng.randrange(10 ** (k - 1), 10**k))


def _big(rng: random.Random) -> int:
    k = rng.randrange(4, 11)
    return rng.randrange(10 ** (k - 1), 10**k)


def _year(rng: random.Random) -> int:
    return rng.randrange(1700, 2031)


def _date(rng: random.Random) -> str:
    y, m, d = _year(rng), rng.randrange(1, 13), rng.randrange(1, 29)
    return rng.choice(
        [f"{y}-{m:02d}-{d:02d}", f"{m:02d}/{d:02d}/{y}", f"{d:02d}.{m:02d}.{y}", f"{d}/{m}/{y}"]
    )


_GROUPED = [
    lambda n: f"{n:,}",  # 3,100,000
    lambda n: f"{n:,}".replace(",", " "),  # 3 100 000
    lambda n: f"{n:,}".replace(",", "."),  # 3.100.000
    lambda n: f"{n:,}".replace(",", "\u00a0"),  # 3 100 000 with non-breaking spaces
    lambda n: f"{n:,}".replace(",", " @,@ "),  # wikitext's tokens
]

# kind -> sentence makers; every kind holds numbers only, no private data.
NUMBER_SENTENCES: dict[str, list[Callable[[random.Random], str]]] = {
    "bare 7-11 digits": [
        lambda r: f"the total was {_bare(r)} in {_year(r)}",
        lambda r: f"it costs {_bare(r)} dollars",
        lambda r: f"population {_bare(r)}",
        lambda r: f"{_bare(r)} people voted, {_bare(r)} did not",
        lambda r: f"a {_bare(r)} figure for {_year(r)}",
        lambda r: f"The city had {_bare(r)} inhabitants ({_year(r)} census).",
    ],
    "population": [
        lambda r: f"The population was {r.choice(_GROUPED)(_big(r))} at the {_year(r)} census.",
        lambda r: (
            f"with {r.randrange(1000, 99_999_999)} inhabitants in {_year(r)} and {r.randrange(1000, 9_999_999)} in {_year(r)}"
        ),
    ],
    "price": [
        lambda r: (
            f"It costs ${r.choice(_GROUPED)(_big(r))}.{r.randrange(100):02d} or €{r.randrange(10, 99_999_999)}"
        ),
        lambda r: (
            f"sold for {r.randrange(100_000, 9_999_999_999)} USD ({r.randrange(1, 99)}% off) in {_year(r)}"
        ),
        lambda r: f"a budget of {r.choice(_GROUPED)(_big(r))} pounds",
    ],
    "years": [
        lambda r: (
            f"from {_year(r)} to {_year(r)}, then {_year(r)} – {_year(r)} and {_year(r)}-{r.randrange(10, 99)}"
        ),
        lambda r: f"in {_year(r)} {_year(r)} {_year(r)} and {_year(r)}/{_year(r)}",
    ],
    "counts": [
        lambda r: (
            f"{r.randrange(1, 10**8)} copies sold, {r.randrange(1, 10**6)} returned, {r.randrange(1, 10**4)} lost"
        ),
        lambda r: (
            f"scored {r.randrange(100)} points, {r.randrange(10**6, 10**9)} views and {r.randrange(10**5, 10**8)} likes"
        ),
    ],
    "ids": [
        lambda r: f"order #{r.randrange(10**6, 10**11)} (ticket {r.randrange(10**6, 10**10)}) shipped",
        lambda r: f"ID {r.randrange(10**6, 10**10)}, ref {r.randrange(10**6, 10**10)}",
        lambda r: (
            f"invoice {r.randrange(10**5, 10**7)}-{r.randrange(10**2, 10**5)} and case {_year(r)}-{r.randrange(10**5, 10**7)}"
        ),
        lambda r: (
            f"ISBN 978-{r.randrange(10)}-{r.randrange(10, 99)}-{r.randrange(100000, 999999)}-{r.randrange(10)}"
        ),
    ],
    "grouped thousands": [
        lambda r: (
            f"{r.choice(_GROUPED)(r.randrange(10**6, 10**10))} and {r.choice(_GROUPED)(r.randrange(10**6, 10**10))}"
        ),
    ],
    "dates and times": [
        lambda r: f"on {_date(r)} at {r.randrange(24):02d}:{r.randrange(60):02d}:{r.randrange(60):02d}",
        lambda r: f"between {_date(r)} and {_date(r)}, {r.randrange(1, 13)}.{r.randrange(60):02d} pm",
        lambda r: (
            f"{_year(r)}{r.randrange(1, 13):02d}{r.randrange(1, 29):02d} {r.randrange(24):02d}{r.randrange(60):02d}"
        ),
    ],
    "scores and ranges": [
        lambda r: (
            f"won {r.randrange(10)}–{r.randrange(10)}, a {r.randrange(60, 130)}-{r.randrange(60, 130)} win"
        ),
        lambda r: (
            f"pages {(a := r.randrange(10, 99_999))}-{a + r.randrange(1, 99)}, {r.randrange(100)} - {r.randrange(100)}"
        ),
        lambda r: (
            f"coordinates {r.uniform(-90, 90):.6f}, {r.uniform(-180, 180):.6f}; ratio {r.random():.10f}"
        ),
    ],
    "cue word, ordinary number": [
        lambda r: f"the number of voters was {_bare(r)}",
        lambda r: f"a mobile network with {_bare(r)} subscribers",
        lambda r: f"the cell count reached {_bare(r)} per ml",
        lambda r: f"a so-called {_bare(r)} rule",
        lambda r: f"contact lenses: {_bare(r)} sold",
        lambda r: f"the phone maker shipped {_bare(r)} units in {_year(r)}",
    ],
}


def numbers_in_prose(n: int = 100_000, seed: int = 0) -> list[tuple[str, str]]:
    """(kind, sentence): n seeded sentences full of ordinary numbers and no private data."""
    rng = random.Random(seed)
    kinds = list(NUMBER_SENTENCES)
    rows = []
    for _ in range(n):
        kind = rng.choice(kinds)
        rows.append((kind, rng.choice(NUMBER_SENTENCES[kind])(rng)))
    return rows


def load_baseline(rev: str) -> types.ModuleType:
    """src/lmtune/data/pii.py as it was at git revision `rev`, as a module."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:src/lmtune/data/pii.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    module = types.ModuleType("pii_baseline")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{rev}:src/lmtune/data/pii.py", "exec"), module.__dict__)
    return module


def _rates(texts: list[str], scrubbers: list, repeats: int = 3) -> list[float]:
    """Rows/s of each scrubber on texts, best of `repeats` passes taken in turns (the machine is
    shared: a slow spell then hits every scrubber alike)."""
    best = [float("inf")] * len(scrubbers)
    for _ in range(repeats):
        for i, scrub in enumerate(scrubbers):
            t0 = time.perf_counter()
            scrub_texts(texts, scrub)
            best[i] = min(best[i], time.perf_counter() - t0)
    return [len(texts) / b for b in best]


def _false_hits(texts: list[str], scrub, find) -> tuple[Counter, list, list[int]]:
    """Hit counts by type, (type, value, context) examples and indices of the texts hit."""
    out, counts = scrub_texts(texts, scrub)
    examples, rows_hit = [], []
    for i, (text, scrubbed) in enumerate(zip(texts, out, strict=True)):
        if scrubbed != text:
            rows_hit.append(i)
            for h in find(text):
                examples.append((h.type, h.value, text[max(0, h.start - 30) : h.end + 30].replace("\n", " ")))
    return counts, examples, rows_hit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-type", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--numbers", type=int, default=100_000, help="sentences in the numbers-in-prose set")
    parser.add_argument("--baseline", metavar="REV", help="also measure pii.py as of this git revision")
    parser.add_argument("--examples", type=int, default=8, help="false-positive examples shown per set")
    args = parser.parse_args()

    versions = {"now": (make_scrubber(), find_pii)}
    if args.baseline:
        old = load_baseline(args.baseline)
        versions[args.baseline] = (old.make_scrubber(), old.find_pii)
    names = list(versions)
    cols = lambda fmt, values: " ".join(format(v, fmt) for v in values)  # noqa: E731

    rows = planted_corpus(args.per_type, args.seed)
    results = {v: recall(rows, find) for v, (_, find) in versions.items()}
    print(f"Recall on the planted corpus ({args.per_type} per type, seed {args.seed}), default scrubber:")
    print(
        f"  {'type':<16} "
        + cols(">12", [f"recall {v}"[:12] for v in names])
        + "  stray hits "
        + cols(">6", names)
    )
    for t in PATTERN_TYPES:
        print(
            f"  {t:<16} "
            + cols(">12.3f", [results[v][0][t] for v in names])
            + "             "
            + cols(">6", [results[v][1][t] for v in names])
        )
    rates, stray, misses = results["now"]
    for ptype, value, text, hits in misses[:10]:
        print(f"  missed {ptype}: {value!r} in {text!r}; hits {[(h.type, h.value) for h in hits]}")

    by_form = {v: phone_recall_by_form(rows, find) for v, (_, find) in versions.items()}
    print("\nPlanted phones by written form:")
    print(f"  {'form':<22} {'planted':>7} " + cols(">12", [f"recall {v}"[:12] for v in names]))
    for form in PHONE_FORMS:
        found = [by_form[v][form][0] / max(1, by_form[v][form][1]) for v in names]
        print(f"  {form:<22} {by_form['now'][form][1]:>7} " + cols(">12.3f", found))
    for form in PHONE_FORMS:
        for text in by_form["now"][form][2][:3]:
            print(f"  missed ({form}): {text!r}")

    sets = clean_sets()
    prose = numbers_in_prose(args.numbers, args.seed)
    sets["numbers in prose"] = [text for _, text in prose]
    groups = {
        "sst2 (all)": [n for n in sets if n.startswith("sst2")],
        "wikitext2 (all)": [n for n in sets if n.startswith("wikitext2")],
    }
    print("\nFalse hits on text without private data, per 100,000 texts (all types; phone; rows/s):")
    print(
        f"  {'set':<20} {'texts':>7} "
        + " ".join(f"{'hits ' + v:>12} {'/100k':>7} {'phone/100k':>10} {'rows/s':>7}" for v in names)
    )
    measured = {v: {} for v in names}
    for name, texts in sets.items():
        line = f"  {name:<20} {len(texts):>7} "
        rates = _rates(texts[:10_000], [scrub for scrub, _ in versions.values()])
        for (v, (scrub, find)), rate in zip(versions.items(), rates, strict=True):
            measured[v][name] = counts, _, _ = _false_hits(texts, scrub, find)
            total = sum(counts.values())
            line += f"{total:>12} {total * 1e5 / len(texts):>7.1f} {counts['phone'] * 1e5 / len(texts):>10.1f} {rate:>7.0f} "
        print(line.rstrip())
    for group, members in groups.items():
        n = sum(len(sets[m]) for m in members)
        line = f"  {group:<20} {n:>7} "
        for v in names:
            total = sum(sum(measured[v][m][0].values()) for m in members)
            phone = sum(measured[v][m][0]["phone"] for m in members)
            line += f"{total:>12} {total * 1e5 / max(1, n):>7.1f} {phone * 1e5 / max(1, n):>10.1f} {'':>7} "
        print(line.rstrip())

    print("\nFalse hits by type (per 100,000 texts):")
    for v in names:
        for name, texts in sets.items():
            counts = measured[v][name][0]
            if counts:
                by_type = ", ".join(f"{t} {c * 1e5 / len(texts):.1f}" for t, c in counts.most_common())
                print(f"  [{v}] {name}: {by_type}")
    for v in names:
        by_kind = Counter(prose[i][0] for i in measured[v]["numbers in prose"][2])
        hit = ", ".join(f"{k} {c}" for k, c in by_kind.most_common()) or "none"
        print(f"  [{v}] numbers in prose, texts hit by kind of sentence: {hit}")

    print("\nFalse hits, to judge (version, set, type, value, context):")
    for v in names:
        for name in sets:
            for ptype, value, context in measured[v][name][1][: args.examples]:
                print(f"  [{v}] [{name}] {ptype} {value!r}: ...{context}...")


if __name__ == "__main__":
    main()

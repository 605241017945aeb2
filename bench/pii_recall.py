"""PII scrubbing: recall on planted private data, false positives on clean text, throughput.

    .venv/bin/python bench/pii_recall.py [--per-type 500] [--seed 0]

Recall: a seeded synthetic corpus plants one value of a pattern type per row, in varied carrier
sentences and formats (cards of seven networks and three groupings, IBANs of sixteen countries
printed and compact, phones of twenty countries in national, international, E.164, 00-prefixed,
dotted and dashed forms, emails with subdomains and plus-tags, IPv4 and IPv6, SSNs, credential
URLs of several schemes). A planted value counts as found when one hit of its type covers it.
Stray hits are hits in that corpus that cover no planted value (carriers hold dates, times,
prices, order numbers and versions on purpose).

False positives: every hit on real text without private data (SST-2 train sentences, wikitext-2
valid lines, Alpaca-1k instruction + input + output), per 10k rows by type, with examples so a
person can judge (Alpaca has a few genuine example phones and emails).

Throughput: rows/s of the default scrubber (all pattern types, replace) on each set, one core.
"""

from __future__ import annotations

import argparse
import csv
import ipaddress
import json
import random
import re
import sys
import time
from collections import Counter
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


def recall(rows: list[tuple[str, str, int, int]]) -> tuple[dict[str, float], Counter, list]:
    """Recall per type, stray hits (covering no planted value) by type, and the misses."""
    found, total, stray, misses = Counter(), Counter(), Counter(), []
    for text, ptype, start, end in rows:
        total[ptype] += 1
        hits = find_pii(text)
        if any(h.type == ptype and h.start <= start and h.end >= end for h in hits):
            found[ptype] += 1
        else:
            misses.append((ptype, text[start:end], text, hits))
        stray.update(h.type for h in hits if h.end <= start or h.start >= end)
    return {t: found[t] / total[t] for t in total}, stray, misses


def clean_sets(limit: int | None = None) -> dict[str, list[str]]:
    """Real text without private data, by name; sets whose files are absent are left out."""
    sets = {}
    sst2 = SHARED / "sst2" / "train.tsv"
    if sst2.exists():
        with sst2.open(newline="") as f:
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            next(reader)
            sets["sst2 train"] = [row[0] for row in reader][:limit]
    for name, path in [("wikitext2 valid", "tokens/valid.txt"), ("wikitext2 raw test", "raw/wiki.test.raw")]:
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


def _rate(texts: list[str], scrub, repeats: int = 3) -> float:
    """Rows/s of the scrubber on texts, best of `repeats` (the machine is shared)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        scrub_texts(texts, scrub)
        best = min(best, time.perf_counter() - t0)
    return len(texts) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-type", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--examples", type=int, default=8, help="false-positive examples shown per set")
    args = parser.parse_args()

    rows = planted_corpus(args.per_type, args.seed)
    rates, stray, misses = recall(rows)
    scrub = make_scrubber()
    print(f"Recall on the planted corpus ({args.per_type} per type, seed {args.seed}), default scrubber:")
    print(f"  {'type':<16} {'recall':>7} {'stray hits':>11} {'rows/s':>9}")
    for t in PATTERN_TYPES:
        texts = [r[0] for r in rows if r[1] == t]
        print(f"  {t:<16} {rates[t]:>7.3f} {stray[t]:>11} {_rate(texts, scrub):>9.0f}")
    print(f"  {'all':<16} {'':>7} {sum(stray.values()):>11} {_rate([r[0] for r in rows], scrub):>9.0f}")
    for ptype, value, text, hits in misses[:10]:
        print(f"  missed {ptype}: {value!r} in {text!r}; hits {[(h.type, h.value) for h in hits]}")

    print("\nHits on clean text (no private data planted), per 10k rows:")
    print(f"  {'set':<20} {'rows':>6} " + " ".join(f"{t[:6]:>6}" for t in PATTERN_TYPES) + f" {'rows/s':>9}")
    examples = []
    for name, texts in clean_sets().items():
        counts = Counter()
        for text in texts:
            for h in find_pii(text):
                counts[h.type] += 1
                context = text[max(0, h.start - 30) : h.end + 30].replace("\n", " ")
                examples.append((name, h.type, h.value, context))
        per10k = " ".join(f"{counts[t] * 1e4 / len(texts):>6.1f}" for t in PATTERN_TYPES)
        print(f"  {name:<20} {len(texts):>6} {per10k} {_rate(texts, scrub):>9.0f}")
    print("\nHits on clean text, to judge (set, type, value, context):")
    shown = Counter()
    for name, ptype, value, context in examples:
        if shown[name] < args.examples:
            shown[name] += 1
            print(f"  [{name}] {ptype} {value!r}: ...{context}...")


if __name__ == "__main__":
    main()

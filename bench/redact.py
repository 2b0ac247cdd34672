"""Redaction recall and false alarms: `python -m bench.redact [--n 1000] [--seed 7]`.

Generates (seeded, nothing downloaded) a corpus of what operators paste into a chat — each kind
of secret or personal number inside a few sentence shapes — and a corpus of ordinary sentences:
prose, numbers, dates, times, versions, prices, code and git ids in code blocks. Prints, per
kind, the recall (the share of instances whose value no longer appears after `redact`) and the
share of ordinary sentences `redact` changed at all, with examples of misses and changes.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import string
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from stdnum import iban, luhn

from koalabot.export.redact import redact

Maker = Callable[[random.Random], str]


def _hex(rng: random.Random, digits: int) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(digits))


def _card(rng: random.Random) -> str:
    prefix, length = rng.choice([("4", 16), ("51", 16), ("55", 16), ("37", 15), ("6011", 16)])
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    number = body + luhn.calc_check_digit(body)
    style = rng.choice(["plain", "space", "dash"])
    if style == "plain" or length == 15:
        return number
    sep = " " if style == "space" else "-"
    return sep.join(number[i : i + 4] for i in range(0, length, 4))


def _ipv4(rng: random.Random) -> str:
    while True:
        address = ipaddress.IPv4Address(rng.getrandbits(32))
        if not (address.is_loopback or address.is_unspecified or address.is_multicast):
            return str(address)


def _ipv6(rng: random.Random) -> str:
    groups = [rng.getrandbits(16) if rng.random() > 0.3 else 0 for _ in range(8)]
    value = int("".join(f"{g:04x}" for g in groups), 16)
    address = ipaddress.IPv6Address(value)
    return address.compressed if rng.random() < 0.7 else address.exploded


_BBAN = {"DE": "18n", "GB": "4a14n", "NL": "4a10n", "AT": "16n", "CH": "17n"}


def _iban(rng: random.Random) -> str:
    country, shape = rng.choice(list(_BBAN.items()))
    letters = int(shape.split("a")[0]) if "a" in shape else 0
    digits = int(shape.rstrip("n").split("a")[-1])
    bban = "".join(rng.choice(string.ascii_uppercase) for _ in range(letters))
    bban += "".join(rng.choice(string.digits) for _ in range(digits))
    number = country + "00" + bban
    number = country + iban.calc_check_digits(number) + bban
    assert iban.is_valid(number), number
    return iban.format(number) if rng.random() < 0.6 else number


def _password(rng: random.Random) -> str:
    word = rng.choice(["hunter", "Summer", "koala", "Tr0ub4dor", "letmein", "s3cret"])
    return word + str(rng.randint(0, 9999)) + rng.choice(["", "!", "#", "&x"])


@dataclass(frozen=True)
class SecretKind:
    name: str
    make: Maker
    shapes: tuple[str, ...]


KINDS = (
    SecretKind(
        "hex secret (token_hex)",
        lambda r: _hex(r, r.choice([32, 40, 48, 64])),
        (
            "my token is {v}",
            "SECRET={v}",
            "use {v} for the webhook",
            "```\nKEY = '{v}'\n```",
            "```\n{v}\n```",  # bare in a code block: a 40-digit one passes for a git id
        ),
    ),
    SecretKind(
        "key-<hex>",
        lambda r: "key-" + _hex(r, 32),
        ("mailgun: {v}", "the api key is {v}.", "export MG={v}"),
    ),
    SecretKind(
        "UUID-shaped key",
        lambda r: str(uuid.UUID(int=r.getrandbits(128), version=4)),
        ("HEROKU_API_KEY={v}", "client secret {v}", "my key: {v}, don't share"),
    ),
    SecretKind(
        "payment card (Luhn)",
        _card,
        ("charge {v} please", "card number: {v}, exp 12/27", "it's {v}."),
    ),
    SecretKind(
        "IPv4",
        _ipv4,
        ("ssh root@{v}", "the server is at {v}.", "ping {v} fails", "the build server: {v}"),
    ),
    SecretKind("IPv6", _ipv6, ("listen on [{v}]:8080", "host {v} is down", "ip: {v}.")),
    SecretKind("IBAN (mod 97)", _iban, ("IBAN {v}", "pay to {v}, thanks", "my account: {v}.")),
    SecretKind(
        "password pair",
        _password,
        (
            "password: {v}",
            "login admin passwd={v}",
            "Password = '{v}'",
            "pwd: {v}",
            "my password is {v}",  # no ":" or "=": not a pair, passes
        ),
    ),
)

ORDINARY = (
    "What is the difference between a koala and a wombat?",
    "Can you summarise chapter {n} in {m} sentences?",
    "The meeting moved to {h}:{mm} on {d}, room {n}.{m}.",
    "We shipped version {n}.{m}.{k} yesterday; {k}.{n}.{m}.{n2} comes next week.",
    "It costs ${n},{k:03d}.{m:02d} a year, about {p}% more than last year.",
    "Order #{big} was delivered on 2024-{mo:02d}-{dd:02d}.",
    "Fixed in commit {sha}, see the changelog.",
    "```\n$ git log --oneline\n{sha7} Fix the build\n{sha} Merge branch 'main'\n```",
    "Run `git show {sha}` to see the change.",
    "```python\nfor i in range({n}):\n    print(i * {m})\n```",
    "In C++ write std::vector<int> v({n}); then v[{m}] = {k};",
    "The test runs on 127.0.0.1:{port} and binds 0.0.0.0 in CI.",
    "Use a timeout of {n}.{m} seconds and retry {k} times.",
    "Our team of {n} people reviewed {big} answers in {m} weeks.",
    "Pass the ball to the left, then pass it back.",
    "The password policy needs {n} characters at least.",
    "My phone died at {p}% and I missed the {h}:{mm} train.",
    "ISBN 978-{n}-{k}-{m} is the second edition.",
    "Add {n} g of flour, {m} eggs and {k} ml of milk.",
    "The image is sha256:{sha256}.",
    "Please upgrade to {n}.{m}.{k2}.{n} tonight.",
    "The MD5 of the empty file is d41d8cd98f00b204e9800998ecf8427e.",
    "Meet me at {h}:{mm}:{m2:02d} by the {n} bus stop.",
)


def _ordinary(rng: random.Random) -> str:
    template = rng.choice(ORDINARY)
    return template.format(
        n=rng.randint(1, 99),
        n2=rng.randint(100, 999),
        m=rng.randint(0, 99),
        k=rng.randint(0, 999),
        k2=rng.randint(0, 255),
        m2=rng.randint(0, 59),
        h=rng.randint(0, 23),
        mm=rng.randint(0, 59),
        d=rng.choice(["Monday", "Tuesday", "the 3rd"]),
        p=rng.randint(1, 99),
        big=rng.randint(10_000, 99_999_999),
        mo=rng.randint(1, 12),
        dd=rng.randint(1, 28),
        sha=_hex(rng, 40),
        sha7=_hex(rng, 7),
        sha256=_hex(rng, 64),
        port=rng.randint(1024, 65535),
    )


def recall(kind: SecretKind, n: int, rng: random.Random) -> tuple[float, list[str]]:
    """The share of ``n`` generated instances whose value is gone after redaction."""
    misses = []
    for _ in range(n):
        value = kind.make(rng)
        text = rng.choice(kind.shapes).format(v=value)
        if value in redact(text):
            misses.append(text)
    return 1 - len(misses) / n, misses


def changed(n: int, rng: random.Random) -> tuple[float, list[tuple[str, str]]]:
    """The share of ``n`` ordinary sentences that redaction changed."""
    changes = []
    for _ in range(n):
        text = _ordinary(rng)
        if (out := redact(text)) != text:
            changes.append((text, out))
    return len(changes) / n, changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="instances per kind (default 1000)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    print(f"| kind | recall (n={args.n}) |")
    print("|---|---|")
    examples = []
    for kind in KINDS:
        share, misses = recall(kind, args.n, rng)
        print(f"| {kind.name} | {share:.1%} |")
        examples += [f"  missed ({kind.name}): {m!r}" for m in misses[:2]]
    share, changes = changed(args.n * 5, rng)
    print(f"| ordinary sentences changed (n={args.n * 5}) | {share:.2%} |")
    examples += [f"  changed: {a!r} -> {b!r}" for a, b in changes[:5]]
    if examples:
        print("\n".join(["", "examples:", *examples]), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

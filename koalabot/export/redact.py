"""Redaction: personal data and secrets out of training text, before it leaves the machine.

`find` locates what an export would replace — e-mail addresses, phone numbers, URLs carrying
credentials or secrets in their query, API-key-shaped strings (vendor formats, long hex
secrets, ``key-<hex>``, UUIDs), payment card numbers, IP addresses, IBANs, the value of
``password: …`` pairs and platform user mentions — so the review page can highlight it;
`redact` replaces it with placeholders. Phone numbers are validated with libphonenumber's
metadata (``phonenumbers``), card numbers with Luhn's check digit and IBANs with their mod-97
check and national lengths (``python-stdnum``), IP addresses by the standard ``ipaddress``.

Trade-offs, so prose and code stay readable: a 40- or 64-digit hex string is kept where its
line says it is a hash (commit, sha, digest…) and names no secret, and a 40-digit one inside
a code block or `inline code` is kept as a git commit id; loopback and unspecified addresses
(127.0.0.1, ::1, 0.0.0.0) are kept; every UUID is redacted (an id cannot be told from a key).
bench/redact.py measures recall per kind and the share of ordinary sentences changed.
"""

from __future__ import annotations

import ipaddress
import math
import re
import string
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import parse_qsl, urlsplit

from phonenumbers import Leniency, PhoneNumberMatcher
from stdnum import iban, luhn


class Kind(StrEnum):
    """What a redacted stretch of text was."""

    EMAIL = "email"
    PHONE = "phone"
    URL = "url"
    API_KEY = "api_key"
    CARD = "card"
    IP = "ip"
    IBAN = "iban"
    PASSWORD = "password"
    MENTION = "mention"


#: What each kind becomes in exported text (mentions become the user's pseudonym instead).
PLACEHOLDERS: dict[Kind, str] = {
    Kind.EMAIL: "[EMAIL]",
    Kind.PHONE: "[PHONE]",
    Kind.URL: "[URL]",
    Kind.API_KEY: "[API_KEY]",
    Kind.CARD: "[CARD]",
    Kind.IP: "[IP]",
    Kind.IBAN: "[IBAN]",
    Kind.PASSWORD: "[PASSWORD]",
}

#: Regions whose national phone formats are recognised; numbers written with +country code
#: (or 00) are recognised for every country.
PHONE_REGIONS: tuple[str, ...] = ("US", "GB")


@dataclass(frozen=True, slots=True)
class Span:
    """One stretch of ``text[start:end]`` to replace; ``user`` is the mentioned user's id."""

    start: int
    end: int
    kind: Kind
    user: str | None = None


# --- detectors -----------------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}(?![\w-])"
)

# Slack <@U123>, <@W123|name>; Discord <@123>, <@!123>.
_MENTION = re.compile(r"<@!?([UW][A-Z0-9]+|\d+)(?:\|[^>]*)?>")

# Slack wraps links as <url|label>, so a URL ends at "|" or ">" as well as at white space.
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s<>|\"'`]+")
_URL_TRAILING = ".,;:!?)]}*_"

# Well-known credential formats (the prefixes their issuers document), then a PEM private key.
_KEY = re.compile(
    r"(?<![\w-])(?:"
    r"sk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}"  # OpenAI, Anthropic
    r"|xox[abposr]-[A-Za-z0-9-]{10,}|xapp-[A-Za-z0-9-]{10,}"  # Slack
    r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}"  # GitHub
    r"|glpat-[A-Za-z0-9_-]{20,}"  # GitLab
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"  # AWS access key id
    r"|AIza[0-9A-Za-z_-]{35}"  # Google API key
    r"|[rsp]k_(?:live|test)_[0-9A-Za-z]{20,}"  # Stripe
    r"|hf_[A-Za-z0-9]{30,}"  # Hugging Face
    r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # JWT
    r"|[MNO][A-Za-z0-9_-]{23,27}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,}"  # Discord bot token
    r"|key-[0-9a-fA-F]{16,}|key-(?=[a-z]*\d)[0-9a-z]{32}"  # Mailgun and the like
    r"|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"  # UUID
    r")(?![\w-])"
    r"|-----BEGIN[A-Z ]*PRIVATE KEY-----.*?-----END[A-Z ]*PRIVATE KEY-----",
    re.DOTALL,
)
# Anything else long, mixed-case, with digits and close to random: an unknown kind of key.
_LONG_TOKEN = re.compile(r"(?<![\w+/=-])[A-Za-z0-9_+/=-]{32,}(?![\w+/=-])")
_MIN_KEY = 15
# Hex secrets (secrets.token_hex(16) and longer), in one case: git ids are the exceptions.
_HEX = re.compile(r"(?<![\w+/-])(?:[0-9a-f]{32,}|[0-9A-F]{32,})(?![\w+/=-])")
_HASH_LENGTHS = (32, 40, 64)  # MD5; SHA-1 and git; SHA-256
_HASH_WORDS = re.compile(r"commit|sha|md5|hash|digest|checksum|revision|\bgit\b|\brev\b", re.I)
_SECRET_WORDS = re.compile(r"secret|token|key|passw|auth|credential|api", re.I)
_CODE = re.compile(r"```.*?(?:```|\Z)|`[^`\n]+`", re.DOTALL)

# Payment cards: 13 to 19 digits, in groups or not, from the issuer ranges 2-6.
_CARD = re.compile(r"(?<![\w.,-])[2-6]\d{3}(?:[ -]?\d){9,15}(?![\w-]|[.,]\d)")
_CARD_DIGITS = range(13, 20)
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)")
_IPV6 = re.compile(
    r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:\.\d{1,3}){0,3}(?![\w:])"
)
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
_IBAN_GROUP = re.compile(r" ?[A-Z0-9]{1,4}$")
_PASSWORD = re.compile(
    r"\b(?:password|passwd|passphrase|pwd)[ \t]*[:=][ \t]*(\"[^\"\n]*\"|'[^'\n]*'|[^\s,;]+)",
    re.IGNORECASE,
)
# "my password is X": a value with a digit or a sign only ("the password is wrong" stays).
_PASSWORD_IS = re.compile(r"\b(?:password|passwd|passphrase|pwd)\s+is\s+(\S+)", re.IGNORECASE)
_PASSWORD_TRAILING = ".,;:)]}"  # a sentence's end; "!" and "?" may end a password
_MIN_ENTROPY = 4.0  # bits per character; English words and identifiers stay well below


# The UTF-8 bytes of a text mapped to b" " (ASCII white space, as str.isspace() has it), b"d"
# (ASCII digits) or b"x" (anything else): one pass that counts digits and bounds word lengths. A
# word of n characters becomes at least n non-spaces in a row, so finding no run of _MIN_KEY
# proves there is no word that long, far faster than splitting the text into words.
_SHAPE = (
    bytes(
        ord(" ") if chr(c).isspace() else ord("d") if chr(c).isdigit() else ord("x")
        for c in range(128)
    )
    + b"x" * 128
)
_LONG_RUN = b"x" * _MIN_KEY


# For texts with seven digits or more, finer classes: b"p" ("+()"), b"q" (".-/"), b"w" (the rest
# of what may not come right before a phone number: letters, "_=:#&?"), b"u" (every byte of a
# non-ASCII character), b" ", b"d" and b"x" as above.
def _phone_class(code: int) -> bytes:
    char = chr(code)
    if char.isspace():
        return b" "
    if char.isdigit():
        return b"d"
    if char in "+()":
        return b"p"
    if char in ".-/":
        return b"q"
    return b"w" if char.isalnum() or char in "_=:#&?" else b"x"


_PHONE_SHAPE = b"".join(map(_phone_class, range(128))) + b"u" * 128
# What _PHONE_CANDIDATE needs, on the phone shape: a start not right after a digit, a letter or
# "/=.:#&?-", then seven digits with only white space and "+().-/" between them. A non-ASCII
# byte may be a Unicode digit, space or letter, so it counts as any of them: this finds every
# candidate libphonenumber could accept, and rules out at C speed most texts that merely hold
# many digits (ids, versions, amounts), which the full expression would scan a character at a
# time. (The first class starts the pattern so the engine can skip ahead to it.)
_MAYBE_PHONE = re.compile(rb"[dpu](?<![dqw].)(?:[ pqu]*[du]){6}")

# Seven or more digits written as a phone number might be: candidates for libphonenumber.
_PHONE_CANDIDATE = re.compile(r"(?<![\w/=.:#&?-])(?:\+|\(\d)?\d[\d\s().\-/]{5,22}\d(?![\w])")
_DATE = re.compile(r"\d{4}[-/.]\d\d?[-/.]\d\d?|\d\d?[-/.]\d\d?[-/.]\d{2,4}")
# A number written without any separator is an id or an amount more often than a phone number,
# unless it is as long as a whole national number with its area code.
_BARE_PHONE_DIGITS = 10

_SECRET_PARAMS = frozenset(
    {"key", "sig", "code", "pass", "pwd", "sid", "auth", "session", "sessionid", "jwt"}
)
_SECRET_PARTS = (
    "token",
    "secret",
    "passw",
    "signature",
    "apikey",
    "api_key",
    "api-key",
    "credential",
    "private",
    "x-amz-",
    "access_key",
    "auth",
)


def _entropy(text: str) -> float:
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _looks_random(token: str) -> bool:
    return (
        any(c.isupper() for c in token)
        and any(c.islower() for c in token)
        and sum(c.isdigit() for c in token) >= 2
        and _entropy(token) >= _MIN_ENTROPY
    )


def _is_key(token: str) -> bool:
    return bool(_KEY.fullmatch(token)) or (len(token) >= 32 and _looks_random(token))


def _secret_url(url: str) -> bool:
    """Whether a URL carries a password, or a secret (by name or by shape) in its query."""
    try:
        parts = urlsplit(url)
        if parts.password:
            return True
    except ValueError:
        return False
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        lowered = name.lower()
        if lowered in _SECRET_PARAMS or any(part in lowered for part in _SECRET_PARTS):
            return bool(value)
        if _is_key(value):
            return True
    return False


def _urls(text: str) -> Iterator[Span]:
    for match in _URL.finditer(text):
        url = match.group().rstrip(_URL_TRAILING)
        if _secret_url(url):
            yield Span(match.start(), match.start() + len(url), Kind.URL)


def _emails(text: str) -> Iterator[Span]:
    for match in _EMAIL.finditer(text):
        yield Span(match.start(), match.end(), Kind.EMAIL)


def _mentions(text: str) -> Iterator[Span]:
    for match in _MENTION.finditer(text):
        yield Span(match.start(), match.end(), Kind.MENTION, match.group(1))


def _keys(text: str) -> Iterator[Span]:
    for match in _KEY.finditer(text):
        yield Span(match.start(), match.end(), Kind.API_KEY)
    if len(text) >= 32:
        for match in _LONG_TOKEN.finditer(text):
            if _looks_random(match.group()):
                yield Span(match.start(), match.end(), Kind.API_KEY)
        yield from _hex_secrets(text)


def _line_of(text: str, start: int, end: int) -> str:
    return text[text.rfind("\n", 0, start) + 1 : (text.find("\n", end) + 1 or len(text) + 1) - 1]


def _in_code(text: str, start: int) -> bool:
    return any(m.start() <= start < m.end() for m in _CODE.finditer(text))


def _git_id(text: str, start: int, end: int) -> bool:
    """A hash or commit id written as one: its line says so, or a 40-digit id in code."""
    if end - start not in _HASH_LENGTHS:
        return False
    line = _line_of(text, start, end).replace(text[start:end], "")
    if _SECRET_WORDS.search(line):
        return False
    return bool(_HASH_WORDS.search(line)) or (end - start == 40 and _in_code(text, start))


def _hex_secrets(text: str) -> Iterator[Span]:
    for match in _HEX.finditer(text):
        word = match.group()
        has_letter = any(c in "abcdefABCDEF" for c in word)
        if has_letter and not word.isalpha() and not _git_id(text, *match.span()):
            yield Span(match.start(), match.end(), Kind.API_KEY)


def _cards(text: str) -> Iterator[Span]:
    for match in _CARD.finditer(text):
        digits = re.sub(r"[ -]", "", match.group())
        if len(digits) in _CARD_DIGITS and len(set(digits)) > 1 and luhn.is_valid(digits):
            yield Span(match.start(), match.end(), Kind.CARD)


def _public_ip(candidate: str) -> bool:
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return not (address.is_loopback or address.is_unspecified)


_VERSION_WORDS = re.compile(
    r"(?:version|release|build|upgrade|update|install)(?:\s+to)?\s*v?\s*$|\bv\s*$", re.I
)
_VERSION_REACH = 24
# "fe80::1" has five hex digits; fewer ("a::b", "f::g") is C++ or Rust more often than an address.
_MIN_IPV6_DIGITS = 5


def _hex_digits(text: str) -> int:
    return sum(c in string.hexdigits for c in text)


def _version(text: str, start: int) -> bool:
    """Four numbers right after "version", "release", "upgrade to"… are a version."""
    before = text[max(0, start - _VERSION_REACH) : start]
    return bool(_VERSION_WORDS.search(before.rpartition("\n")[2]))


def _ipv4s(text: str) -> Iterator[Span]:
    for match in _IPV4.finditer(text):
        if _public_ip(match.group()) and not _version(text, match.start()):
            yield Span(match.start(), match.end(), Kind.IP)


def _ipv6s(text: str) -> Iterator[Span]:
    for match in _IPV6.finditer(text):
        candidate = match.group()
        if _hex_digits(candidate) >= _MIN_IPV6_DIGITS and _public_ip(candidate):
            yield Span(match.start(), match.end(), Kind.IP)


def _ibans(text: str) -> Iterator[Span]:
    for match in _IBAN.finditer(text):
        candidate = match.group()
        # The pattern may take a capitalised word after the number: drop groups until valid.
        while candidate and not iban.is_valid(candidate):
            candidate = _IBAN_GROUP.sub("", candidate)
            if len(candidate) < 15:
                candidate = ""
        if candidate:
            yield Span(match.start(), match.start() + len(candidate), Kind.IBAN)


def _passwords(text: str) -> Iterator[Span]:
    for match in _PASSWORD.finditer(text):
        value = match.group(1)
        if value[0] not in "\"'":
            value = value.rstrip(_PASSWORD_TRAILING)
        if value:
            yield Span(match.start(1), match.start(1) + len(value), Kind.PASSWORD)
    for match in _PASSWORD_IS.finditer(text):
        value = match.group(1).rstrip(_PASSWORD_TRAILING)
        if value and not value.isalpha():
            yield Span(match.start(1), match.start(1) + len(value), Kind.PASSWORD)


def _phone_like(raw: str) -> bool:
    """Cheap tests first: libphonenumber takes a tenth of a millisecond per look."""
    digits = sum(c.isdigit() for c in raw)
    if digits < 7 or (raw.isdigit() and digits < _BARE_PHONE_DIGITS):
        return False
    return not _DATE.match(raw)


def _phones(text: str, regions: tuple[str, ...]) -> Iterator[Span]:
    for candidate in _PHONE_CANDIDATE.finditer(text):
        if not _phone_like(candidate.group()):
            continue
        # The matcher looks at the characters around a number, so give it a little context.
        start = max(0, candidate.start() - 8)
        window = text[start : candidate.end() + 8]
        for region in regions:
            found = [
                Span(start + m.start, start + m.end, Kind.PHONE)
                for m in PhoneNumberMatcher(window, region, leniency=Leniency.STRICT_GROUPING)
            ]
            if found:
                yield from found
                break


# One more byte map for the quick tests of the newer kinds: digits as b"0", and b".", b":",
# b"a", b"s", b"w", b"d" for themselves (either case), the rest b"x". An IPv4 address holds
# b"0.0", an IPv6 one two b":", a password pair b"ass" or b"wd": one translation and a few
# searches at C speed, where the full expressions would try every position of every text.
def _hint_class(code: int) -> int:
    char = chr(code).lower()
    if chr(code).isdigit():
        return ord("0")
    return ord(char) if char in ".:aswd" else ord("x")


_HINTS = bytes(map(_hint_class, range(128))) + b"x" * 128


def _numbers(text: str, hints: bytes, digits: int) -> list[Span]:
    """Cards, IPv4 addresses and IBANs: each needs a few digits at least."""
    found = list(_ipv4s(text)) if hints.find(b"0.0") >= 0 else []
    if digits >= 8:
        found += _ibans(text)
    if digits >= 13:
        found += _cards(text)
    return found


# --- the two entry points ----------------------------------------------------------------------


def find(text: str, *, phone_regions: tuple[str, ...] = PHONE_REGIONS) -> list[Span]:
    """Every stretch of ``text`` an export replaces, in order, never overlapping.

    Where two findings overlap, the one that starts first (then the longer) wins: a secret URL
    swallows the e-mail address in its query.
    """
    spans: list[Span] = []
    # Cheap tests first: most chat text holds none of these, and skips the regular expressions.
    if "://" in text:
        spans += _urls(text)
    if "@" in text:
        spans += _emails(text)
        if "<@" in text:
            spans += _mentions(text)
    raw = text.encode("utf-8", "surrogatepass")
    shape = raw.translate(_SHAPE)
    digits = shape.count(b"d")
    # Every key format is at least _MIN_KEY characters without white space. (find, not `in`:
    # bytes `in` first tries its operand as an int, and raises and clears a TypeError each time.)
    words = shape.replace(b"d", b"x") if digits else shape
    # (default=0: text of nothing but white space beyond ASCII has no words at all.)
    if words.find(_LONG_RUN) >= 0 and max(map(len, text.split()), default=0) >= _MIN_KEY:
        spans += _keys(text)
    hints = raw.translate(_HINTS)
    if digits >= 4:
        spans += _numbers(text, hints, digits)
    if hints.count(b":") >= 2:
        spans += _ipv6s(text)
    if hints.find(b"ass") >= 0 or hints.find(b"wd") >= 0:
        spans += _passwords(text)
    if digits >= 7 and _MAYBE_PHONE.search(raw.translate(_PHONE_SHAPE)):
        spans += _phones(text, phone_regions)
    if not spans:
        return spans
    spans.sort(key=lambda s: (s.start, -s.end))
    kept: list[Span] = []
    for span in spans:
        if not kept or span.start >= kept[-1].end:
            kept.append(span)
    return kept


def redact(
    text: str,
    mention: Callable[[str], str] | None = None,
    *,
    phone_regions: tuple[str, ...] = PHONE_REGIONS,
    counts: Counter[Kind] | None = None,
) -> str:
    """``text`` with every finding replaced by its placeholder.

    A user mention becomes ``<@`` + ``mention(user_id)`` + ``>`` (the same pseudonym the export
    writes for authors); without ``mention`` it is kept as written. ``counts``, if given, is
    told what was replaced.
    """
    spans = find(text, phone_regions=phone_regions)
    return replace(text, spans, mention, counts=counts) if spans else text


def replace(
    text: str,
    spans: list[Span],
    mention: Callable[[str], str] | None = None,
    *,
    counts: Counter[Kind] | None = None,
) -> str:
    """``text`` with these findings of `find` replaced, as `redact` does (an export that has
    just called `find` itself, and found nothing in most texts, skips a call)."""
    out: list[str] = []
    at = 0
    for span in spans:
        out.append(text[at : span.start])
        if counts is not None:
            counts[span.kind] += 1
        if span.kind is Kind.MENTION:
            assert span.user is not None
            original = text[span.start : span.end]
            out.append(f"<@{mention(span.user)}>" if mention is not None else original)
        else:
            out.append(PLACEHOLDERS[span.kind])
        at = span.end
    out.append(text[at:])
    return "".join(out)


__all__ = ["PHONE_REGIONS", "PLACEHOLDERS", "Kind", "Span", "find", "redact", "replace"]

"""Redact secrets from text before it enters workflow history, a notification, or leaves the machine.

Log lines read as evidence are copied into Temporal history (kept for the retention period and
visible to anyone who can read the namespace), into Slack messages and to outside services.
A password, token or private key that appears in a log must not travel with it.

What is redacted: PEM / OpenSSH / PGP private key blocks (an unterminated BEGIN is redacted to
the end of the text: fail closed), AWS access key ids, secret access keys and session tokens
named as such, GitHub, Slack, Stripe, Google, Anthropic and OpenAI tokens, Slack webhook URLs,
JWTs, the credentials of ``Authorization:`` headers, passwords in URLs of any scheme, and the
values of keys such as ``password=``, ``token:`` or ``"api_key": "..."``. Each secret becomes
``[REDACTED:<pattern name>]`` and the context around it (header name, URL user and host, key
name) stays, so the evidence still says what was there; redacting twice changes nothing.
Extra patterns come from configuration.

This is best effort: patterns, not proof. A secret in a shape no pattern knows passes through,
which is one more reason evidence stays bounded: text longer than ``MAX_CHARS`` keeps only its
head (cut at a line boundary) followed by a ``[TRUNCATED:<n> chars]`` marker. Callers that want
the end of a log tail it before redacting. Truncating, not chunking, means no key block can be
split across chunks with its body outside the one that saw the BEGIN line.

Built-in patterns stay near linear on hostile input: no unbounded repeat inside another, and an
unbounded repeat either ends a match that cannot then fail (a key block's lazy scan ends at its
END line or at the end of the text) or follows a bounded prefix (a JWT header of at most 1024
characters bounds how often a payload is rescanned). Extra patterns from configuration are the
operator's responsibility: they are checked to compile and to match something, not for speed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from os import PathLike
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_CHARS = 1 << 20  # 1 MiB of characters; see the module docstring.
_MAX_DEPTH = 64  # value(): deeper structures are replaced whole rather than recursed into.
_MAX_PASSES = 4  # Redactor.text_and_count: passes over a text until one replaces nothing.
_PROBE = "a Z0_-.:/=@\n\"'"  # Pattern: a probe for regexes that match the empty string.
_MARKER = re.compile(r"\[REDACTED:[a-z0-9_\-]{1,40}\]")


class Pattern(BaseModel):
    """One named regular expression. A named group ``secret`` limits what is replaced."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9_\-]{1,40}$")
    regex: str = Field(max_length=1000)

    @field_validator("regex")
    @classmethod
    def _usable(cls, regex: str) -> str:
        try:
            compiled = re.compile(regex)
        except re.error as exc:
            raise ValueError(f"does not compile: {exc}") from None
        if any(m.start() == m.end() for probe in ("", _PROBE) for m in compiled.finditer(probe)):
            # It would "redact" nothing at every position of every text (\b, ^, x*...).
            raise ValueError("matches the empty string")
        return regex


class RedactionConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    patterns: list[Pattern] = Field(default_factory=list, max_length=100)

    @classmethod
    def load(cls, path: str | PathLike[str]) -> RedactionConfig:
        """The patterns file, or ``ReviewedFileError`` (a ValueError) with every problem at its line."""
        # Imported here: only loading needs PyYAML; redacting needs nothing beyond pydantic.
        from selfheal.whitelist.reviewed import load_reviewed

        return load_reviewed(path, cls, what="the redaction patterns format")


# Shared pieces. A key's closing quote, the separator, and the value's opening quote; quotes
# may be escaped (JSON inside a journald MESSAGE) or open a bytes repr (botocore logs b'...').
_SEP = r"""\\?["']?\s{0,5}[:=]\s{0,5}(?:b?\\?["'])?"""
# A value: to the closing quote when quoted (to \" when the opening quote was escaped; JSON
# escapes allowed otherwise), else to whitespace, quote, comma, semicolon or &. The lookbehinds
# pick the branch, their first characters differ, and each branch is one linear repeat. Not
# a marker followed by '@': that is "https://x-access-token:[REDACTED:...]@host", already done.
_VALUE = (r"""(?!\[REDACTED:[a-z0-9_\-]{1,40}\]@)(?P<secret>(?<=\\")[^"\\\r\n]+"""
          r"""|(?<=")(?:[^"\\\r\n]|\\.)+|(?<=')[^'\r\n]+|(?<!["'])[^\s"',;&]+)""")
_TOKEN = r"[A-Za-z0-9._~+/=%-]"

_BUILTIN = (
    # First, so no later pattern sees (and half-redacts) a key body. Lazy scan to the matching
    # END line, or to the end of the text when there is none.
    ("private_key", r"(?s)-----BEGIN (?P<kind>[A-Z0-9 ]{0,40})PRIVATE KEY(?P<block>(?: BLOCK)?)-----"
                    r"(?P<secret>.*?)(?:-----END (?P=kind)PRIVATE KEY(?P=block)-----|\Z)"),
    # Token formats with a recognisable prefix: no word boundaries, so a key glued to other
    # text is still caught (fail closed); the prefixes are rare in ordinary text.
    ("aws_access_key_id", r"(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16,}"),
    ("github_token", r"gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"),
    ("slack_token", r"xox[abposr]-[A-Za-z0-9-]{10,}|xapp-[A-Za-z0-9-]{10,}"),
    ("slack_webhook", r"hooks\.slack\.com/(?:services|workflows|triggers)/(?P<secret>[A-Za-z0-9/_-]+)"),
    ("stripe_key", r"[sr]k_(?:live|test)_[A-Za-z0-9]{10,}|whsec_[A-Za-z0-9]{20,}"),
    ("google_api_key", r"AIza[0-9A-Za-z_-]{35,}"),
    ("anthropic_api_key", r"sk-ant-[A-Za-z0-9_-]{20,}"),
    # Bare sk- needs a boundary and an alphanumeric body: "task-definition-..." is not a key.
    ("openai_api_key", r"sk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{20,}|(?<![A-Za-z0-9_-])sk-[A-Za-z0-9]{20,}"),
    # The header segment is bounded so that "eyJeyJeyJ..." costs at most 1024 steps per start;
    # possessive repeats: none of the segments can give back a '.', so never backtrack.
    ("jwt", r"eyJ[A-Za-z0-9_-]{1,1024}+\.[A-Za-z0-9_-]++\.[A-Za-z0-9_-]*+"),
    # Header, JSON and curl -H forms. Without a scheme, only a long token counts (not
    # "Authorization: missing", nor botocore's "AWS4-HMAC-SHA256 Credential=...").
    ("bearer_token", r"(?i:authorization)" + _SEP + r"(?:(?i:bearer|token|basic)\s{1,5}|(?!AWS4-)(?="
                     + _TOKEN + r"{20}))(?P<secret>" + _TOKEN + r"+)"),
    # Any scheme; the password may hold '@' and ':' (greedy to the last '@' of the authority).
    ("url_password", r"://[^\s:/?#@]{0,256}:(?P<secret>[^\s/?#]{1,256})@"),
    ("aws_secret_access_key", r"(?i:secret_?access_?key|secret_key)" + _SEP
                              + r"(?P<secret>[A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"),
    ("aws_session_token", r"(?i:session_?token|security[_-]?token)" + _SEP + r"(?P<secret>[A-Za-z0-9/+=%]{16,})"),
    # No left boundary, so DB_PASSWORD= and X-Auth-Token: count; "passwordless" does not (no
    # separator follows). PWD=/path is the shell's working directory, not a password.
    ("password", r"(?i:passw(?:or)?d|pwd(?!=/))" + _SEP + _VALUE),
    ("secret", r"(?i:secret(?:_access)?(?:_key)?|token|api[_-]?key|private[_-]?key)" + _SEP + _VALUE),
)
BUILTIN: tuple[Pattern, ...] = tuple(Pattern(name=name, regex=regex) for name, regex in _BUILTIN)

_PEM_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----")
_PEM_END = re.compile(r"-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----")
# value(): a dict key made of these words (snake, kebab or camel case) holds a secret.
_SECRET_WORDS = frozenset({"password", "passwd", "passphrase", "secret", "secrets", "token",
                           "authorization", "apikey", "cookie", "credential", "credentials"})
_SECRET_PAIRS = frozenset({("api", "key"), ("private", "key")})
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")


def _marker(name: str) -> str:
    return f"[REDACTED:{name}]"


def _secret_key(key: object) -> str | None:
    """The secret word a dict key names (``DB_PASSWORD`` -> ``password``), or None."""
    if not isinstance(key, str):
        return None
    words = [word.lower() for word in _WORD.findall(key[:200])]
    for i, word in enumerate(words):
        if word in _SECRET_WORDS:
            return word
        if tuple(words[i:i + 2]) in _SECRET_PAIRS:
            return "_".join(words[i:i + 2])
    return None


def _bound(s: str) -> tuple[str, int]:
    """The head of an over-long text, cut at a line boundary (else whitespace), and how many
    characters were dropped."""
    if len(s) <= MAX_CHARS:
        return s, 0
    cut = s.rfind("\n", 0, MAX_CHARS)
    if cut < MAX_CHARS // 2:
        cut = max(s.rfind(" ", 0, MAX_CHARS), s.rfind("\t", 0, MAX_CHARS))
    if cut < MAX_CHARS // 2:
        cut = MAX_CHARS
    return s[:cut], len(s) - cut


def _apply(compiled: re.Pattern[str], name: str, s: str) -> tuple[str, int]:
    marker, whole = _marker(name), "secret" not in compiled.groupindex
    count = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal count
        start, end = match.span() if whole else match.span("secret")
        secret = match.string[start:end]
        core = secret.strip()
        # Skip empty matches and what is already a marker: redacting twice changes nothing.
        if not core or _MARKER.fullmatch(core):
            return match.group()
        count += 1
        lead = secret[: len(secret) - len(secret.lstrip())]
        trail = secret[len(secret.rstrip()):]
        return match.string[match.start():start] + lead + marker + trail + match.string[end:match.end()]

    return compiled.sub(replace, s), count


class Redactor:
    """The built-in patterns, then any extra ones, applied in order."""

    def __init__(self, extra: Sequence[Pattern] = ()) -> None:
        self._patterns = [(p.name, re.compile(p.regex)) for p in (*BUILTIN, *extra)]

    def text_and_count(self, s: str) -> tuple[str, int]:
        """The redacted text (its head and a marker when longer than MAX_CHARS) and how many
        secrets were replaced."""
        if not isinstance(s, str):
            raise TypeError(f"redact text, not {type(s).__name__}")
        s, dropped = _bound(s)
        total = 0
        # Again while a pass replaced something: a marker's own ':' or ']' can complete
        # another pattern's match ("://password:[REDACTED:password]@" is a URL password
        # now), so one pass is not always what a second pass would leave alone. Each pass
        # that changes anything turns text into fewer markers, so this ends; the bound
        # keeps a hostile text to a few passes (it would need one crafted layer per pass).
        for _ in range(_MAX_PASSES):
            replaced = 0
            for name, compiled in self._patterns:
                s, count = _apply(compiled, name, s)
                replaced += count
            total += replaced
            if not replaced:
                break
        if dropped:
            s += f"\n[TRUNCATED:{dropped} chars]"
        return s, total

    def text(self, s: str) -> str:
        return self.text_and_count(s)[0]

    def lines(self, items: Iterable[str]) -> list[str]:
        """Each line redacted; a key block whose BEGIN and END are on different lines is
        redacted in between, and to the last line if it never ends."""
        out: list[str] = []
        in_key = False
        for item in items:
            if not isinstance(item, str):
                raise TypeError(f"redact text, not {type(item).__name__}")
            prefix = ""
            if in_key:
                end = _PEM_END.search(item)
                if end is None:
                    out.append(_marker("private_key"))
                    continue
                prefix, item, in_key = _marker("private_key"), item[end.start():], False
            begins = list(_PEM_BEGIN.finditer(item))
            in_key = bool(begins) and _PEM_END.search(item, begins[-1].end()) is None
            out.append(prefix + self.text(item))
        return out

    def value(self, obj: Any) -> Any:
        """A redacted copy: strings inside dicts, lists and tuples redacted; a value under a
        key that names a secret (``password``, ``api_key``, ``Authorization``...) replaced
        whole; keys and non-string scalars kept."""

        def walk(obj: Any, depth: int) -> Any:
            if isinstance(obj, str):
                return self.text(obj)
            if not isinstance(obj, (dict, list, tuple)):
                return obj
            if depth >= _MAX_DEPTH:
                return _marker("too_deep")
            if isinstance(obj, dict):
                out = {}
                for key, item in obj.items():
                    word = _secret_key(key)
                    out[key] = _marker(word) if word and item is not None else walk(item, depth + 1)
                return out
            items = [walk(item, depth + 1) for item in obj]
            return items if isinstance(obj, list) else tuple(items)

        return walk(obj, 0)


DEFAULT = Redactor()


def redact(s: str) -> str:
    return DEFAULT.text(s)

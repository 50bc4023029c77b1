"""The Dockerfile language: text → instructions, and the word rules the builder applies
to their arguments. The one owner of the grammar: `Image.build` and `commit(changes=)`
both read Dockerfile lines through it.

What Docker's reference (docs.docker.com/reference/dockerfile) defines, as BuildKit's
parser reads it:

* parser directives (``# escape=``, ``# syntax=``, ``# check=``) only at the very top, one
  per line, case-insensitive, each at most once; the first comment, blank line or
  instruction ends them, and an unknown one is an ordinary comment (which ends them too);
* the escape character (``\\`` or a backtick) at the end of a line, optionally followed
  by blanks, continues the instruction on the next line; comment lines inside a
  continuation are dropped, blank ones skipped;
* ``# ...`` lines (after leading blanks) are comments; instruction keywords are
  case-insensitive;
* heredocs for RUN, COPY and ADD: ``<<EOF``, ``<<-EOF`` (leading tabs stripped), quoted
  ``<<"EOF"``/``<<'EOF'`` (no expansion), several per instruction, bodies in order;
* leading ``--name=value`` / ``--name`` flags;
* the exec form (a JSON array of strings) and the shell form;
* environment replacement (`expand`): ``$var``, ``${var}``, ``${var:-word}``,
  ``${var:+word}``, ``${var:?message}`` and their colon-less forms (set rather than
  set-and-not-empty), quotes and the escape character as Docker's shell lexer treats
  them; for the instructions the reference lists (`EXPANDED`).

Errors are `DockerfileError` naming the file and line.
"""

from __future__ import annotations

import json
import re
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import attrs

from ..errors import DockerfileError

__all__ = [
    "DockerfileError", "Heredoc", "Instruction", "Dockerfile", "parse", "parse_line",
    "split_words", "expand", "name_values", "EXPANDED", "KEYWORDS",
]


KEYWORDS = frozenset({
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
    "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME",
    "WORKDIR",
})
# the instructions whose arguments the builder expands (the reference's "Environment
# replacement" list; ARG's default too, as BuildKit does)
EXPANDED = frozenset({"ADD", "ARG", "COPY", "ENV", "EXPOSE", "FROM", "LABEL", "STOPSIGNAL",
                      "USER", "VOLUME", "WORKDIR", "ONBUILD"})
_HEREDOC_KEYWORDS = frozenset({"RUN", "COPY", "ADD"})
_DIRECTIVES = ("syntax", "escape", "check")

_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_HEREDOC = re.compile(r"<<(-?)(['\"]?)([a-zA-Z_][a-zA-Z0-9_.-]*)\2")
_FLAG = re.compile(r"^--([a-zA-Z][a-zA-Z0-9-]*)(?:=(.*))?$", re.S)


@attrs.frozen
class Heredoc:
    name: str
    content: str  # every line with its newline
    expand: bool  # False for a quoted delimiter
    strip_tabs: bool


@attrs.frozen
class Instruction:
    """One instruction: ``keyword`` upper-cased, ``flags`` in order (a bare ``--name`` has
    value None), ``args`` the rest of the logical line (continuations joined), its
    ``heredocs``, and ``line`` (1-based, where it starts) in ``source``."""

    keyword: str
    args: str
    flags: Tuple[Tuple[str, Optional[str]], ...] = ()
    heredocs: Tuple[Heredoc, ...] = ()
    line: int = 0
    source: str = "Dockerfile"
    original: str = ""

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    def error(self, message: str) -> DockerfileError:
        return DockerfileError(f"{self.where}: {self.keyword}: {message}")

    def flag(self, name: str) -> Optional[str]:
        """The last value of ``--name`` ("" for a bare flag), or None if absent."""
        found: Optional[str] = None
        for key, value in self.flags:
            if key == name:
                found = "" if value is None else value
        return found

    def check_flags(self, allowed: Sequence[str]) -> None:
        for key, _ in self.flags:
            if key not in allowed:
                raise self.error(f"unknown flag --{key}"
                                 + (f" (allowed: {', '.join('--' + a for a in allowed)})" if allowed else ""))

    def exec_form(self) -> Optional[List[str]]:
        """The JSON (exec) form's list, or None for the shell form (text that is not a
        JSON array of strings is the shell form, as Docker reads it)."""
        return _json_array(self.args)


@attrs.frozen
class Dockerfile:
    directives: Mapping[str, str]
    instructions: Tuple[Instruction, ...]
    escape: str = "\\"
    notes: Tuple[str, ...] = ()


def _json_array(text: str) -> Optional[List[str]]:
    text = text.strip()
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _continues(line: str, escape: str) -> Optional[str]:
    """The line without its continuation escape (and the blanks after it), or None."""
    stripped = line.rstrip(" \t\r")
    if stripped.endswith(escape):
        return stripped[: -len(escape)]
    return None


def _is_comment(line: str) -> bool:
    return line.lstrip(" \t").startswith("#")


def _directives(lines: List[str], source: str) -> Tuple[Dict[str, str], int]:
    found: Dict[str, str] = {}
    for i, line in enumerate(lines):
        m = _DIRECTIVE.match(line.strip())
        if not m or m.group(1).lower() not in _DIRECTIVES:
            return found, i
        key = m.group(1).lower()
        if key in found:
            raise DockerfileError(f"{source}:{i + 1}: only one {key} parser directive can be used")
        found[key] = m.group(2)
    return found, len(lines)


def parse(text: Union[str, bytes], source: str = "Dockerfile") -> Dockerfile:
    """Read a whole Dockerfile."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DockerfileError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    text = text.lstrip("\ufeff")
    lines = text.split("\n")
    directives, i = _directives(lines, source)
    escape = directives.get("escape", "\\")
    if escape not in ("\\", "`"):
        raise DockerfileError(f"{source}:1: invalid escape token {escape!r}: it must be \\ or `")
    notes = []
    if "syntax" in directives:
        notes.append(f"{source}: # syntax={directives['syntax']} is ignored: isobox has one "
                     "built-in Dockerfile frontend")
    out: List[Instruction] = []
    while i < len(lines):
        line = lines[i]
        start = i
        i += 1
        if not line.strip() or _is_comment(line):
            continue
        parts: List[str] = []
        original = [line]
        body = _continues(line, escape)
        while body is not None:
            parts.append(body)
            # the next non-comment line continues it; blank lines are skipped
            while i < len(lines) and (_is_comment(lines[i]) or not lines[i].strip()):
                i += 1
            if i >= len(lines):
                body = None
                break
            line = lines[i]
            original.append(line)
            i += 1
            body = _continues(line, escape)
        else:
            parts.append(line)
        logical = "".join(parts) if len(parts) > 1 else parts[0]
        if not logical.strip():
            continue  # only escapes and what they joined: nothing to do
        instruction, i = _instruction(logical, start + 1, source, lines, i, escape)
        out.append(attrs.evolve(instruction, original="\n".join(original)))
    return Dockerfile(directives=directives, instructions=tuple(out), escape=escape, notes=tuple(notes))


def parse_line(text: str, source: str = "change") -> Instruction:
    """One instruction on its own (``commit(changes=[...])``, ``docker commit --change``)."""
    found = parse(text, source).instructions
    if len(found) != 1:
        raise DockerfileError(f"{source}: expected one instruction, got {len(found)} in {text!r}")
    return found[0]


def _instruction(logical: str, line: int, source: str, lines: List[str], i: int,
                 escape: str) -> Tuple[Instruction, int]:
    stripped = logical.strip()
    m = re.match(r"(\S+)\s*(.*)$", stripped, re.S)
    assert m is not None  # a non-blank line
    keyword = m.group(1).upper()
    rest = m.group(2)
    if keyword not in KEYWORDS:
        raise DockerfileError(f"{source}:{line}: unknown instruction: {m.group(1)}")
    flags: List[Tuple[str, Optional[str]]] = []
    while rest.startswith("--"):
        word, _, after = rest.partition(" ")
        fm = _FLAG.match(word)
        if not fm:
            break
        flags.append((fm.group(1), fm.group(2)))
        rest = after.lstrip(" \t")
    heredocs: List[Heredoc] = []
    if keyword in _HEREDOC_KEYWORDS and _json_array(rest) is None:
        for hm in _HEREDOC.finditer(rest):
            strip_tabs, quote, name = hm.group(1) == "-", hm.group(2), hm.group(3)
            body: List[str] = []
            while True:
                if i >= len(lines):
                    raise DockerfileError(f"{source}:{line}: heredoc <<{name} has no closing {name} line")
                text = lines[i]
                i += 1
                if strip_tabs:
                    text = text.lstrip("\t")
                if text.rstrip("\r") == name:
                    break
                body.append(text + "\n")
            heredocs.append(Heredoc(name=name, content="".join(body), expand=not quote, strip_tabs=strip_tabs))
    instruction = Instruction(keyword=keyword, args=rest.strip(), flags=tuple(flags),
                              heredocs=tuple(heredocs), line=line, source=source)
    return instruction, i


# -- words ------------------------------------------------------------------------------------


def split_words(text: str, escape: str = "\\") -> List[str]:
    """Split on blanks outside quotes, keeping quotes and escapes in the words (`expand`
    removes them later), as BuildKit's parseWords does for ENV, LABEL and ARG."""
    words: List[str] = []
    word: List[str] = []
    quote = ""
    k = 0
    while k < len(text):
        ch = text[k]
        if quote:
            word.append(ch)
            if ch == escape and quote == '"' and k + 1 < len(text):
                word.append(text[k + 1])
                k += 1
            elif ch == quote:
                quote = ""
        elif ch in " \t\n":
            if word:
                words.append("".join(word))
                word = []
        else:
            word.append(ch)
            if ch in "\"'":
                quote = ch
            elif ch == escape and k + 1 < len(text):
                word.append(text[k + 1])
                k += 1
        k += 1
    if quote:
        raise DockerfileError(f"unterminated quote in {text!r}")
    if word:
        words.append("".join(word))
    return words


def name_values(instruction: Instruction, escape: str = "\\") -> List[Tuple[str, str]]:
    """ENV's and LABEL's pairs, raw (unexpanded): ``k=v k2="v 2"``, or the legacy
    ``ENV key the rest of the line`` form (one pair)."""
    words = split_words(instruction.args, escape)
    if not words:
        raise instruction.error("requires at least one argument")
    if "=" not in words[0]:
        if instruction.keyword == "LABEL" or len(words) < 2:
            raise instruction.error(f"{words[0]!r} must be of the form name=value")
        key = words[0]
        value = instruction.args.strip()[len(key):].strip()
        return [(key, value)]
    pairs = []
    for word in words:
        key, eq, value = word.partition("=")
        if not eq or not key:
            raise instruction.error(f"{word!r} must be of the form name=value")
        pairs.append((key, value))
    return pairs


# -- environment replacement ------------------------------------------------------------------

_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def expand(word: str, env: Mapping[str, str], escape: str = "\\",
           where: str = "", unset: Optional[Callable[[str], None]] = None) -> str:
    """``word`` with variables replaced from ``env`` and quotes and escapes removed, as
    Docker's shell lexer processes one word: single quotes keep everything literal,
    double quotes allow replacement, the escape character keeps the next character (in
    double quotes only before ``$``, ``"``, the escape itself or a newline)."""
    out: List[str] = []
    k = 0
    n = len(word)
    while k < n:
        ch = word[k]
        if ch == "'":
            end = word.find("'", k + 1)
            if end < 0:
                raise DockerfileError(f"{where}unterminated single quote in {word!r}")
            out.append(word[k + 1:end])
            k = end + 1
        elif ch == '"':
            k += 1
            while True:
                if k >= n:
                    raise DockerfileError(f"{where}unterminated double quote in {word!r}")
                c = word[k]
                if c == '"':
                    k += 1
                    break
                if c == escape and k + 1 < n and word[k + 1] in ('$', '"', escape, "\n"):
                    out.append(word[k + 1])
                    k += 2
                elif c == "$":
                    text, k = _dollar(word, k, env, escape, where, unset)
                    out.append(text)
                else:
                    out.append(c)
                    k += 1
        elif ch == escape:
            if k + 1 < n:
                out.append(word[k + 1])
                k += 2
            else:
                out.append(ch)  # a trailing escape stays
                k += 1
        elif ch == "$":
            text, k = _dollar(word, k, env, escape, where, unset)
            out.append(text)
        else:
            out.append(ch)
            k += 1
    return "".join(out)


def _dollar(word: str, k: int, env: Mapping[str, str], escape: str, where: str,
            unset: Optional[Callable[[str], None]]) -> Tuple[str, int]:
    """Replace the ``$...`` at k: (its text, the index after it)."""
    n = len(word)
    if k + 1 >= n:
        return "$", k + 1
    if word[k + 1] != "{":
        m = _NAME.match(word, k + 1)
        if not m:
            return "$", k + 1
        name = m.group(0)
        if name not in env and unset is not None:
            unset(name)
        return env.get(name, ""), m.end()
    m = _NAME.match(word, k + 2)
    if not m:
        raise DockerfileError(f"{where}bad substitution in {word!r}")
    name = m.group(0)
    j = m.end()
    if j < n and word[j] == "}":
        if name not in env and unset is not None:
            unset(name)
        return env.get(name, ""), j + 1
    colon = j < n and word[j] == ":"
    if colon:
        j += 1
    if j >= n or word[j] not in "-+?":
        raise DockerfileError(f"{where}unsupported modifier in {word!r} (isobox knows :- :+ :? - + ?)")
    modifier = word[j]
    # the word runs to the matching brace (nested ${...} allowed)
    depth, e = 1, j + 1
    while e < n:
        if word[e] == escape:
            e += 2
            continue
        if word[e : e + 2] == "${":
            depth += 1
            e += 2
            continue
        if word[e] == "}":
            depth -= 1
            if depth == 0:
                break
        e += 1
    if e >= n:
        raise DockerfileError(f"{where}missing '}}' in {word!r}")
    inner = word[j + 1 : e]
    is_set = name in env
    value = env.get(name, "")
    present = is_set and (value != "" or not colon)
    if modifier == "-":
        result = value if present else expand(inner, env, escape, where, unset)
    elif modifier == "+":
        result = expand(inner, env, escape, where, unset) if present else ""
    else:
        if not present:
            message = expand(inner, env, escape, where, unset) or "is not set"
            raise DockerfileError(f"{where}{name}: {message}")
        result = value
    return result, e + 1

"""The environment `run` and `exec` give a process: Docker's -e and --env-file."""

from __future__ import annotations

import argparse
from typing import Dict, List

from ..errors import InvalidOption
from ..runtime.spelling import parse_env


def env_file(path: str) -> List[str]:
    """Docker's --env-file: KEY=VALUE lines taken verbatim (no quotes are removed), KEY
    alone takes our value, blank lines and lines starting with # are skipped."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise InvalidOption(f"cannot read env file {path}: {exc.strerror}") from exc
    out: List[str] = []
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw[:-1].lstrip() if raw.endswith("\r") else raw.lstrip()
        if not line or line.startswith("#"):
            continue
        key = line.split("=", 1)[0]
        if not key or any(ch.isspace() for ch in key):
            raise InvalidOption(f"{path}:{number}: invalid variable name {key!r}")
        out.append(line if "=" in line else key)
    return out


def environment(args: argparse.Namespace) -> List[str]:
    """--env-file first, then -e (later ones win); ``KEY`` alone takes our value, now."""
    entries: List[str] = []
    for path in args.env_file:
        entries += env_file(path)
    entries += args.env
    merged: Dict[str, str] = {}
    for key, value in parse_env(entries):
        merged[key] = value
    return [f"{k}={v}" for k, v in merged.items()]

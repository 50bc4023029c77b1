"""`isobox prune`, `volume` and `doctor`: the store as a whole (what nothing uses, the
named volumes) and what this host lets isobox do."""

from __future__ import annotations

import argparse
import secrets
import sys

from ..errors import IsoboxError
from ..gc import prune as prune_store
from ..images.store import Store
from ..runtime.doctor import doctor as check_host
from ..runtime.mounts import Volume, volume_dir
from ..runtime.named_volumes import remove_volume, volumes
from . import EXIT_ERROR
from .format import human_size, table


def prune(args: argparse.Namespace) -> int:
    report = prune_store(Store.open(args.root), volumes=args.volumes)
    if report.images or report.layers:
        print("Deleted:")
        for digest in report.images:
            print(f"  image {digest}")
        for diff_id in report.layers:
            print(f"  layer {diff_id}")
    if report.volumes:
        print("Deleted Volumes:")
        for name in report.volumes:
            print(f"  {name}")
    for warning in report.warnings:
        print(f"isobox: warning: {warning}", file=sys.stderr)
    print(f"Total reclaimed space: {human_size(report.reclaimed)}")
    return 0


def doctor(args: argparse.Namespace) -> int:
    report = check_host()
    print(report)
    return 0 if report.ok else 1


def volume_ls(args: argparse.Namespace) -> int:
    found = volumes(Store.open(args.root))
    if args.quiet:
        for v in found:
            print(v.name)
        return 0
    table([["DRIVER", "VOLUME NAME"]] + [["local", v.name] for v in found], sys.stdout)
    return 0


def volume_create(args: argparse.Namespace) -> int:
    name = args.name or secrets.token_hex(32)
    Volume(name, "/data")  # validates the name
    volume_dir(Store.open(args.root).volumes, name).mkdir(parents=True, exist_ok=True)
    print(name)
    return 0


def volume_rm(args: argparse.Namespace) -> int:
    store = Store.open(args.root)
    status = 0
    for name in args.names:
        try:
            if not volume_dir(store.volumes, name).is_dir():
                raise IsoboxError(f"no such volume: {name}")
            remove_volume(name, store, force=args.force)
        except IsoboxError as exc:
            print(f"isobox: {exc}", file=sys.stderr)
            status = EXIT_ERROR
            continue
        print(name)
    return status

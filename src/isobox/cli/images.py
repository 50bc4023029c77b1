"""`isobox pull`, `images`, `rmi`, `tag`, `push`, `save` and `load`: the images in the
store, as Docker shows them."""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from typing import Any, List, Optional, Tuple

from ..errors import ImageNotFound, InvalidReference, IsoboxError
from ..images.image import Image
from ..images.reference import Reference
from ..images.store import Store
from . import EXIT_ERROR
from .format import ProgressBar, human_duration, human_size, table


def pull(args: argparse.Namespace) -> int:
    store = Store.open(args.root)
    reference = Reference.parse(args.reference)
    try:
        before: Optional[str] = Image.get(reference, platform=args.platform, store=store).digest
    except ImageNotFound:
        before = None
    bar = None if args.quiet else ProgressBar(f"Pulling {reference.familiar}", sys.stderr)
    try:
        image = Image.pull(reference, platform=args.platform, progress=bar, store=store)
    finally:
        if bar is not None:
            bar.close()
    name = image.reference or str(reference)
    if not args.quiet:
        tag = store.read_tag(name)
        print(f"Digest: {tag.digest if tag else image.digest}")
        status = "Image is up to date for" if before == image.digest else "Downloaded newer image for"
        print(f"Status: {status} {reference.familiar}")
    print(name)
    return 0


def _split_name(reference: Optional[str]) -> Tuple[str, str]:
    if reference is None:
        return "<none>", "<none>"
    try:
        ref = Reference.parse(reference)
    except InvalidReference:
        return reference, "<none>"
    bare = Reference(domain=ref.domain, path=ref.path).familiar
    return bare, ref.tag if ref.tag and not ref.digest else "<none>"


def _short_id(digest: str) -> str:
    """An image ID as Docker prints it: 12 hex digits, no algorithm."""
    return digest.partition(":")[2][:12]


def _created(config: Any) -> str:
    """When the image was built, from its config's ``created`` (RFC 3339)."""
    text = config.get("created") if isinstance(config, dict) else None
    if not isinstance(text, str) or not text:
        return "N/A"
    text = text.strip().replace("Z", "+00:00")
    if "." in text:  # Go writes nanoseconds; Python takes at most microseconds
        head, _, tail = text.partition(".")
        digits = "".join(c for c in tail if c.isdigit())
        text = f"{head}.{digits[:6]}{tail[len(digits):]}"
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        return "N/A"
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return human_duration(time.time() - when.timestamp()) + " ago"


def images(args: argparse.Namespace) -> int:
    store = Store.open(args.root)
    records = {r.digest: r for r in store.records()}
    tags = {t.reference: t for t in store.tags()}
    rows: List[List[str]] = []
    seen: List[str] = []
    for image in store.list_images():
        assert image.digest is not None
        record = records[image.digest]
        repo, tag = _split_name(image.reference)
        row = [repo, tag]
        if args.digests:
            pointed = tags[image.reference].digest if image.reference in tags else image.digest
            row.append(pointed)
        # IMAGE ID is the config's digest, as Docker, podman and `isobox inspect` show it
        # (the manifest digest is the DIGEST column): variants of one image that differ
        # only in layer compression share it.
        image_id = record.config_digest
        row += [_short_id(image_id), image.platform or "", _created(record.config),
                human_size(image.size)]
        rows.append(row)
        if image_id not in seen:
            seen.append(image_id)
    if args.quiet:
        for image_id in seen:
            print(_short_id(image_id))
        return 0
    header = ["REPOSITORY", "TAG"] + (["DIGEST"] if args.digests else []) + [
        "IMAGE ID", "PLATFORM", "CREATED", "SIZE"]
    table([header] + rows, sys.stdout)
    return 0


def rmi(args: argparse.Namespace) -> int:
    store = Store.open(args.root)
    status = 0
    for name in args.images:
        try:
            removed = Image.remove(name, store=store)
        except IsoboxError as exc:
            print(f"isobox: {exc}", file=sys.stderr)
            status = EXIT_ERROR
            continue
        for item in removed:
            print(f"Deleted: {item}" if item.startswith("sha256:") else f"Untagged: {item}")
    return status


def tag(args: argparse.Namespace) -> int:
    store = Store.open(args.root)
    Image.get(args.source, store=store).tag(args.target, store=store)
    return 0


def push(args: argparse.Namespace) -> int:
    import os

    from ..images.http import ENV_INSECURE

    store = Store.open(args.root)
    image = Image.get(args.image, store=store)
    target = Reference.parse(args.destination or args.image)
    if args.tls_verify == "false":
        listed = os.environ.get(ENV_INSECURE, "")
        os.environ[ENV_INSECURE] = ",".join(x for x in (listed, target.domain) if x)
    bar = None if args.quiet else ProgressBar(f"Pushing {target.familiar}", sys.stderr)
    try:
        digest = image.push(target, progress=bar, store=store)
    finally:
        if bar is not None:
            bar.close()
    print(digest if args.quiet else f"{target.familiar}: digest: {digest}")
    return 0


def save(args: argparse.Namespace) -> int:
    from ..images.image import save_images

    store = Store.open(args.root)
    chosen = [Image.get(name, store=store) for name in args.images]
    fmt = "oci" if args.format == "oci-archive" else args.format
    save_images(chosen, args.output, fmt, store=store)
    return 0


def load(args: argparse.Namespace) -> int:
    store = Store.open(args.root)
    for image in Image.load(args.input, store=store):
        name = image.reference or image.digest or ""
        print(name if args.quiet else f"Loaded image: {name}")
    return 0


def build(args: argparse.Namespace) -> int:
    import os

    build_args = {}
    for item in args.build_arg:
        key, eq, value = item.partition("=")
        if not eq:
            if key not in os.environ:
                continue  # docker build: KEY alone passes the environment's value, if any
            value = os.environ[key]
        build_args[key] = value
    labels = {}
    for item in args.label:
        key, _, value = item.partition("=")
        labels[key] = value
    say = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    image = Image.build(args.context, dockerfile=args.file, tag=args.tag or None, build_args=build_args,
                        target=args.target, platform=args.platform, network=args.network,
                        no_cache=args.no_cache, pull=args.pull, labels=labels or None,
                        progress=say, store=Store.open(args.root))
    print(image.id)
    return 0


def commit(args: argparse.Namespace) -> int:
    from ..control.client import get_container

    store = Store.open(args.root)
    image = get_container(args.container, store).commit(args.reference, changes=args.change,
                                                         message=args.message, author=args.author)
    print(image.id)
    return 0

"""The ``isobox`` command (also ``python -m isobox``): a thin layer over the library.

Subcommands are argparse subparsers; each ``_add_X(subparsers)`` in `SUBCOMMANDS` defines
one and sets ``func`` to a handler ``(args) -> exit status``. To add a subcommand, write
such a function and append it to `SUBCOMMANDS`; import what the handler needs inside it,
so that ``isobox run`` never imports the registry client (and requests).

Exit statuses follow Docker's CLI: 0 on success, 125 when isobox itself fails (an
`IsoboxError`, a bad flag or argument), 130 on Ctrl-C. Commands that run a container
return the command's own status (and 126/127 as Docker does).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    List,
    NoReturn,
    Optional,
    Sequence,
    Set,
    TextIO,
    Tuple,
)

if TYPE_CHECKING:
    from .store import Store

EXIT_ERROR = 125  # Docker's "the tool failed", as opposed to the container's command
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse with Docker's exit status for usage errors (125, not 2)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def _store(args: argparse.Namespace) -> "Store":
    from .store import Store

    return Store.open(args.root)


# -- formatting ---------------------------------------------------------------------------


def human_size(n: float) -> str:
    """Docker's HumanSize: decimal units, three significant digits ("4.26MB")."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.3g}{unit}"
        n /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def human_duration(seconds: float) -> str:
    """Docker's HumanDuration, roughly ("2 weeks", "About an hour")."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(s / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def _created(config: Any) -> str:
    """When the image was built, from its config's ``created`` (RFC 3339)."""
    import datetime

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


def _table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("   ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + "\n")


class ProgressBar:
    """Pull progress on stderr: one redrawn line on a terminal, a line per finished layer
    otherwise. Callable as `isobox.image.ProgressCallback` (from the pulling threads)."""

    def __init__(self, label: str, stream: TextIO = sys.stderr, interval: float = 0.1) -> None:
        self.label = label
        self.stream = stream
        self.tty = stream.isatty()
        self.interval = interval
        self._layers: Dict[str, Tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._last = 0.0
        self._drawn = False
        self._finished: Set[str] = set()

    def __call__(self, digest: str, done: int, total: int) -> None:
        with self._lock:
            self._layers[digest] = (done, total)
            if not self.tty:
                if done >= total and digest not in self._finished:
                    self._finished.add(digest)
                    self.stream.write(f"{digest[7:19]}: Pull complete ({human_size(total)})\n")
                    self.stream.flush()
                return
            now = time.monotonic()
            if now - self._last >= self.interval or done >= total:
                self._last = now
                self._draw()

    def _draw(self) -> None:
        done = sum(d for d, _ in self._layers.values())
        total = sum(t for _, t in self._layers.values())
        complete = sum(1 for d, t in self._layers.values() if d >= t)
        width = 30
        filled = width if total == 0 else min(width, width * done // total)
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(
            f"\r{self.label} [{bar}] {human_size(done)}/{human_size(total)} "
            f"{complete}/{len(self._layers)} layers\x1b[K"
        )
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        with self._lock:
            if self.tty and self._layers:
                self._draw()
            if self._drawn:
                self.stream.write("\n")
                self.stream.flush()


# -- pull --------------------------------------------------------------------------------------


def _add_pull(sub: Any) -> None:
    p = sub.add_parser("pull", help="pull an image from a registry",
                       description="Pull an image (or a repository's tag) from a registry.")
    p.add_argument("reference", metavar="NAME[:TAG|@DIGEST]")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                   help="the platform to pull from a multi-platform image (default: this host's)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image's name")
    p.set_defaults(func=_pull)


def _pull(args: argparse.Namespace) -> int:
    from .errors import ImageNotFound
    from .image import Image
    from .reference import Reference

    store = _store(args)
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


# -- images ------------------------------------------------------------------------------------


def _add_images(sub: Any) -> None:
    p = sub.add_parser("images", help="list the images in the store")
    p.add_argument("-q", "--quiet", action="store_true", help="print only image IDs")
    p.add_argument("--digests", action="store_true", help="show the digest each name points to")
    p.set_defaults(func=_images)


def _split_name(reference: Optional[str]) -> Tuple[str, str]:
    from .errors import InvalidReference
    from .reference import Reference

    if reference is None:
        return "<none>", "<none>"
    try:
        ref = Reference.parse(reference)
    except InvalidReference:
        return reference, "<none>"
    bare = Reference(domain=ref.domain, path=ref.path).familiar
    return bare, ref.tag if ref.tag and not ref.digest else "<none>"


def _images(args: argparse.Namespace) -> int:
    store = _store(args)
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
        row += [image.digest[7:19], image.platform or "", _created(record.config),
                human_size(image.size)]
        rows.append(row)
        if image.digest not in seen:
            seen.append(image.digest)
    if args.quiet:
        for digest in seen:
            print(digest[7:19])
        return 0
    header = ["REPOSITORY", "TAG"] + (["DIGEST"] if args.digests else []) + [
        "IMAGE ID", "PLATFORM", "CREATED", "SIZE"]
    _table([header] + rows, sys.stdout)
    return 0


# -- rmi -----------------------------------------------------------------------------------------


def _add_rmi(sub: Any) -> None:
    p = sub.add_parser("rmi", help="remove images",
                       description="Remove tags (or, by image ID, images with all their "
                       "tags) and the layers nothing else uses.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="a name[:tag], name@digest or image ID")
    p.set_defaults(func=_rmi)


def _rmi(args: argparse.Namespace) -> int:
    from .errors import IsoboxError
    from .image import Image

    store = _store(args)
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


# -- prune -----------------------------------------------------------------------------------------


def _add_prune(sub: Any) -> None:
    p = sub.add_parser("prune", help="remove what no image or container uses",
                       description="Remove untagged images, unused layers and blobs, and "
                       "what interrupted pulls left behind. Waits for running pulls.")
    p.add_argument("-f", "--force", action="store_true", help="accepted for Docker compatibility")
    p.set_defaults(func=_prune)


def _prune(args: argparse.Namespace) -> int:
    report = _store(args).prune()
    if report.images or report.layers:
        print("Deleted:")
        for digest in report.images:
            print(f"  image {digest}")
        for diff_id in report.layers:
            print(f"  layer {diff_id}")
    for warning in report.warnings:
        print(f"isobox: warning: {warning}", file=sys.stderr)
    print(f"Total reclaimed space: {human_size(report.reclaimed)}")
    return 0


# -- main --------------------------------------------------------------------------------------------

SUBCOMMANDS: List[Callable[[Any], None]] = [_add_pull, _add_images, _add_rmi, _add_prune]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="isobox",
        description="Pull OCI images and run them as sandboxed processes, without a daemon.",
    )
    parser.add_argument(
        "--root", metavar="DIR", default=None,
        help="the store (default: $ISOBOX_ROOT, else /var/lib/isobox as root, else "
        "$XDG_DATA_HOME/isobox)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    from .errors import IsoboxError

    try:
        return int(func(args))
    except IsoboxError as exc:
        print(f"isobox: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `isobox images | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0

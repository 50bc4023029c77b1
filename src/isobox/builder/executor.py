"""A build: a context and a Dockerfile → an image in the store (`Image.build`, `isobox build`).

The plan (`plan.py`) says which stages the target needs; each is built in order, one
instruction at a time, as BuildKit's Dockerfile frontend does:

* ``FROM`` starts from an earlier stage, ``scratch`` (nothing), or an image (pulled when
  missing, or always with ``pull=True``) for the build's platform; the base image's
  ONBUILD triggers run first and are not inherited;
* ``ARG`` declares a stage argument (the build's value, else its default, else the global
  one); RUN sees the arguments in scope as environment variables that do not persist,
  ENV over them;
* ``RUN`` runs in a container of the stage so far (``network``: "none" by default, as
  isobox's containers; "host" when asked), its command in the exec form or through the
  stage's SHELL; heredocs are given to the shell as a script. A failing RUN fails the
  build with its exit status and the tail of its output (`BuildError`);
* ``COPY`` and ``ADD`` stage what they copy (`copy.py`) and write it as a layer;
  ``WORKDIR`` makes its directory when the image lacks it;
* every other instruction changes only the configuration (`isobox.images.metadata`) and
  is recorded in the history as an empty layer.

Each filesystem step makes one layer and one image in the store (`images/commit.derive`);
its cache key is its parent image's ID, the instruction's text, the configuration and
arguments it sees, and — for COPY and ADD — the digest of the layer it would write (the
files' contents, names, modes and owners). A key already recorded names the image to reuse:
an unchanged build runs no container. Keys are files under the store's ``build-cache/``
(written whole, so concurrent builds of one context only race to write the same answer).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import posixpath
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from ..errors import BuildError, ContainerError, DockerfileError, InvalidOption
from ..host.fs import replace_file
from ..images.commit import derive, write_blob
from ..images.dockerfile import Instruction, expand, parse, parse_line, split_words
from ..images.image import Image, ImageConfig
from ..images.metadata import METADATA_KEYWORDS, Metadata
from ..images.overlay import Found, find
from ..images.platform import Platform
from ..images.store import Store
from ..runtime.commit import INIT_LAYER_PATHS
from ..runtime.container import Container
from ..runtime.users import resolve_user
from .context import IgnoreRules, ignore_file_for, read_ignore_file
from .copy import ContextSource, LayersSource, stage
from .plan import PROXY_ARGS, BuildPlan, Stage, plan, platform_args

__all__ = ["build"]

Progress = Callable[[str], None]
_MAX_DOCKERFILE = 1 << 20
_TAIL = 2000


class _Build:
    def __init__(self, store: Store, context: pathlib.Path, rules: IgnoreRules, plan_: BuildPlan,
                 build_args: Mapping[str, str], platform: Platform, network: str, no_cache: bool,
                 pull: bool, progress: Progress, compression: str, escape: str) -> None:
        self.store = store
        self.context = context
        self.rules = rules
        self.plan = plan_
        self.build_args = dict(build_args)
        self.platform = platform
        self.network = network
        self.no_cache = no_cache
        self.pull = pull
        self.say = progress
        self.compression = compression
        self.escape = escape
        self.platform_given: Optional[str] = None  # the caller's platform=, if any
        self.results: Dict[int, Image] = {}
        self.cache_dir = store.root / "build-cache"

    # -- images ----------------------------------------------------------------------------

    def base(self, s: Stage) -> Optional[Image]:
        if s.base_stage is not None:
            return self.results[s.base_stage]
        if s.base.lower() == "scratch":
            return None
        platform = s.platform or self.platform_given  # None: this host's, as pull decides
        self.say(f"FROM {s.base}" + (f" ({platform})" if platform else ""))
        return Image.pull(s.base, if_missing=not self.pull, platform=platform, store=self.store)

    def image_for(self, ref: str, i: Instruction) -> Image:
        """A ``--from`` image: a stage, or an image (pulled when missing)."""
        index = self.plan.stage(ref)
        if index is not None:
            return self.results[index]
        try:
            return Image.pull(ref, if_missing=True, platform=self.platform_given, store=self.store)
        except InvalidOption as exc:
            raise i.error(f"--from={ref}: {exc}") from None

    def config_of(self, image: Optional[Image]) -> Dict[str, Any]:
        if image is None:
            return {}
        if image.digest is not None:
            record = self.store.read_image(image.digest)
            if record is not None:
                return dict(record.config.get("config") or {})
        return dict(image.config.to_oci())

    # -- the cache -------------------------------------------------------------------------

    def cache_key(self, parent: Optional[Image], i: Instruction, meta: Metadata,
                  extra: Sequence[str] = ()) -> str:
        doc = [parent.id if parent is not None else "scratch", i.keyword, i.original or i.args,
               meta.config, sorted(meta.args.items()), self.network, list(extra)]
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()

    def cached(self, key: str) -> Optional[Image]:
        if self.no_cache:
            return None
        try:
            doc = json.loads((self.cache_dir / f"{key}.json").read_text())
            record = self.store.read_image(str(doc["image"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if record is None or not self.store.layers_present(record):
            return None
        return Image.from_record(record, None, self.store)

    def remember(self, key: str, image: Image) -> None:
        """Record a step's image, whole (concurrent builds write the same key: each its
        own temporary, renamed over; the last one wins, both are right)."""
        self.cache_dir.mkdir(mode=0o700, exist_ok=True)
        path = self.cache_dir / f"{key}.json"
        data = json.dumps({"image": image.digest, "at": time.time()}).encode()
        replace_file(path, data, self.cache_dir / f".{key}.{os.getpid()}.{threading.get_ident()}.tmp",
                     durable=False, mode=0o600)

    # -- a stage ---------------------------------------------------------------------------

    def stage(self, s: Stage) -> Image:
        self.say(f"[{s.label}] FROM {s.base}" + (f" AS {s.name}" if s.name else ""))
        current = self.base(s)
        config = self.config_of(current)
        triggers = list(config.pop("OnBuild", None) or [])
        meta = Metadata(config, {}, self.escape)
        pending: List[Dict[str, Any]] = []  # history of the configuration-only steps since the last image
        instructions = [parse_line(t, f"{s.base} ONBUILD") for t in triggers] + list(s.instructions)
        args: Dict[str, str] = {k: v for k, v in self.build_args.items() if k in PROXY_ARGS}
        for i in instructions:
            meta.args = dict(args)
            if i.keyword == "ARG":
                self.declare(i, args, meta)
                continue
            if i.keyword in METADATA_KEYWORDS and i.keyword != "WORKDIR":
                meta.apply(i)
                pending.append({"created_by": f"{i.keyword} {i.args}".strip(), "empty_layer": True})
                continue
            if i.keyword == "RUN":
                current = self.run(i, current, meta, pending)
            elif i.keyword in ("COPY", "ADD"):
                current = self.copy(i, current, meta, pending)
            elif i.keyword == "WORKDIR":
                meta.apply(i)
                current = self.workdir(i, current, meta, pending)
            else:
                raise i.error("is not supported here")
        if pending or current is None or meta.config != self.config_of(current):
            history = pending or [{"created_by": "isobox build", "empty_layer": True}]
            key = hashlib.sha256(json.dumps(
                [current.id if current is not None else "scratch", "config", meta.config, history,
                 meta.author], sort_keys=True, default=str).encode()).hexdigest()
            hit = self.cached(key)
            if hit is not None:
                return hit
            image = derive(self.store, current or Image(), [], config=meta.config, history=history,
                           author=meta.author, label="build")
            self.remember(key, image)
            current = image
        return current

    def declare(self, i: Instruction, args: Dict[str, str], meta: Metadata) -> None:
        i.check_flags([])
        for word in split_words(i.args, self.escape):
            name, eq, default = word.partition("=")
            if name in self.build_args:
                args[name] = self.build_args[name]
            elif eq:
                args[name] = expand(default, {**meta.env(), **args}, self.escape, f"{i.where}: ")
            elif name in self.plan.global_args:
                args[name] = self.plan.global_args[name]

    def _layers(self, image: Optional[Image]) -> List[str]:
        return [str(p) for p in image.layers] if image is not None else []

    def _finish(self, key: str, current: Optional[Image], blob: Any, meta: Metadata,
                pending: List[Dict[str, Any]], entry: Dict[str, Any]) -> Image:
        image = derive(self.store, current or Image(), [blob], config=meta.config,
                       history=[*pending, entry], author=meta.author, label="build")
        pending.clear()
        self.remember(key, image)
        return image

    # -- RUN ----------------------------------------------------------------------------------

    def run(self, i: Instruction, current: Optional[Image], meta: Metadata,
            pending: List[Dict[str, Any]]) -> Image:
        i.check_flags(["network", "mount", "security"])
        if i.flag("mount") is not None:
            raise i.error("--mount is not supported yet (use COPY, or a multi-stage build)")
        if i.flag("security") not in (None, "sandbox"):
            raise i.error("--security=insecure is not supported")
        network = i.flag("network") or self.network
        if network == "default":
            network = self.network
        if current is None:
            raise i.error("RUN in a stage FROM scratch: there is nothing to run")
        if self.platform.architecture != Platform.host().architecture:
            raise i.error(f"RUN for {self.platform} needs an emulator; isobox runs only this "
                          f"machine's architecture ({Platform.host()})")
        argv = self.command(i, meta)
        key = self.cache_key(current, i, meta, [network, json.dumps(argv)])
        hit = self.cached(key)
        if hit is not None:
            self.say(f"CACHED {i.where} RUN {i.args[:60]}")
            pending.clear()
            return hit
        self.say(f"{i.where} RUN {i.args[:200]}")
        env = {k: v for k, v in meta.args.items() if k not in {e.partition('=')[0] for e in meta.config.get('Env') or []}}
        image = Image(config=ImageConfig.from_oci(meta.config, source=f"{i.where}"),
                      layers=current.layers, reference=current.reference, digest=current.digest,
                      platform=current.platform, id=current.id, store_root=current.store_root)
        try:
            c = Container(image, argv, env=env, network=network, store=self.store,
                          workdir=meta.config.get("WorkingDir") or None,
                          user=meta.config.get("User") or None)
        except InvalidOption as exc:
            raise i.error(str(exc)) from None
        try:
            try:
                c.start()
            except ContainerError as exc:
                raise i.error(f"cannot run {argv!r}: {exc}") from None
            code = c.wait()
            output = c.logs()
            for line in output.decode("utf-8", "replace").splitlines()[-200:]:
                self.say(f"  {line}")
            if code != 0:
                tail = output.decode("utf-8", "replace")[-_TAIL:]
                raise BuildError(f"{i.where}: RUN {i.args[:200]} exited with {code}:\n{tail}")
            blob = write_blob(self.store, c.dir / "upper", ids=c._ids, exclude=INIT_LAYER_PATHS,
                              compression=self.compression)
        finally:
            c.remove(force=True)
        return self._finish(key, current, blob, meta, pending,
                            {"created_by": f"RUN {' '.join(argv) if i.exec_form() else i.args}"})

    def command(self, i: Instruction, meta: Metadata) -> List[str]:
        form = i.exec_form()
        if form is not None:
            if not form:
                raise i.error("requires a command")
            return form
        shell = list(meta.config.get("Shell") or ["/bin/sh", "-c"])
        if i.heredocs:
            rest = i.args
            for h in i.heredocs:
                rest = rest.replace(f"<<-{h.name}", "").replace(f"<<{h.name}", "").replace(
                    f'<<"{h.name}"', "").replace(f"<<'{h.name}'", "")
            if not rest.strip() and len(i.heredocs) == 1:
                return [*shell, i.heredocs[0].content]  # the heredoc is the script
            script = i.args + "\n" + "".join(h.content + h.name + "\n" for h in i.heredocs)
            return [*shell, script]
        if not i.args:
            raise i.error("requires a command")
        return [*shell, i.args]

    # -- COPY, ADD ----------------------------------------------------------------------------

    def copy(self, i: Instruction, current: Optional[Image], meta: Metadata,
             pending: List[Dict[str, Any]]) -> Image:
        i.check_flags(["from", "chown", "chmod", "link", "parents", "exclude", "checksum", "keep-git-dir"])
        for unsupported in ("parents", "exclude", "checksum", "keep-git-dir"):
            if i.flag(unsupported) is not None:
                raise i.error(f"--{unsupported} is not supported yet")
        env = meta.env()
        where = f"{i.where}: "
        form = i.exec_form()
        words = form if form is not None else split_words(i.args, self.escape)
        words = [expand(w, env, self.escape, where) for w in words] if form is None else words
        if len(words) < 2 and not (i.heredocs and len(words) >= 1):
            raise i.error("requires at least one source and a destination")
        sources, dest = words[:-1], words[-1]
        workdir = meta.config.get("WorkingDir") or "/"
        if not dest.startswith("/"):
            dest = posixpath.join(workdir, dest) + ("/" if dest.endswith("/") or dest in (".", "./") else "")
        layers = self._layers(current)
        chown = (0, 0)
        spec = i.flag("chown")
        if spec:
            spec = expand(spec, env, self.escape, where)
            try:
                # a user without a group gets its uid as the gid too (the reference's rule)
                user = resolve_user(spec, [pathlib.Path(p) for p in layers])
            except InvalidOption as exc:
                raise i.error(f"--chown={spec}: {exc}") from None
            chown = (user.uid, user.gid) if ":" in spec else (user.uid, user.uid)
        chmod: Optional[int] = None
        mode = i.flag("chmod")
        if mode:
            try:
                chmod = int(mode, 8)
            except ValueError:
                raise i.error(f"--chmod={mode}: an octal mode such as 0755") from None
            if not 0 <= chmod <= 0o7777:
                raise i.error(f"--chmod={mode}: an octal mode such as 0755")
        ref = i.flag("from")
        staging = self.store.temp_dir("build-")
        try:
            if ref:
                ref = expand(ref, env, self.escape, where)
                other = self.image_for(ref, i)
                source: Union[ContextSource, LayersSource] = LayersSource(
                    tuple(str(p) for p in other.layers), f"--from={ref}")
            elif i.heredocs:
                docs = staging / "heredocs"
                docs.mkdir()
                for h in i.heredocs:
                    text = expand(h.content, env, self.escape, where) if h.expand else h.content
                    (docs / h.name).write_text(text)
                source = ContextSource(str(docs), IgnoreRules())
                sources = [h.name for h in i.heredocs]
            else:
                source = ContextSource(str(self.context), self.rules)
            root = staging / "layer"
            root.mkdir()
            staged = stage(str(root), keyword=i.keyword, sources=sources, dest=dest, source=source,
                           image_layers=layers, chown=chown, chmod=chmod, where=i.where)
            blob = write_blob(self.store, root, owner=staged.owner, compression=self.compression)
        finally:
            self.store.discard(staging)
        key = self.cache_key(current, i, meta, [blob.diff_id])
        hit = self.cached(key)
        if hit is not None:
            self.store.discard(blob.path.parent)
            self.say(f"CACHED {i.where} {i.keyword} {i.args[:60]}")
            pending.clear()
            return hit
        self.say(f"{i.where} {i.keyword} {i.args[:200]} ({staged.files} files)")
        return self._finish(key, current, blob, meta, pending,
                            {"created_by": f"{i.keyword} {i.args}"})

    # -- WORKDIR ------------------------------------------------------------------------------

    def workdir(self, i: Instruction, current: Optional[Image], meta: Metadata,
                pending: List[Dict[str, Any]]) -> Optional[Image]:
        path = str(meta.config.get("WorkingDir") or "/").lstrip("/")
        if not path:
            return current
        found = find(self._layers(current), path)
        if isinstance(found, Found):
            os.close(found.parent_fd)
            return current  # it exists (as a directory, or as something RUN will trip on)
        staging = self.store.temp_dir("build-")
        try:
            root = staging / "layer"
            (root / path).mkdir(parents=True, mode=0o755)
            for parent in [root / path, *(root / path).parents]:
                if parent == root:
                    break
                os.chmod(parent, 0o755)
                os.utime(parent, (0, 0))  # the same WORKDIR, the same layer (copy.py)
            blob = write_blob(self.store, root, owner=lambda rel: (0, 0), compression=self.compression)
        finally:
            self.store.discard(staging)
        key = self.cache_key(current, i, meta, [blob.diff_id])
        hit = self.cached(key)
        if hit is not None:
            self.store.discard(blob.path.parent)
            pending.clear()
            return hit
        return self._finish(key, current, blob, meta, pending, {"created_by": f"WORKDIR {i.args}"})


def build(context: Union[str, "os.PathLike[str]"], *, dockerfile: str = "Dockerfile",
          tag: Union[None, str, Sequence[str]] = None, build_args: Optional[Mapping[str, str]] = None,
          target: Optional[str] = None, platform: Optional[str] = None, network: str = "none",
          no_cache: bool = False, pull: bool = False, labels: Optional[Mapping[str, str]] = None,
          progress: Optional[Progress] = None, compression: str = "gzip",
          store: Union[None, Store, "os.PathLike[str]", str] = None) -> Image:
    """See `Image.build`."""
    ctx = pathlib.Path(context).absolute()
    if not ctx.is_dir():
        raise BuildError(f"the build context {ctx} is not a directory")
    if network not in ("none", "host"):
        raise InvalidOption(f"network must be 'none' or 'host' for a build, not {network!r}")
    df_path = pathlib.Path(dockerfile) if os.path.isabs(dockerfile) else ctx / dockerfile
    try:
        with open(df_path, "rb") as f:
            text = f.read(_MAX_DOCKERFILE + 1)
    except OSError as exc:
        raise BuildError(f"cannot read the Dockerfile {df_path}: {exc.strerror}") from None
    if len(text) > _MAX_DOCKERFILE:
        raise DockerfileError(f"{df_path}: larger than 1 MiB")
    shown = os.path.relpath(df_path, ctx) if str(df_path).startswith(str(ctx) + "/") else str(df_path)
    df = parse(text, shown)
    say = progress or (lambda _line: None)
    for note in df.notes:
        say(note)
    rules = read_ignore_file(ignore_file_for(ctx, dockerfile))
    host = Platform.host()
    wanted = Platform.parse(platform) if platform else host
    args = dict(build_args or {})
    the_plan = plan(df, build_args=args, target=target, predefined=platform_args(wanted, host))
    if the_plan.unused_args:
        say(f"[warning] build arguments not consumed: {', '.join(the_plan.unused_args)}")
    st = Store.open(store)
    b = _Build(st, ctx, rules, the_plan, args, wanted, network, no_cache, pull, say, compression, df.escape)
    b.platform_given = str(wanted) if platform else None
    with st.in_use():
        for index in the_plan.needed():
            b.results[index] = b.stage(the_plan.stages[index])
        image = b.results[the_plan.target]
        if labels:
            meta = Metadata(b.config_of(image), {}, df.escape)
            meta.config["Labels"] = {**(meta.config.get("Labels") or {}), **dict(labels)}
            image = derive(st, image, [], config=meta.config,
                           history=[{"created_by": "LABEL (build labels)", "empty_layer": True}], label="build")
    tags = [tag] if isinstance(tag, str) else list(tag or [])
    for t in tags:
        image = image.tag(t, store=st)
    return image

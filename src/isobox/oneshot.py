"""`isobox.run`: start a container, wait for it, collect its output — `subprocess.run` for images."""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

from .runtime.container import Container
from .errors import Timeout
from .images.image import Image
from .result import RunResult


def _image(image: Union[Image, str], options: dict[str, Any]) -> Image:
    if isinstance(image, Image):
        return image
    # A reference: use the cached image, pull it when missing (`docker run` pulls once).
    return Image.pull(image, if_missing=True, store=options.get("store"))


def run(
    image: Union[Image, str],
    command: Union[str, Sequence[str], None] = None,
    *,
    input: Optional[bytes] = None,
    timeout: Optional[float] = None,
    check: bool = False,
    **options: Any,
) -> RunResult:
    """Run ``command`` in a fresh container from ``image`` and remove it afterwards.

    ``input`` is fed to the command's stdin. On ``timeout`` the container is killed and
    `Timeout` raised (with ``.stdout``/``.stderr`` so far). Options are `Container`'s."""
    img = _image(image, options)
    if input is not None:
        if "stdin" in options:
            raise ValueError("stdin and input cannot both be given")
        options["stdin"] = True  # a pipe: the container never gets a file it could reopen
    with Container(img, command, **options) as c:
        if input is not None:
            _feed_input(c, input)
        try:
            code = c.wait(timeout)
        except Timeout as exc:
            c.kill()
            c.wait()
            exc.stdout = c.logs("stdout")  # type: ignore[attr-defined]
            exc.stderr = c.logs("stderr")  # type: ignore[attr-defined]
            raise
        result = RunResult(c.argv, code, c.logs("stdout"), c.logs("stderr"))
    if check:
        result.check_returncode()
    return result


def _feed_input(c: Container, data: bytes) -> None:
    """Write ``input`` to the container's stdin and close it, from a thread: a pipe holds
    64 KiB, and a command may write its output before it reads all of its input."""
    import threading

    stdin = c.stdin
    assert stdin is not None

    def feed() -> None:
        try:
            view = memoryview(data)
            while view:
                view = view[stdin.write(view) or 0:]
        except OSError:  # EPIPE: the command stopped reading, as subprocess tolerates
            pass
        finally:
            try:
                stdin.close()
            except OSError:
                pass

    threading.Thread(target=feed, name="isobox-input", daemon=True).start()

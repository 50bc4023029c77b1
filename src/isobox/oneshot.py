"""`isobox.run`: start a container, wait for it, collect its output — `subprocess.run` for images."""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

from .container import Container
from .errors import Timeout
from .image import Image
from .result import RunResult


def _image(image: Union[Image, str], options: dict[str, Any]) -> Image:
    if isinstance(image, Image):
        return image
    # A reference: use the cached image, pull it when missing (`docker run` pulls once).
    from .errors import ImageNotFound

    store = options.get("store")
    try:
        return Image.get(image, store=store)
    except ImageNotFound:
        return Image.pull(image, store=store)


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
    stdin_file = None
    if input is not None:
        if "stdin" in options:
            raise ValueError("stdin and input cannot both be given")
        import tempfile  # only for input=

        stdin_file = tempfile.TemporaryFile()
        stdin_file.write(input)
        stdin_file.seek(0)
        options["stdin"] = stdin_file
    try:
        with Container(img, command, **options) as c:
            try:
                code = c.wait(timeout)
            except Timeout as exc:
                c.kill()
                c.wait()
                exc.stdout = c.logs("stdout")  # type: ignore[attr-defined]
                exc.stderr = c.logs("stderr")  # type: ignore[attr-defined]
                raise
            result = RunResult(c.argv, code, c.logs("stdout"), c.logs("stderr"))
    finally:
        if stdin_file is not None:
            stdin_file.close()
    if check:
        result.check_returncode()
    return result

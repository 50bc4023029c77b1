"""`RunResult` and `ExitStatusError`: a failed command's error says why, as its stderr did."""

from __future__ import annotations

import pytest

import isobox
from isobox.result import ExitStatusError, RunResult


def error_for(stderr: bytes, exit_code: int = 1) -> str:
    with pytest.raises(ExitStatusError) as info:
        RunResult(["prog"], exit_code, b"", stderr).check_returncode()
    return str(info.value)


@pytest.mark.unit
def test_exit_status_error_ends_with_the_stderr_tail():
    message = error_for(b"starting\nerror: cannot open /data/db: No such file\n", 3)
    assert message == ("command ['prog'] exited with status 3:\n"
                       "  starting\n  error: cannot open /data/db: No such file")


@pytest.mark.unit
def test_long_stderr_is_cut_to_its_last_lines_and_bytes():
    stderr = b"".join(b"line %d\n" % i for i in range(100_000)) + b"the real reason\n"
    message = error_for(stderr)
    assert message.endswith("line 99999\n  the real reason")
    assert "line 99990" not in message
    assert len(message) < 2048 + 200  # result.STDERR_TAIL_BYTES, and the head


@pytest.mark.unit
def test_stderr_tail_is_decoded_with_replacement_and_escaped():
    message = error_for(b"bad \xff byte\n\x1b[31mred\x1b[0m\n")
    assert "bad \ufffd byte" in message
    assert "\x1b" not in message and "\\x1b[31mred" in message


@pytest.mark.unit
def test_no_stderr_keeps_the_short_message():
    assert error_for(b"") == "command ['prog'] exited with status 1"
    assert error_for(b"", -9) == "command ['prog'] was killed by signal 9"


def test_run_with_check_names_the_containers_stderr(busybox_image, store_root):
    with pytest.raises(isobox.ExitStatusError) as info:
        isobox.run(busybox_image, ["sh", "-c", "echo 'no config found' >&2; exit 2"], check=True)
    assert str(info.value).endswith("exited with status 2:\n  no config found")

"""doctor() reports what the host allows, by trying it."""

from __future__ import annotations

import os

import isobox


def test_doctor_reports_every_check_and_this_host_can_run_containers():
    report = isobox.doctor()
    names = [c.name for c in report.checks]
    assert names == ["kernel", "user namespaces", "subordinate ids", "overlayfs", "cgroups",
                     "device policy, pids", "seccomp", "pidfd", "exit statuses"]
    # the container tests run on this host, so the checks they depend on must pass
    assert report["overlayfs"].ok, report["overlayfs"].detail
    assert report["user namespaces"].ok
    text = str(report)
    assert text.count("\n") == len(names) - 1
    expected = "as root" if os.geteuid() == 0 else "in a user namespace"
    assert expected in report["overlayfs"].detail


def test_doctor_leaves_no_temporary_directories(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    isobox.doctor()
    assert list(tmp_path.iterdir()) == []


def test_doctor_says_whether_the_device_policy_and_pids_limit_apply():
    check = isobox.doctor()["device policy, pids"]
    if os.geteuid() == 0:  # this host makes cgroups for root: the policy is applied
        assert check.ok and "device policy applied" in check.detail and "pids limit 2048" in check.detail
    else:  # and none for an undelegated user: said, with why devices stay closed
        assert "not applied" in check.detail and "nodev" in check.detail

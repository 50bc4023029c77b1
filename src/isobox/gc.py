"""`isobox.prune`: garbage collection across both wings.

The image cache (`Store.prune`: untagged records, layers and blobs nothing uses, crash
garbage) belongs to the image wing; named volumes belong to the runtime, and only go when
asked (`docker system prune --volumes`: volumes hold data). This module is the one place
that knows both, so neither wing reaches into the other.
"""

from __future__ import annotations

import os
from typing import Optional, Union

import attrs

from .images.store import PruneReport, Store
from .runtime.named_volumes import prune_volumes


def prune(store: Union[Store, str, "os.PathLike[str]", None] = None, *, volumes: bool = False) -> PruneReport:
    """Remove everything in the store that no tagged image and no container uses (named
    volumes only with ``volumes=True``). Waits for running pulls and starting containers."""
    st = Store.open(store)
    with st.collecting():
        report = st._collect(clear_tmp=True)
        if not volumes:
            return report
        with st.removing_volumes():
            names, reclaimed, warnings = prune_volumes(st)
    return attrs.evolve(report, volumes=names, reclaimed=report.reclaimed + reclaimed,
                        warnings=report.warnings + tuple(warnings))

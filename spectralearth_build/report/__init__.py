"""Seeing a dataset: quicklooks, the build report and the store summary.

* :mod:`.rgb`: pseudo-RGB composites (bands nearest 640/550/460 nm, robust stretch), pure numpy;
* :mod:`.quicklook`: PNGs of sampled locations with all their timestamps, and a contact sheet;
* :mod:`.figures` and :mod:`.page`: the build report (``OUT/report/``: figures and an offline
  ``index.html``), written at the end of ``build-dataset`` and by ``spectralearth-build report``;
* :mod:`.info`: the one-screen summary of ``spectralearth-build info``.

Everything here reads a finished dataset folder through
:func:`~spectralearth_build.dataset.open_dataset` and the tables beside the store; nothing
here writes into the store.  matplotlib is imported only when a figure is made; its font
cache goes to the temp dir (unless ``MPLCONFIGDIR`` says otherwise), so a build writes nothing
outside ``--out`` and the temp dir.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault(
    "MPLCONFIGDIR", os.path.join(tempfile.gettempdir(), f"spectralearth-build-mpl-{os.getuid()}")
)

from .info import format_info, store_info
from .page import REPORT_DIR, write_report
from .quicklook import write_quicklooks

__all__ = ["REPORT_DIR", "format_info", "store_info", "write_quicklooks", "write_report"]

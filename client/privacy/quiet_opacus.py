"""Import Opacus without its logging side effect, before any other Opacus import.

``opacus/utils/module_utils.py`` calls ``logging.basicConfig`` at import: a second root handler
that prints every log line of a Flower app twice. Importing this module first imports Opacus and
removes whatever root handler that added. Only DP code imports it (a non-DP site never loads
Opacus).
"""

import logging

_root = logging.getLogger()
_before = list(_root.handlers)
import opacus  # noqa: E402,F401

for _handler in [h for h in _root.handlers if h not in _before]:
    _root.removeHandler(_handler)

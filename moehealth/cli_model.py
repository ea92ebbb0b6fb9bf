"""Model subcommands (``train``); registered by :mod:`moehealth.cli`."""

from __future__ import annotations

import argparse


def add_model_commands(sub: argparse._SubParsersAction) -> None:
    """Register model commands; filled in by the model issue."""

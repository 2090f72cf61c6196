"""Short, useful ``--help`` for the CLI, and a "did you mean" for mistyped keys."""

from __future__ import annotations

import argparse
import difflib
import inspect
import re
import sys
from collections.abc import Iterable
from typing import Any

from jsonargparse import ArgumentParser, DefaultHelpFormatter

from dsrelu_lightning.nn.activations import ACTIVATIONS, DSReLU

__all__ = [
    "ShortHelpFormatter",
    "activation_help",
    "backbone_help",
    "closest_option",
    "first_sentence",
    "suggest_key",
]

_SENTENCE_END = re.compile(r"(?<!e\.g\.)(?<!i\.e\.)(?<=[.!?:])\s+(?=[A-Z`])|\n\s*\n")


def first_sentence(text: str) -> str:
    """The first sentence (or paragraph) of a docstring-style help text, on one line."""
    head = _SENTENCE_END.split(text.strip(), maxsplit=1)[0]
    return " ".join(head.split())


def activation_help() -> str:
    """The help of ``--model.activation``: the registered names and DSReLU's arguments."""
    dsrelu_args = ", ".join(
        f"{p.name}={p.default}"
        for p in inspect.signature(DSReLU).parameters.values()
        if p.name != "inplace"
    )
    return (
        f"activation at every site, one of: {', '.join(ACTIVATIONS)} (case-insensitive); "
        f"its keyword arguments go in --model.activation_args, DSReLU's (angles in degrees, "
        f"the paper's defaults): {dsrelu_args}; from Python an nn.Module class or a "
        "zero-argument callable is accepted too"
    )


def backbone_help() -> str:
    """The help of ``--model.backbone``."""
    return (
        "the network: a torchvision classification model (resnet18, resnet34, resnet50, "
        "vgg11_bn, densenet121, mobilenet_v3_small, efficientnet_b0, convnext_tiny, vit_b_16, "
        "...) or an import path to your own nn.Module class or factory (mypkg.nets.SmallCNN); "
        "its builder's arguments go in --model.backbone_args"
    )


class ShortHelpFormatter(DefaultHelpFormatter):
    """jsonargparse's formatter cut to one sentence per option and section, plus its default.

    Types are left to the option's placeholder and choices, and the lists of every
    class a typed option could accept are dropped: ``fit --help`` stays a page a user
    can read. ``--print_config`` shows the full configuration.
    """

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 8,
        width: int | None = None,
    ) -> None:
        # Help on its own line, indented a little: the option names are long, and a
        # narrow column beside them wraps every text into several lines.
        super().__init__(prog, indent_increment, max_help_position, width)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = first_sentence(action.help or "")
        if isinstance(action, argparse._HelpAction | argparse._VersionAction):
            return text
        default = action.default
        shown = default not in (None, argparse.SUPPRESS) and action.option_strings
        if shown and "%(default)" not in text and not isinstance(default, argparse.Namespace):
            text += f" (default: {default})" if text else f"default: {default}"
        return text.replace("%", "%%").replace("%%(default)s", "%(default)s")

    def add_text(self, text: str | None) -> None:
        if text and text is not argparse.SUPPRESS:
            text = first_sentence(text)
        super().add_text(text)

    def start_section(self, heading: str | None) -> None:
        super().start_section(first_sentence(heading).rstrip(".:") if heading else heading)


def closest_option(unknown: str, options: Iterable[str]) -> str | None:
    """The valid option most like ``unknown`` (``--model.activaton`` -> ``--model.activation``)."""
    key = unknown.split("=", 1)[0]
    matches = difflib.get_close_matches(key, list(options), n=1, cutoff=0.75)
    return matches[0] if matches else None


def suggest_key(
    exc: argparse.ArgumentError, parser: ArgumentParser, args: Any
) -> argparse.ArgumentError:
    """``exc`` with "did you mean --KEY?" for an unrecognised option, else ``exc``."""
    found = re.search(r"nrecognized arguments: (\S+)", str(exc))
    if found is None or not found[1].startswith("--"):
        return exc
    argv = [str(a) for a in (sys.argv[1:] if args is None else args)]
    subcommands = getattr(parser, "_subcommands_action", None)
    subcommands = subcommands._name_parser_map if subcommands is not None else {}
    chosen = next((subcommands[a] for a in argv if a in subcommands), parser)
    options = [o for o in chosen._option_string_actions if o.startswith("--")]
    best = closest_option(found[1], options)
    if best is None:
        return exc
    return argparse.ArgumentError(None, f"{str(exc).splitlines()[0]} (did you mean {best}?)")

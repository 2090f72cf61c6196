"""One-line errors, help and quiet output: a user error ends as one line on stderr and exit
status 2; ``--help`` is a page a user can read; third-party noise is dropped. Imports no torch:
``--help`` and a mistyped command answer at once."""

from __future__ import annotations

import argparse
import difflib
import inspect
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn

from jsonargparse import ArgumentParser, DefaultHelpFormatter

from dsrelu_lightning.errors import ConfigurationError, UserFacingError

__all__ = [
    "DEBUG_ENV",
    "CommandParser",
    "ShortHelpFormatter",
    "activation_help",
    "backbone_help",
    "closest_option",
    "report_user_errors",
    "silence_third_party_noise",
    "suggest_key",
    "user_error_message",
]

DEBUG_ENV = "DSRELU_LIGHTNING_DEBUG"

_CONFIG_FILES = (".yaml", ".yml", ".json")
"""A value with one of these suffixes means a config file, not a class path."""


def user_error_message(exc: BaseException) -> str | None:
    """The one-line message for a user error anywhere in ``exc``'s chain, else None.

    jsonargparse wraps errors raised while instantiating classes, so the
    UserFacingError may sit in ``__cause__``/``__context__``.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, UserFacingError):
            return str(current)
        current = current.__cause__ or current.__context__
    if isinstance(exc, argparse.ArgumentError):
        return f"{_summarise_parse_error(str(exc))}; run with --help for the accepted options"
    return None


def _summarise_parse_error(text: str) -> str:
    """One line out of jsonargparse's multi-line parse error.

    Of a value that is no config file and no class (``--data mypkg.MyDataModule``),
    jsonargparse lists "Expected a path" first; the reason the class failed (an import
    error inside the user's module) follows among the Union's errors: that is the line.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return "invalid arguments"
    head, rest = lines[0].rstrip(":"), lines[1:]
    if not rest:
        return head
    given = next((line for line in rest if line.startswith("Given value:")), "")
    value = re.sub(r"^NestedArg\(key='\w+', val='(.*)'\)$", r"\1", given[len("Given value: ") :])
    union = next((i for i, line in enumerate(rest) if "Does not validate" in line), None)
    if union is None or (union > 0 and value.endswith(_CONFIG_FILES)):
        return f"{head}: {rest[0].removeprefix('- ')}"
    errors: list[str] = []
    block = rest[union:]
    for line in block[block.index("Errors:") + 1 :] if "Errors:" in block else []:
        if line.startswith("Given value"):
            break
        if line.startswith("- "):
            errors.append(line[2:])
        elif errors:
            errors[-1] = f"{errors[-1]} {line}"
    useful = [e for e in errors if e != "Expected a <class 'NoneType'>"] or errors
    if useful and not useful[0].startswith("Expected"):
        named = not value or value in useful[0]
        return f"{head}: {useful[0]}" + ("" if named else f" (given: {value})")
    return f"{head}: {given} ({' or '.join(useful)})"


def report_user_errors(command: Callable[[], object]) -> None:
    """Run ``command``; a user error ends with one line on stderr and exit status 2.

    No traceback unless ``DSRELU_LIGHTNING_DEBUG=1`` is set; other errors propagate.
    """
    try:
        command()
    except Exception as exc:
        message = user_error_message(exc)
        if message is None or os.environ.get(DEBUG_ENV):
            raise
        print(f"dsrelu-lightning: error: {message}", file=sys.stderr)
        sys.exit(2)


class CommandParser(argparse.ArgumentParser):
    """argparse parser whose errors are ConfigurationErrors: one line at the CLI, exit 2."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_abbrev=False, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise ConfigurationError(f"{self.prog}: {message}; run with --help for the options")


_SENTENCE_END = re.compile(r"(?<!e\.g\.)(?<!i\.e\.)(?<=[.!?:])\s+(?=[A-Z`])|\n\s*\n")
_MARKUP = re.compile(r"(?::\w+:)?``?([^`]+)``?")
"""reST literals and roles (``x``, :func:`x`): plain text in a terminal."""


def first_sentence(text: str) -> str:
    """The first sentence (or paragraph) of a docstring-style help text, on one line, without
    reST markup."""
    head = _SENTENCE_END.split(text.strip(), maxsplit=1)[0]
    return " ".join(_MARKUP.sub(r"\1", head).split())


def activation_help() -> str:
    """The help of ``--model.activation``: the registered names and DSReLU's arguments."""
    from dsrelu_lightning.nn.activations import ACTIVATIONS, DSReLU

    dsrelu_args = ", ".join(
        f"{p.name}={p.default}"
        for p in inspect.signature(DSReLU).parameters.values()
        if p.name not in ("inplace", "constant_slope", "equivalent_leaky")
    )
    return (
        f"activation at every site, one of: {', '.join(ACTIVATIONS)} (case-insensitive); "
        f"DSReLU's --model.activation_args (paper's defaults): {dsrelu_args}"
    )


def backbone_help() -> str:
    """The help of ``--model.backbone``."""
    return (
        "the network: a torchvision classification model (resnet18, resnet50, vgg11_bn, "
        "mobilenet_v3_small, convnext_tiny, vit_b_16, ...) or the import path of your own "
        "nn.Module class or factory (mypkg.nets.SmallCNN); its arguments go in "
        "--model.backbone_args"
    )


COMMON_CALLBACK_OPTIONS = {
    "early_stopping": ("monitor", "min_delta", "patience", "mode"),
    "checkpoint": ("dirpath", "filename", "monitor", "save_last", "save_top_k", "mode"),
}
"""The options ``fit --help`` lists of Lightning's own callbacks; the others are accepted and
shown by ``--print_config``."""


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
        max_help_position: int = 6,
        width: int | None = None,
    ) -> None:
        # Help on its own line, indented a little: the option names are long, and a
        # narrow column beside them wraps every text into several lines.
        super().__init__(prog, indent_increment, max_help_position, width)

    def _default(self, action: argparse.Action) -> str | None:
        """``(default: X)`` for an option with a default worth showing, else None."""
        default = action.default
        if (
            isinstance(action, argparse._HelpAction | argparse._VersionAction)
            or default in (None, argparse.SUPPRESS)
            or not action.option_strings
            or isinstance(default, argparse.Namespace)
            or "%(default)" in (action.help or "")
        ):
            return None
        return f"(default: {default})"

    def _beside(self, action: argparse.Action, invocation: str) -> bool:
        """Whether the default fits on the option's own line (else it ends the help)."""
        default = self._default(action)
        return default is not None and (
            self._current_indent + len(invocation) + 2 + len(default) <= self._width
        )

    def _format_action_invocation(self, action: argparse.Action) -> str:
        invocation = super()._format_action_invocation(action)
        if self._beside(action, invocation):
            return f"{invocation}  {self._default(action)}"
        return invocation

    def _get_help_string(self, action: argparse.Action) -> str:
        text = first_sentence(action.help or "")
        if len(text) > 4 * (self._width - self._max_help_position) and "; " in text:
            text = text[: text.index("; ")]  # one sentence, and at most about four lines
        default = self._default(action)
        if default and not self._beside(action, super()._format_action_invocation(action)):
            text = f"{text} {default}" if text else default
        return text.replace("%", "%%").replace("%%(default)s", "%(default)s")

    def add_text(self, text: str | None) -> None:
        if text and text is not argparse.SUPPRESS:
            text = first_sentence(text)
        super().add_text(text)

    def start_section(self, heading: str | None) -> None:
        if heading:  # a docstring's first line may stop inside a parenthesis
            heading = first_sentence(heading).rstrip(".:")
            if heading.count("(") > heading.count(")"):
                heading = heading[: heading.rindex("(")].rstrip()
        super().start_section(heading)

    def add_argument(self, action: argparse.Action) -> None:
        """Every option but those the epilog sums up: a group's ``--KEY CONFIG`` file, the
        Trainer's ``--trainer.KEY.help CLASS`` and Lightning's callbacks' rarer options."""
        names = action.option_strings
        group_file = len(names) == 1 and "." not in names[0] and action.metavar == "CONFIG"
        group, _, key = names[0].removeprefix("--").partition(".") if names else ("", "", "")
        rare = key not in COMMON_CALLBACK_OPTIONS.get(group, (key,))
        if not (group_file or rare or (group == "trainer" and key.endswith(".help"))):
            super().add_argument(action)


def closest_option(unknown: str, options: Iterable[str]) -> str | None:
    """The valid option most like ``unknown`` (``--model.activaton`` -> ``--model.activation``)."""
    key = unknown.split("=", 1)[0]
    matches = difflib.get_close_matches(key, list(options), n=1, cutoff=0.75)
    return matches[0] if matches else None


def suggest_key(
    exc: argparse.ArgumentError, parser: ArgumentParser, args: Sequence[str] | None
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


_LOG_NOISE: dict[str, tuple[str, ...]] = {
    # Lightning's advertisement, logged at every Trainer start without a LitLogger.
    "lightning.pytorch.utilities.rank_zero": ("Tip: For seamless cloud logging",),
    # torch's C++-extension helper, asked by the compiler on a machine without CUDA.
    "torch.utils.cpp_extension": ("No CUDA runtime is found",),
}

_SRUN_HINT = "The `srun` command is available on your system but is not used"
"""Lightning's SLURMEnvironment hint, given whenever ``srun`` exists but ``SLURM_NTASKS`` is
unset; in a SLURM batch script run without srun (a grid's array task) that is the
intended setup, one process, and the hint ("prepend srun") is wrong advice."""


def _in_srun_less_slurm_job() -> bool:
    """A SLURM job's batch script process, not started by srun: SLURM gave it no task count
    (srun always sets ``SLURM_NTASKS``), so it is one process that Lightning runs plainly."""
    return "SLURM_JOB_ID" in os.environ and "SLURM_NTASKS" not in os.environ


class _DropMessages(logging.Filter):
    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


def silence_third_party_noise() -> None:
    """Drop messages that say nothing about the user's run; the project's own stay.

    Lightning's litlogger tip, torch's "No CUDA runtime is found", the
    ``isinstance(treespec, LeafSpec)`` deprecation that Lightning's own pytree helper
    triggers in torch, and inside an srun-less SLURM job (an array task of a grid)
    Lightning's hint to prepend ``srun``. Called by the CLI's entry point only; idempotent.
    """
    if _in_srun_less_slurm_job():
        warnings.filterwarnings("ignore", message=re.escape(_SRUN_HINT))
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
    )
    for name, fragments in _LOG_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(fragments))

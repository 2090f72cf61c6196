"""In-place writes into an activation's output, found in the traced forwards and made
out-of-place.

torchvision's EfficientNetV2 ends a FusedMBConv block in its activation and then runs
``result += input`` on that block's output. SiLU saves its input for backward, so the write
is harmless there; once the site's new module saves its output (ReLU, DSReLU), autograd
refuses it ("modified by an inplace operation"). An in-place ``Tensor`` method (``add_``...)
or augmented assignment (``+=``: torch.fx records it as the out-of-place operator, so the
traced graph already has the fix) whose tensor comes from a replaced site, directly or
through parameter-free modules and other calls, makes its module run its traced graph with
out-of-place calls: the same values, one more tensor alive for a moment.
"""

from __future__ import annotations

import ast
import inspect
import operator
import textwrap
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from dsrelu_lightning.nn.call_sites import LocalGraph, is_sequential

__all__ = ["describe", "in_place_writes", "make_out_of_place"]

_AUGMENTED: dict[type[ast.operator], tuple[Callable[..., Any], str]] = {
    ast.Add: (operator.add, "+="),
    ast.Sub: (operator.sub, "-="),
    ast.Mult: (operator.mul, "*="),
    ast.Div: (operator.truediv, "/="),
    ast.FloorDiv: (operator.floordiv, "//="),
    ast.Mod: (operator.mod, "%="),
    ast.Pow: (operator.pow, "**="),
    ast.BitAnd: (operator.and_, "&="),
    ast.BitOr: (operator.or_, "|="),
    ast.BitXor: (operator.xor, "^="),
    ast.LShift: (operator.lshift, "<<="),
    ast.RShift: (operator.rshift, ">>="),
}
"""Augmented assignments by operator, with what torch.fx records for each (``a += b`` ->
``operator.add``) and their symbol."""
_SYMBOLS = dict(_AUGMENTED.values())

_SITE, _INPUT = "site", "input"  # where a tensor may come from


def _is_in_place_method(node: fx.Node) -> bool:
    name = str(node.target)
    return (
        node.op == "call_method"
        and name.endswith("_")
        and not name.startswith("_")
        and hasattr(torch.Tensor, name[:-1])
    )


def _augmented_operators(module: nn.Module) -> set[Callable[..., Any]]:
    """The operators of the augmented assignments (``a += b``) in ``module``'s forward (all
    of them where its source is unknown), as torch.fx records them."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(type(module).forward)))
    except (OSError, TypeError, SyntaxError):
        return set(_SYMBOLS)
    return {
        _AUGMENTED[type(node.op)][0]
        for node in ast.walk(tree)
        if isinstance(node, ast.AugAssign) and type(node.op) in _AUGMENTED
    }


def describe(node: fx.Node) -> str:
    """How a write reads in the replacement report: ``+=`` or ``add_``."""
    return _SYMBOLS.get(node.target, str(node.target))  # type: ignore[arg-type]


class _Sources:
    """Where each module's output may come from (a replaced site, its input), memoised."""

    def __init__(
        self, model: nn.Module, graphs: Mapping[str, LocalGraph], swapped: Mapping[str, set[str]]
    ) -> None:
        self.model, self.graphs, self.swapped = model, graphs, swapped
        self._cache: dict[str, frozenset[str]] = {}

    def of_module(self, path: str) -> frozenset[str]:
        if path not in self._cache:
            self._cache[path] = frozenset()  # a cycle (never in a forward) finds nothing
            self._cache[path] = self._module(path)
        return self._cache[path]

    def _child(self, path: str, name: str) -> frozenset[str]:
        child = f"{path}.{name}" if path else name
        if child in self.graphs:
            return self.of_module(child)
        learns = any(True for _ in self.model.get_submodule(child).parameters())
        return frozenset() if learns else frozenset({_INPUT})  # Dropout, Identity pass it on

    def _module(self, path: str) -> frozenset[str]:
        local = self.graphs[path]
        sites = self.swapped.get(path, set())
        if local.graph is not None:
            output = next(n for n in reversed(local.graph.nodes) if n.op == "output")
            return self.of_nodes(path, list(output.all_input_nodes))
        if local.error is not None or not is_sequential(local.module):
            return frozenset()  # cannot see inside
        for name, _ in reversed(list(local.module.named_children())):
            if name in sites:
                return frozenset({_SITE})
            found = self._child(path, name)
            if _SITE in found or _INPUT not in found:
                return found
        return frozenset({_INPUT})

    def of_nodes(self, path: str, start: list[fx.Node]) -> frozenset[str]:
        """Where the tensors of ``start`` (nodes of ``path``'s graph) may come from."""
        sites = self.swapped.get(path, set())
        stack, seen, found = list(start), set(), set()
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            if node.name in sites:
                found.add(_SITE)
            elif node.op == "placeholder":
                found.add(_INPUT)
            elif node.op == "call_module":
                child = self._child(path, str(node.target))
                found |= child & {_SITE}
                if _INPUT in child:
                    stack += node.all_input_nodes
            elif node.op in ("call_function", "call_method"):
                stack += node.all_input_nodes  # may return (a view of) an input
        return frozenset(found)


def in_place_writes(
    model: nn.Module, graphs: Mapping[str, LocalGraph], swapped: Mapping[str, set[str]]
) -> dict[str, list[fx.Node]]:
    """Per module path, the in-place calls of its traced forward that may write into the
    output of a site being replaced (``swapped``: the site keys per path)."""
    sources = _Sources(model, graphs, swapped)
    writes: dict[str, list[fx.Node]] = {}
    for path, local in graphs.items():
        if local.graph is None:
            continue
        sites = swapped.get(path, set())
        augmented = None  # read the source only where an operator may have been one
        found = []
        for node in local.graph.nodes:
            if node.name in sites or not node.args or not isinstance(node.args[0], fx.Node):
                continue
            if node.op == "call_function" and node.target in _SYMBOLS:
                if augmented is None:
                    augmented = _augmented_operators(local.module)
                if node.target not in augmented:
                    continue
            elif not _is_in_place_method(node):
                continue
            if _SITE in sources.of_nodes(path, [node.args[0]]):
                found.append(node)
        if found:
            writes[path] = found
    return writes


def make_out_of_place(graph: fx.Graph, writes: list[fx.Node]) -> None:
    """Rewrite the in-place methods among ``writes`` (calls of ``graph``) to their
    out-of-place forms (augmented assignments already are); whatever read the written tensor
    after the write reads the new result instead."""
    order = {node: i for i, node in enumerate(graph.nodes)}
    for node in writes:
        if node.op != "call_method":
            continue
        node.target = str(node.target)[:-1]
        written = node.args[0]
        assert isinstance(written, fx.Node)
        for user in list(written.users):
            if user is not node and order[user] > order[node]:
                user.replace_input_with(written, node)

"""replace_activations: every activation CALL SITE of any network gets its own new module.

Module calls, shared modules (torchvision's BasicBlock calls one ``self.relu`` twice),
functional calls (``F.relu(x, inplace=True)``) and tensor methods (``x.relu()``) are found
by tracing each module's own forward with torch.fx (:mod:`~dsrelu_lightning.nn.call_sites`).
A module whose sites are each a distinct submodule called once keeps its class and only gets
new submodules; one with shared, functional or method sites becomes a ``torch.fx.GraphModule``
of the same name whose extra sites are new submodules (``relu_1``, ``gelu``...). A module
fx cannot trace gets one new module per registered activation, and a warning names it.
Sites whose output reaches the network's output without a learned layer in between (the
output) are left alone, as are kinds outside ``targets`` (by default the gates). The
network's other in-place modules (``Dropout(inplace=True)`` after MobileNetV3's Hardswish)
become out-of-place, and so do in-place writes (``result += input`` after EfficientNetV2's
blocks) into a replaced site's output (:mod:`~dsrelu_lightning.nn.in_place_writes`): the new
activation may save its output for backward, as ReLU does.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch.fx as fx
from torch import nn

from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.nn.activation_kinds import resolve_kinds
from dsrelu_lightning.nn.activations import ActivationSpec, activation_factory
from dsrelu_lightning.nn.call_sites import LocalGraph, Site, trace_modules
from dsrelu_lightning.nn.in_place_writes import describe, in_place_writes, make_out_of_place

__all__ = [
    "ActivationReport",
    "convert_activations",
    "fresh_each_call",
    "replace_activations",
    "warn_untraced",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActivationReport:
    """What a replacement did: sites replaced per original kind, sites left as the network's
    output, modules whose forward could not be traced (path -> reason) and in-place modules
    made out-of-place."""

    replaced: Counter[str] = field(default_factory=Counter)
    kept_output: tuple[str, ...] = ()
    untraced: Mapping[str, str] = field(default_factory=dict)
    new_kind: str = ""
    out_of_place: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        return sum(self.replaced.values())

    def __str__(self) -> str:
        kinds = ", ".join(f"{kind} {count}" for kind, count in self.replaced.most_common())
        line = f"{self.total} activation call sites -> {self.new_kind} ({kinds or 'none'})"
        if self.kept_output:
            line += f"; kept as the output: {', '.join(self.kept_output)}"
        if self.untraced:
            line += f"; not traced: {', '.join(p or '<root>' for p in self.untraced)}"
        if self.out_of_place:
            line += f"; made out-of-place: {', '.join(self.out_of_place)}"
        return line


def _has_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _inputs(node: fx.Node) -> list[fx.Node]:
    return list(node.all_input_nodes)


def _tail(
    path: str, model: nn.Module, graphs: Mapping[str, LocalGraph], output: set[tuple[str, str]]
) -> bool:
    """Add to ``output`` the sites of ``path`` whose result reaches its output without a
    learned layer in between; returns whether its input reaches its output that way."""

    def child(name: str) -> str:
        return f"{path}.{name}" if path else name

    local = graphs.get(path)
    if local is None:  # torch's own layer: passes through unless it learns something
        return not _has_parameters(model.get_submodule(path))
    if local.error is not None:
        return False  # unknown inside: keep nothing, continue nothing
    by_key = {site.key: site for site in local.sites}
    if local.graph is None:  # a Sequential: its children backwards
        for name, _ in reversed(list(local.module.named_children())):
            if name in by_key:
                output.add((path, name))
            elif not _tail(child(name), model, graphs, output):
                return False
        return True
    returned = next(n for n in reversed(local.graph.nodes) if n.op == "output")
    stack, seen, through = _inputs(returned), set(), False
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node.op == "placeholder":
            through = True
        elif node.name in by_key:
            output.add((path, node.name))
            stack += _inputs(node)
        elif node.op == "call_module":
            if _tail(child(str(node.target)), model, graphs, output):
                stack += _inputs(node)
        elif node.op in ("call_function", "call_method"):
            stack += _inputs(node)
        # get_attr: a learned tensor joins here; that branch ends
    return through


def _set_submodule(owner: nn.Module, target: str, module: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(owner.get_submodule(parent) if parent else owner, name, module)


def _free_name(owner: nn.Module, base: str) -> str:
    if not hasattr(owner, base):
        return base
    number = 1
    while hasattr(owner, f"{base}_{number}"):
        number += 1
    return f"{base}_{number}"


def _position(graph: fx.Graph, node: fx.Node) -> int:
    return next(i for i, n in enumerate(graph.nodes) if n is node)


def _needs_graph(local: LocalGraph, sites: list[Site]) -> bool:
    """Whether the sites can only be given their own modules by rewriting the forward."""
    targets = [s.target for s in sites if s.how == "module"]
    if len(targets) < len(sites) or len(set(targets)) < len(targets):
        return True  # a functional/method call, or one submodule called at several sites
    called = Counter(str(n.target) for n in local.graph.nodes if n.op == "call_module")
    if any(called[target] > 1 for target in targets):
        return True  # a replaced module also called at a site we keep (e.g. the output)
    graph = local.graph
    return any(  # an in-place call whose input is read again: the rewrite keeps that
        s.in_place
        and isinstance(source := s.node.args[0], fx.Node)
        and any(_position(graph, u) > _position(graph, s.node) for u in source.users)
        for s in sites
    )


def _rewrite(local: LocalGraph, sites: list[Site], make: Callable[[], nn.Module]) -> nn.Module:
    """``local.module`` as a GraphModule in which every site calls a new module of its own."""
    module, graph = local.module, local.graph
    assert graph is not None
    site_nodes = {site.node for site in sites}
    kept = {str(n.target) for n in graph.nodes if n.op == "call_module" and n not in site_nodes}
    renamed: set[str] = set()
    for site in sites:
        node = site.node
        assert node is not None
        source = node.args[0] if node.args else node.kwargs.get("input")
        # Swapped where it stands unless a call we keep (e.g. the output) uses it too.
        if site.how == "module" and site.target not in renamed | kept:
            renamed.add(site.target)
            _set_submodule(module, site.target, make())
            new_node = node
        else:
            base = site.target if site.how == "module" else site.kind.name.lower()
            name = _free_name(module, base.replace(".", "_"))
            module.add_module(name, make())
            with graph.inserting_after(node):
                new_node = graph.call_module(name, (source,))
            node.replace_all_uses_with(new_node)
            graph.erase_node(node)
        if site.in_place and isinstance(source, fx.Node):  # later readers saw the result
            after = _position(graph, new_node)
            for user in list(source.users):
                if user is not new_node and _position(graph, user) > after:
                    user.replace_input_with(source, new_node)
    graph.lint()
    rewritten = fx.GraphModule(module, graph, class_name=type(module).__name__)
    rewritten.train(module.training)
    return rewritten


def _out_of_place(model: nn.Module, made: set[int]) -> tuple[str, ...]:
    """Switch off ``inplace`` on every module of ``model`` but the new activations.

    A network built around an activation that saves its input (Hardswish, GELU) may write
    into that activation's output in place; once the site saves its output instead (ReLU,
    DSReLU), backward fails with autograd's version-counter error. Out-of-place modules give
    the same values."""
    changed = []
    for path, module in model.named_modules():
        if id(module) not in made and getattr(module, "inplace", False) is True:
            module.inplace = False
            changed.append(path)
    return tuple(changed)


def fresh_each_call(make_activation: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    """``make_activation``, refusing a module it already returned (a shared module would
    tie all sites' state, e.g. one DSReLU progress or one PReLU weight for the network)."""
    seen: set[int] = set()

    def make() -> nn.Module:
        module = make_activation()
        if id(module) in seen:
            raise ConfigurationError(
                f"the activation factory returned the same {type(module).__name__} module "
                "twice; every activation site needs its own: pass a class or a function that "
                "builds a new module per call"
            )
        seen.add(id(module))
        return module

    return make


def convert_activations(
    model: nn.Module,
    make_activation: Callable[[], nn.Module],
    targets: Iterable[str] | None = None,
) -> tuple[nn.Module, ActivationReport]:
    """Give every activation call site of ``model`` (kinds ``targets``, default
    :data:`~dsrelu_lightning.nn.activation_kinds.DEFAULT_KINDS`) a new module from
    ``make_activation``; the network's output sites are kept.

    Returns the network (``model`` itself unless its own forward had to be rewritten) and
    what was done. ``model`` is changed in place; its other in-place modules become
    out-of-place (see the module docstring).
    """
    kinds = resolve_kinds(targets)
    fresh = fresh_each_call(make_activation)
    made: set[int] = set()

    def make() -> nn.Module:
        module = fresh()
        made.add(id(module))
        return module

    graphs = trace_modules(model, kinds)
    output: set[tuple[str, str]] = set()
    _tail("", model, graphs, output)
    swapped = {
        path: {s.key for s in local.sites if (path, s.key) not in output}
        for path, local in graphs.items()
    }
    writes = in_place_writes(model, graphs, swapped)
    rewritten_writes = tuple(  # described before the rewrite changes them
        f"{path or '<root>'} ({', '.join(describe(node) for node in nodes)})"
        for path, nodes in writes.items()
    )
    replaced: Counter[str] = Counter()
    kept: list[str] = []
    root = model
    sample = make()
    for path, local in reversed(graphs.items()):  # children before their parents
        sites = [s for s in local.sites if s.key in swapped[path]]
        kept += [s.path for s in local.sites if s.key not in swapped[path]]
        if not sites and path not in writes:
            continue
        replaced.update(s.kind.name for s in sites)
        if local.graph is None or not (path in writes or _needs_graph(local, sites)):
            for site in sites:
                _set_submodule(local.module, site.target, make())
            continue
        make_out_of_place(local.graph, writes.get(path, []))
        rewritten = _rewrite(local, sites, make)
        if path:
            _set_submodule(root, path, rewritten)
        else:
            root = rewritten
    untraced = {path: local.error for path, local in graphs.items() if local.error is not None}
    out_of_place = _out_of_place(root, made) if replaced else ()
    out_of_place += rewritten_writes
    return root, ActivationReport(
        replaced, tuple(kept), untraced, type(sample).__name__, out_of_place
    )


def replace_activations(
    model: nn.Module,
    activation: ActivationSpec = "dsrelu",
    *,
    activation_args: Mapping[str, Any] | None = None,
    targets: Iterable[str] | None = None,
) -> nn.Module:
    """Return ``model`` with every activation call site its own new ``activation`` module.

    Args:
        model: any network (changed in place).
        activation: a registered name (``"dsrelu"``, ``"relu"``...), an ``nn.Module`` class
            or a zero-argument callable; each site gets a new module.
        activation_args: keyword arguments for the activation.
        targets: the kinds to replace (``["ReLU", "GELU"]``; default: the hidden
            nonlinearities, never the Sigmoid/Hardsigmoid gates).

    Logs what it replaced (count per original kind) at INFO; warns, naming them, about
    modules whose forward torch.fx could not trace (their functional calls stay, and a
    module they call twice stays shared). The returned object is ``model`` unless its own
    forward calls an activation as a function or twice, then a ``torch.fx.GraphModule``.
    """
    make = activation_factory(activation, **dict(activation_args or {}))
    converted, report = convert_activations(model, make, targets)
    logger.info("replace_activations: %s", report)
    warn_untraced(report)
    return converted


def warn_untraced(report: ActivationReport) -> None:
    """One warning naming the modules whose own activation calls could not be seen."""
    if report.untraced:
        where = "; ".join(f"{p or '<root>'} ({why})" for p, why in report.untraced.items())
        warnings.warn(
            f"replace_activations could not see every activation call of "
            f"{len(report.untraced)} module(s): {where}. Their registered activation modules "
            "were replaced one per attribute, but one called twice there stays shared, and "
            "activation functions (F.relu) called there stay as they were.",
            UserWarning,
            stacklevel=3,
        )

"""Where a network calls its activations: each module's own forward traced with torch.fx
(its submodules left as leaves), so that shared modules, functional calls (``F.relu``) and
tensor methods (``x.relu()``) are seen call by call."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch.fx as fx
from torch import nn

from dsrelu_lightning.nn.activation_kinds import ActivationKind

__all__ = ["LocalGraph", "Site", "is_sequential", "trace_modules"]


@dataclass(frozen=True)
class Site:
    """One activation call in ``owner``'s forward: ``node`` of its graph, or for a
    Sequential the child ``target`` it runs in order (``node`` None)."""

    owner: str
    kind: ActivationKind
    how: str  # "module", "function" or "method"
    target: str  # the submodule path (relative to owner), function or method name
    node: fx.Node | None = field(default=None, compare=False)
    in_place: bool = False

    @property
    def key(self) -> str:
        """The site's name within its owner: its graph node's, else the child's."""
        return self.node.name if self.node is not None else self.target

    @property
    def path(self) -> str:
        """Where the call site is, for messages: ``layer1.0: relu (module)``."""
        return f"{self.owner or '<root>'}: {self.target} ({self.how})"


@dataclass
class LocalGraph:
    """A module's own forward as traced (``graph``), or why it could not be (``error``)."""

    module: nn.Module
    graph: fx.Graph | None = None
    error: str | None = None
    sites: list[Site] = field(default_factory=list)


class _OwnForward(fx.Tracer):
    """Traces only the root's forward: every submodule call stays one call_module node."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return True


def is_sequential(module: nn.Module) -> bool:
    """Whether ``module`` runs its children in order (nn.Sequential's forward, subclasses too)."""
    return type(module).forward is nn.Sequential.forward


def _is_torch_leaf(module: nn.Module) -> bool:
    """torch's own layers without submodules (Conv2d, BatchNorm, Linear...): nothing to see."""
    return type(module).__module__.startswith("torch.") and not any(module.children())


def _kind_of_module(module: nn.Module, kinds: Sequence[ActivationKind]) -> ActivationKind | None:
    return next((k for k in kinds if isinstance(module, k.modules)), None)


def _node_site(
    owner: str, node: fx.Node, root: nn.Module, kinds: Sequence[ActivationKind]
) -> Site | None:
    if node.op == "call_module":
        module = root.get_submodule(str(node.target))
        kind = _kind_of_module(module, kinds)
        if kind is not None:
            in_place = bool(getattr(module, "inplace", False))
            return Site(owner, kind, "module", str(node.target), node, in_place)
    elif node.op == "call_function":
        for kind in kinds:
            if any(node.target is function for function in kind.functions):
                in_place = node.target in kind.in_place or bool(node.kwargs.get("inplace"))
                name = getattr(node.target, "__name__", str(node.target))
                return Site(owner, kind, "function", name, node, in_place)
    elif node.op == "call_method":
        for kind in kinds:
            if node.target in kind.methods:
                in_place = node.target in kind.in_place
                return Site(owner, kind, "method", str(node.target), node, in_place)
    return None


def _registered_sites(owner: str, module: nn.Module, kinds: Sequence[ActivationKind]) -> list[Site]:
    """One site per activation registered in ``module`` (or in its ModuleList/ModuleDict)."""
    sites = []
    for name, child in module.named_children():
        grandchildren = (
            child.named_children() if isinstance(child, nn.ModuleList | nn.ModuleDict) else ()
        )
        for target, candidate in [(name, child), *((f"{name}.{n}", c) for n, c in grandchildren)]:
            kind = _kind_of_module(candidate, kinds)
            if kind is not None:
                sites.append(Site(owner, kind, "module", target))
    return sites


def _function_attributes(module: nn.Module, kinds: Sequence[ActivationKind]) -> list[str]:
    """Activation functions ``module`` holds as attributes (nn.TransformerEncoderLayer's
    ``activation=F.relu``): calls that module replacement cannot reach."""
    functions = {f for kind in kinds for f in kind.functions}
    return [name for name, value in vars(module).items() if any(value is f for f in functions)]


def _trace(owner: str, module: nn.Module, kinds: Sequence[ActivationKind]) -> LocalGraph:
    local = LocalGraph(module)
    if is_sequential(module):  # runs each child once, in order: its registrations are its sites
        local.sites = _registered_sites(owner, module, kinds)
        return local
    if type(module).__module__.startswith("torch."):  # torch's own composite layers
        local.sites = _registered_sites(owner, module, kinds)
        if held := _function_attributes(module, kinds):
            local.error = f"{type(module).__name__} calls {', '.join(held)} as a function"
        return local
    try:
        local.graph = _OwnForward().trace(module)
    except Exception as error:  # fx raises many types on dynamic code; the message says why
        message = str(error).splitlines()[0] if str(error) else ""
        local.error = f"{type(error).__name__}: {message}"
        local.sites = _registered_sites(owner, module, kinds)
        return local
    for node in local.graph.nodes:
        site = _node_site(owner, node, module, kinds)
        if site is not None:
            local.sites.append(site)
    return local


def _walk(module: nn.Module, prefix: str, kinds: Sequence[ActivationKind]) -> Iterator[str]:
    """Paths of the modules whose own forward may call activations, parents before children."""
    if _kind_of_module(module, kinds) is not None or _is_torch_leaf(module):
        return
    if not isinstance(module, nn.ModuleList | nn.ModuleDict):  # containers run nothing
        yield prefix
    for name, child in module.named_children():
        yield from _walk(child, f"{prefix}.{name}" if prefix else name, kinds)


def trace_modules(model: nn.Module, kinds: Sequence[ActivationKind]) -> dict[str, LocalGraph]:
    """Every module of ``model`` that may call activations itself, by path ("" the root),
    parents before children, with its traced forward and the activation sites in it."""
    return {
        path: _trace(path, model.get_submodule(path), kinds) for path in _walk(model, "", kinds)
    }

"""GAttANet: the network-wide global attention agreement system.

VanRullen, Alamia, "GAttANet: Global attention agreement for convolutional neural networks",
ICANN 2021, arXiv:2104.05575. No official code was released (a public "replication" never
feeds the modulation back, freezes the backbone and returns first-pass logits; it was not
followed). Implemented from the paper's equations (../../docs/gattanet.md):

    conv layer i, activations X_i (B, C_i, H_i, W_i), K_i, Q_i ∈ R^{C_i × d}:
        k_i(x, y, :) = Σ_c X_i(x, y, c) · K_i(c, :)        (a bias-free 1x1 conv to d)
        q_i(x, y, :) = Σ_c X_i(x, y, c) · Q_i(c, :)
    dense layer j, activations X_j (B, C_j), one key/query vector per unit:
        k_j(c, :) = X_j(c) · K_j(c, :)                      q_j(c, :) = X_j(c) · Q_j(c, :)
    global query, equal weight per layer (n layers):
        q_avg = 1/n · Σ_layers mean_positions q_l                            (B, d)
    agreement (plain dot product, no softmax, no normalisation):
        gatta_i(x, y) = k_i(x, y, :) · q_avg           gatta_j(c) = k_j(c, :) · q_avg
    modulation, one scalar α per layer (α = 0 at init: the wrapped model starts as the baseline):
        X_l' = X_l · (1 + α_l · gatta_l)

Pass 1 is the ordinary forward pass and yields the keys and queries; pass k ≥ 2 re-runs the
network with every participating layer's output multiplied by ``1 + α·gatta`` as it is
produced, gatta computed from pass k−1's keys and global query; the prediction comes from the
last pass. Keys and queries of pass k (k ≥ 2, for k < iterations) are taken from the modulated
outputs X', which are that pass's activations. Gradients flow through every pass.

BatchNorm: in training each pass is normalised with its own batch statistics, and pass k ≥ 2
sees modulated activations. So that evaluation sees the same normalisation, every pass k ≥ 2
keeps its own running statistics of every BatchNorm of the model (``pass_statistics``, in the
state_dict; pass 1 uses the model's own), swapped in around that pass. With one shared
set, the running averages mix unmodulated and modulated activations and match neither (on
Fashion-MNIST: 88.6 % in eval mode against 92.8 % for the same weights with batch statistics).
Affine weights stay shared: running statistics are not learned weights.

Because the equations are linear in X, keys are never materialised: the query of a conv layer
is ``GAP(X) @ Q`` and its agreement ``Σ_c X(c, x, y) · (K q_avg)(c)`` — the same numbers with
O(B·C) extra memory instead of O(B·d·H·W).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, cast

import torch
from torch import nn
from torch.nn.parameter import UninitializedParameter

from attnzoo.domains import CHANNELS, check_option
from attnzoo.layers import run_fp32
from attnzoo.registry import did_you_mean

__all__ = ["GAttANet", "LayerAttention", "PassNormStatistics", "infer_channels", "wrap"]

# Modules whose output has the channel count of their input: skipped when the channel count of
# an nn.Sequential is read from its last element.
_CHANNEL_PRESERVING: tuple[type[nn.Module], ...] = (
    nn.Identity,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.AlphaDropout,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)


def _declared_channels(module: nn.Module) -> int | None:
    """The output channel count a module declares (see :func:`infer_channels`)."""
    for attribute in ("out_channels", "out_features", "num_features", "num_channels"):
        value = getattr(module, attribute, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    children = list(module.children())
    if isinstance(module, nn.Sequential):
        children = [child for child in children if not isinstance(child, _CHANNEL_PRESERVING)]
        return _declared_channels(children[-1]) if children else None
    # Any other module (a residual block, ...): its last registered submodule that declares a
    # count, e.g. the last norm of the branch or the projection shortcut. A guess, checked
    # against the real output at every call.
    for child in reversed(children):
        count = _declared_channels(child)
        if count is not None:
            return count
    return None


def infer_channels(
    model: nn.Module,
    layers: Iterable[str],
    example_input: Any = None,
) -> dict[str, int]:
    """Output channel count (dim 1) of each named submodule.

    With ``example_input`` the model is run once (eval mode, no grad, training flags restored)
    and the counts are read from the outputs. Without it they are read from the modules:
    ``out_channels`` (Conv), ``out_features`` (Linear), ``num_features`` (BatchNorm),
    ``num_channels`` (GroupNorm); for an ``nn.Sequential`` its last element that is not an
    activation, dropout or pooling; for any other module (a residual block) its last registered
    submodule that declares a count. The wrapper checks the real count at every call. Raises
    ValueError naming the layers whose count cannot be inferred.
    """
    names = list(layers)
    modules = dict(model.named_modules())
    if example_input is not None:
        found: dict[str, int] = {}
        handles = []
        for name in names:

            def record(_module: nn.Module, _args: Any, output: Any, name: str = name) -> None:
                if isinstance(output, torch.Tensor) and output.dim() >= 2:
                    found.setdefault(name, int(output.shape[1]))

            handles.append(modules[name].register_forward_hook(record))
        flags = {module: module.training for module in model.modules()}
        try:
            model.eval()
            with torch.no_grad():
                model(*example_input) if isinstance(example_input, tuple) else model(example_input)
        finally:
            for handle in handles:
                handle.remove()
            for module, flag in flags.items():
                module.training = flag
        missing = [n for n in names if n not in found]
        if missing:
            raise ValueError(
                f"layers {missing} produced no (B, C, ...) tensor output on the example input"
            )
        return found
    channels = {name: _declared_channels(modules[name]) for name in names}
    unknown = [n for n, c in channels.items() if c is None]
    if unknown:
        kinds = ", ".join(f"{n!r} ({type(modules[n]).__name__})" for n in unknown)
        raise ValueError(
            f"cannot infer the output channel count of {kinds}: pass channels={{name: C}} or "
            "example_input=<a batch the model accepts> to wrap()"
        )
    return {name: int(c) for name, c in channels.items() if c is not None}


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype keys and queries are kept in: x's own, float32 for fp16/bf16 under autocast."""
    if torch.is_autocast_enabled(x.device.type) and x.dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    return x.dtype


class LayerAttention(nn.Module):
    """Key/query projections K, Q ∈ R^{C × d} and the modulation strength α of one layer.

    For a conv layer K and Q are the weights of bias-free 1x1 convs ``C -> d`` (stored as
    (C, d) matrices); for a dense layer row c is unit c's own key/query vector. α starts at 0.
    K and Q are initialised like a 1x1 conv (uniform ±1/sqrt(C)); the paper does not say.

    ``channels=None`` (a layer that declares no channel count, e.g. a ReLU or a pooling): K
    and Q start as uninitialised parameters and are materialised, in place, from the first
    output the layer produces (:meth:`materialize`) or from a loaded state_dict.
    """

    def __init__(self, channels: int | None, d: int) -> None:
        super().__init__()
        self.d = d
        self.channels: int | None = None
        self.key: torch.Tensor = UninitializedParameter()  # (C, d) once materialised
        self.query: torch.Tensor = UninitializedParameter()  # (C, d) once materialised
        self.alpha = nn.Parameter(torch.zeros(()))
        if channels is not None:
            self.materialize(channels)
        self.register_load_state_dict_pre_hook(LayerAttention._materialize_from_state)

    @property
    def is_lazy(self) -> bool:
        """True until the channel count is known (first forward or loaded state_dict)."""
        return self.channels is None

    def materialize(self, channels: int) -> None:
        """Give K and Q their shape (C, d) and their initial values (no-op once known)."""
        if self.channels is not None:
            return
        bound = 1.0 / math.sqrt(channels)
        with torch.no_grad():
            for parameter in (self.key, self.query):
                if isinstance(parameter, UninitializedParameter):
                    parameter.materialize((channels, self.d))
                parameter.uniform_(-bound, bound)
        self.channels = channels

    def _materialize_from_state(self, state_dict: Mapping[str, Any], prefix: str, *_: Any) -> None:
        stored = state_dict.get(prefix + "key")
        if self.is_lazy and isinstance(stored, torch.Tensor) and stored.dim() == 2:
            self.materialize(int(stored.shape[0]))

    def layer_query(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over positions of q: (B, d), in float32 under autocast (a sum over C of
        unnormalised products: fp16 overflows at ordinary activation scales)."""
        return run_fp32(self._layer_query, x, dtype=_compute_dtype(x))

    def _layer_query(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return x.mean(dim=(2, 3)) @ self.query.to(x.dtype)  # (B, C) @ (C, d) -> (B, d)
        return (x @ self.query.to(x.dtype)) / x.shape[1]  # mean over the C_j units -> (B, d)

    def agreement(self, x: torch.Tensor, global_query: torch.Tensor) -> torch.Tensor:
        """k · q_avg at every position: (B, 1, H, W) for conv, (B, C) for dense layers; in
        float32 under autocast, so that α = 0 multiplies by exactly 1 (an fp16 inf times 0
        would be NaN)."""
        return run_fp32(self._agreement, x, global_query, dtype=_compute_dtype(x))

    def _agreement(self, x: torch.Tensor, global_query: torch.Tensor) -> torch.Tensor:
        per_channel = global_query.to(x.dtype) @ self.key.to(x.dtype).t()  # (B, d)@(d, C) -> (B, C)
        if x.dim() == 4:
            return torch.einsum("bchw,bc->bhw", x, per_channel).unsqueeze(1)  # (B, 1, H, W)
        return x * per_channel  # (B, C)

    def extra_repr(self) -> str:
        channels = "inferred at the first forward" if self.is_lazy else self.channels
        return f"channels={channels}, d={self.d}"


class _Hook:
    """Forward hook on one participating layer; all per-call state lives on the wrapper."""

    def __init__(self, owner: GAttANet, name: str) -> None:
        self.owner = owner
        self.name = name

    def __call__(self, module: nn.Module, args: Any, output: Any) -> Any:
        return self.owner._on_layer_output(self.name, output)


_NORM_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


class PassNormStatistics(nn.Module):
    """Running statistics of every tracked BatchNorm of a model, for one pass k ≥ 2: buffers
    ``{norm name with '.' as '__'}__{running_mean, running_var, num_batches_tracked}``,
    initialised from the model's own (so a pretrained model starts from its statistics)."""

    def __init__(self, norms: Mapping[str, nn.modules.batchnorm._BatchNorm]) -> None:
        super().__init__()
        for name, norm in norms.items():
            for field in _NORM_STATISTICS:
                value = getattr(norm, field)
                self.register_buffer(f"{_key(name)}__{field}", value.detach().clone())

    def exchange(self, norms: Mapping[str, nn.modules.batchnorm._BatchNorm]) -> None:
        """Swap these statistics with the norms' own (its own inverse). The tensors themselves
        change places, never their values: eval-mode BatchNorm saves its running statistics
        for the backward pass, so an in-place copy would break autograd."""
        for name, norm in norms.items():
            for field in _NORM_STATISTICS:
                key = f"{_key(name)}__{field}"
                norm._buffers[field], self._buffers[key] = self._buffers[key], norm._buffers[field]


def _key(name: str) -> str:
    return name.replace(".", "__") or "__root__"


class GAttANet(nn.Module):
    """A model wrapped with the GAttANet global attention system (see :func:`wrap`).

    After each call, ``global_query`` holds the q_avg (B, d) and ``agreement`` the maps
    name -> (B, 1, H, W) or (B, C) that modulated the last pass (detached; for iterations=1,
    those computed from the single pass, which modulate nothing).
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Iterable[str],
        d: int = 16,
        iterations: int = 2,
        channels: Mapping[str, int] | None = None,
        example_input: Any = None,
    ) -> None:
        super().__init__()
        if isinstance(layers, str):
            layers = [layers]
        names = list(layers)
        if not names:
            raise ValueError("wrap() needs at least one participating layer name, got none")
        if len(set(names)) != len(names):
            raise ValueError(f"participating layers are listed more than once: {names}")
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ValueError(f"d (key/query width) must be an int >= 1, got {d!r}")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations must be an int >= 1, got {iterations!r}")
        modules = dict(model.named_modules())
        for name in names:
            if name not in modules:
                hint = did_you_mean(name, modules)
                raise ValueError(f"model has no submodule named {name!r}.{hint}")
        given: dict[str, int | None] = dict(channels or {})
        extra = sorted(set(given) - set(names))
        if extra:
            raise ValueError(f"channels= names layers that do not participate: {extra}")
        for name, count in given.items():
            check_option("wrap", f"channels[{name!r}]", count, CHANNELS)
        to_infer = [n for n in names if n not in given]
        if to_infer and example_input is not None:
            given.update(infer_channels(model, to_infer, example_input))
        else:  # None: the layer declares no count; its K, Q take it from its first output
            given.update({n: _declared_channels(modules[n]) for n in to_infer})

        self.model = model
        self.layers = tuple(names)
        self.d = d
        self.iterations = iterations
        # ModuleDict keys cannot contain "."; keep the mapping explicit.
        self._keys = {name: name.replace(".", "__") or "__root__" for name in names}
        if len(set(self._keys.values())) != len(names):
            raise ValueError(f"layer names collide once '.' becomes '__': {names}")
        self.attention = nn.ModuleDict({self._keys[n]: LayerAttention(given[n], d) for n in names})
        self._norm_names = tuple(
            name
            for name, module in model.named_modules()
            if isinstance(module, nn.modules.batchnorm._BatchNorm)
            and module.track_running_stats
            and module.running_mean is not None
        )
        self.pass_statistics = nn.ModuleList(
            PassNormStatistics(self._norms()) for _ in range(iterations - 1)
        )
        self.global_query: torch.Tensor | None = None
        self.agreement: dict[str, torch.Tensor] = {}
        self._call: dict[str, Any] | None = None  # per-call state, None outside forward
        for name in names:
            modules[name].register_forward_hook(_Hook(self, name))

    def _norms(self) -> dict[str, nn.modules.batchnorm._BatchNorm]:
        return {name: self.model.get_submodule(name) for name in self._norm_names}  # type: ignore[misc]

    def layer_attention(self, name: str) -> LayerAttention:
        """K, Q and α of a participating layer, by its qualified name in the wrapped model."""
        if name not in self._keys:
            raise ValueError(f"{name!r} is not a participating layer; those are {self.layers}")
        return self.attention[self._keys[name]]  # type: ignore[return-value]

    @property
    def alphas(self) -> dict[str, torch.Tensor]:
        """α of every participating layer, by layer name."""
        return {name: self.layer_attention(name).alpha for name in self.layers}

    def _on_layer_output(self, name: str, output: Any) -> Any:
        call = self._call
        if call is None:  # the inner model is being run on its own
            return None
        if not isinstance(output, torch.Tensor) or output.dim() not in (2, 4):
            got = (
                f"rank {output.dim()} with shape {tuple(output.shape)}"
                if isinstance(output, torch.Tensor)
                else type(output).__name__
            )
            raise ValueError(
                f"GAttANet layer {name!r} must output (B, C, H, W) (conv) or (B, C) (dense) "
                f"tensors of rank 4 or 2, got {got}"
            )
        attention = self.layer_attention(name)
        if attention.is_lazy:
            attention.materialize(int(output.shape[1]))
        if output.shape[1] != attention.channels:
            raise ValueError(
                f"GAttANet layer {name!r} was built for {attention.channels} channels, got "
                f"{output.shape[1]} (output shape {tuple(output.shape)}); if the count was "
                "inferred wrongly, pass channels={name: C} or example_input= to wrap()"
            )
        current: dict[str, torch.Tensor] = call["current"]
        if name in current:
            raise ValueError(
                f"GAttANet layer {name!r} ran twice in one forward pass; each participating "
                "module must run once per pass (wrap a module that is not reused)"
            )
        previous: dict[str, torch.Tensor] | None = call["previous"]
        if previous is not None:
            if previous[name].shape != output.shape:
                raise ValueError(
                    f"GAttANet layer {name!r} changed shape between passes: "
                    f"{tuple(previous[name].shape)} then {tuple(output.shape)}"
                )
            gatta = attention.agreement(previous[name], call["global_query"])
            call["agreement"][name] = gatta
            output = output * (1 + attention.alpha * gatta).to(output.dtype)
        current[name] = output
        return output

    def _finish_pass(self, call: dict[str, Any]) -> None:
        current: dict[str, torch.Tensor] = call["current"]
        missing = [n for n in self.layers if n not in current]
        if missing:
            raise ValueError(
                f"GAttANet layers {missing} did not run during the forward pass; every "
                "participating module must run once per pass"
            )
        queries = [self.layer_attention(n).layer_query(current[n]) for n in self.layers]
        call["global_query"] = torch.stack(queries).mean(dim=0)  # (n, B, d) -> (B, d)
        call["previous"], call["current"] = current, {}
        call["agreement"] = {}

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self._call is not None:
            raise RuntimeError("GAttANet.forward is not re-entrant")
        call: dict[str, Any] = {"current": {}, "previous": None, "agreement": {}}
        self._call = call
        try:
            output = self.model(*args, **kwargs)
            norms = self._norms()
            for statistics in cast("list[PassNormStatistics]", list(self.pass_statistics)):
                self._finish_pass(call)
                statistics.exchange(norms)  # this pass's BatchNorm statistics in
                try:
                    output = self.model(*args, **kwargs)
                finally:
                    statistics.exchange(norms)  # and back out, updated in training
            if self.iterations == 1:
                # Nothing is modulated; expose the agreement the next pass would use.
                self._finish_pass(call)
                call["agreement"] = {
                    n: self.layer_attention(n).agreement(call["previous"][n], call["global_query"])
                    for n in self.layers
                }
            else:
                missing = [n for n in self.layers if n not in call["current"]]
                if missing:
                    raise ValueError(
                        f"GAttANet layers {missing} did not run during the last pass; every "
                        "participating module must run once per pass"
                    )
        finally:
            self._call = None
        self.global_query = call["global_query"].detach()
        self.agreement = {name: call["agreement"][name].detach() for name in self.layers}
        return output

    def extra_repr(self) -> str:
        return f"layers={list(self.layers)}, d={self.d}, iterations={self.iterations}"


def wrap(
    model: nn.Module,
    layers: Iterable[str],
    d: int = 16,
    iterations: int = 2,
    channels: Mapping[str, int] | None = None,
    example_input: Any = None,
) -> GAttANet:
    """Add the GAttANet global attention system to ``model``.

    ``layers``: qualified names (``model.named_modules()``) of the participating submodules;
    their outputs must be (B, C, H, W) (conv) or (B, C) (dense). ``d``: key/query width.
    ``iterations``: forward passes with shared weights (2 in the paper; 1 is the baseline with
    the attention read out). Channel counts are read from the module types
    (:func:`infer_channels`), or taken from ``channels={name: C}`` or from one dry run on
    ``example_input=`` (eval mode, no grad).

    A layer that declares no count (an activation, a pooling, a custom block) gets it from its
    first output: its K and Q are uninitialised parameters until the first forward, which
    materialises them in place (PyTorch's lazy-module mechanism). An optimizer may be built
    before that call (it holds the same parameter objects); anything that reads their shape
    (counting parameters, saving a state_dict) must wait for the first forward, or pass
    ``channels``/``example_input``. Loading a state_dict materialises them from its shapes.
    Adds 2·d·C parameters per layer plus one α per layer; α = 0 leaves the output unchanged.
    """
    return GAttANet(
        model, layers, d=d, iterations=iterations, channels=channels, example_input=example_input
    )

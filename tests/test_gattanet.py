"""GAttANet wrapper against the paper's equations, recomputed naively in float64 with explicit
loops over positions and units, on a tiny model with two conv and two dense layers."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnzoo.gattanet import GAttANet, infer_channels, wrap

LAYERS = ["conv1", "conv2", "head.fc1", "head.fc2"]


class Tiny(nn.Module):
    """conv (2->3) -> tanh -> conv (3->4, stride 2) -> relu -> dense 24->5 -> relu -> dense 5->3."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.head = nn.Module()
        self.head.fc1 = nn.Linear(4 * 3 * 2, 5)
        self.head.fc2 = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.conv1(x))  # (B, 3, 5, 4)
        x = torch.relu(self.conv2(x))  # (B, 4, 3, 2)
        x = torch.relu(self.head.fc1(x.flatten(1)))  # (B, 5)
        return self.head.fc2(x)  # (B, 3)


def tiny_input(batch: int = 2, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(batch, 2, 5, 4, generator=torch.Generator().manual_seed(7), dtype=dtype)


def wrapped_tiny(iterations: int = 2, alpha: bool = True) -> GAttANet:
    torch.manual_seed(0)
    model = wrap(Tiny(), LAYERS, d=3, iterations=iterations).double()
    if alpha:
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for i, name in enumerate(LAYERS):
                attention = model.layer_attention(name)
                attention.alpha.fill_(0.3 - 0.2 * i)
                for p in (attention.key, attention.query):  # larger than the init, so that
                    p.copy_(torch.randn(p.shape, generator=generator))  # the effect shows
    return model


# ---------------------------------------------------------------------------------------------
# naive float64 reference


def naive_tiny_forward(model: Tiny, x, modulate):
    """Tiny's forward written out, ``modulate(name, output)`` applied to each layer output."""
    a = modulate("conv1", F.conv2d(x, model.conv1.weight, model.conv1.bias, padding=1))
    a = torch.tanh(a)
    b = F.conv2d(a, model.conv2.weight, model.conv2.bias, stride=2, padding=1)
    b = torch.relu(modulate("conv2", b))
    fc1, fc2 = model.head.fc1, model.head.fc2
    c = torch.relu(modulate("head.fc1", b.flatten(1) @ fc1.weight.t() + fc1.bias))
    return modulate("head.fc2", c @ fc2.weight.t() + fc2.bias)


def naive_keys_queries(activation, K, Q):
    """k and q at every position: conv (B, C, H, W) -> (B, H, W, d); dense (B, C) -> (B, C, d)."""
    d = K.shape[1]
    if activation.dim() == 4:
        batch, channels, height, width = activation.shape
        k = torch.zeros(batch, height, width, d, dtype=torch.float64)
        q = torch.zeros(batch, height, width, d, dtype=torch.float64)
        for n in range(batch):
            for y in range(height):
                for x in range(width):
                    for c in range(channels):
                        k[n, y, x] += activation[n, c, y, x] * K[c]
                        q[n, y, x] += activation[n, c, y, x] * Q[c]
        return k, q
    batch, units = activation.shape
    k = torch.zeros(batch, units, d, dtype=torch.float64)
    q = torch.zeros(batch, units, d, dtype=torch.float64)
    for n in range(batch):
        for c in range(units):
            k[n, c] = activation[n, c] * K[c]
            q[n, c] = activation[n, c] * Q[c]
    return k, q


def naive_gattanet(wrapper: GAttANet, x, iterations: int):
    inner = wrapper.model
    params = {
        name: tuple(
            t.detach().clone()
            for t in (
                wrapper.layer_attention(name).key,
                wrapper.layer_attention(name).query,
                wrapper.layer_attention(name).alpha,
            )
        )
        for name in LAYERS
    }
    with torch.no_grad():
        gatta: dict[str, torch.Tensor] = {}
        q_avg = None
        output = None
        for pass_index in range(iterations):
            activations: dict[str, torch.Tensor] = {}

            def modulate(name, out, gatta=gatta, first=pass_index == 0, activations=activations):
                if not first:
                    factor = 1 + params[name][2] * gatta[name]
                    if out.dim() == 4:
                        factor = factor[:, None]  # (B, 1, H, W)
                    out = out * factor
                activations[name] = out
                return out

            output = naive_tiny_forward(inner, x, modulate)
            if pass_index == iterations - 1:
                break
            # global query: per-layer mean over positions, then equal-weight mean over layers
            per_layer, keys = [], {}
            for name in LAYERS:
                K, Q, _ = params[name]
                k, q = naive_keys_queries(activations[name], K, Q)
                keys[name] = k
                positions = q.reshape(q.shape[0], -1, q.shape[-1])  # (B, positions, d)
                per_layer.append(positions.sum(1) / positions.shape[1])
            q_avg = sum(per_layer) / len(per_layer)
            gatta = {}
            for name in LAYERS:
                k = keys[name]
                g = torch.zeros(k.shape[:-1], dtype=torch.float64)
                for index in torch.cartesian_prod(*[torch.arange(s) for s in k.shape[:-1]]):
                    index = tuple(index.tolist())
                    g[index] = torch.dot(k[index], q_avg[index[0]])
                gatta[name] = g
    return output, q_avg, gatta


@pytest.mark.parametrize("iterations", [2, 3])
def test_equations_match_naive_float64_recomputation(iterations):
    wrapper = wrapped_tiny(iterations).eval()
    x = tiny_input()
    expected, q_avg, gatta = naive_gattanet(wrapper, x, iterations)
    torch.testing.assert_close(wrapper(x), expected)
    torch.testing.assert_close(wrapper.global_query, q_avg)
    for name in LAYERS:
        got = wrapper.agreement[name]
        if got.dim() == 4:
            assert got.shape[1] == 1
            got = got[:, 0]
        torch.testing.assert_close(got, gatta[name])
    # the modulation is not negligible here, so this comparison can fail
    assert (wrapper(x) - wrapper.model(x)).abs().max() > 1e-3


def test_agreement_maps_shapes_and_iterations_one_is_the_baseline():
    wrapper = wrapped_tiny(iterations=1)
    x = tiny_input(batch=3)
    torch.testing.assert_close(wrapper(x), wrapper.model(x), rtol=0, atol=0)
    assert wrapper.global_query.shape == (3, 3)
    assert wrapper.agreement["conv1"].shape == (3, 1, 5, 4)
    assert wrapper.agreement["conv2"].shape == (3, 1, 3, 2)
    assert wrapper.agreement["head.fc1"].shape == (3, 5)
    assert wrapper.agreement["head.fc2"].shape == (3, 3)


# ---------------------------------------------------------------------------------------------
# properties


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_zero_alpha_output_equals_unwrapped_exactly(train):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 6),
        nn.ReLU(),
        nn.Linear(6, 4),
    ).train(train)
    x = torch.randn(3, 3, 6, 7)
    reference = model(x)
    wrapper = wrap(model, ["1", "3", "6", "8"], d=4)
    assert all(a.item() == 0.0 for a in wrapper.alphas.values())
    out = wrapper(x)
    assert torch.equal(out, reference)
    assert wrapper.agreement["3"].abs().max() > 0  # the maps are real, only α is zero


def test_nonzero_alpha_changes_output_and_gradients_reach_alpha_keys_queries():
    wrapper = wrapped_tiny(alpha=False)
    x = tiny_input()
    baseline = wrapper(x).detach()
    out = wrapper(x)
    out.square().sum().backward()
    for name in LAYERS:
        attention = wrapper.layer_attention(name)
        assert attention.alpha.grad is not None and attention.alpha.grad.abs() > 0, name
    # at α = 0 the keys/queries receive exactly zero gradient (they only act through α)
    assert all(float(wrapper.layer_attention(n).key.grad.abs().max()) == 0 for n in LAYERS)

    wrapper.zero_grad()
    with torch.no_grad():
        for name in LAYERS:
            wrapper.layer_attention(name).alpha.fill_(0.5)
    out = wrapper(x)
    assert (out - baseline).abs().max() > 1e-3
    out.square().sum().backward()
    for pname, p in wrapper.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, pname


def test_alphas_are_registered_parameters_named_alpha():
    wrapper = wrapped_tiny()
    names = [n for n, _ in wrapper.named_parameters() if "alpha" in n]
    assert len(names) == len(LAYERS)
    assert {p.shape for n, p in wrapper.named_parameters() if "alpha" in n} == {torch.Size([])}
    assert set(wrapper.alphas) == set(LAYERS)
    overhead = sum(p.numel() for n, p in wrapper.named_parameters() if n.startswith("attention"))
    channels = 3 + 4 + 5 + 3
    assert overhead == 2 * 3 * channels + len(LAYERS)


@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_number_of_passes_is_the_one_asked(iterations):
    wrapper = wrapped_tiny(iterations)
    calls = []
    wrapper.model.register_forward_pre_hook(lambda module, args: calls.append(1))
    wrapper(tiny_input())
    assert len(calls) == iterations


def test_no_state_leaks_between_calls_and_inner_model_runs_plain():
    wrapper = wrapped_tiny()
    x = tiny_input(batch=2)
    wrapper(x).sum().backward()
    assert wrapper._call is None
    assert all(not t.requires_grad for t in wrapper.agreement.values())
    assert not wrapper.global_query.requires_grad
    # the hooks are inert outside the wrapper's forward
    plain = wrapper.model(x)
    naive_plain = naive_tiny_forward(wrapper.model, x, lambda name, out: out)
    torch.testing.assert_close(plain, naive_plain, rtol=0, atol=0)
    # a different batch size on the next call: nothing of the previous call is reused
    y = tiny_input(batch=1)
    out = wrapper(y)
    assert out.shape == (1, 3) and wrapper.global_query.shape == (1, 3)
    expected, _, _ = naive_gattanet(wrapper, y, 2)
    torch.testing.assert_close(out, expected)


def test_deepcopy_gives_an_independent_wrapper():
    wrapper = wrapped_tiny()
    clone = copy.deepcopy(wrapper)
    with torch.no_grad():
        clone.layer_attention("conv1").alpha.fill_(2.0)
    x = tiny_input()
    original_out = wrapper(x)
    original_query = wrapper.global_query
    clone_out = clone(tiny_input(batch=1))
    assert clone_out.shape == (1, 3)
    assert wrapper.global_query is original_query  # the clone's hooks fed the clone only
    assert clone.global_query.shape == (1, 3)
    torch.testing.assert_close(wrapper(x), original_out, rtol=0, atol=0)


def test_state_dict_round_trip():
    source = wrapped_tiny()
    torch.manual_seed(5)
    target = wrap(Tiny(), LAYERS, d=3).double()
    target.load_state_dict(source.state_dict())
    x = tiny_input()
    torch.testing.assert_close(target(x), source(x), rtol=0, atol=0)


def test_bf16_autocast_and_channels_last():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 1))
    wrapper = wrap(model, ["1", "2"], d=4, example_input=torch.randn(1, 3, 4, 4))  # ReLU: no C
    with torch.no_grad():
        for a in wrapper.alphas.values():
            a.fill_(0.1)
    x = torch.randn(2, 3, 9, 7)
    reference = wrapper(x)
    cl = wrapper(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(cl, reference, rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = wrapper(x * 10)
    assert torch.isfinite(out).all()


# ---------------------------------------------------------------------------------------------
# errors


def test_unknown_layer_lists_close_matches():
    with pytest.raises(ValueError, match="Did you mean: conv1"):
        wrap(Tiny(), ["conv1x"])
    with pytest.raises(ValueError, match="no submodule named 'nothing_like_it'"):
        wrap(Tiny(), ["nothing_like_it"])


@pytest.mark.parametrize("iterations", [0, -1, 1.5, True])
def test_invalid_iterations(iterations):
    with pytest.raises(ValueError, match="iterations"):
        wrap(Tiny(), LAYERS, iterations=iterations)


def test_invalid_d_and_empty_or_repeated_layers():
    with pytest.raises(ValueError, match="d "):
        wrap(Tiny(), LAYERS, d=0)
    with pytest.raises(ValueError, match="at least one"):
        wrap(Tiny(), [])
    with pytest.raises(ValueError, match="more than once"):
        wrap(Tiny(), ["conv1", "conv1"])


class Sequence3d(nn.Module):
    """A layer whose output is (B, C, L): rank 3, not supported."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv1d(2, 4, 1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.proj(x).mean(-1))


def test_rank_3_output_is_rejected():
    wrapper = wrap(Sequence3d(), ["proj", "fc"])
    with pytest.raises(ValueError, match=r"rank 4 or 2, got rank 3"):
        wrapper(torch.randn(2, 2, 5))
    assert wrapper._call is None  # the failed call left no state behind


class Block(nn.Module):
    """A block that declares no channel count (a bare weight, no submodule)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(5, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(F.conv2d(x, self.weight)) + 1


class Residual(nn.Module):
    """A residual block: the count comes from its last registered submodule that declares one."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, 7, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(7)
        self.conv2 = nn.Conv2d(7, cout, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return self.relu(branch + self.shortcut(x))


def test_channel_inference_follows_sequentials_and_residual_blocks():
    model = nn.Sequential(
        nn.Sequential(Residual(3, 4), Residual(4, 6)),  # a "stage"
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Sequential(nn.Linear(6, 9), nn.Dropout(0.0), nn.ReLU()),
    )
    wrapper = wrap(model, ["0", "0.1", "4"])
    assert [wrapper.layer_attention(n).channels for n in ("0", "0.1", "4")] == [6, 6, 9]
    assert wrapper(torch.randn(2, 3, 5, 5)).shape == (2, 9)


def test_channel_inference_errors_and_alternatives():
    torch.manual_seed(0)
    model = nn.Sequential(Block(), nn.Conv2d(5, 2, 1))
    with pytest.raises(ValueError, match=r"cannot infer .*'0' \(Block\).*channels="):
        infer_channels(model, ["0", "1"])
    lazy = wrap(copy.deepcopy(model), ["0", "1"])  # Block's count comes from its first output
    assert lazy.layer_attention("0").is_lazy and not lazy.layer_attention("1").is_lazy
    by_mapping = wrap(copy.deepcopy(model), ["0", "1"], channels={"0": 5})
    assert by_mapping.layer_attention("0").channels == 5
    model.train()
    by_example = wrap(model, ["0", "1"], example_input=torch.randn(1, 3, 4, 4))
    assert by_example.layer_attention("0").channels == 5
    assert by_example.layer_attention("1").channels == 2
    assert model.training and all(m.training for m in model.modules())  # flags restored
    with pytest.raises(ValueError, match="do not participate"):
        wrap(copy.deepcopy(model), ["1"], channels={"0": 5})
    wrong = wrap(copy.deepcopy(model), ["0", "1"], channels={"0": 7})
    with pytest.raises(ValueError, match=r"built for 7 channels, got 5.*channels="):
        wrong(torch.randn(1, 3, 4, 4))


class Skipping(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(2, 3, 1)
        self.b = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor, skip: bool = False) -> torch.Tensor:
        x = self.a(x)
        return x if skip else self.b(self.b(x))


def test_layer_that_runs_twice_or_not_at_all_is_an_error():
    wrapper = wrap(Skipping(), ["a", "b"])
    with pytest.raises(ValueError, match="ran twice"):
        wrapper(torch.randn(1, 2, 3, 3))
    with pytest.raises(ValueError, match=r"\['b'\] did not run"):
        wrapper(torch.randn(1, 2, 3, 3), skip=True)
    assert wrapper._call is None


@pytest.mark.slow
def test_torch_compile_matches_eager():
    wrapper = wrapped_tiny().float().eval()
    x = tiny_input(dtype=torch.float32)
    torch._dynamo.reset()
    compiled = torch.compile(wrapper)
    with torch.no_grad():
        expected = wrapper(x)
        expected_query = wrapper.global_query
        got = compiled(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(wrapper.global_query, expected_query, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["resnet20"])  # resnet18 works too; 3 s to build
def test_built_in_resnets_wrap_by_name_at_their_documented_layers(name):
    import attnzoo

    torch.manual_seed(0)
    base = attnzoo.models.create(name, num_classes=4).eval()
    wrapped = attnzoo.models.create(name, attention="gattanet", num_classes=4).eval()
    wrapped.model.load_state_dict(base.state_dict())
    stages = [n for n in wrapped.layers if n.startswith("layer")]
    assert wrapped.layers == (*stages, "fc") and len(stages) >= 3  # every stage + classifier
    x = torch.randn(1, 3, 16, 16)
    assert torch.equal(wrapped(x), base(x))
    assert wrapped.agreement["fc"].shape == (1, 4)


def test_each_pass_keeps_its_own_batchnorm_statistics():
    """Train mode normalises each pass with its own batch statistics; eval must too. With BN
    momentum 1 the running statistics are those of the last batch, so eval on that batch must
    reproduce the training-mode output (up to the unbiased running variance). With one shared
    set of statistics (the bug this guards against) pass 1 and pass 2 overwrite each other."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8, momentum=1.0),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8, momentum=1.0),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )
    wrapped = wrap(net, layers=["2", "5"], d=4, channels={"2": 8, "5": 8})
    with torch.no_grad():
        for alpha in wrapped.alphas.values():
            alpha.fill_(1.0)
    x = torch.randn(16, 3, 12, 12)
    with torch.no_grad():
        trained = wrapped.train()(x)
        evaluated = wrapped.eval()(x)
    torch.testing.assert_close(evaluated, trained, rtol=1e-3, atol=1e-3)
    keys = [k for k in wrapped.state_dict() if k.startswith("pass_statistics.0.")]
    assert len(keys) == 6  # 2 norms x (running_mean, running_var, num_batches_tracked)
    pass1 = wrapped.model[4].running_mean
    pass2 = wrapped.pass_statistics[0].get_buffer("4__running_mean")
    assert not torch.allclose(pass1, pass2)  # modulation changed pass 2's statistics


def test_backward_through_an_eval_mode_batchnorm_model():
    # Eval-mode BatchNorm saves its running statistics for the backward pass: swapping the
    # per-pass statistics must not modify those tensors (in-place copies did).
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3)
    )
    net(torch.randn(2, 3, 6, 6))
    wrapped = wrap(net, layers=["2", "4"], channels={"2": 4, "4": 3}).eval()
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    wrapped(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()

"""attnzoo.attach: placements, channel counts, chaining, errors, and torchvision/timm ResNets."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import attnzoo
from _vision_imports import import_timm, import_torchvision
from attnzoo import models
from attnzoo.attach import AttachedChain, AttendedInput, attach


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def attention_modules(model: nn.Module, name: str) -> list[tuple[str, nn.Module]]:
    cls = attnzoo.module_info(name).cls
    return [(n, m) for n, m in model.named_modules() if type(m) is cls]


def is_video(name: str) -> bool:
    info = attnzoo.module_info(name)
    return info.example_inputs(1, 4, 4)[0].dim() != 4


GATES = attnzoo.list_modules(kind="gate")
IMAGE_GATES = [n for n in GATES if not is_video(n)]
VIDEO_GATES = [n for n in GATES if is_video(n)]


def train_one_step(model: nn.Module, name: str, size: int = 32) -> None:
    """One SGD step (lr 0.1): the loss is finite and the inserted modules' parameters move."""
    torch.manual_seed(0)
    model.train()
    inserted = attention_modules(model, name)
    assert inserted, f"{name} was not inserted"
    params = {f"{prefix}.{n}": p for prefix, m in inserted for n, p in m.named_parameters()}
    before = {n: p.detach().clone() for n, p in params.items()}
    x = torch.randn(2, 3, size, size)
    loss = F.cross_entropy(model(x), torch.tensor([0, 1]))
    assert torch.isfinite(loss)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                assert torch.isfinite(p.grad).all()
                p -= 0.1 * p.grad
    # Over all inserted copies: a single copy can be dead at init (e.g. a 1-unit ReLU
    # bottleneck at 16 channels), which is the module's business, not attach's.
    changed = [n for n, p in params.items() if not torch.equal(before[n], p)]
    assert changed or not params, f"no parameter of the inserted {name} modules changed"


@pytest.fixture(scope="module")
def plain_resnet50() -> nn.Module:
    torch.manual_seed(0)
    return models.create("resnet50")


# ---------------------------------------------------------------------------------------------
# Every registered gate on a CIFAR ResNet and on ResNet-50 (computed at test time)


@pytest.mark.parametrize("name", IMAGE_GATES)
def test_every_gate_attaches_to_resnet20_and_trains(name):
    torch.manual_seed(0)
    model = attach(models.create("resnet20"), name, input_size=(32, 32))
    train_one_step(model, name)


@pytest.mark.parametrize("name", IMAGE_GATES)
def test_every_gate_attaches_to_resnet50_and_trains(name, plain_resnet50):
    torch.manual_seed(0)
    # ImageNet stem at 64x64: stage 4 at 2x2, a fraction of the cost of small_input at 32x32.
    # Size-bound RGA embeds the N relations to N/8: stage 4 at 2x2 (N = 4) is too small for it
    # at this input size, so those modules go to stages 1-3 here.
    stages = [1, 2, 3] if attnzoo.module_info(name).size_bound else None
    model = attach(copy.deepcopy(plain_resnet50), name, stages=stages, input_size=(64, 64))
    train_one_step(model, name, size=64)


@pytest.mark.parametrize("name", attnzoo.list_modules(kind="stage"))
def test_every_stage_module_goes_between_stages_and_trains(name):
    torch.manual_seed(0)
    model = attach(models.create("resnet20"), name)
    assert [n for n, _ in attention_modules(model, name)] == ["layer1.3", "layer2.3"]
    train_one_step(model, name)


@pytest.mark.parametrize("name", VIDEO_GATES)
def test_video_gates_are_rejected_clearly(name):
    with pytest.raises(ValueError, match="rank-5"):
        attach(models.create("resnet20"), name)


# ---------------------------------------------------------------------------------------------
# Placements


def test_block_end_goes_after_the_last_norm_of_every_block():
    model = attach(models.create("resnet20"), "se")
    found = [n for n, _ in attention_modules(model, "se")]
    assert len(found) == 9
    assert all(n.endswith(".bn2.1") for n in found)
    assert model.layer3[2].bn2[1].channels == 64  # computed from the norm's num_features
    model50 = attach(models.create("resnet50"), "se")
    found50 = [n for n, _ in attention_modules(model50, "se")]
    assert len(found50) == 16 and all(n.endswith(".bn3.1") for n in found50)
    assert model50.layer4[0].bn3[1].channels == 2048


def test_block_end_in_preact_bottleneck_follows_conv3():
    model = attach(models.create("preact_resnet164"), "se", stages=[1])
    assert len(attention_modules(model, "se")) == 18
    assert isinstance(model.layer1[0].conv3, AttachedChain)
    assert model.layer1[0].conv3[1].channels == 64


def test_block_end_sits_before_the_residual_add():
    """With a gate that zeroes its input, every block computes ReLU(shortcut) only."""
    model = attach(models.create("resnet20"), "se", stages=[2]).eval()
    block = model.layer2[1]
    gate = block.bn2[1]
    with torch.no_grad():
        gate.fc2.weight.zero_()
        gate.fc2.bias.fill_(-1e4)  # sigmoid -> 0: the residual branch contributes nothing
    x = torch.randn(2, 32, 8, 8)
    torch.testing.assert_close(block(x), torch.relu(x))


def test_block_input_attends_both_branch_and_shortcut():
    model = attach(models.create("resnet20"), "gala")  # paper stage 3 (conv4_x)
    wrapped = [n for n, m in model.named_modules() if isinstance(m, AttendedInput)]
    assert wrapped == ["layer3.0", "layer3.1", "layer3.2"]
    first = model.layer3[0]
    assert first.attention.channels == 32  # the block's input width
    seen: dict[str, torch.Tensor] = {}

    def keep(key: str, use_output: bool):
        def hook(module, args, output) -> None:
            seen[key] = output if use_output else args[0]

        return hook

    first.block.downsample.register_forward_hook(keep("short", False))
    first.block.conv1.register_forward_hook(keep("branch", False))
    first.attention.register_forward_hook(keep("gala", True))
    model.eval()(torch.randn(1, 3, 32, 32))
    assert seen["short"] is seen["gala"] and seen["branch"] is seen["gala"]


def test_stage_end_once_per_stage_except_the_last():
    model = attach(models.create("resnet50"), "bam")
    found = [n for n, _ in attention_modules(model, "bam")]
    assert found == ["layer1.3", "layer2.4", "layer3.6"]
    assert [m.channels for _, m in attention_modules(model, "bam")] == [256, 512, 1024]


def test_last_block_and_between_stages():
    model = attach(models.create("resnet20"), "se", placement="last_block")
    assert [n for n, _ in attention_modules(model, "se")] == [
        "layer1.2.bn2.1",
        "layer2.2.bn2.1",
        "layer3.2.bn2.1",
    ]
    model = attach(models.create("resnet20"), "se", placement="between_stages", stages=[1, 3])
    assert [n for n, _ in attention_modules(model, "se")] == ["layer1.3", "layer3.3"]


def test_paper_stages_and_explicit_stages():
    model = attach(models.create("resnet50"), "gc")  # GCNet: c3-c5 = stages 2-4
    stages = sorted({n.split(".")[0] for n, _ in attention_modules(model, "gc")})
    assert stages == ["layer2", "layer3", "layer4"]
    model = attach(models.create("resnet50"), "nonlocal")  # res3 and res4
    assert [n for n, _ in attention_modules(model, "nonlocal")] == ["layer2.4", "layer3.6"]
    model = attach(models.create("resnet50"), "se", stages=[4])
    assert len(attention_modules(model, "se")) == 3


def test_explicit_module_names():
    model = attach(models.create("resnet20"), "se", placement=["conv1", "layer2.0.conv1"])
    assert isinstance(model.conv1, AttachedChain) and model.conv1[1].channels == 16
    assert model.layer2[0].conv1[1].channels == 32
    model(torch.randn(2, 3, 32, 32))
    # Non-local's paper placement inside res3/res4: after named blocks (widths from the blocks).
    names = ["layer2.1", "layer2.3", "layer3.1", "layer3.3", "layer3.5"]
    model = attach(models.create("resnet50"), "nonlocal", placement=names)
    assert [m.channels for _, m in attention_modules(model, "nonlocal")] == [512, 512] + [1024] * 3
    # the wrapped blocks still count as blocks of their stage for later attaches
    attach(model, "se", placement="last_block")
    assert isinstance(model.layer3[5], AttachedChain)
    assert [n for n, _ in attention_modules(model, "se")][2] == "layer3.5.0.bn3.1"
    attach(model, "gala", stages=[2])
    assert isinstance(model.layer2[1], AttendedInput)
    assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_explicit_names_on_an_arbitrary_model_probe_channels_when_needed():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 12, 1))
    attach(model, "se", placement=["0", "2"], rd_ratio=1 / 4)
    assert model[0][1].channels == 8 and model[2][1].channels == 12
    odd = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
    with pytest.raises(ValueError, match="cannot tell the channel count"):
        attach(odd, "se", placement=["1"])
    attach(odd, "se", placement=["1"], input_size=(9, 9), rd_ratio=1 / 4)
    assert odd[1][1].channels == 8


def test_conv_replace_with_sk():
    model = attach(models.create("resnet50", small_input=True), "sk", stages=[1])
    block = model.layer1[0]
    sk_cls = attnzoo.module_info("sk").cls
    assert isinstance(block.conv2, sk_cls) and isinstance(block.bn2, nn.Identity)
    assert (block.conv2.channels, block.conv2.out_channels) == (64, 64)
    model = attach(models.create("resnet20"), "sk", groups=8, stages=[2])
    block = model.layer2[0]
    assert isinstance(block.conv1, sk_cls) and isinstance(block.bn1, nn.Identity)
    out = block.conv1.eval()(torch.randn(1, 16, 16, 16))
    assert out.shape == (1, 32, 8, 8)  # stride taken from the replaced conv
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_size_bound_modules_need_input_size():
    with pytest.raises(ValueError, match="input_size"):
        attach(models.create("resnet20"), "rga_s")
    with pytest.raises(ValueError, match="input_size"):
        attach(models.create("resnet20"), "ge", variant="theta", extent="global")
    model = attach(models.create("resnet20"), "rga_s", input_size=(32, 32))
    # RGA's paper stages are all four; resnet20 has three, at 32, 16 and 8 pixels.
    assert [tuple(m.expected_size) for _, m in attention_modules(model, "rga_s")] == [
        (32, 32),
        (16, 16),
        (8, 8),
    ]


def test_per_stage_options():
    model = attach(
        models.create("resnet20"), "se", stage_options={1: {"rd_channels": 2}, 3: {"bias": False}}
    )
    assert model.layer1[0].bn2[1].fc1.out_channels == 2
    assert model.layer2[0].bn2[1].fc1.out_channels == 2  # 32 / 16
    assert model.layer3[0].bn2[1].fc1.bias is None and model.layer2[0].bn2[1].fc1.bias is not None


# ---------------------------------------------------------------------------------------------
# Chaining and initialisation


def test_chaining_feeds_each_module_the_previous_output():
    model = attach(attach(models.create("resnet20"), "se"), "eca").eval()
    chain = model.layer1[0].bn2
    assert isinstance(chain, AttachedChain) and len(chain) == 3
    assert type(chain[1]) is attnzoo.module_info("se").cls
    assert type(chain[2]) is attnzoo.module_info("eca").cls
    calls = []
    chain[1].register_forward_hook(lambda m, a, o: calls.append(("se", a[0], o)) and None)
    chain[2].register_forward_hook(lambda m, a, o: calls.append(("eca", a[0], o)) and None)
    model(torch.randn(1, 3, 32, 32))
    assert [c[0] for c in calls[:2]] == ["se", "eca"]
    assert calls[1][1] is calls[0][2]  # ECA sees SE's output, not the block's norm output
    # block_input chains the same way
    model = attach(attach(models.create("resnet20"), "gala"), "gala", gate_init="open")
    assert isinstance(model.layer3[0].attention, AttachedChain)
    assert len(model.layer3[0].attention) == 2


@pytest.mark.parametrize(
    ("name", "options"),
    [("gc", {}), ("nonlocal", {}), ("cca", {"placement": "stage_end", "stages": [2, 3]})],
)
def test_identity_at_init_survives_attach(name, options):
    torch.manual_seed(0)
    baseline = models.create("resnet20").eval()
    model = attach(copy.deepcopy(baseline), name, **options).eval()
    assert attention_modules(model, name)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), baseline(x))
    via_create = models.create("resnet20", attention=name).eval()
    assert attention_modules(via_create, name)


def test_attach_follows_device_dtype_and_mode():
    model = models.create("resnet20").double().eval()
    attach(model, "se")
    se = model.layer1[0].bn2[1]
    assert se.fc1.weight.dtype == torch.float64 and not se.training


# ---------------------------------------------------------------------------------------------
# Errors


def test_invalid_placement_lists_valid_ones():
    with pytest.raises(ValueError, match="block_end, block_input, stage_end"):
        attach(models.create("resnet20"), "se", placement="block_middle")


def test_non_insertable_kinds_are_rejected():
    for name in attnzoo.list_modules(kind="head") + attnzoo.list_modules(kind="fusion"):
        with pytest.raises(ValueError, match="segnet_resnet"):
            attach(models.create("resnet20"), name)
    with pytest.raises(ValueError, match="conv_replace"):
        attach(models.create("resnet50"), "sk", placement="block_end")
    with pytest.raises(ValueError, match="gate placement"):
        attach(models.create("resnet50"), "se", placement="conv_replace")


def test_model_without_blocks_is_an_impossible_request():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    with pytest.raises(ValueError, match="found no residual blocks"):
        attach(model, "se")


def test_bad_stages_names_and_modules():
    with pytest.raises(ValueError, match=r"stages \[4\] do not exist"):
        attach(models.create("resnet20"), "se", stages=[4])
    with pytest.raises(ValueError, match="Did you mean"):
        attach(models.create("resnet20"), "se", placement=["layer1.0.bn3"])
    with pytest.raises(ValueError, match="Did you mean"):
        attach(models.create("resnet20"), "sse")
    with pytest.raises(ValueError, match="unknown option"):
        attach(models.create("resnet20"), "se", no_such_option=1)


# ---------------------------------------------------------------------------------------------
# Parameter counts against the papers


def test_resnet50_parameter_counts_match_the_papers():
    base = n_params(models.create("resnet50", num_classes=1000))
    assert base == 25_557_032
    # SE (Hu et al., Table 2) and CBAM (Woo et al., Table 1) report 28.09M; BAM 25.92M.
    # Ours: SE 28,088,024 and CBAM 28,089,608 (the released models' FC biases included),
    # BAM 25,914,651 (the paper rounds its MLP/conv bias and BN counts; within 0.03%).
    for name, paper in (("se", 28.09e6), ("cbam", 28.09e6), ("bam", 25.92e6)):
        count = n_params(attach(models.create("resnet50", num_classes=1000), name))
        assert abs(count - paper) / paper < 1e-3, (name, count)
    se_no_bias = n_params(attach(models.create("resnet50", num_classes=1000), "se", bias=False))
    assert se_no_bias - base == 2_514_944  # Σ 2·C²/16 over the 16 blocks, no biases


def test_eca_resnet50_adds_80_parameters_with_the_released_kernel_sizes():
    base = n_params(models.create("resnet50", num_classes=1000))
    # The adaptive ψ(C) gives k = 5, 5, 5, 7 for C = 256 ... 2048: 3·5 + 4·5 + 6·5 + 3·7 = 86.
    adaptive = attach(models.create("resnet50", num_classes=1000), "eca")
    assert n_params(adaptive) - base == 86
    # The released ECA-ResNet-50 used k = 3, 5, 5, 7 per stage: 3·3 + 4·5 + 6·5 + 3·7 = 80.
    released = attach(
        models.create("resnet50", num_classes=1000),
        "eca",
        stage_options={1: {"k_size": 3}, 2: {"k_size": 5}, 3: {"k_size": 5}, 4: {"k_size": 7}},
    )
    assert n_params(released) - base == 80


# ---------------------------------------------------------------------------------------------
# torchvision and timm ResNets (no pretrained weights, no downloads)


def test_our_resnets_have_torchvision_layout():
    tv = import_torchvision()
    for name in ("resnet18", "resnet34", "resnet50"):
        ours = models.create(name, num_classes=1000).state_dict()
        theirs = getattr(tv.models, name)(weights=None).state_dict()
        assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_attach_on_torchvision_resnets(arch):
    tv = import_torchvision()
    model = getattr(tv.models, arch)(weights=None, num_classes=10)
    attach(model, "se")
    attach(model, "bam")
    found = [n for n, _ in attention_modules(model, "se")]
    last_norm = "bn3" if arch == "resnet50" else "bn2"
    assert len(found) == 8 if arch == "resnet18" else 16
    assert all(n.endswith(f".{last_norm}.1") for n in found)
    assert len(attention_modules(model, "bam")) == 3
    train_one_step(model, "se", size=64)


def test_attach_on_timm_resnets():
    timm = import_timm()
    # timm zero-inits the last norm of each block by default: the attention would see zeros and
    # get no gradient in the first step, so switch that off for the step test.
    model = timm.create_model("resnet18", pretrained=False, num_classes=10, zero_init_last=False)
    attach(model, "cbam")
    attach(model, "gala")
    assert len(attention_modules(model, "cbam")) == 8
    assert [n for n, m in model.named_modules() if isinstance(m, AttendedInput)] == [
        "layer3.0",
        "layer3.1",
    ]
    train_one_step(model, "cbam", size=64)
    bottleneck = timm.create_model("resnet26", pretrained=False, num_classes=10)
    attach(bottleneck, "eca", stages=[3, 4])
    found = [n for n, _ in attention_modules(bottleneck, "eca")]
    assert found and all(n.endswith(".bn3.1") for n in found)
    assert bottleneck(torch.randn(1, 3, 64, 64)).shape == (1, 10)

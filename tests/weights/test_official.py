"""The authors' releases (layouts rebuilt from their model definitions, random weights and
random BatchNorm statistics) load into attnzoo with the logits of an independent functional
forward written from the papers and the official definitions (tests/weights/_official.py)."""

from __future__ import annotations

import functools

import pytest
import torch
from _official import (
    bam_forward,
    bam_shapes,
    cadene_shapes,
    cbam_forward,
    cbam_shapes,
    eca_forward,
    eca_shapes,
    fca_forward,
    fca_shapes,
    fca_state,
    resnet50_forward,
    se_forward,
)
from _reference import assert_same, logits, random_state

from attnzoo import models
from attnzoo.weights import read_plan

F = resnet50_forward
CASES = {
    # layout: (shapes, attention, forward, wrap as the official training script saved it)
    "jongchan_cbam": (cbam_shapes, "cbam", functools.partial(F, block_attention=cbam_forward)),
    "jongchan_bam": (bam_shapes, "bam", functools.partial(F, stage_attention=bam_forward)),
    "ecanet": (eca_shapes, "eca", functools.partial(F, block_attention=eca_forward)),
    "fcanet": (fca_shapes, "fca", functools.partial(F, block_attention=fca_forward)),
    "cadene_senet": (
        cadene_shapes,
        "se",
        functools.partial(
            F,
            block_attention=se_forward,
            stem="layer0.conv1",
            stem_norm="layer0.bn1",
            head="last_linear",
            stride_in_1x1=True,
            ceil_pool=True,
        ),
    ),
}


def official_state(layout: str) -> dict[str, torch.Tensor]:
    state = random_state(CASES[layout][0](), seed=5)
    if layout == "fcanet":
        fca_state(state)
    return state


def save_as_released(state: dict[str, torch.Tensor], path, layout: str) -> None:
    if layout.startswith("jongchan") or layout == "ecanet":
        # train_imagenet.py / main.py: DataParallel model inside a training-state dict
        torch.save(
            {
                "epoch": 90,
                "arch": "resnet",
                "best_prec1": 76.86,
                "state_dict": {f"module.{k}": v for k, v in state.items()},
            },
            path,
        )
    else:
        torch.save(state, path)


@pytest.mark.parametrize("layout", sorted(CASES))
def test_official_release_loads_exactly(layout, tmp_path):
    state = official_state(layout)
    path = tmp_path / f"{layout}.pth.tar"
    save_as_released(state, path, layout)
    plan = read_plan(path)
    assert (plan.layout, plan.arch, plan.attention, plan.num_classes) == (
        layout,
        "resnet50",
        CASES[layout][1],
        10,
    )
    model = models.create("resnet50", attention=CASES[layout][1], weights=path)
    # 66 px: odd feature sizes after the stem make the Caffe ceil-mode pooling differ from
    # the padded one
    x = torch.randn(2, 3, 66, 66, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    reference = {k: v.double() for k, v in state.items()}
    with torch.no_grad():
        expected = CASES[layout][2](reference, x)
    # float32 rounding that is not a mapping error: FcaNet's DCT filters are float32 on both
    # sides, rounded differently (7e-8 measured); BAM's folded running means μ - b are stored
    # in the file's float32 (1.4e-8 measured, logits up to 22). Everything else: exact.
    tolerance = {"fcanet": 1e-6, "jongchan_bam": 1e-7}.get(layout, 1e-9)
    assert_same(logits(model, x), expected, tolerance)


def test_forced_format_matches_detection(tmp_path):
    path = tmp_path / "eca.pth"
    save_as_released(official_state("ecanet"), path, "ecanet")
    forced = models.create("resnet50", attention="eca", weights=path, weights_format="ecanet")
    detected = models.create("resnet50", attention="eca", weights=path)
    for (k, a), (_, b) in zip(
        forced.state_dict().items(), detected.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), k


def test_eca_release_kernel_sizes_are_read_from_the_file(tmp_path):
    path = tmp_path / "eca.pth"
    save_as_released(official_state("ecanet"), path, "ecanet")
    plan = read_plan(path)
    sizes = {s: o["k_size"] for s, o in plan.attention_options["stage_options"].items()}
    assert sizes == {1: 3, 2: 5, 3: 5, 4: 7}  # --ksize 3557, not the formula's 5, 5, 5, 7


@pytest.mark.parametrize(
    "variant", [{"stride_in_1x1": False}, {"stem_pool": "pad"}], ids=["stride", "pool"]
)
def test_caffe_variant_matters(variant, tmp_path):
    """Each Caffe option the plan sets is needed: without it the logits differ."""
    from attnzoo.weights.build import build_model

    state = official_state("cadene_senet")
    path = tmp_path / "se.pth"
    save_as_released(state, path, "cadene_senet")
    plan = read_plan(path)
    plan.model_options = {**plan.model_options, **variant}
    x = torch.randn(1, 3, 66, 66, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        expected = CASES["cadene_senet"][2]({k: v.double() for k, v in state.items()}, x)
    assert not torch.allclose(logits(build_model(plan), x), expected, rtol=1e-4, atol=1e-4)

"""``models.create`` rejects impossible arguments with a ValueError a user can act on."""

import pytest
import torch

from attnzoo import models


@pytest.mark.parametrize("num_classes", [0, -3, 2.5, True, "10"])
def test_num_classes_must_be_a_positive_integer(num_classes):
    with pytest.raises(ValueError, match=rf"num_classes={num_classes!r} is not allowed; expected"):
        models.create("resnet20", num_classes=num_classes)


@pytest.mark.parametrize(
    ("attention", "options"),
    [("rga_s", {}), ("ge", {"variant": "theta", "extent": "global"})],
)
def test_size_bound_attention_names_the_attention_options_argument(attention, options):
    with pytest.raises(ValueError, match=r'attention_options=\{"input_size": \(H, W\)\}'):
        models.create("resnet20", attention=attention, attention_options=options)
    model = models.create(
        "resnet20", attention=attention, attention_options={**options, "input_size": (32, 32)}
    ).eval()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_placement_may_come_in_attention_options_but_not_twice():
    # attnzoo train --attention-opt placement=block_end reaches create() this way.
    a = models.create("resnet20", attention="se", attention_options={"placement": "block_input"})
    b = models.create("resnet20", attention="se", placement="block_input")
    assert [n for n, _ in a.named_modules()] == [n for n, _ in b.named_modules()]
    with pytest.raises(ValueError, match="placement given twice"):
        models.create(
            "resnet20", attention="se", placement="block_end",
            attention_options={"placement": "block_input"},
        )  # fmt: skip

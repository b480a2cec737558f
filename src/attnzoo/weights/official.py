"""Layouts of the authors' own releases, written from their model definitions.

- ``jongchan_cbam`` / ``jongchan_bam``: Jongchan/attention-module (``MODELS/model_resnet.py``,
  ``cbam.py``, ``bam.py``). CBAM after ``bn3`` of every bottleneck (``cbam.ChannelGate.mlp``:
  Linear layers with bias; ``cbam.SpatialGate.spatial``: 7x7 conv without bias + BN, input
  [max; mean]) -> attnzoo ``cbam`` with ``spatial_bn=True, pool_order="max_mean"``. BAM
  (``bam1..3`` after stages 1-3; ``gate_c_fc_0`` + ``gate_c_bn_1``, ``gate_s_conv_*`` + BN, all
  convs with bias; ``att = 1 + sigmoid(Mc * Ms)``) -> attnzoo ``bam`` with
  ``combine="product"``, the biases before BNs folded into the running means.
- ``ecanet``: BangguWu/ECANet (``models/eca_resnet.py``): ``eca.conv`` (Conv1d, no bias) after
  ``bn3``/``bn2``; the kernel size per stage is read from the weights (R50 release: 3, 5, 5, 7).
- ``fcanet``: cfzd/FcaNet (``model/fcanet.py``, ``layer.py``): torchvision ResNet with ``att``
  after the last BN: ``att.fc`` (two Linear, no bias) and the DCT filters as a saved buffer
  ``att.dct_layer.weight`` (56/28/14/7 grids, top16): checked against attnzoo's filters, then
  dropped (attnzoo computes them).
- ``cadene_senet``: Cadene/pretrained-models.pytorch ``senet.py`` ``se_resnet50`` (the port of
  the official Caffe SE-ResNet-50): ``layer0.{conv1,bn1,pool}`` stem with a ceil-mode max-pool,
  stride on each bottleneck's first 1x1 conv, ``se_module.fc1/fc2`` (1x1 convs with bias),
  ``last_linear`` -> attnzoo resnet50 with ``stride_in_1x1=True, stem_pool="ceil"`` and ``se``.

Every official ResNet ends with ``AvgPool2d(7)`` (ECA and FcaNet replace it with adaptive
pooling): identical to attnzoo's global average pooling at 224x224 inputs; attnzoo's model
also runs at other sizes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from attnzoo.weights.layouts import (
    Layout,
    Plan,
    SourceKeys,
    any_key,
    block_names,
    linear_to_conv,
    move_backbone,
    move_folded,
    num_classes_of,
    per_stage,
    register_layout,
    resnet_arch,
    stage_blocks,
)

_JONGCHAN = "https://github.com/Jongchan/attention-module/tree/master/MODELS"


def _body(keys: SourceKeys, path: str = "the file") -> tuple[tuple[int, ...], bool, str, str]:
    """(blocks, bottleneck, arch, last norm name) of a torchvision-named ResNet body."""
    blocks = stage_blocks(keys.keys())
    bottleneck = "layer1.0.conv3.weight" in keys
    arch = resnet_arch(blocks, bottleneck, path)
    return blocks, bottleneck, arch, "bn3" if bottleneck else "bn2"


def _convert_cbam(keys: SourceKeys) -> Plan:
    blocks, bottleneck, arch, end = _body(keys)
    num_classes = num_classes_of(keys)
    move_backbone(keys, blocks, bottleneck, end_wrapped=True)
    for _, _, block in block_names(blocks):
        src, dst = f"{block}.cbam.", f"{block}.{end}.1."
        for source_index, target_index in ((1, 0), (3, 2)):  # Flatten, Linear, ReLU, Linear
            weight = keys.take(f"{src}ChannelGate.mlp.{source_index}.weight")
            keys.out[f"{dst}mlp.{target_index}.weight"] = linear_to_conv(weight)
            keys.move(f"{src}ChannelGate.mlp.{source_index}.bias", f"{dst}mlp.{target_index}.bias")
        keys.move(f"{src}SpatialGate.spatial.conv.weight", f"{dst}spatial_conv.weight")
        keys.move_norm(f"{src}SpatialGate.spatial.bn", f"{dst}spatial_norm")
    return Plan(
        "jongchan_cbam",
        arch,
        num_classes,
        keys.out,
        attention="cbam",
        attention_options={"spatial_bn": True, "pool_order": "max_mean"},
    )


def _convert_bam(keys: SourceKeys) -> Plan:
    blocks, bottleneck, arch, _ = _body(keys)
    num_classes = num_classes_of(keys)
    move_backbone(keys, blocks, bottleneck, end_wrapped=False)
    for stage in (1, 2, 3):
        src, dst = f"bam{stage}.", f"layer{stage}.{blocks[stage - 1]}."  # appended to the stage
        gate_c = f"{src}channel_att.gate_c."
        move_folded(
            keys,
            f"{gate_c}gate_c_fc_0",
            f"{dst}channel_gate.0",
            f"{gate_c}gate_c_bn_1",
            f"{dst}channel_gate.1",
        )
        keys.move(f"{gate_c}gate_c_fc_final.weight", f"{dst}channel_gate.3.weight")
        keys.move(f"{gate_c}gate_c_fc_final.bias", f"{dst}channel_gate.3.bias")
        gate_s = f"{src}spatial_att.gate_s."
        sources = [("gate_s_conv_reduce0", "gate_s_bn_reduce0")]
        sources += [(f"gate_s_conv_di_{i}", f"gate_s_bn_di_{i}") for i in range(2)]
        for index, (conv, norm) in enumerate(sources):  # ConvNormAct = (conv, bn, relu)
            target = f"{dst}spatial_gate.{index}"
            move_folded(keys, gate_s + conv, f"{target}.0", gate_s + norm, f"{target}.1")
        keys.move(f"{gate_s}gate_s_conv_final.weight", f"{dst}spatial_gate.3.weight")
        keys.move(f"{gate_s}gate_s_conv_final.bias", f"{dst}spatial_gate.3.bias")
    return Plan(
        "jongchan_bam",
        arch,
        num_classes,
        keys.out,
        attention="bam",
        attention_options={"combine": "product", "branch_norm": "hidden"},
        notes=["conv biases before BatchNorms folded into the running means"],
    )


def _convert_eca(keys: SourceKeys) -> Plan:
    blocks, bottleneck, arch, end = _body(keys)
    num_classes = num_classes_of(keys)
    move_backbone(keys, blocks, bottleneck, end_wrapped=True)
    sizes: dict[str, int] = {}
    for _, _, block in block_names(blocks):
        weight = keys.take(f"{block}.eca.conv.weight")  # (1, 1, k)
        keys.out[f"{block}.{end}.1.conv.weight"] = weight
        if weight.numel():
            sizes[block] = int(weight.shape[-1])
    stages = per_stage(sizes, "ECA kernel sizes", blocks)
    return Plan(
        "ecanet",
        arch,
        num_classes,
        keys.out,
        attention="eca",
        attention_options={"stage_options": {s: {"k_size": k} for s, k in stages.items()}},
    )


def _convert_fca(keys: SourceKeys) -> Plan:
    from attnzoo.modules.fca import dct_filters, frequency_indices

    blocks, bottleneck, arch, end = _body(keys)
    num_classes = num_classes_of(keys)
    move_backbone(keys, blocks, bottleneck, end_wrapped=True)
    grids: dict[str, int] = {}
    for _, _, block in block_names(blocks):
        src, dst = f"{block}.att.", f"{block}.{end}.1."
        keys.move(f"{src}fc.0.weight", f"{dst}fc1.weight")
        keys.move(f"{src}fc.2.weight", f"{dst}fc2.weight")
        saved = keys.take(f"{src}dct_layer.weight")  # (C, L, L)
        if saved.dim() != 3:
            continue
        channels, size = int(saved.shape[0]), int(saved.shape[1])
        u, v = frequency_indices("top16")
        scale = size // 7
        ours = dct_filters(channels, (size, size), [f * scale for f in u], [f * scale for f in v])
        if not torch.allclose(saved.float(), ours, atol=1e-5):
            raise ValueError(
                f"{src}dct_layer.weight is not the top16 DCT basis on a {size}x{size} grid that "
                "attnzoo's fca computes (a learnt or re-initialised filter): not convertible"
            )
        grids[block] = size
    stages = per_stage(grids, "DCT grid sizes", blocks)
    return Plan(
        "fcanet",
        arch,
        num_classes,
        keys.out,
        attention="fca",
        attention_options={
            "frequencies": "top16",
            "stage_options": {s: {"dct_size": size} for s, size in stages.items()},
        },
        notes=["saved DCT filters checked against attnzoo's and dropped (recomputed)"],
    )


def _convert_cadene(keys: SourceKeys) -> Plan:
    if "layer0.conv2.weight" in keys:
        raise ValueError("a SENet with the three-conv 3x3 stem (SENet-154): not supported")
    blocks, bottleneck, arch, end = _body(keys)
    conv = keys.shape("layer1.0.conv2.weight")
    if conv and conv[0] != conv[1]:
        raise ValueError("grouped 3x3 convs (SE-ResNeXt): attnzoo's ResNets have no groups")
    num_classes = num_classes_of(keys, "last_linear")
    move_backbone(
        keys,
        blocks,
        bottleneck,
        end_wrapped=True,
        stem="layer0.conv1",
        stem_norm="layer0.bn1",
        head="last_linear",
    )
    for _, _, block in block_names(blocks):
        for layer in ("fc1", "fc2"):
            for kind in ("weight", "bias"):
                keys.move(f"{block}.se_module.{layer}.{kind}", f"{block}.{end}.1.{layer}.{kind}")
    return Plan(
        "cadene_senet",
        arch,
        num_classes,
        keys.out,
        attention="se",
        model_options={"stride_in_1x1": True, "stem_pool": "ceil"},
    )


def _has(pattern: str) -> Callable[[Mapping[str, torch.Tensor]], bool]:
    return lambda state: any_key(state, pattern)


def _cadene(state: Mapping[str, torch.Tensor]) -> bool:
    return "layer0.conv1.weight" in state and any_key(state, r"\.se_module\.fc1\.weight$")


register_layout(
    Layout(
        "jongchan_cbam",
        "CBAM-ResNet (official PyTorch release)",
        _JONGCHAN,
        _has(r"\.cbam\.ChannelGate\.mlp\.1\.weight$"),
        _convert_cbam,
    )
)
register_layout(
    Layout(
        "jongchan_bam",
        "BAM-ResNet (official PyTorch release)",
        _JONGCHAN,
        _has(r"^bam1\.channel_att\.gate_c\."),
        _convert_bam,
    )
)
register_layout(
    Layout(
        "ecanet",
        "ECA-ResNet (official release)",
        "https://github.com/BangguWu/ECANet/blob/master/models/eca_resnet.py",
        _has(r"\.eca\.conv\.weight$"),
        _convert_eca,
    )
)
register_layout(
    Layout(
        "fcanet",
        "FcaNet (official release)",
        "https://github.com/cfzd/FcaNet/blob/master/model/fcanet.py",
        _has(r"\.att\.dct_layer\.weight$"),
        _convert_fca,
    )
)
register_layout(
    Layout(
        "cadene_senet",
        "SE-ResNet-50 converted from the official Caffe model (pretrainedmodels)",
        "https://github.com/Cadene/pretrained-models.pytorch/blob/master/pretrainedmodels/models/senet.py",
        _cadene,
        _convert_cadene,
    )
)

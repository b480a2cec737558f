"""Known released checkpoints that attnzoo loads.

``top1`` is the ImageNet-1k validation top-1 (%) the publisher reports for the file (None where
the publisher states none beside the file). ``sha256`` is the full digest where the source
publishes one; ``sha256_prefix`` the first hex digits that torchvision, timm's GitHub releases
and pretrainedmodels put in the file name (torch.hub's convention). ``direct`` is False where
the file sits behind a sharing page (Google Drive, Baidu) that only a browser can download:
``attnzoo weights fetch`` then says where to get it by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RELEASES", "Release", "get_release"]


@dataclass(frozen=True)
class Release:
    name: str
    arch: str
    attention: str | None
    layout: str
    url: str
    file_name: str
    top1: float | None
    sha256: str | None = None
    sha256_prefix: str | None = None
    direct: bool = True
    note: str = ""


_TV = "https://download.pytorch.org/models/"
_TIMM = "https://github.com/huggingface/pytorch-image-models/releases/download/"
_RW = "https://github.com/rwightman/pytorch-image-models/releases/download/"
_FCA = "https://github.com/cfzd/FcaNet/releases/download/v1.0/"
_HF = "https://huggingface.co/timm/{}/resolve/main/model.safetensors"

_TABLE = [
    Release("torchvision-resnet18", "resnet18", None, "torchvision", _TV + "resnet18-f37072fd.pth",
            "resnet18-f37072fd.pth", 69.758, sha256_prefix="f37072fd"),
    Release("torchvision-resnet34", "resnet34", None, "torchvision", _TV + "resnet34-b627a593.pth",
            "resnet34-b627a593.pth", 73.314, sha256_prefix="b627a593"),
    Release("torchvision-resnet50", "resnet50", None, "torchvision", _TV + "resnet50-0676ba61.pth",
            "resnet50-0676ba61.pth", 76.130, sha256_prefix="0676ba61", note="IMAGENET1K_V1"),
    Release("cbam-resnet50", "resnet50", "cbam", "jongchan_cbam",
            "https://drive.google.com/file/d/1mvAVvhLR_2XY_bPYxh-SEz4vDmGzSArO/view",
            "RESNET50_CBAM_new_name_wrap.pth", 77.622, direct=False,
            note="Jongchan/attention-module README (Google Drive)"),
    Release("bam-resnet50", "resnet50", "bam", "jongchan_bam",
            "https://drive.google.com/file/d/1auVf70gfL0ol40bvaX5rlbpn9cKIxhAL/view",
            "RESNET50_IMAGENET_BAM_best.pth.tar", 76.860, direct=False,
            note="Jongchan/attention-module README (Google Drive)"),
    Release("eca-resnet50", "resnet50", "eca", "ecanet",
            "https://pan.baidu.com/s/1pcn6ZfZUAYKycZ6FMr4F2Q", "eca_resnet50_k3557.pth.tar",
            77.48, direct=False, note="BangguWu/ECANet README (Baidu, extraction code 7qo9)"),
    Release("fcanet34", "resnet34", "fca", "fcanet", _FCA + "fca34.pth", "fca34.pth", 75.07,
            note="cfzd/FcaNet hubconf.py"),
    Release("fcanet50", "resnet50", "fca", "fcanet", _FCA + "fca50.pth", "fca50.pth", 78.52,
            note="cfzd/FcaNet hubconf.py"),
    Release("se-resnet50-caffe", "resnet50", "se", "cadene_senet",
            "http://data.lip6.fr/cadene/pretrainedmodels/se_resnet50-ce0d4300.pth",
            "se_resnet50-ce0d4300.pth", 77.63, sha256_prefix="ce0d4300",
            note="pretrainedmodels port of the official Caffe model; top-1 of the SENet README"),
    Release("timm-seresnet50.a1_in1k", "resnet50", "se", "timm",
            _TIMM + "v0.1-rsb-weights/seresnet50_a1_0-ffa00869.pth",
            "seresnet50_a1_0-ffa00869.pth", None, sha256_prefix="ffa00869",
            note="top-1 in timm's results tables, not beside the file"),
    Release("timm-ecaresnet50d.miil_in1k", "resnet50", "eca", "timm",
            _RW + "v0.1-tresnet/ecaresnet50d-93c81e3b.pth", "ecaresnet50d-93c81e3b.pth", None,
            sha256_prefix="93c81e3b", note="deep stem, avg-down shortcuts"),
    Release("timm-ecaresnet50t.ra2_in1k", "resnet50", "eca", "timm",
            _RW + "v0.1-weights/ecaresnet50t_ra2-f7ac63c4.pth", "ecaresnet50t_ra2-f7ac63c4.pth",
            None, sha256_prefix="f7ac63c4", note="tiered deep stem, avg-down shortcuts"),
    Release("timm-resnet50d.ra2_in1k", "resnet50", None, "timm",
            _RW + "v0.1-weights/resnet50d_ra2-464e36ba.pth", "resnet50d_ra2-464e36ba.pth", None,
            sha256_prefix="464e36ba"),
    Release("timm-skresnet18.ra_in1k", "resnet18", "sk", "timm",
            _HF.format("skresnet18.ra_in1k"), "skresnet18.ra_in1k.safetensors", None,
            note="Hugging Face hub; no published digest (the first download's is recorded)"),
    Release("timm-skresnet34.ra_in1k", "resnet34", "sk", "timm",
            _HF.format("skresnet34.ra_in1k"), "skresnet34.ra_in1k.safetensors", None),
]  # fmt: skip

RELEASES: dict[str, Release] = {release.name: release for release in _TABLE}


def get_release(name: str) -> Release:
    if name not in RELEASES:
        from attnzoo.registry import did_you_mean

        hint = did_you_mean(name, RELEASES)
        raise ValueError(f"unknown release {name!r}.{hint} Known: {', '.join(RELEASES)}")
    return RELEASES[name]

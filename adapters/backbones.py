"""CNN backbones by name: the convolutional trunk whose last feature map Grad-CAM explains.

A name is one the user already knows: a torchvision classification model (``resnet50``,
``vgg16``, ``inception_v3``, ...), a timm model (``timm:resnet10t`` or a bare timm name
that torchvision does not know), or ``compact``, a small CNN for the built-in world.
"""

from __future__ import annotations

import difflib
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, cast

import torch
from torch import nn

from vlcam.image import IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:
    from timm.models import FeatureInfo

Triple = tuple[float, float, float]

# torchvision models whose forward runs their children in order, then pools and classifies.
_SEQUENTIAL_FAMILIES = ("resnet", "resnext", "wide_resnet", "regnet", "shufflenet")
_HEAD_CHILDREN = ("avgpool", "dropout", "fc", "AuxLogits", "aux1", "aux2")
# torchvision models that keep their conv trunk in one Sequential attribute.
_TRUNK_ATTRIBUTES = ("features", "layers")
# Inception-style models were trained on inputs in [-1, 1]; torchvision's transform_input
# turns ImageNet-normalised inputs into exactly that, so these means/stds do the same.
_HALF = (0.5, 0.5, 0.5)
_INCEPTION_STYLE = ("inception_v3", "googlenet")
# torchvision models that have a `features` attribute but no (B, C, h, w) conv trunk.
_NOT_CONV = ("swin", "vit", "maxvit")
_FAMILIES = (
    "torchvision resnet*/resnext*/wide_resnet*/regnet*/shufflenet*, vgg*, inception_v3, "
    "googlenet, and torchvision models with a .features trunk (alexnet, convnext*, densenet*, "
    "efficientnet*, mobilenet*, squeezenet*, mnasnet*); 'timm:<name>' for any timm CNN; "
    "'compact', 'compact_replicate', 'compact_deep', 'compact_aligned' (small CNNs for the built-in world)"
)


@dataclass(frozen=True)
class _CompactLayout:
    widths: tuple[int, ...]
    strides: tuple[int, ...]
    padding_mode: Literal["zeros", "replicate"]
    # The kernel of the stride-2 blocks. A 3 x 3 kernel with padding 1 centres output cell j
    # on input pixel 2j, half a pixel before where upsampling puts it (2j + 0.5); after three
    # of them a cell of the map sits 3.5 px up and left of where its map value is drawn. A
    # 4 x 4 kernel with padding 1 centres it on 2j + 0.5, where it is drawn.
    down_kernel: int = 3


# Small CNNs for the built-in world, all of total stride 8 (a 16 x 16 map at 128^2, fine
# enough to localise its small objects). "compact" (receptive field 47 px, zero padding) is
# the first one, kept so that its checkpoints load; "compact_replicate" is the same with
# replicate padding, so that the border looks like the image next to it rather than like a
# black frame, which zero padding turns into features that fire at the border and nowhere
# else; "compact_deep" (the trainers' default) adds stride-1 blocks between the downsamplings
# for a 59-px receptive field, enough to see a whole large object (up to 52 px across) at once.
COMPACT_LAYOUTS = {
    "compact": _CompactLayout((32, 64, 128, 192, 256), (2, 2, 2, 1, 1), "zeros"),
    "compact_replicate": _CompactLayout((32, 64, 128, 192, 256), (2, 2, 2, 1, 1), "replicate"),
    "compact_deep": _CompactLayout((32, 32, 64, 64, 128, 192, 256), (2, 1, 2, 1, 2, 1, 1), "replicate"),
    "compact_aligned": _CompactLayout((32, 32, 64, 64, 128, 192, 256), (2, 1, 2, 1, 2, 1, 1), "replicate", 4),
}


class Backbone(nn.Module):
    """A CNN trunk: ``forward(x)`` returns the last conv feature map [B, C, h, w], unpooled.

    Attributes: `name` (as built), `out_channels` (C), `gradcam_layer` (the dotted name,
    relative to this module, of the default Grad-CAM layer, the last conv block), and the
    input normalisation `mean` / `std` the weights expect.
    """

    def __init__(
        self,
        name: str,
        body: nn.Module,
        *,
        out_channels: int,
        gradcam_layer: str,
        mean: Triple = IMAGENET_MEAN,
        std: Triple = IMAGENET_STD,
        returns_list: bool = False,
    ) -> None:
        super().__init__()
        self.name = name
        self.body = body
        self.out_channels = out_channels
        self.gradcam_layer = gradcam_layer
        self.mean = tuple(mean)
        self.std = tuple(std)
        self._returns_list = returns_list

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the last conv feature map [B, C, h, w] of a normalised image batch."""
        if self._returns_list:
            maps: list[torch.Tensor] = self.body(x)
            return maps[-1]
        out: torch.Tensor = self.body(x)
        return out


def build_backbone(name: str, *, pretrained: bool = False) -> Backbone:
    """Return the backbone called `name`, with ImageNet weights if `pretrained`.

    ``pretrained=True`` downloads weights (torchvision ``weights="DEFAULT"``, timm's
    pretrained tag); the default builds random weights and never touches the network.
    """
    if not isinstance(name, str):
        raise TypeError(f"backbone name must be a str, got {type(name).__name__}")
    if name in COMPACT_LAYOUTS:
        if pretrained:
            raise ValueError(f"the {name!r} backbone has no pretrained weights; pass pretrained=False")
        return _compact(name)
    if name.startswith("timm:"):
        return _timm(name[len("timm:"):], pretrained, full_name=name)
    from torchvision import models

    if name in models.list_models(module=models):
        return _torchvision(name, pretrained)
    import timm

    if timm.is_model(name):
        return _timm(name, pretrained, full_name=name)
    raise _unknown(name)


def _compact(name: str) -> Backbone:
    layout = COMPACT_LAYOUTS[name]
    blocks: OrderedDict[str, nn.Module] = OrderedDict()
    c_in = 3
    for i, (width, stride) in enumerate(zip(layout.widths, layout.strides), start=1):
        kernel = layout.down_kernel if stride == 2 else 3
        blocks[f"block{i}"] = nn.Sequential(
            nn.Conv2d(c_in, width, kernel, stride=stride, padding=1, bias=False, padding_mode=layout.padding_mode),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        c_in = width
    return Backbone(name, nn.Sequential(blocks), out_channels=c_in,
                    gradcam_layer=f"body.block{len(layout.widths)}")


def _torchvision(name: str, pretrained: bool) -> Backbone:
    from torchvision import models

    kwargs: dict[str, object] = {}
    if name in _INCEPTION_STYLE and not pretrained:
        # init_weights=False skips a slow scipy truncated-normal init of random weights.
        kwargs = {"aux_logits": False, "init_weights": False}
    model = models.get_model(name, weights="DEFAULT" if pretrained else None, **kwargs)
    mean, std = (_HALF, _HALF) if name in _INCEPTION_STYLE else (IMAGENET_MEAN, IMAGENET_STD)

    if name.startswith(_SEQUENTIAL_FAMILIES) or name in _INCEPTION_STYLE:
        children = [(n, m) for n, m in model.named_children() if n not in _HEAD_CHILDREN]
        body: nn.Module = nn.Sequential(OrderedDict(children))
        layer = f"body.{children[-1][0]}"
    else:
        attribute = next((a for a in _TRUNK_ATTRIBUTES if hasattr(model, a)), None)
        trunk = getattr(model, attribute) if attribute else None
        if attribute is None or name.startswith(_NOT_CONV) or not isinstance(trunk, nn.Sequential):
            raise ValueError(
                f"torchvision model {name!r} has no convolutional trunk vlcam can cut out; "
                f"use a CNN, or try the timm version with 'timm:<name>'. Supported: {_FAMILIES}"
            )
        if isinstance(trunk[-1], nn.MaxPool2d):
            # Drop a trailing max-pool (vgg, alexnet): VGG's map is then 14 x 14 at 224^2,
            # the paper's conv5_3, and the Grad-CAM layer is a conv block, not a pool.
            trunk = trunk[:-1]
        body = nn.Sequential(OrderedDict([(attribute, trunk)]))
        last = list(trunk.named_children())[-1][0]
        layer = f"body.{attribute}.{last}"
    return Backbone(name, body, out_channels=_probe_channels(body), gradcam_layer=layer,
                    mean=mean, std=std)


def _probe_channels(body: nn.Module) -> int:
    # Inception blocks concatenate branches, so the last conv's width is not the output's.
    training = body.training
    try:
        body.eval()
        with torch.no_grad():
            out = body(torch.zeros(1, 3, 128, 128))
    finally:
        body.train(training)
    return int(out.shape[1])


def _timm(name: str, pretrained: bool, *, full_name: str) -> Backbone:
    import timm

    if not timm.is_model(name):
        raise _unknown(full_name)
    try:
        model = timm.create_model(name, pretrained=pretrained, features_only=True, out_indices=[-1])
    except (RuntimeError, ValueError, AttributeError) as e:
        raise ValueError(f"timm model {name!r} cannot give a feature map (features_only): {e}") from e
    modules = dict(model.named_modules())
    feature_info = cast("FeatureInfo", model.feature_info)
    source = feature_info.module_name()[-1]
    # Feature wrappers flatten nested Sequential names ('stages.3' -> 'stages_3').
    layer = next((n for n in (source, source.replace(".", "_")) if n in modules), None)
    if layer is None:
        raise ValueError(
            f"timm model {name!r} reports its last feature at {source!r}, which is not a "
            "module of the feature model; pick another backbone"
        )
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return Backbone(
        full_name,
        model,
        out_channels=int(feature_info.channels()[-1]),
        gradcam_layer=f"body.{layer}",
        mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
        std=tuple(cfg.get("std", IMAGENET_STD)),
        returns_list=True,
    )


def _unknown(name: str) -> ValueError:
    import timm
    from torchvision import models

    known = [*COMPACT_LAYOUTS, *models.list_models(module=models), *timm.list_models()]
    bare = name.removeprefix("timm:")
    close = difflib.get_close_matches(bare, list(dict.fromkeys(known)), n=6, cutoff=0.6)
    hint = f"close names: {', '.join(repr(c) for c in close)}. " if close else ""
    return ValueError(f"unknown backbone {name!r}; {hint}Accepted: {_FAMILIES}")

"""The one config system: a frozen dataclass per section, YAML files that list deviations, `--set` overrides.

Defaults are the Cityscapes recipe of SPEC §3 (EfficientNet-B5, 1024×2048); `configs/*.yaml` change only what differs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from lpsctl.errors import ConfigError

Range = tuple[int, int]
Precision = Literal["off", "fp16", "bf16"]
#: keys earlier versions stored in checkpoints and no longer have: dropped on reading when they hold the value that
#: is now derived (a different value describes a model this version cannot build)
RETIRED_KEYS: dict[tuple[str, str], Any] = {("semantic", "num_classes"): 19, ("solo", "num_classes"): 8}


@dataclass(frozen=True)
class DataConfig:
    root: str = "data/cityscapes"  # dataset in Cityscapes layout (leftImg8bit/, gtFine/, annotations/)
    train_split: str = "train"  # split used by `train`
    val_split: str = "val"  # split used for validation during training
    crop_height: int = 1024  # training crop, pixels (after the scale jitter)
    crop_width: int = 2048
    scale_min: float = 0.5  # multi-scale jitter range, relative to the original size
    scale_max: float = 2.0
    flip_prob: float = 0.5  # horizontal flip probability
    color_jitter: bool = False  # brightness/contrast/saturation/hue jitter (not in the official recipes)
    pad_to_crop: bool = False  # pad crops of smaller scaled images to the full crop (official: to size_divisor only)
    mean: tuple[float, float, float] = (106.433, 116.617, 119.559)  # Cityscapes RGB mean on 0-255
    std: tuple[float, float, float] = (65.496, 67.6, 74.123)  # Cityscapes RGB std on 0-255
    size_divisor: int = 32  # batches are padded to a multiple of this
    batch_size: int = 1  # images per process (GPU); total batch = batch_size × world size
    num_workers: int = 4  # DataLoader worker processes
    eval_scale: float = 1.0  # images are resized by this factor at inference (0.5 → 512×1024 for Cityscapes)
    # inference on larger images (a 6000×4000 photo): the longer side, after eval_scale, is shrunk to this (the
    # network sees objects at the scale it learnt; predict/visualize upsample the result); 0: never
    eval_max_size: int = 2048


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "efficientnet-b5"  # efficientnet-b0 … efficientnet-b7
    pretrained: bool = False  # load ImageNet weights with efficientnet_pytorch (needs the internet once)
    backbone_weights: str | None = None  # local ImageNet weights file (.pth state dict); works offline
    norm: Literal["auto", "iabn", "torch"] = "auto"  # auto: inplace_abn when importable, else pure PyTorch
    drop_path_rate: float = 0.0  # stochastic depth of the backbone's blocks (efficientnet_pytorch's 0.2; official: 0)
    fpn_channels: int = 256  # 2-way FPN width (SPEC §3.3)
    semantic_head: bool = True  # switch off for the instance-only model (`train solo`)
    # solov2 (SPEC §3.5), maskrcnn (EfficientPS's original head, SPEC §3.8) or none (a semantic-only model)
    instance_head: Literal["solov2", "maskrcnn", "none"] = "solov2"


#: keys earlier versions wrote under another name
RENAMED_KEYS: dict[tuple[type, str], str] = {(DataConfig, "photometric"): "color_jitter"}
#: values earlier versions wrote that now have a name (model.instance_head was a boolean before the Mask R-CNN head)
LEGACY_VALUES: dict[tuple[type, str], dict[Any, Any]] = {
    (ModelConfig, "instance_head"): {True: "solov2", False: "none"},
}


@dataclass(frozen=True)
class SemanticConfig:
    # the classes are the 19 Cityscapes train ids (lpsctl.labels), not a setting
    lsfe_channels: int = 128  # LSFE / DPC output width (SPEC §3.4)
    dpc_dilations: tuple[Range, ...] = ((1, 6), (1, 1), (6, 21), (18, 15), (6, 3))  # (row, col) per DPC branch
    ohem_fraction: float = 0.25  # cross-entropy over the hardest fraction of valid pixels
    loss_weight: float = 1.0  # weight of loss_semantic_ce in the joint loss


@dataclass(frozen=True)
class SoloConfig:
    # the categories are the 8 Cityscapes thing classes (lpsctl.labels), not a setting
    grids: tuple[int, ...] = (40, 36, 24, 16, 12)  # S per level (strides 8, 8, 16, 32, 32 of the FPN)
    # instance scale sqrt(w·h) ranges per level, in pixels of the network input. SOLOv2's COCO ranges
    # (1-96, 48-192, 96-384, 192-768, 384-2048) are for 1333×800 inputs; this preset scales them ×1.5 for
    # 1024×2048 Cityscapes crops, whose objects are larger (see README, "Scale ranges").
    scale_ranges: tuple[Range, ...] = ((1, 144), (72, 288), (144, 576), (288, 1152), (576, 4096))
    sigma: float = 0.2  # centre region ±0.5·σ·(w, h), clamped to the 3×3 neighbourhood
    stacked_convs: int = 4  # kernel/category tower depth (light: 2)
    head_channels: int = 512  # kernel/category tower width (light: 256)
    kernel_dim: int = 256  # D = E, dynamic kernel size and mask-feature channels (light: 128)
    mask_feature_channels: int = 128  # mask-feature branch inner width
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    loss_category_weight: float = 1.0
    loss_mask_weight: float = 3.0  # Dice loss weight
    loss_weight: float = 1.0  # weight of the SOLOv2 losses in the joint loss
    score_threshold: float = 0.1  # category score to keep a cell at inference
    mask_threshold: float = 0.5  # binarisation threshold on mask probabilities
    nms_pre: int = 500  # masks kept before Matrix NMS
    update_threshold: float = 0.05  # score after Matrix NMS decay to keep an instance
    max_per_image: int = 100  # instances kept after Matrix NMS
    nms_kernel: Literal["gaussian", "linear"] = "gaussian"
    nms_sigma: float = 2.0  # Gaussian decay f(x) = exp(-sigma·x²)


@dataclass(frozen=True)
class MaskRCNNConfig:
    """EfficientPS's Mask R-CNN head (SPEC §3.8, the official config's numbers), on FPN levels P4-P32."""

    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256)  # one anchor size per level: 8 × stride
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_conv: Literal["standard", "separable"] = "standard"  # 3×3 conv + ReLU, or separable 3×3 + norm (leaky)
    rpn_positive_iou: float = 0.7
    rpn_negative_iou: float = 0.3
    rpn_batch_per_image: int = 256  # anchors sampled per image for the RPN loss
    rpn_positive_fraction: float = 0.5
    rpn_pre_nms_train: int = 2000  # proposals per level before NMS
    rpn_post_nms_train: int = 2000  # proposals per image after NMS
    rpn_pre_nms_test: int = 1000
    rpn_post_nms_test: int = 1000
    rpn_nms: float = 0.7
    rpn_box_beta: float = 1 / 9  # smooth-L1 β of the RPN box loss
    roi_positive_iou: float = 0.5
    roi_batch_per_image: int = 256  # RoIs sampled per image for the box and mask losses (GT boxes added first)
    roi_positive_fraction: float = 0.25
    box_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)  # 1 / target stds (0.1, 0.1, 0.2, 0.2)
    box_beta: float = 1.0  # smooth-L1 β of the box head's loss
    representation: int = 1024  # the box head's two fully connected layers
    mask_convs: int = 4  # separable 3×3 convs of the mask head
    mask_channels: int = 256
    score_threshold: float = 0.5  # class score to keep a detection at inference
    nms_threshold: float = 0.5  # per-class box NMS at inference
    max_per_image: int = 100
    mask_threshold: float = 0.5  # binarisation threshold on pasted mask probabilities
    loss_weight: float = 1.0  # weight of the five Mask R-CNN loss terms in the joint loss


@dataclass(frozen=True)
class SolverConfig:
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.07  # EfficientPS official, batch 16 (the paper text says 0.007; see README)
    lr_reference_batch: int = 16  # lr is given for this total batch and scaled linearly to the real one (0: as is)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    # weight decay of norm parameters and biases; null: weight_decay (mmdet 1.x decays every parameter), 0: detectron2
    norm_weight_decay: float | None = None
    clip_grad_norm: float = 35.0  # 0 disables clipping
    warmup_iters: int = 500
    warmup_factor: float = 1 / 3  # linear warm-up starts at lr × this
    schedule: Literal["step", "poly"] = "step"
    max_iters: int = 29750  # 160 epochs × 2975 images / batch 16
    max_minutes: float = 0.0  # stop (checkpoint, final validation) after this much training time; 0: no limit
    steps: tuple[int, ...] = (22313, 26775)  # ×gamma at epochs 120 and 144
    gamma: float = 0.1
    poly_power: float = 0.9
    amp: Precision = "fp16"  # fp16 + GradScaler on CUDA (fp32 on CPU); bf16 autocast on CUDA and CPU
    channels_last: bool = True
    compile: bool = False  # torch.compile the model
    seed: int = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower; exact resume on CPU)
    checkpoint_period: int = 1000  # iterations between last.pt writes
    eval_period: int = 5000  # iterations between validations (0: only at the end)
    log_period: int = 20  # iterations between metrics.jsonl lines


@dataclass(frozen=True)
class InferenceConfig:
    precision: Precision = "fp16"  # autocast at inference: fp16 on CUDA only (fp32 on CPU), bf16 on CUDA and CPU
    channels_last: bool = True  # NHWC input at inference: every convolution then runs in NHWC (weights untouched)
    fold_norms: bool = True  # fold batch norms into the convolutions before them (exact up to float rounding)
    compile: bool = False  # torch.compile the network (inductor): compiles at the first image of each input size


@dataclass(frozen=True)
class FusionConfig:
    score_threshold: float = 0.5  # instances below this score are dropped (SPEC §3.6 step 1)
    overlap_threshold: float = 0.5  # drop an instance when this fraction of it is already taken
    stuff_area: int = 2048  # stuff segments smaller than this (at 1024×2048) become void
    reference_area: int = 1024 * 2048  # image area at which stuff_area applies; scaled with image area
    logit_scale: float = 4.0  # ML_A = logit_scale × mask logits (± this for binary masks)


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    semantic: SemanticConfig = field(default_factory=SemanticConfig)
    solo: SoloConfig = field(default_factory=SoloConfig)
    maskrcnn: MaskRCNNConfig = field(default_factory=MaskRCNNConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)


_RULES: dict[str, Any] = {
    "> 0": lambda v: v > 0,
    ">= 0": lambda v: v >= 0,
    "in [0, 1]": lambda v: 0 <= v <= 1,
    "in (0, 1]": lambda v: 0 < v <= 1,
    "in [0, 1)": lambda v: 0 <= v < 1,
    "in (0, 1)": lambda v: 0 < v < 1,
}
#: the range of each numeric key, checked wherever a value is set (YAML files, --set, stored configs)
BOUNDS: dict[tuple[type, str], str] = {
    **{(DataConfig, key): "> 0" for key in ("crop_height", "crop_width", "scale_min", "scale_max", "size_divisor")},
    **{(DataConfig, key): "> 0" for key in ("batch_size", "eval_scale")},
    (DataConfig, "eval_max_size"): ">= 0",
    (DataConfig, "num_workers"): ">= 0",
    (DataConfig, "flip_prob"): "in [0, 1]",
    (ModelConfig, "fpn_channels"): "> 0",
    (ModelConfig, "drop_path_rate"): "in [0, 1)",
    (SemanticConfig, "lsfe_channels"): "> 0",
    (SemanticConfig, "ohem_fraction"): "in (0, 1]",
    (SemanticConfig, "loss_weight"): ">= 0",
    **{(SoloConfig, key): "> 0" for key in ("sigma", "head_channels", "kernel_dim", "mask_feature_channels")},
    **{(SoloConfig, key): "> 0" for key in ("nms_pre", "max_per_image", "nms_sigma")},
    **{(SoloConfig, key): ">= 0" for key in ("stacked_convs", "focal_gamma", "loss_weight")},
    **{(SoloConfig, key): ">= 0" for key in ("loss_category_weight", "loss_mask_weight")},
    **{(SoloConfig, key): "in [0, 1]" for key in ("focal_alpha", "score_threshold", "update_threshold")},
    (SoloConfig, "mask_threshold"): "in (0, 1)",
    **{
        (MaskRCNNConfig, key): "in [0, 1]"
        for key in ("rpn_positive_iou", "rpn_negative_iou", "rpn_positive_fraction", "rpn_nms", "roi_positive_iou")
    },
    **{(MaskRCNNConfig, key): "in [0, 1]" for key in ("roi_positive_fraction", "score_threshold", "nms_threshold")},
    **{
        (MaskRCNNConfig, key): "> 0"
        for key in ("rpn_batch_per_image", "rpn_pre_nms_train", "rpn_post_nms_train", "rpn_pre_nms_test")
    },
    **{
        (MaskRCNNConfig, key): "> 0"
        for key in ("rpn_post_nms_test", "roi_batch_per_image", "representation", "mask_convs", "mask_channels")
    },
    **{(MaskRCNNConfig, key): "> 0" for key in ("rpn_box_beta", "box_beta", "max_per_image")},
    (MaskRCNNConfig, "mask_threshold"): "in (0, 1)",
    (MaskRCNNConfig, "loss_weight"): ">= 0",
    **{(SolverConfig, key): "> 0" for key in ("lr", "gamma", "checkpoint_period", "log_period")},
    **{(SolverConfig, key): ">= 0" for key in ("lr_reference_batch", "weight_decay", "norm_weight_decay")},
    **{(SolverConfig, key): ">= 0" for key in ("clip_grad_norm", "warmup_iters", "max_iters", "max_minutes")},
    **{(SolverConfig, key): ">= 0" for key in ("poly_power", "eval_period")},
    (SolverConfig, "momentum"): "in [0, 1)",
    (SolverConfig, "warmup_factor"): "in (0, 1]",
    **{(FusionConfig, key): "in [0, 1]" for key in ("score_threshold", "overlap_threshold")},
    (FusionConfig, "stuff_area"): ">= 0",
    **{(FusionConfig, key): "> 0" for key in ("reference_area", "logit_scale")},
}


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the YAML file at `path` (deviations only), then `section.key=value` overrides in order."""
    config = Config()
    if path is not None:
        config = merge(config, _read_yaml(Path(path)), source=str(path))
    for item in overrides:
        config = apply_override(config, item)
    return config


def from_dict(data: dict[str, Any]) -> Config:
    """A config from plain data (as stored in checkpoints and output folders, also by earlier versions)."""
    if isinstance(data, dict):
        data = {name: _without_retired(name, values) for name, values in data.items()}
    return merge(Config(), data, source="stored config")


def _without_retired(section: str, values: Any) -> Any:
    if not isinstance(values, dict):
        return values
    kept = {}
    for key, value in values.items():
        retired = (section, key) in RETIRED_KEYS
        if retired and value != RETIRED_KEYS[section, key]:
            fixed = RETIRED_KEYS[section, key]
            raise ConfigError(f"{section}.{key} = {value!r} is no longer a setting (always {fixed})")
        if not retired:
            kept[key] = value
    return kept


def to_dict(config: Config) -> dict[str, Any]:
    """Plain data (lists, not tuples) that YAML, JSON and `torch.load(weights_only=True)` accept."""
    return _plain(dataclasses.asdict(config))


def dump(config: Config) -> str:
    """The resolved config as YAML."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def merge(config: Config, data: dict[str, Any], source: str) -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    sections = {}
    for name, values in data.items():
        section = _section(config, name, source)
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section '{name}' must be a mapping of keys to values")
        sections[name] = _replace_fields(section, values, f"{source}: {name}")
    return replace(config, **sections)


def apply_override(config: Config, item: str) -> Config:
    """Apply one `section.key=value` override; the value is parsed as YAML (`1e-3`, `[1, 2]`, `null`, `true`)."""
    key, sep, text = item.partition("=")
    section_name, dot, name = key.strip().partition(".")
    if not sep or not dot or not name:
        raise ConfigError(f"--set '{item}': expected section.key=value, e.g. solver.lr=0.01")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as error:
        raise ConfigError(f"--set '{item}': cannot parse the value ({error.__class__.__name__})") from None
    section = _section(config, section_name, "--set")
    updated = _replace_fields(section, {name: value}, f"--set {section_name}")
    return replace(config, **{section_name: updated})


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (the files shipped with lpsctl are in configs/)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return data or {}


def _section(config: Config, name: str, source: str) -> Any:
    valid = [f.name for f in fields(config)]
    if name not in valid:
        raise ConfigError(f"{source}: unknown config section '{name}'; valid sections: {', '.join(valid)}")
    return getattr(config, name)


def _replace_fields(section: Any, values: dict[str, Any], source: str) -> Any:
    hints = typing.get_type_hints(type(section))
    valid = [f.name for f in fields(section)]
    checked = {}
    for key, value in values.items():
        key = RENAMED_KEYS.get((type(section), key), key)
        if key not in valid:
            raise ConfigError(f"{source}: unknown key '{key}'; valid keys: {', '.join(valid)}")
        legacy = LEGACY_VALUES.get((type(section), key), {})
        if isinstance(value, bool) and value in legacy:
            value = legacy[value]
        checked[key] = _coerce(value, hints[key], f"{source}.{key}")
        rule = BOUNDS.get((type(section), key))
        if rule is not None and checked[key] is not None and not _RULES[rule](checked[key]):
            raise ConfigError(f"{source}.{key}: must be {rule}, got {checked[key]!r}")
    return replace(section, **checked)


_YAML_BOOLEAN_WORDS = {False: ("off", "no", "false"), True: ("on", "yes", "true")}  # what safe_load reads as bools


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check `value` against the type `hint`, converting lists to tuples and ints to floats where declared."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        for option in args:
            try:
                return _coerce(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {_describe(hint)}, got {value!r}")
    if origin is Literal:
        if isinstance(value, bool):  # YAML 1.1 reads off/on/no/yes unquoted as booleans: `amp: off` means "off"
            words = [arg for arg in args if isinstance(arg, str) and arg.lower() in _YAML_BOOLEAN_WORDS[value]]
            value = words[0] if len(words) == 1 else value
        if value in args:
            return value
        raise ConfigError(f"{where}: expected one of {', '.join(map(str, args))}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list ({_describe(hint)}), got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(item, args[0], f"{where}[{i}]") for i, item in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(item, arg, f"{where}[{i}]") for i, (item, arg) in enumerate(zip(value, args, strict=True)))
    if hint is float and isinstance(value, str):  # YAML 1.1 reads 2e-3 (no dot) as a string
        with contextlib.suppress(ValueError):
            value = float(value)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    accepted = {
        type(None): value is None,
        bool: isinstance(value, bool),
        int: number and isinstance(value, int),
        float: number,
        str: isinstance(value, str),
    }
    if accepted.get(hint, False):
        return float(value) if hint is float else value
    raise ConfigError(f"{where}: expected {_describe(hint)}, got {value!r}")


def _describe(hint: Any) -> str:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        return "list of " + (_describe(args[0]) if args[-1] is Ellipsis else ", ".join(_describe(a) for a in args))
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value

"""A trained network outside the training code: ONNX and TorchScript export of the forward pass (backbone, FPN,
heads → raw outputs), and runners that execute a checkpoint or an exported file and return `PanopticOutputs`, so
decoding and fusion stay in the post-processor whatever runs the network.

Exports have a dynamic batch and the input size they were exported at (efficientnet_pytorch's "same" padding and the
heads' resizes are traced as constants); `lpsctl predict` pads every image to it. The resolved config travels inside
the file (ONNX metadata, TorchScript extra file), so an export needs no checkpoint beside it.
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lpsctl.atomic import atomic_path
from lpsctl.config import Config, from_dict, to_dict
from lpsctl.engine.precision import autocast
from lpsctl.errors import CheckpointError, LpsctlError
from lpsctl.models import PanopticNet
from lpsctl.models.fold import fold_norms
from lpsctl.structures import MaskRCNNGeometry, PanopticOutputs, SoloGeometry, SoloOutputs

log = logging.getLogger(__name__)
Format = Literal["onnx", "torchscript"]
#: `network(images Tensor[B, 3, H, W]) -> PanopticOutputs`: a checkpoint's model or an exported file
Network = Callable[[Tensor], PanopticOutputs]
METADATA_KEY = "lpsctl"  # ONNX metadata key / TorchScript extra file holding the export's description
EXPORT_VERSION = 1
ONNX_OPSET = 17


class TorchNetwork:
    """A PanopticNet run as `config.inference` says: precision (autocast), memory format (a channels-last input makes
    every convolution run in NHWC; the weights are left as they are, so a model in training is not changed) and
    torch.compile (compiled at the first call of each input size)."""

    def __init__(self, model: PanopticNet, config: Config, device: torch.device) -> None:
        self.model, self.config, self.device = model, config, device
        self._forward: Callable[[Tensor], PanopticOutputs] = model
        if config.inference.compile:
            if device.type == "cpu":
                _check_cpp_compiler()
            self._forward = torch.compile(model)  # type: ignore[assignment]

    def __call__(self, images: Tensor) -> PanopticOutputs:
        images = images.to(self.device)
        if self.config.inference.channels_last:
            images = images.to(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(self.config.inference.precision, self.device):
            if not self.config.inference.compile:
                return self._forward(images)
            try:
                return self._forward(images)
            # dynamo's and inductor's failures (no C++ compiler, an unsupported op)
            except torch._dynamo.exc.TorchDynamoException as error:
                first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise LpsctlError(
                    f"torch.compile failed ({type(error).__name__}: {first[:200]}); run without --compile "
                    "(or with --set inference.compile=false)"
                ) from None


def _check_cpp_compiler() -> None:
    """torch.compile on the CPU generates C++: without a compiler it would fail only after minutes of tracing, so a
    missing one is named before (other build failures are still caught, after tracing, by TorchNetwork)."""
    from torch._inductor import cpp_builder
    from torch._inductor.exc import InvalidCxxCompiler

    try:
        cpp_builder.get_cpp_compiler()
    except InvalidCxxCompiler as error:
        raise LpsctlError(
            f"--compile (inference.compile=true) on the CPU needs a C++ compiler ({error}); install g++ or "
            "clang++, or run without it"
        ) from None


class FlatNetwork(nn.Module):
    """The model with a flat tuple of outputs, as exporters need: semantic logits (if any), then the instance
    head's category grids, kernel grids and mask features (if any)."""

    def __init__(self, model: PanopticNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        return flatten(self.model(images))


def flatten(outputs: PanopticOutputs) -> tuple[Tensor, ...]:
    """The outputs as one tuple: semantic logits (if any), category grids, kernel grids, mask features (if any)."""
    flat = [] if outputs.semantic is None else [outputs.semantic]
    if outputs.instance is not None:
        if not isinstance(outputs.instance, SoloOutputs):
            raise TypeError(f"only SOLOv2 outputs flatten, not {type(outputs.instance).__name__}")
        flat += [*outputs.instance.category_per_level, *outputs.instance.kernel_per_level]
        flat.append(outputs.instance.mask_features)
    return tuple(flat)


def unflatten(tensors: Sequence[Tensor], *, semantic: bool, levels: int) -> PanopticOutputs:
    """`FlatNetwork`'s tuple back to PanopticOutputs (levels: the instance head's grid levels, 0 for none)."""
    rest = list(tensors[1:] if semantic else tensors)
    instance = None
    if levels:
        instance = SoloOutputs(rest[:levels], rest[levels : 2 * levels], rest[2 * levels])
    return PanopticOutputs(semantic=tensors[0] if semantic else None, instance=instance)


def export_network(
    model: PanopticNet, config: Config, out: Path, *, fmt: Format, height: int, width: int, fold: bool = True
) -> dict[str, Any]:
    """Export the forward pass of `model` (on the CPU, in eval mode, norms folded into convolutions when `fold`)
    for inputs of height × width (multiples of 32) to `out`, atomically; returns the description stored with it."""
    if height % 32 or width % 32:
        raise LpsctlError(f"--height {height} --width {width}: the input size must be a multiple of 32")
    if isinstance(model.instance_geometry, MaskRCNNGeometry):
        raise LpsctlError(
            "export covers the semantic and SOLOv2 heads; the Mask R-CNN head (data-dependent proposals, NMS and RoI "
            "counts) runs from its checkpoint: `lpsctl predict --checkpoint CKPT`"
        )
    model = copy.deepcopy(model).cpu().eval()
    folded = fold_norms(model) if fold else 0
    flat = FlatNetwork(model).eval()
    example = torch.zeros(1, 3, height, width)
    geometry = model.instance_geometry
    levels = len(geometry.grids) if isinstance(geometry, SoloGeometry) else 0
    meta = {
        "version": EXPORT_VERSION,
        "config": to_dict(config),
        "height": height,
        "width": width,
        "semantic": model.semantic_head is not None,
        "levels": levels,
        "folded_norms": folded,
    }
    with atomic_path(out) as temp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings: sizes become constants, as the module docstring says
        if fmt == "onnx":
            _export_onnx(flat, example, temp, meta)
        else:
            traced = torch.jit.trace(flat, example, check_trace=False)
            torch.jit.save(traced, str(temp), _extra_files={METADATA_KEY: json.dumps(meta)})
    log.info("exported %s (%s, %d×%d, %d norms folded)", out, fmt, width, height, folded)
    return meta


def _export_onnx(flat: FlatNetwork, example: Tensor, path: Path, meta: dict[str, Any]) -> None:
    import onnx

    count = len(flat(example))
    names = [f"output_{index}" for index in range(count)]
    # the TorchScript-based exporter: seconds here, where the torch.export-based one took > 10 minutes on CPU
    torch.onnx.export(
        flat,
        (example,),
        str(path),
        dynamo=False,
        input_names=["images"],
        output_names=names,
        dynamic_axes={name: {0: "batch"} for name in ["images", *names]},
        opset_version=ONNX_OPSET,
    )
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    onnx.save(proto, str(path))


class ExportedNetwork:
    """Runs an exported file (ONNX in onnxruntime, or TorchScript) and returns PanopticOutputs."""

    def __init__(self, path: Path, device: torch.device) -> None:
        self.path, self.device = Path(path), device
        if not self.path.is_file():
            raise CheckpointError(f"exported model not found: {self.path} (write one with `lpsctl export`)")
        if self.path.suffix.lower() == ".onnx":
            self._session, meta = _onnx_session(self.path, device)
            self._run = self._run_onnx
        else:
            self._module, meta = _torchscript_module(self.path, device)
            self._run = self._run_torchscript
        self.config = _config_of(meta, self.path)
        self.input_size = (int(meta["height"]), int(meta["width"]))
        self.semantic, self.levels = bool(meta["semantic"]), int(meta["levels"])

    def __call__(self, images: Tensor) -> PanopticOutputs:
        return unflatten(self._run(images), semantic=self.semantic, levels=self.levels)

    def _run_onnx(self, images: Tensor) -> list[Tensor]:
        feed = {self._session.get_inputs()[0].name: images.detach().cpu().float().numpy()}
        return [torch.from_numpy(array).to(self.device) for array in self._session.run(None, feed)]

    def _run_torchscript(self, images: Tensor) -> list[Tensor]:
        with torch.inference_mode():
            return list(self._module(images.to(self.device).float()))


def _onnx_session(path: Path, device: torch.device) -> tuple[Any, dict[str, Any]]:
    try:
        import onnxruntime
    except ImportError:
        raise LpsctlError("running an ONNX model needs onnxruntime: pip install 'lpsctl[onnx]'") from None
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = onnxruntime.InferenceSession(str(path), providers=providers)
    except Exception as error:  # onnxruntime raises its own exception types for unreadable files
        raise CheckpointError(f"cannot read {path}: not a valid ONNX model ({str(error).splitlines()[0]})") from None
    text = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    return session, _meta_of(text, path)


def _torchscript_module(path: Path, device: torch.device) -> tuple[Any, dict[str, Any]]:
    extra = {METADATA_KEY: ""}
    try:
        module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except (RuntimeError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"cannot read {path}: not a TorchScript model from `lpsctl export` ({first})") from None
    return module.eval(), _meta_of(extra[METADATA_KEY] or None, path)


def _meta_of(text: str | bytes | None, path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(text) if text else None
    except json.JSONDecodeError:
        meta = None
    if not isinstance(meta, dict) or not {"config", "height", "width", "semantic", "levels"} <= meta.keys():
        raise CheckpointError(f"{path} was not written by `lpsctl export` (no lpsctl description inside)")
    if meta.get("version") != EXPORT_VERSION:
        raise CheckpointError(f"{path}: export version {meta.get('version')} is not {EXPORT_VERSION}: export again")
    return meta


def _config_of(meta: dict[str, Any], path: Path) -> Config:
    try:
        return from_dict(meta["config"])
    except LpsctlError as error:
        raise CheckpointError(f"{path}: stored config does not fit this lpsctl version ({error})") from None

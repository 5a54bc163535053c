"""The ResNet-18 tissue classifier: PathSynth's verifier and quiz grader.

``TissueClassifier`` loads once (``from_pretrained``) and is then shared read-only. It takes images as uint8
HWC arrays or PIL images of any size and mode, resizes them to the model's input, and returns class
probabilities (temperature-scaled), penultimate-layer features, or an occlusion-sensitivity map; images from
other labs go through ``prepare``/``predict_external`` (stain normalisation, physical scale).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .data import dihedral
from .errors import ModelFileError
from .images import resize_tensor, to_rgb_uint8
from .settings import DEFAULT_CLASSIFIER_DIR
from .stain import PreparedImage, prepare_image
from .tissues import NUM_TISSUES

__all__ = ["LogitEnsemble", "ModelFileError", "TissueClassifier", "build_network", "build_resnet18", "model_files",
           "small_input_stem",
           "model_files_present", "fit_temperature", "gradcam_overlay",
           "images_to_tensor", "load_classifier", "probabilities_from_logits"]
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
REBUILD_COMMAND = "python train/classifier.py --export_dir assets/models/classifier"


SMALL_STEM_MAX_SIZE = 28  # tiles up to this size get the small-input stem; larger ones the ImageNet stem


def small_input_stem(size: int) -> bool:
    """Whether tiles of ``size`` px get the small-input stem (3x3 stride 1): only PathMNIST's 28 px ones.

    From 64 px up the ImageNet stem (7x7 stride 2 + max-pool) brings a tile to the grids the 28 px stem works on
    (64 px: 16 -> 8 -> 4 -> 2; 224 px: 56 -> 28 -> 14 -> 7, ImageNet's own), at a quarter of the compute, and
    matches ImageNet weights (``--pretrained``).
    """
    return size <= SMALL_STEM_MAX_SIZE


def build_resnet18(num_classes: int = NUM_TISSUES, small_input: bool = True, keep_maxpool: bool = True,
                   pretrained: bool = False, in_channels: int = 3) -> nn.Module:
    """torchvision's ResNet-18, with a stem for 28 px tiles when ``small_input`` (see :func:`small_input_stem`).

    The ImageNet stem (7x7 conv stride 2 + max-pool) shrinks 28 px to 7 px before the first residual block
    and throws away the texture that separates e.g. stroma from muscle. We use a 3x3 stride-1 conv, so the
    first features see every pixel, and keep the max-pool: the stages then run at 14 -> 7 -> 4 -> 2 px.
    Dropping the max-pool too (the CIFAR stem, ``keep_maxpool=False``) costs 4x the compute for a
    training run that must fit in minutes on 2 CPU cores. Larger tiles keep the ImageNet stem.
    ``in_channels=1``: a greyscale network (chest films), its first convolution taking one channel.
    """
    from torchvision.models import ResNet18_Weights, resnet18

    model = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1 if pretrained else None)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    if small_input:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        if not keep_maxpool:
            model.maxpool = nn.Identity()
    return model


class LogitEnsemble(nn.Module):
    """Independently trained networks used as one: the mean of their logits (a classic, cheap accuracy gain)."""

    def __init__(self, members):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members]).mean(0)


def build_network(config: dict) -> nn.Module:
    """The network a ``config.json`` describes: one ResNet-18, or ``ensemble`` of them with averaged logits."""
    # Configs written before other sizes existed lack "input_size" (28 px) or "small_input" (the stem follows the size).
    small_input = config.get("small_input", small_input_stem(int(config.get("input_size", 28))))

    def resnet() -> nn.Module:
        return build_resnet18(config.get("num_classes", NUM_TISSUES), small_input, config.get("keep_maxpool", True),
                              in_channels=int(config.get("in_channels", 3)))

    count = int(config.get("ensemble", 1))
    return resnet() if count == 1 else LogitEnsemble([resnet() for _ in range(count)])


def weight_file_names(count: int) -> list[str]:
    """``model.safetensors`` for one network; one file per member for an ensemble (each well under 100 MB)."""
    return [WEIGHTS_NAME] if count == 1 else [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


def model_files(path: str | Path) -> list[Path]:
    """The files a classifier directory consists of (``config.json`` first), read from its config when present."""
    path = Path(path)
    try:
        count = int(json.loads((path / CONFIG_NAME).read_text()).get("ensemble", 1))
    except (OSError, ValueError, AttributeError):
        count = 1
    return [path / CONFIG_NAME, *(path / name for name in weight_file_names(count))]


def model_files_present(path: str | Path) -> bool:
    return all(file.is_file() for file in model_files(path))


def _load_weights(network: nn.Module, weights_file: Path) -> None:
    from safetensors.torch import load_file

    if not weights_file.is_file():
        raise ModelFileError(f"classifier file missing: {weights_file}. Rebuild it with: {REBUILD_COMMAND}")
    try:
        state = load_file(str(weights_file))
    except Exception as error:
        raise ModelFileError(f"classifier file unreadable ({type(error).__name__}: {error}) in {weights_file.parent}. "
                             f"Rebuild it with: {REBUILD_COMMAND}") from None
    try:
        network.load_state_dict({k: v.float() for k, v in state.items()}, assign=True)  # strict: each one set
    except RuntimeError as error:
        raise ModelFileError(f"classifier weights in {weights_file} do not match the ResNet-18 architecture "
                             f"({str(error).splitlines()[0]}). Rebuild it with: {REBUILD_COMMAND}") from None


def images_to_tensor(images, size: int) -> torch.Tensor:
    """uint8 HWC arrays / PIL images (any size, gray/RGBA/16-bit) -> float (N, 3, size, size) in [0, 1]."""
    if (isinstance(images, np.ndarray) and images.ndim != 4) or hasattr(images, "convert"):
        images = [images]
    tensors = []
    for image in images:
        x = torch.from_numpy(to_rgb_uint8(image)).permute(2, 0, 1).float().div(255.0)[None]
        tensors.append(resize_tensor(x, size))
    if not tensors:
        return torch.zeros(0, 3, size, size)
    return torch.cat(tensors)


class TissueClassifier:
    """A trained tissue classifier with its preprocessing; see the module docstring."""

    def __init__(self, model: nn.Module, config: dict):
        self.model = model.eval()
        self.config = config
        self.input_size = int(config.get("input_size", 28))  # the tile size it was trained on (28 px before sizes)
        self.in_channels = int(config.get("in_channels", 3))  # 1: a greyscale network (films)
        self.num_classes = int(config.get("num_classes", NUM_TISSUES))
        self.mean = torch.tensor(config["mean"]).view(1, self.in_channels, 1, 1)
        self.std = torch.tensor(config["std"]).view(1, self.in_channels, 1, 1)
        # Test-time views: the 8 dihedral ones for tiles (no up or down), a left-right flip for films (upright).
        self.test_time_views = config.get("test_time_views", "dihedral")
        self.tta = bool(config.get("tta", False))
        # Temperature scaling (Guo et al. 2017), fitted on the held-out fold; 1.0 = the raw softmax.
        self.temperature = float(config.get("temperature", 1.0))

    def to(self, device: str | torch.device) -> "TissueClassifier":
        """Runs on ``device`` from now on; inputs are moved there and results come back as CPU arrays."""
        self.model.to(device)
        return self

    # --------------------------------------------------------------------------------------- I/O
    @classmethod
    def from_pretrained(cls, path: str | Path = DEFAULT_CLASSIFIER_DIR) -> "TissueClassifier":
        path = Path(path)
        config_file = path / CONFIG_NAME
        if not config_file.is_file():
            raise ModelFileError(f"classifier file missing: {config_file}. Rebuild it with: {REBUILD_COMMAND}")
        try:
            config = json.loads(config_file.read_text())
        except Exception as error:
            raise ModelFileError(f"classifier file unreadable ({type(error).__name__}: {error}) in {path}. "
                                 f"Rebuild it with: {REBUILD_COMMAND}") from None
        with torch.device("meta"):  # no random initialisation (seconds for 5 networks): the files set every tensor
            model = build_network(config)
        networks = model.members if isinstance(model, LogitEnsemble) else [model]
        for network, name in zip(networks, weight_file_names(len(networks))):
            _load_weights(network, path / name)
        return cls(model, config)

    @classmethod
    def ensemble(cls, classifiers) -> "TissueClassifier":
        """Classifiers trained on the same images as one model (logits averaged; refit the temperature after)."""
        first = classifiers[0].config
        for other in classifiers[1:]:
            if any(not np.allclose(first[key], other.config[key]) for key in ("mean", "std")):
                raise ValueError("ensemble members must share their input normalisation (same training images)")
            if other.input_size != classifiers[0].input_size:
                raise ValueError(f"ensemble members must share their tile size, got {classifiers[0].input_size} and "
                                 f"{other.input_size} px")
        networks = [member for c in classifiers
                    for member in (c.model.members if isinstance(c.model, LogitEnsemble) else [c.model])]
        config = {**first, "ensemble": len(networks), "temperature": 1.0}
        return cls(LogitEnsemble(networks), config)

    def save_pretrained(self, path: str | Path, fp16: bool = True) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        dtype = torch.float16 if fp16 else torch.float32
        networks = self.model.members if isinstance(self.model, LogitEnsemble) else [self.model]
        for stale in path.glob("model*.safetensors"):  # a single model replacing an ensemble, or the reverse
            stale.unlink()
        for network, name in zip(networks, weight_file_names(len(networks))):
            # BatchNorm counters stay integer; everything else may be stored in half precision.
            state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous()
                     for k, v in network.state_dict().items()}
            save_file(state, str(path / name))
        (path / CONFIG_NAME).write_text(json.dumps(self.config, indent=2))

    # --------------------------------------------------------------------------------- inference
    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised and on the network's device (a classifier being trained on a GPU is validated there)."""
        device = next(self.model.parameters()).device
        if self.in_channels == 1 and x.shape[1] == 3:  # images arrive as RGB (display-ready); a film is its grey
            x = x.mean(1, keepdim=True)
        return ((x - self.mean.to(x.device)) / self.std.to(x.device)).to(device)

    def _views(self, batch: torch.Tensor, tta: bool) -> list[torch.Tensor]:
        if not tta:
            return [batch]
        if self.test_time_views == "hflip":
            return [batch, batch.flip(-1)]
        return [dihedral(batch, k) for k in range(8)]

    @torch.no_grad()
    def view_logits(self, images, tta: bool | None = None, batch_size: int = 256) -> torch.Tensor:
        """Uncalibrated logits ``(V, N, C)`` of every test-time view (with TTA: 8 dihedral views for tiles, 2 for
        films; else 1)."""
        x = images if isinstance(images, torch.Tensor) else images_to_tensor(images, self.input_size)
        use_tta = self.tta if tta is None else tta
        n_views = len(self._views(x[:0], use_tta))
        if len(x) == 0:
            return torch.zeros(n_views, 0, self.num_classes)
        out = []
        for batch in x.split(batch_size):
            batch = self._normalise(batch)
            views = self._views(batch, use_tta)
            out.append(self.model(torch.cat(views)).float().cpu().view(n_views, len(batch), -1))
        return torch.cat(out, 1)

    def predict_proba(self, images, tta: bool | None = None, batch_size: int = 256,
                      calibrated: bool = True) -> np.ndarray:
        """Class probabilities ``(N, 9)``: softmax(logits / T) averaged over the TTA views.

        ``calibrated=False`` uses T = 1 (the raw network), for measuring what calibration changes.
        """
        logits = self.view_logits(images, tta, batch_size)
        return probabilities_from_logits(logits, self.temperature if calibrated else 1.0).numpy()

    def prepare(self, image, microns_per_pixel: float | None = None, normalise_stain: bool = True,
                pad: bool = True) -> PreparedImage:
        """An image from anywhere (any size/mode/bit depth) as model input, with notes on what was done.

        See :func:`pathsynth.stain.prepare_image`; stain normalisation needs the reference stored in
        ``config.json`` (models without one skip it and say so).
        """
        reference = self.config.get("stain_reference") if normalise_stain else None
        prepared = prepare_image(image, microns_per_pixel, reference, self.input_size, pad)
        if normalise_stain and reference is None:
            prepared.notes.insert(0, "stain normalisation unavailable: this model stores no stain reference")
        return prepared

    def predict_external(self, images, microns_per_pixel: float | None = None, normalise_stain: bool = True,
                         pad: bool = True, tta: bool | None = None) -> tuple[np.ndarray, list[list[str]]]:
        """Probabilities ``(N, 9)`` for images from other labs/scanners, and per image the notes of :meth:`prepare`.

        Images are prepared one by one (after physical rescaling they may differ in size).
        """
        if (isinstance(images, np.ndarray) and images.ndim != 4) or hasattr(images, "convert"):
            images = [images]
        probs, notes = [], []
        for image in images:
            prepared = self.prepare(image, microns_per_pixel, normalise_stain, pad)
            probs.append(self.predict_proba(prepared.tensor[None], tta))
            notes.append(prepared.notes)
        return (np.concatenate(probs) if probs else np.zeros((0, self.num_classes), np.float32)), notes

    def predict(self, images, tta: bool | None = None) -> np.ndarray:
        return self.predict_proba(images, tta).argmax(-1)

    @torch.no_grad()
    def features(self, images, batch_size: int = 256) -> np.ndarray:
        """Penultimate-layer (global-average-pooled) features ``(N, 512)``; an ensemble's members side by side."""
        x = images if isinstance(images, torch.Tensor) else images_to_tensor(images, self.input_size)
        networks = self.model.members if isinstance(self.model, LogitEnsemble) else [self.model]
        bodies = [nn.Sequential(*list(network.children())[:-1]) for network in networks]  # all but the fc layer
        out = [torch.cat([body(self._normalise(b)).flatten(1).cpu() for body in bodies], 1)
               for b in x.split(batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, 512 * len(bodies)), np.float32)

    def gradcam(self, image, target: int | None = None) -> np.ndarray:
        """Where the model looked for ``target`` (default: the predicted tissue): an HxW map in [0, 1].

        Kept under its old name for the app; it is now occlusion sensitivity (captum) for the first network of an
        ensemble (``explain.app_map``: ~0.3 s of a core), because Grad-CAM on the last stage (2x2 at 28 px) cannot
        localise. See :mod:`pathsynth.explain` and tests/test_explain.py.
        """
        from .explain import attribution_map

        return attribution_map(self, image, target, method="app")

    explain = gradcam  # the accurate name


def probabilities_from_logits(view_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``(V, N, C)`` logits -> ``(N, C)`` probabilities: tempered softmax per view, averaged over views."""
    return (view_logits / temperature).softmax(-1).mean(0)


def fit_temperature(view_logits: torch.Tensor, labels, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature that minimises the negative log-likelihood of held-out labels (Guo et al. 2017).

    A bounded 1-D search (scipy) over log T; with TTA the likelihood is that of the view-averaged
    probabilities, exactly what :meth:`TissueClassifier.predict_proba` returns.
    """
    from scipy.optimize import minimize_scalar

    labels = torch.as_tensor(np.asarray(labels).reshape(-1), dtype=torch.long)
    if view_logits.ndim == 2:
        view_logits = view_logits[None]

    def nll(log_t: float) -> float:
        probs = probabilities_from_logits(view_logits, float(np.exp(log_t)))
        return float(-probs[torch.arange(len(labels)), labels].clamp_min(1e-12).log().mean())

    result = minimize_scalar(nll, bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded")
    return round(float(np.exp(result.x)), 4)


def gradcam_overlay(image, heatmap: np.ndarray, alpha: float = 0.7) -> np.ndarray:
    """The image in grey with an attribution heatmap (:meth:`TissueClassifier.gradcam`) in one orange over it, at the
    image's size (:func:`pathsynth.explain.blend_map`; the app shows :func:`pathsynth.explain.map_figure`)."""
    from .explain import blend_map

    return blend_map(image, heatmap, size=None, max_alpha=alpha)


def load_classifier(path: str | Path | None = None) -> TissueClassifier:
    """The classifier at ``path`` (default: ``$PATHSYNTH_CLASSIFIER`` or the shipped one)."""
    if path is None:
        from .settings import Settings

        path = Settings.from_env().classifier_dir
    return TissueClassifier.from_pretrained(path)

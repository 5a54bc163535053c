"""The ResNet-18 tissue classifier: PathSynth's verifier and quiz grader.

``TissueClassifier`` loads once (``from_pretrained``) and is then shared read-only. It takes images as uint8
HWC arrays or PIL images of any size and mode, resizes them to the model's input, and returns class
probabilities, penultimate-layer features, or a Grad-CAM heatmap.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import dihedral
from .errors import ModelFileError
from .images import resize_tensor, to_rgb_uint8
from .settings import DEFAULT_CLASSIFIER_DIR
from .tissues import NUM_TISSUES

__all__ = ["ModelFileError", "TissueClassifier", "build_resnet18", "gradcam_overlay", "images_to_tensor",
           "load_classifier"]
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
REBUILD_COMMAND = "python train/classifier.py --export_dir assets/models/classifier"


def build_resnet18(num_classes: int = NUM_TISSUES, small_input: bool = True, keep_maxpool: bool = True,
                   pretrained: bool = False) -> nn.Module:
    """torchvision's ResNet-18 with a stem for 28 px tiles.

    The ImageNet stem (7x7 conv stride 2 + max-pool) shrinks 28 px to 7 px before the first residual block
    and throws away the texture that separates e.g. stroma from muscle. We use a 3x3 stride-1 conv, so the
    first features see every pixel, and keep the max-pool: the stages then run at 14 -> 7 -> 4 -> 2 px.
    Dropping the max-pool too (the CIFAR stem, ``keep_maxpool=False``) costs 4x the compute for a
    training run that must fit in minutes on 2 CPU cores.
    """
    from torchvision.models import ResNet18_Weights, resnet18

    model = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1 if pretrained else None)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    if small_input:
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        if not keep_maxpool:
            model.maxpool = nn.Identity()
    return model


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
        self.input_size = int(config.get("input_size", 28))
        self.mean = torch.tensor(config["mean"]).view(1, 3, 1, 1)
        self.std = torch.tensor(config["std"]).view(1, 3, 1, 1)
        self.tta = bool(config.get("tta", False))

    # --------------------------------------------------------------------------------------- I/O
    @classmethod
    def from_pretrained(cls, path: str | Path = DEFAULT_CLASSIFIER_DIR) -> "TissueClassifier":
        from safetensors.torch import load_file

        path = Path(path)
        config_file, weights_file = path / CONFIG_NAME, path / WEIGHTS_NAME
        for file in (config_file, weights_file):
            if not file.is_file():
                raise ModelFileError(f"classifier file missing: {file}. Rebuild it with: {REBUILD_COMMAND}")
        try:
            config = json.loads(config_file.read_text())
            state = load_file(str(weights_file))
        except Exception as error:
            raise ModelFileError(f"classifier file unreadable ({type(error).__name__}: {error}) in {path}. "
                                 f"Rebuild it with: {REBUILD_COMMAND}") from None
        model = build_resnet18(config.get("num_classes", NUM_TISSUES), config.get("small_input", True),
                               config.get("keep_maxpool", True))
        try:
            model.load_state_dict({k: v.float() for k, v in state.items()})
        except RuntimeError as error:
            raise ModelFileError(f"classifier weights in {weights_file} do not match the ResNet-18 architecture "
                                 f"({str(error).splitlines()[0]}). Rebuild it with: {REBUILD_COMMAND}") from None
        return cls(model, config)

    def save_pretrained(self, path: str | Path, fp16: bool = True) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        dtype = torch.float16 if fp16 else torch.float32
        # BatchNorm counters stay integer; everything else may be stored in half precision.
        state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(path / WEIGHTS_NAME))
        (path / CONFIG_NAME).write_text(json.dumps(self.config, indent=2))

    # --------------------------------------------------------------------------------- inference
    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    @torch.no_grad()
    def predict_proba(self, images, tta: bool | None = None, batch_size: int = 256) -> np.ndarray:
        """Class probabilities ``(N, 9)``; with TTA, averaged over the 8 dihedral transforms."""
        x = images if isinstance(images, torch.Tensor) else images_to_tensor(images, self.input_size)
        use_tta = self.tta if tta is None else tta
        out = []
        for batch in x.split(batch_size):
            batch = self._normalise(batch)
            views = [dihedral(batch, k) for k in range(8)] if use_tta else [batch]
            logits = self.model(torch.cat(views))
            probs = logits.softmax(-1).view(len(views), len(batch), -1).mean(0)
            out.append(probs)
        return torch.cat(out).numpy() if out else np.zeros((0, NUM_TISSUES), np.float32)

    def predict(self, images, tta: bool | None = None) -> np.ndarray:
        return self.predict_proba(images, tta).argmax(-1)

    @torch.no_grad()
    def features(self, images, batch_size: int = 256) -> np.ndarray:
        """Penultimate-layer (global-average-pooled) features ``(N, 512)``."""
        x = images if isinstance(images, torch.Tensor) else images_to_tensor(images, self.input_size)
        body = nn.Sequential(*list(self.model.children())[:-1])  # everything but the fc layer
        out = [body(self._normalise(b)).flatten(1) for b in x.split(batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, 512), np.float32)

    def _layer4(self, x: torch.Tensor) -> torch.Tensor:
        """The ResNet's body up to its last residual stage (what Grad-CAM looks at)."""
        m = self.model
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        return m.layer4(m.layer3(m.layer2(m.layer1(x))))

    def gradcam(self, image, target: int | None = None) -> np.ndarray:
        """Grad-CAM (Selvaraju et al. 2017) on the last residual stage, at the image's own size, in [0, 1].

        No hooks and no parameter gradients: safe to run while other threads use the model.
        """
        array = to_rgb_uint8(image)
        height, width = array.shape[:2]
        x = self._normalise(images_to_tensor(array, self.input_size))
        with torch.enable_grad():
            act = self._layer4(x).detach().requires_grad_(True)
            logits = self.model.fc(torch.flatten(self.model.avgpool(act), 1))
            cls = int(logits.argmax(-1)) if target is None else int(target)
            (grad,) = torch.autograd.grad(logits[0, cls], act)
        weights = grad.mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * act.detach()).sum(1, keepdim=True))
        # Bilinear upsampling from the 4x4 stage, via the model input size for a smooth map.
        cam = F.interpolate(cam, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        cam = F.interpolate(cam, size=(height, width), mode="bilinear", align_corners=False)[0, 0]
        cam = cam - cam.min()
        return (cam / cam.max()).numpy() if cam.max() > 0 else cam.numpy()


def gradcam_overlay(image, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The image with a jet-coloured Grad-CAM heatmap blended over it (uint8 HWC)."""
    from matplotlib import colormaps

    base = to_rgb_uint8(image).astype(np.float32)
    colour = colormaps["jet"](heatmap)[..., :3] * 255.0
    return np.clip((1 - alpha) * base + alpha * colour, 0, 255).astype(np.uint8)


def load_classifier(path: str | Path | None = None) -> TissueClassifier:
    """The classifier at ``path`` (default: ``$PATHSYNTH_CLASSIFIER`` or the shipped one)."""
    if path is None:
        from .settings import Settings

        path = Settings.from_env().classifier_dir
    return TissueClassifier.from_pretrained(path)

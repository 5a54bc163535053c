"""The SD adaptation toolkit: check which parts of Stable Diffusion suit a domain's images, and adapt them.

Chambon et al. (2022, "Adapting Pretrained Vision-Language Foundational Models to Medical Imaging Domains")
took SD apart for chest X-rays: does the VAE keep the images, how should the text encoder's output condition the
U-Net, can new tokens carry the new concepts, and how much of the U-Net must train (the U-Net fine-tune mattered
most). The same questions for PathMNIST tiles and PneumoniaMNIST films, shared by ``train/sd_lora.py`` and the
``sd-lora`` backend. Every function that names classes takes a ``domain`` (:mod:`pathsynth.domains`; default
histology, whose tissues it has always named):

- :func:`vae_reconstruction_report`: RMSE, PSNR, SSIM (torchmetrics) and FID (evaluator features) of the VAE's
  reconstructions of real images, next to the resize round trip alone, plus a comparison PNG;
- :func:`encode_prompts`: the prompt embedding, per-token (SD's default) or one pooled vector broadcast;
- :class:`ClassTokens`: textual inversion, one new token per class (``<adipose>``..., ``<pneumonia>``), text
  encoder frozen;
- the export names the backend looks for (LoRA, full U-Net, learned tokens).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..domains import Domain, get_domain
from ..images import resize_tensor, tensor_to_uint8, uint8_to_tensor

PROMPT_STYLES = ("caption", "catalogue")  # the paper's short caption / + the catalogue's visual description
PROMPT_EMBEDDINGS = ("sequence", "cls", "mean", "pooler")
FULL_UNET_DIR = "unet"  # --finetune full: UNet2DConditionModel.save_pretrained(out_dir / "unet")
TOKENS_WEIGHTS_NAME = "learned_embeds.safetensors"  # --textual_inversion: {token: vector}
VAE_REPORT_NAME = "vae_report.json"
VAE_REPORT_IMAGE = "vae_report.png"


# ------------------------------------------------------------------------------------------------ prompts

def class_token(index: int | str, domain: Domain | str | None = None) -> str:
    """The textual-inversion token of one class, its medmnist label hyphenated: ``<adipose>``,
    ``<smooth-muscle>``... for histology, ``<normal>``, ``<pneumonia>`` for chest films."""
    return "<" + get_domain(domain).get_class(index).label.replace(" ", "-") + ">"


tissue_token = class_token  # the histology name histology callers import


def visual_description(index: int | str, domain: Domain | str | None = None) -> str:
    """The catalogue's teaching text reduced to what is visible: its first sentence, without asides in brackets,
    as a clause (lower-case start, no full stop) to follow the caption."""
    description = get_domain(domain).get_class(index).description
    first = re.sub(r"\s*\([^)]*\)", "", re.split(r"(?<=\.)\s", description)[0]).rstrip(".")
    return first[:1].lower() + first[1:]


def pool_prompt_embedding(hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor, mode: str,
                          eos_token_id: int) -> torch.Tensor:
    """(B, L, D) last hidden states -> what the U-Net attends to, still (B, L, D).

    ``sequence`` is SD's default. The pooled modes broadcast one vector to every position, so shapes (and the
    pipeline's classifier-free guidance) stay as they are; attention over identical keys returns that vector.
    ``cls`` is the first position: CLIP's text encoder is causal, so it only sees the start token and is the
    same for every prompt (an unconditional control). ``pooler`` is CLIP's pooled output, the end token's state.
    """
    if mode == "sequence":
        return hidden
    if mode == "cls":
        pooled = hidden[:, 0]
    elif mode == "mean":  # over the prompt's tokens (start and end included), not the padding
        mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
        pooled = (hidden * mask).sum(1) / mask.sum(1)
    elif mode == "pooler":
        # Found by hand: SD v1's CLIP config has the legacy eos_token_id=2, so transformers locates the end token
        # with argmax(input_ids), which picks an added textual-inversion token instead.
        eos = (input_ids == eos_token_id).int().argmax(-1)
        pooled = hidden[torch.arange(len(hidden), device=hidden.device), eos]
    else:
        raise ValueError(f"prompt embedding must be one of {PROMPT_EMBEDDINGS}, got {mode!r}")
    return pooled[:, None].expand_as(hidden).contiguous()


def encode_prompts(tokenizer, text_encoder, prompts: Sequence[str], mode: str = "sequence",
                   hidden_states: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Prompts -> (B, 77, D) U-Net conditioning, tokenized and encoded as StableDiffusionPipeline does.

    ``hidden_states(input_ids)`` replaces ``text_encoder(input_ids)[0]`` (textual inversion's training pass).
    """
    batch = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                      return_tensors="pt")
    input_ids = batch.input_ids.to(text_encoder.device)
    hidden = hidden_states(input_ids) if hidden_states else text_encoder(input_ids, return_dict=False)[0]
    return pool_prompt_embedding(hidden, input_ids, batch.attention_mask.to(hidden.device), mode,
                                 tokenizer.eos_token_id)


# ---------------------------------------------------------------------------------------- textual inversion

class ClassTokens(nn.Module):
    """One learned input embedding per class token (a tissue, a finding); the text encoder itself stays frozen.

    Only ``vectors`` is a parameter: the forward pass swaps them into the (frozen) embedding matrix with
    ``torch.func.functional_call``, so no gradient or optimizer state touches the other 49k rows, and
    accelerate/DDP wrap a (classes, 768) module rather than the whole text encoder.
    """

    def __init__(self, tokens: list[str], token_ids: list[int], init: torch.Tensor, weight_name: str):
        super().__init__()
        self.tokens = tokens
        self.register_buffer("token_ids", torch.tensor(token_ids), persistent=False)
        self.vectors = nn.Parameter(init.detach().float().clone())
        self.weight_name = weight_name  # the text encoder's token-embedding parameter

    def forward(self, text_encoder, input_ids: torch.Tensor) -> torch.Tensor:
        frozen = text_encoder.get_input_embeddings().weight
        weight = frozen.index_copy(0, self.token_ids.to(frozen.device), self.vectors.to(frozen.dtype))
        return torch.func.functional_call(text_encoder, {self.weight_name: weight}, (input_ids,),
                                          {"return_dict": False})[0]

    def state(self) -> dict[str, torch.Tensor]:
        """{token: vector} in fp32, the export format."""
        return {token: vector.detach().float().cpu().contiguous() for token, vector in zip(self.tokens, self.vectors)}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self.vectors.copy_(torch.stack([state[token] for token in self.tokens]))


TissueTokens = ClassTokens  # the histology name histology callers import


def add_class_tokens(tokenizer, text_encoder, domain: Domain | str | None = None) -> ClassTokens:
    """Add the domain's class tokens (``<adipose>``...) to the tokenizer and text encoder, each initialised as the
    mean embedding of its label's tokens (textual inversion's usual start: the concept's plain name)."""
    domain = get_domain(domain)
    tokens = [class_token(entry.index, domain) for entry in domain.classes]
    if tokenizer.add_tokens(tokens) != len(tokens):
        raise ValueError(f"the tokenizer already holds some of {tokens}")
    text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # the new rows are overwritten
    text_encoder.requires_grad_(False)  # resizing made a fresh, trainable embedding matrix
    embeddings = text_encoder.get_input_embeddings().weight
    init = torch.stack([embeddings[tokenizer(label, add_special_tokens=False).input_ids].float().mean(0)
                        for label in domain.labels])
    name = next(n for n, p in text_encoder.named_parameters() if p is embeddings)
    return ClassTokens(tokens, tokenizer.convert_tokens_to_ids(tokens), init, name).to(embeddings.device)


add_tissue_tokens = add_class_tokens  # the histology name histology callers import


def save_class_tokens(tokens: ClassTokens, directory: Path) -> Path:
    from safetensors.torch import save_file

    path = Path(directory) / TOKENS_WEIGHTS_NAME
    save_file(tokens.state(), str(path))
    return path


def load_class_tokens(pipeline, path: Path) -> list[str]:
    """Load the learned tokens into a StableDiffusionPipeline (diffusers' textual-inversion loader)."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    pipeline.load_textual_inversion([{token: vector} for token, vector in state.items()], token=list(state))
    return list(state)


save_tissue_tokens, load_tissue_tokens = save_class_tokens, load_class_tokens  # the names histology callers import


# ------------------------------------------------------------------------------------------- VAE report

@torch.no_grad()
def vae_round_trip(vae, images: np.ndarray, resolution: int, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images -> (VAE reconstructions, resize-only round trips), both uint8 at the images' size.

    Up with bicubic as in training, down with the backend's antialiased resize; the resize-only round trip
    separates what the resizing loses from what the VAE loses. Latents are the posterior mean (no sampling).
    """
    size, device = images.shape[1], vae.device
    reconstructions, resized = [], []
    for start in range(0, len(images), batch_size):
        pixels = uint8_to_tensor(images[start:start + batch_size])
        up = torch.nn.functional.interpolate(pixels, size=(resolution, resolution), mode="bicubic",
                                             align_corners=False).clamp(0, 1)
        latents = vae.encode((up * 2 - 1).to(device, vae.dtype)).latent_dist.mode()
        decoded = (vae.decode(latents).sample.float().cpu() + 1) / 2
        reconstructions.append(tensor_to_uint8(resize_tensor(decoded.clamp(0, 1), size)))
        resized.append(tensor_to_uint8(resize_tensor(up, size)))
    return np.concatenate(reconstructions), np.concatenate(resized)


def _finite(value: torch.Tensor) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None  # identical images: PSNR is infinite, JSON has no inf


def reconstruction_metrics(originals: np.ndarray, reconstructions: np.ndarray) -> dict:
    """RMSE (in 0-255 grey levels), PSNR (dB, over all pixels) and mean SSIM, by torchmetrics."""
    from torchmetrics.functional import mean_squared_error
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    target, preds = (uint8_to_tensor(x).double().contiguous() for x in (originals, reconstructions))
    return {"rmse": float(mean_squared_error(preds * 255, target * 255, squared=False)),
            "psnr": _finite(peak_signal_noise_ratio(preds, target, data_range=1.0)),
            "ssim": float(structural_similarity_index_measure(preds, target, data_range=1.0)), "n": len(target)}


def per_class_key(domain: Domain | str | None = None) -> str:
    """The report's key of the per-class rows: ``per_tissue`` for histology, ``per_finding`` for chest films."""
    return f"per_{get_domain(domain).class_noun}"


def vae_reconstruction_report(vae, images: np.ndarray, labels: np.ndarray, resolution: int, evaluator=None,
                              batch_size: int = 16, domain: Domain | str | None = None) -> tuple[dict, np.ndarray]:
    """Does SD's VAE keep the domain's images (histology by default)? -> (report, uint8 reconstructions).

    ``report["vae"]`` and ``report["resize_only"]`` hold RMSE/PSNR/SSIM overall and per class of ``domain``
    (under :func:`per_class_key`, rows named by medmnist label), and, when an ``evaluator`` (a
    :class:`~pathsynth.classifier.TissueClassifier`) is given, the FID between the originals' and the
    reconstructions' evaluator features (the same images on both sides, so it reads against the resize round
    trip's FID rather than against generator FIDs).
    """
    from ..evaluation.metrics import frechet_distance

    domain = get_domain(domain)
    labels = np.asarray(labels).reshape(-1)
    reconstructions, resized = vae_round_trip(vae, images, resolution, batch_size)
    report = {"domain": domain.flag, "resolution": resolution, "tile_size": int(images.shape[1]),
              "images": len(images)}
    real_features = evaluator.features(images).astype(np.float64) if evaluator is not None else None
    for name, output in (("vae", reconstructions), ("resize_only", resized)):
        entry = reconstruction_metrics(images, output)
        entry[per_class_key(domain)] = {
            c.label: reconstruction_metrics(images[labels == c.index], output[labels == c.index])
            for c in domain.classes if (labels == c.index).any()}
        if real_features is not None and len(images) >= 2:
            entry["fid"] = frechet_distance(real_features, evaluator.features(output).astype(np.float64))
        report[name] = entry
    return report, reconstructions


def comparison_grid(originals: np.ndarray, reconstructions: np.ndarray, labels: np.ndarray, per_tissue: int = 4,
                    zoom: int | None = None, gap: int = 2) -> np.ndarray:
    """uint8 image: one row per class present (a tissue, a finding: any domain's labels), (original,
    reconstruction) pairs side by side with a white ``gap`` between pairs and rows, pixels enlarged ``zoom`` times
    (default: images shown at 112 px or more)."""
    labels = np.asarray(labels).reshape(-1)
    size = originals.shape[1]
    zoom = zoom or max(1, 112 // size)
    blank = np.full((size, 2 * size, 3), 255, np.uint8)
    spacer = np.full((size, gap, 3), 255, np.uint8)
    rows = []
    for tissue in np.unique(labels):
        picks = np.flatnonzero(labels == tissue)[:per_tissue]
        pairs = [np.concatenate([originals[i], reconstructions[i]], axis=1) for i in picks]
        pairs += [blank] * (per_tissue - len(pairs))
        row = np.concatenate([cell for pair in pairs for cell in (pair, spacer)][:-1], axis=1)
        rows += [row, np.full((gap, row.shape[1], 3), 255, np.uint8)]
    grid = np.concatenate(rows[:-1], axis=0)
    return grid.repeat(zoom, axis=0).repeat(zoom, axis=1)

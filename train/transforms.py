"""Per-sample transforms for frames and fbank segments (docs/TRAINING.md, Data), all off by default.

Design:
- The released Sync/TG-DP loaders parse `freqm`, `timem`, `noise` and `mixup` but never apply them (or crash); here
  each one is applied for real when enabled.
- Randomness comes from the torch CPU generator, which the caller seeds per sample from (seed, epoch, clip) inside
  `torch.random.fork_rng`, so a resumed run redraws exactly the same crops, masks, shifts and mixup partners.
- Frames: JPEG bytes -> `torchvision.io.decode_jpeg` -> uint8 [3, H, W] -> short-side resize + centre crop to the
  model's img_size when the stored size differs (Sync: Resize + CenterCrop) -> float in [0, 1] -> ImageNet norm.
- The training loader stops at uint8 pixels (`FrameTransform.pixels`) and the raw float16 fbank: `normalize_frames`
  and `normalize_fbank` run on the batch once it is on the device. A float32 frame is 4× the bytes of a uint8 one
  and converting it per sample in a worker costs more than decoding the JPEG; the device does it for free. Both
  functions give exactly the values the per-sample path gives (same float32 operations in the same order).
"""

from __future__ import annotations

import functools

import torch
import torchaudio
import torchvision
from torchvision.transforms import v2

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FbankTransform",
    "FrameTransform",
    "decode_frame",
    "mix",
    "normalize_fbank",
    "normalize_frames",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def decode_frame(jpeg: bytes) -> torch.Tensor:
    """JPEG bytes -> uint8 [3, H, W] (grey JPEGs are expanded to RGB)."""
    data = torch.frombuffer(bytearray(jpeg), dtype=torch.uint8)
    return torchvision.io.decode_jpeg(data, mode=torchvision.io.ImageReadMode.RGB)


class FrameTransform:
    """uint8 [3, H, W] -> normalised float [3, S, S], S = img_size; optional RandomResizedCrop + flip (train only)."""

    def __init__(self, img_size: int, random_resized_crop: bool = False, resize: bool = True) -> None:
        self.img_size = img_size
        self.random_resized_crop = random_resized_crop
        self.resize = resize
        # Bicubic like the released loader's Resize(224, BICUBIC); antialias because tiny presets downscale 224 -> 96.
        self._fixed = v2.Compose(
            [
                v2.Resize(img_size, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
                v2.CenterCrop(img_size),
            ]
        )
        self._augment = v2.Compose(
            [
                v2.RandomResizedCrop(
                    img_size,
                    scale=(0.08, 1.0),
                    ratio=(0.9, 1.1),
                    interpolation=v2.InterpolationMode.BICUBIC,
                    antialias=True,
                ),
                v2.RandomHorizontalFlip(0.5),
            ]
        )

    def __call__(self, frame_u8: torch.Tensor, train: bool = False) -> torch.Tensor:
        return normalize_frames(self.pixels(frame_u8, train=train))

    def pixels(self, frame_u8: torch.Tensor, train: bool = False) -> torch.Tensor:
        """uint8 [3, H, W] -> uint8 [3, S, S]: the resize/crop/flip part only (normalise later, on the device)."""
        if train and self.random_resized_crop:
            frame_u8 = self._augment(frame_u8)
        elif frame_u8.shape[-2:] != (self.img_size, self.img_size):
            if not self.resize:
                raise ValueError(
                    f"frame is {tuple(frame_u8.shape[-2:])} but the model needs {self.img_size}x{self.img_size} "
                    "and data.resize_frames is false"
                )
            frame_u8 = self._fixed(frame_u8)
        # Bicubic can overshoot [0, 255] in float; uint8 input keeps values clamped.
        return frame_u8


class FbankTransform:
    """Normalised fbank [T, F] -> [T, F] with optional SpecAugment and circular time shift (train only)."""

    def __init__(self, freqm: int = 0, timem: int = 0, time_shifting: float = 0.0) -> None:
        self.freqm = torchaudio.transforms.FrequencyMasking(freqm) if freqm > 0 else None
        self.timem = torchaudio.transforms.TimeMasking(timem) if timem > 0 else None
        self.time_shifting = time_shifting

    @property
    def active(self) -> bool:
        return self.freqm is not None or self.timem is not None or self.time_shifting > 0

    def __call__(self, fbank: torch.Tensor, train: bool = False) -> torch.Tensor:
        if not train or not self.active:
            return fbank
        x = fbank
        if self.freqm is not None or self.timem is not None:
            # torchaudio masks expect [..., freq, time]; masked values are 0 = the dataset mean after normalisation.
            spec = x.t().unsqueeze(0)
            if self.freqm is not None:
                spec = self.freqm(spec)
            if self.timem is not None:
                spec = self.timem(spec)
            x = spec.squeeze(0).t().contiguous()
        if self.time_shifting > 0:
            s = int(self.time_shifting * x.shape[0])
            if s > 0:
                shift = int(torch.randint(-s, s + 1, ()).item())
                x = torch.roll(x, shifts=shift, dims=0)
        return x


def normalize_frames(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels [..., 3, H, W] -> ImageNet-normalised float32 (float32 input is taken as normalised: returned).

    The same float32 operations as `v2.Normalize` on `x / 255` (so the same values), with the mean/std tensors
    cached per device: building them per call would be a blocking host-to-device copy in every training step."""
    if pixels.dtype == torch.float32:
        return pixels
    if pixels.dtype != torch.uint8:
        raise TypeError(f"frames must be uint8 (pixels) or float32 (normalised), got {pixels.dtype}")
    mean, std = _constants(IMAGENET_MEAN, IMAGENET_STD, pixels.device)
    return (pixels.float() / 255.0).sub_(mean.view(-1, 1, 1)).div_(std.view(-1, 1, 1))


def normalize_fbank(fbank: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """Stored float16 log-Mel [..., T, F] -> (x - mean) / std in float32 (bit-identical to `Store.segment`).

    float32 input is taken as already normalised and returned as is (the loader normalises in the worker when
    SpecAugment or mixup has to work on the normalised values)."""
    if fbank.dtype == torch.float32:
        return fbank
    if fbank.dtype != torch.float16:
        raise TypeError(f"fbank must be float16 (stored) or float32 (normalised), got {fbank.dtype}")
    # 1-element tensors, not Python scalars: a scalar divisor may become a multiply by its reciprocal.
    m, s = _constants((mean,), (std,), fbank.device)
    return fbank.float().sub_(m).div_(s)


@functools.cache
def _constants(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.tensor(mean, dtype=torch.float32, device=device),
        torch.tensor(std, dtype=torch.float32, device=device),
    )


def mix(x1: torch.Tensor, x2: torch.Tensor, lam: float) -> torch.Tensor:
    """Convex combination lam * x1 + (1 - lam) * x2 (fbank, image or multi-hot labels)."""
    return lam * x1 + (1.0 - lam) * x2

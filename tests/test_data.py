"""Corpus readers, speaker-independent splits, batching, resampling, the synthetic corpus."""
import csv

import numpy as np
import pytest
import soundfile as sf

from edge_ser_torch.data import ClipDataset, collate, read_demos, read_manifest
from edge_ser_torch.synth import LABELS, CorpusSpec, Style, generate_corpus, make_speakers, synthesize

from conftest import write_tone


def _write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "label", "speaker", "split"])
        w.writeheader()
        w.writerows(rows)


def test_manifest_rejects_a_speaker_in_two_splits(tmp_path):
    rows = [
        {"path": "a.wav", "label": "x", "speaker": "s1", "split": "train"},
        {"path": "b.wav", "label": "y", "speaker": "s1", "split": "test"},
    ]
    _write_csv(tmp_path / "m.csv", rows)
    with pytest.raises(ValueError, match="speaker-independent"):
        read_manifest(tmp_path / "m.csv")


def test_manifest_rejects_unknown_split_and_missing_columns(tmp_path):
    _write_csv(tmp_path / "m.csv", [{"path": "a.wav", "label": "x", "speaker": "s1", "split": "valid"}])
    with pytest.raises(ValueError, match="split must be one of"):
        read_manifest(tmp_path / "m.csv")
    (tmp_path / "n.csv").write_text("path,label\na.wav,x\n")
    with pytest.raises(ValueError, match="missing column"):
        read_manifest(tmp_path / "n.csv")


def test_demos_reader_parses_names_and_splits_by_speaker(tmp_path):
    names = []
    for spk in range(10):
        for code in ("rab", "tri", "neu"):
            name = f"PR_{'f' if spk % 2 else 'm'}_{spk:02d}_{code}01a.wav"
            write_tone(tmp_path / name, 0.1)
            names.append(name)
    (tmp_path / "notes.wav").write_bytes(b"")  # not a DEMoS name: ignored
    clips = read_demos(tmp_path, dev_share=0.2, test_share=0.2)
    assert {c.label for c in clips} == {"anger", "sadness"}  # neutral is not one of the 7 classes
    assert len(clips) == 20
    split_of = {}
    for c in clips:
        assert split_of.setdefault(c.speaker, c.split) == c.split
    assert sorted(list(split_of.values()).count(s) for s in ("train", "dev", "test")) == [2, 2, 6]


def test_dataset_resamples_and_normalises(tmp_path):
    write_tone(tmp_path / "a.wav", seconds=0.5, rate=48000, channels=2)
    _write_csv(tmp_path / "m.csv", [{"path": "a.wav", "label": "x", "speaker": "s", "split": "train"}])
    clips = read_manifest(tmp_path / "m.csv")
    audio, label = ClipDataset(clips, ["x"], 16000, max_seconds=4.0)[0]
    assert audio.shape == (8000,) and label == 0
    assert abs(audio.mean()) < 1e-4 and abs(audio.std() - 1) < 1e-3


def test_collate_pads_and_keeps_lengths():
    waves, lengths, labels = collate([(np.ones(3, np.float32), 1), (np.ones(5, np.float32), 0)])
    assert waves.shape == (2, 5) and lengths.tolist() == [3, 5] and labels.tolist() == [1, 0]
    assert waves[0, 3:].abs().sum() == 0


def test_synthetic_corpus_is_speaker_independent_and_graded(tmp_path):
    spec = CorpusSpec(speakers=4, clips_per_style=2, dev_speakers=1, test_speakers=1, seed=3)
    manifest = generate_corpus(tmp_path, spec, progress=False)
    clips = read_manifest(manifest)  # raises if a speaker leaks across splits
    assert {c.label for c in clips} == set(LABELS)
    assert {c.split for c in clips} == {"train", "dev", "test"}
    rows = list(csv.DictReader(open(manifest)))
    durations = [sf.info(tmp_path / r["path"]).duration for r in rows]
    difficulty = [float(r["difficulty"]) for r in rows]
    assert min(durations) >= spec.min_seconds - 0.01 and max(durations) <= spec.max_seconds + 0.01
    assert np.corrcoef(difficulty, durations)[0, 1] < -0.99  # harder clips are shorter
    again = tmp_path / "again"
    generate_corpus(again, spec, progress=False)
    a, _ = sf.read(tmp_path / rows[0]["path"])
    b, _ = sf.read(again / rows[0]["path"])
    assert np.array_equal(a, b)  # the seed fixes the corpus
    assert "not emotions" in (tmp_path / "README.txt").read_text()


def test_synthetic_corpus_does_not_depend_on_the_worker_count(tmp_path):
    spec = CorpusSpec(speakers=3, clips_per_style=1, dev_speakers=1, test_speakers=1, max_seconds=1.6)
    one = generate_corpus(tmp_path / "one", spec, progress=False, workers=1)
    two = generate_corpus(tmp_path / "two", spec, progress=False, workers=2)
    assert one.read_text() == two.read_text()
    for row in csv.DictReader(open(one)):
        assert (one.parent / row["path"]).read_bytes() == (two.parent / row["path"]).read_bytes()


def test_vocal_effort_follows_pitch():
    """With effort, a clip whose pitch drifts up gets louder towards its end; without it, it does not."""
    rising = Style(pitch=0, contour=0, drift=8, tempo=4, loudness=0, tilt=-9, breath=0.05, jitter=0.0)
    speaker = make_speakers(1, np.random.default_rng(0))[0]

    def end_over_start_db(effort: float) -> float:
        audio = synthesize(rising, speaker, 3.0, 60.0, np.random.default_rng(1), effort=effort)
        third = audio.size // 3
        return 10 * np.log10(np.mean(audio[-third:] ** 2) / np.mean(audio[:third] ** 2))

    plain, pushed = end_over_start_db(0.0), end_over_start_db(0.6)
    assert pushed - plain > 2.0  # 0.6 dB per semitone over ~5 semitones between the thirds, plus brightness


@pytest.mark.parametrize("bad, message", [
    ({"clips_per_style": 0}, "at least one clip per style"), ({"speakers": 8}, "at least one training speaker"),
    ({"test_speakers": 0}, "one dev and one test speaker"), ({"min_seconds": 4.0}, "min_seconds <= max_seconds")])
def test_corpus_spec_refuses_a_corpus_that_could_not_train(bad, message):
    with pytest.raises(ValueError, match=message):
        CorpusSpec(**bad)


@pytest.mark.parametrize("level", [1e-5, 1e-3, 0.5])
def test_the_runtime_normalises_as_the_feature_extractor_it_stands_for(level):
    """audio.normalize is what the runtime feeds a model exported with per-clip normalisation, and what training
    used: it must be Wav2Vec2FeatureExtractor(do_normalize=True)'s, epsilon included. On quiet audio (1e-5: a
    variance of 1e-10, far under the epsilon) the epsilon decides the scale: a different one would feed the model
    input hundreds of times too small or too large, and no runtime test of a tiny model would notice."""
    from transformers import Wav2Vec2FeatureExtractor

    from edge_ser.audio import encoder_input, normalize

    clip = (level * np.random.default_rng(7).standard_normal(16000)).astype(np.float32)
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, do_normalize=True, return_attention_mask=False)
    reference = extractor(clip, sampling_rate=16000, return_tensors="np").input_values[0]
    np.testing.assert_allclose(normalize(clip), reference, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(encoder_input(clip, normalized=True)[0], reference, rtol=1e-4, atol=1e-6)

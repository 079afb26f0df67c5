"""Training-side `edge-ser` commands; imported only when one of them runs (needs the train extra)."""
from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch  # noqa: F401  (first of the train extra: `edge-ser train` without it fails here, naming torch)

from .config import ExperimentConfig, ModelConfig
from .data import Clip, read_manifest
from .errors import InputError
from .synth import LABELS as SYNTH_LABELS

warnings.filterwarnings("ignore", module=r"torch\..*")
logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" lines at every export

SYNTHETIC_NOTE = "a demo of the pipeline on synthetic speech styles; it does not recognise real emotions"


def cmd_corpus(args) -> int:
    from .synth import CorpusSpec, generate_corpus

    given = {name: getattr(args, name) for name in ("speakers", "dev_speakers", "test_speakers", "clips_per_style",
                                                      "effort", "seed")}
    spec = CorpusSpec(**{name: value for name, value in given.items() if value is not None})  # the rest: defaults
    manifest = generate_corpus(args.out, spec, workers=args.workers)
    print(f"wrote {manifest} (synthetic speech styles, not emotions)")
    return 0


def _load_config(args) -> ExperimentConfig:
    config = ExperimentConfig.from_yaml(args.config)
    if args.out_dir:
        config.out_dir = str(args.out_dir)
    if args.device:
        config.train.device = args.device
    return config


def cmd_train(args) -> int:
    from .train import run_experiment

    config = _load_config(args)
    summary = run_experiment(config, args.stage)
    if summary.get("dev") is not None or summary.get("test") is not None:  # rank 0 (or the only process)
        print(json.dumps({k: summary.get(k) for k in ("best_epoch", "dev", "test", "path_parameters")}, indent=1))
        print(f"wrote {config.run_dir}")
    return 0


def _split_clips(manifest: Path | str, split: str) -> list[Clip]:
    return [c for c in read_manifest(manifest) if c.split == split]


def cmd_evaluate(args) -> int:
    from .data import ClipDataset
    from .evaluate import evaluate_model
    from .train import load_checkpoint

    model, config, labels, _ = load_checkpoint(args.checkpoint)
    clips = _split_clips(args.manifest or config.data.manifest, args.split)
    if not clips:
        raise InputError(f"no {args.split} clips in the corpus")
    d = config.data
    evaluation = evaluate_model(model, ClipDataset(clips, labels, d.sample_rate, d.max_seconds, d.normalize), labels, progress=True)
    summary = evaluation.summary()
    for layer, scores in evaluation.exits.items():
        print(f"exit {layer:>3}: UAR {100 * scores.uar:5.1f}%  accuracy {100 * scores.accuracy:5.1f}%")
    print(f"fusion  : UAR {100 * evaluation.fusion.uar:5.1f}%")
    gain = summary["deepest_minus_shallowest"]
    if gain is not None:
        low, high = gain["ci95"]
        print(f"exit {max(evaluation.exits)} - exit {min(evaluation.exits)}: {100 * gain['uar']:+.1f} UAR points "
              f"(95% CI {100 * low:+.1f} to {100 * high:+.1f}, paired bootstrap over clips)")
    out = args.out or Path(args.checkpoint).with_name(f"eval_{args.split}.json")
    out.write_text(json.dumps(summary, indent=1))
    print(f"wrote {out}")
    return 0


def load_split_audio(clips: list[Clip], labels: list[str], sample_rate: int, limit: int | None = None):
    from edge_ser.audio import decode

    chosen = clips[:limit] if limit else clips
    return [decode(c.path, sample_rate) for c in chosen], np.array([labels.index(c.label) for c in chosen])


def cmd_export(args) -> int:
    from .onnx_export import ExportOptions, export_model

    if (args.checkpoint is None) == (args.base is None):
        raise InputError("give either a checkpoint or --base (untrained export), not both")
    for flag, value in (("--max-loss", args.max_loss), ("--max-precision-loss", args.max_precision_loss)):
        if not 0.0 <= value <= 1.0:  # NaN fails too
            raise InputError(f"{flag} is {value:g}; allowed: a UAR fraction from 0 to 1 (0.005 = half a point)")
    provenance: dict = {}
    if args.checkpoint is not None:
        from .train import load_checkpoint

        model, config, labels, state = load_checkpoint(args.checkpoint)
        provenance |= {"checkpoint": str(args.checkpoint), "base": os.path.relpath(config.model.base) if config.model.base else f"random {config.model.family}",
                       "data": os.path.relpath(os.path.normpath(config.data.manifest or config.data.demos_dir)),
                       "trained_epochs": state.get("epoch"), "trained_on": state.get("trained_on", "unknown")}
        corpus = args.manifest or config.data.manifest
        sample_rate, normalize = config.data.sample_rate, config.data.normalize
    else:
        from .backbone import load_encoder, tiny_config
        from .model import SelfDistilledSER

        labels = (args.labels or "anger,disgust,fear,guilt,happiness,sadness,surprise").split(",")
        if args.base in ("tiny", "base"):
            encoder = load_encoder(None, "wav2vec2", tiny_config() if args.base == "tiny" else {})
        else:
            encoder = load_encoder(args.base)
        model = SelfDistilledSER(ModelConfig(base=None if args.base in ("tiny", "base") else args.base),
                                 len(labels), encoder=encoder).eval()
        provenance |= {"base": args.base, "trained": False}
        corpus, sample_rate, normalize = args.manifest, 16000, True

    dev = test = None
    if corpus:
        clips = read_manifest(corpus)
        dev = load_split_audio([c for c in clips if c.split == "dev"], labels, sample_rate)
        test = load_split_audio([c for c in clips if c.split == "test"], labels, sample_rate)
    synthetic = sorted(labels) == sorted(SYNTH_LABELS)
    if synthetic:
        provenance["synthetic"] = True
    options = ExportOptions(
        verify=not args.no_verify, int8=not args.no_int8, int8_encoder=not args.fp32_encoder,
        monolithic=args.monolithic, max_accuracy_loss=args.max_loss, max_precision_loss=args.max_precision_loss,
        default_precision=args.default_precision, provenance=provenance,
        description=SYNTHETIC_NOTE if synthetic else f"{model.backbone.family} self-distilled SER, exits {model.exit_layers}",
    )
    manifest = export_model(model, labels, args.out, name=args.name or args.out.name, sample_rate=sample_rate,
                            normalize=normalize, dev=dev, test=test, options=options)
    print(f"wrote {args.out} ({len(manifest.chain)} segments, exits {[e.layer for e in manifest.exits]})")
    return 0


def cmd_baselines(args) -> int:
    from .baselines import run_baselines

    config = _load_config(args)
    layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    skip = {s for s in args.skip.split(",") if s}
    table = run_baselines(config, layers=layers, skip=skip)
    print(table)
    return 0

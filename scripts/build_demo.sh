#!/usr/bin/env bash
# Rebuild models/demo from nothing: synthetic corpus -> train -> export (fp32 + int8, verified, streaming
# checked) -> samples -> calibrate. Needs the train extra: pip install -e '.[train]'. Training is the long
# part: under 5 minutes on one H200 (DEVICE=cuda); on a 2-core x86 VM (the default, DEVICE=cpu) about 40
# minutes. The shipped model was built by this script on that CPU; its configs train on the raw waveform
# (data.normalize: false) with a layer-norm CNN, so its encoder streams exactly (README, Live audio).
# The device profile it writes (models/demo/profile.int8.yaml: the default precision the export chose here) is
# this machine's and is not committed:
# run `edge-ser calibrate models/demo` again on the device that will classify.
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICE=${DEVICE:-cpu}
edge-ser corpus data/corpus   # 24 speakers (16 train, 4 dev, 4 test) x 5 styles x 32 clips, seed 0
# Stage 1: the encoder alone, saved as a Hugging Face checkpoint directory (stands in for pretraining).
edge-ser train configs/demo-pretrain.yaml --stage select --device "$DEVICE"
python -c "from edge_ser_torch.train import load_checkpoint
model, *_ = load_checkpoint('runs/demo-pretrain/select/best.pt')
model.backbone.hf.save_pretrained('runs/demo-pretrain/encoder')"
# Stage 2: self-distillation with exits 3, 8, 10 from that checkpoint; select on dev.
edge-ser train configs/demo.yaml --stage select --device "$DEVICE"
rm -rf models/demo
edge-ser export runs/demo/select/best.pt --out models/demo --name demo

# Two test-split clips (held-out speakers) to try: an easy one and a hard one.
python - <<'PY'
import csv, shutil
from pathlib import Path
rows = [r for r in csv.DictReader(open("data/corpus/manifest.csv")) if r["split"] == "test"]
easy = min((r for r in rows if r["label"] == "high-rising"), key=lambda r: float(r["difficulty"]))
hard = max((r for r in rows if r["label"] == "pressed"), key=lambda r: float(r["difficulty"]))
out = Path("models/demo/samples"); out.mkdir(exist_ok=True)
for tag, r in (("easy", easy), ("hard", hard)):
    target = out / f"{tag}_{r['label']}.wav"
    shutil.copy(Path("data/corpus") / r["path"], target)
    print(f"{target}: {r['label']}, difficulty {float(r['difficulty']):.2f}, speaker {r['speaker']} (test split)")
PY
edge-ser info models/demo
edge-ser calibrate models/demo

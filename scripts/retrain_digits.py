"""Retrain digits on a training set `infergate export` wrote, and write it as
a new version folder (model.onnx + metadata.json) of the model repository.

    python scripts/retrain_digits.py train.parquet models/digits/3

The held-out figure in metadata.json (`heldout_accuracy`, what the health
report and the checks compare live accuracy with) is measured on the last
fifth of the exported rows, which the model is not fitted on. The folder is
written under a hidden name and renamed into place, so that the server never
sees half a version.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from sklearn.linear_model import LogisticRegression

ROOT = Path(__file__).resolve().parent.parent


def make_models():
    spec = importlib.util.spec_from_file_location("make_models", ROOT / "scripts" / "make_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("train", type=Path, help="Parquet file from `infergate export`")
    ap.add_argument("version_dir", type=Path, help="the new version's folder, e.g. models/digits/3")
    a = ap.parse_args()
    if a.version_dir.exists():
        print(f"{a.version_dir} exists already", file=sys.stderr)
        return 1
    table = pq.read_table(a.train).to_pydict()
    features = np.asarray(table["input"], dtype=np.float32)
    labels = np.asarray(table["label"], dtype=np.int64)
    if len(labels) < 50:
        print(f"{a.train}: {len(labels)} labelled rows, too few to train on", file=sys.stderr)
        return 1
    fit = len(labels) * 4 // 5
    started = time.monotonic()
    clf = LogisticRegression(C=1.0, max_iter=3000).fit(features[:fit] / 16.0, labels[:fit])
    seconds = time.monotonic() - started
    heldout = float((clf.predict(features[fit:] / 16.0) == labels[fit:]).mean())
    mm = make_models()
    layers = [(clf.coef_.T.astype(np.float32) / 16.0, clf.intercept_.astype(np.float32))]
    version = a.version_dir.name
    meta = {
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "algorithm": "LogisticRegression",
        "settings": "sklearn LogisticRegression(C=1.0, max_iter=3000) on exported traffic; features scaled by 1/16 (folded into W0)",
        "training_rows": fit,
        "heldout_rows": len(labels) - fit,
        "heldout_accuracy": round(heldout, 6),
        "training_seconds": round(seconds, 3),
        "training_data": str(a.train),
    }
    model = mm.make_model(mm.digits_graph(layers, f"digits_v{version}"),
                          f"digits v{version}: retrained on exported traffic", meta)
    staging = a.version_dir.parent / f".{version}.part"
    staging.mkdir()
    (staging / "model.onnx").write_bytes(model.SerializeToString())
    (staging / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    staging.rename(a.version_dir)
    print(json.dumps({"version": version, "training_rows": fit, "heldout_rows": len(labels) - fit,
                      "heldout_accuracy": round(heldout, 4)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

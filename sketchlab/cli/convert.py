"""``sketchlab-convert``: your drawings (SVG files, QuickDraw ndjson, stroke-list JSON) to a Sketch-RNN npz.

Examples::

    sketchlab-convert my_svgs/ --out my_drawings.npz --data-config conf/data/my_drawings.yaml
    sketchlab-train data=my_drawings
    sketchlab-convert cat.ndjson dog.ndjson --out cats_dogs.npz --valid 0.05 --test 0.05
    sketchlab-convert strokes.json --out mine.npz --size none --epsilon 0 --float   # keep coordinates as they are

Folders are searched recursively; a drawing's class is its subfolder (or its "word"/"label" in JSON). Each
drawing is scaled so its longest side is --size, simplified with RDP (--epsilon, in those units) and split
train/valid/test by a seeded shuffle. A file, line or item that cannot be read is left out with its reason,
printed and listed in <out>.report.json beside the npz. See ``sketchlab.data.convert`` for the formats.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sketchlab.cli.errors import UserError, entry_point
from sketchlab.data.convert import EPSILON, SIZE, TOLERANCE, ConvertReport, convert
from sketchlab.fileio import atomic_open

PREVIEW_N = 64


def _size(text: str) -> float | None:
    if text.lower() in ("none", "null", "0"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"size must be > 0 (or 'none'), got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``sketchlab-convert``."""
    parser = argparse.ArgumentParser(prog="sketchlab-convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help=".svg, .ndjson/.jsonl, .json files (.gz too for JSON), or folders")
    parser.add_argument("--out", required=True, help="output .npz path (the report goes beside it)")
    parser.add_argument("--size", type=_size, default=SIZE,
                        help=f"scale each drawing so its longest side is this long; 'none' keeps coordinates "
                             f"(default {SIZE:g}, as QuickDraw)")
    parser.add_argument("--epsilon", type=float, default=EPSILON,
                        help=f"RDP simplification epsilon in output units; 0 keeps every point (default {EPSILON:g})")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE,
                        help=f"how far flattened SVG curves may stray from the curve, in output units "
                             f"(default {TOLERANCE:g})")
    parser.add_argument("--valid", type=float, default=0.1, help="fraction of drawings for valid (default 0.1)")
    parser.add_argument("--test", type=float, default=0.1, help="fraction of drawings for test (default 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split's shuffle (default 0)")
    parser.add_argument("--float", dest="round_coords", action="store_false",
                        help="store float32 offsets instead of rounding to int16")
    parser.add_argument("--y-up", action="store_true",
                        help="JSON inputs have y pointing up (flipped to sketchlab's y-down; SVG is always y-down)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out (and its report) if they exist")
    parser.add_argument("--data-config", metavar="YAML",
                        help="also write a data config for the npz, e.g. conf/data/my_drawings.yaml, so that "
                             "`sketchlab-train data=my_drawings` trains on it")
    parser.add_argument("--preview", metavar="PNG_OR_SVG",
                        help=f"render the first {PREVIEW_N} training sketches to this image")
    return parser


def data_config_text(report: ConvertReport, name: str) -> str:
    """A ``conf/data/<name>.yaml`` for the converted npz (absolute path; batch size fits the train split)."""
    path = str(report.output.resolve()).replace("${", "\\${")  # a literal path, never an interpolation
    points = report.points.get("all", {})
    batch = max(1, min(100, report.counts.get("train", 0)))
    return "\n".join([
        f"# {name}: converted by sketchlab-convert ({', '.join(f'{k} {v}' for k, v in report.counts.items())}).",
        "_target_: sketchlab.data.datamodule.SketchDataModule",
        f"name: {json.dumps(name)}",
        "source:",
        "  _target_: sketchlab.data.sources.StrokeNpz",
        f"  path: {json.dumps(path)}",
        f"batch_size: {batch}",
        f"max_seq_len: auto  # the longest sketch: {points.get('max', '?')} points "
        f"(95th percentile {points.get('p95', '?')}); set a number to drop longer ones",
        "limit: null",
        "normalize: true",
        "",
    ])


def _check_data_config(target: str, overwrite: bool) -> Path:
    """The path of the data config to write, checked before the conversion runs."""
    path = Path(target).expanduser()
    if path.suffix != ".yaml" or path.parent.name != "data":
        raise UserError(f"--data-config must name a .yaml file in a data/ folder of a config directory "
                        f"(e.g. conf/data/my_drawings.yaml), got {target}")
    if path.exists() and not overwrite:
        raise UserError(f"{path} already exists; pass --overwrite to replace it")
    return path


def _train_hint(path: Path) -> str:
    """How to train on the config at ``path``: plain ``data=`` from here when it is in ./conf, else --config-dir."""
    root = path.parent.parent.resolve()
    if root == (Path.cwd() / "conf").resolve():
        return f"sketchlab-train data={path.stem}"
    return f"sketchlab-train --config-dir {root} data={path.stem}"


def _preview(report: ConvertReport, target: str) -> Path:
    from sketchlab.data.safe_npz import load_npz
    from sketchlab.render.save import save_grid

    data = load_npz(report.output)
    sketches = [np.asarray(s, dtype=np.float32) for s in data["train"][:PREVIEW_N]]
    if not sketches:
        sketches = [np.asarray(s, dtype=np.float32) for split in ("valid", "test") for s in data[split]][:PREVIEW_N]
    names = [str(n) for n in data["class_names"]]
    labels = data["train_labels"][:PREVIEW_N] if len(data["train"]) else []
    captions = [names[int(k)] for k in labels] if len(names) > 1 and len(labels) == len(sketches) else None
    return save_grid(sketches, target, captions=captions)


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    """Run the converter; user errors print one ``error:`` line and exit with status 2."""
    args = build_parser().parse_args(argv)
    config = _check_data_config(args.data_config, args.overwrite) if args.data_config else None
    try:
        report = convert(args.inputs, args.out, size=args.size, epsilon=args.epsilon, tolerance=args.tolerance,
                         valid=args.valid, test=args.test, seed=args.seed, round_coords=args.round_coords,
                         y_up=args.y_up, overwrite=args.overwrite)
    except FileExistsError as exc:
        raise UserError(str(exc).replace("overwrite=True (--overwrite)", "--overwrite")) from None
    print(report.describe())
    if config is not None:
        with atomic_open(config, "w") as fh:
            fh.write(data_config_text(report, config.stem))
        print(f"data config: {config} (train on it: {_train_hint(config)})")
    if args.preview:
        print(f"preview: {_preview(report, args.preview)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Evaluate WSOL score maps against box annotations: MaxBoxAccV2, MaxBoxAcc, GT-known / Top-1 / Top-5 Loc.

Model-driven mode (a setting name or --config FILE, with --set and --run-dir): computes the score map
(CAM of the ground-truth class) and top-5 classes of every image of
wsol.eval_split with <run_dir>/wsol/model.pth, saves them under
<run_dir>/wsol/scoremaps/<split>/ and <run_dir>/wsol/predictions/, evaluates
them with the localisation threshold chosen on wsol.threshold_split (or on the
evaluated split when that split has no metadata folder), evaluates the
centre-box baseline the same way and writes <run_dir>/metrics/eval_wsol.json
and <run_dir>/figures/wsol_examples.png (--out FILE: a copy of the JSON). A
rerun skips the maps that exist.

Standalone mode: score maps are read from <scoremap-root>/<image id>.npy, where
the image id is a line of the split's image_ids.txt (001.Albatross/x.jpg ->
001.Albatross/x.jpg.npy). Each is a 2-D float array of any size, the map of
the image's ground-truth class; it is resized to 224 x 224 and min-max
normalised here. Top-1 / Top-5 Loc need --predictions. The localisation
threshold (for GT-known / Top-1 / Top-5 Loc) is chosen on the evaluated split
unless another split or a fixed --threshold is given.
"""
from __future__ import annotations

import argparse
from typing import Sequence

from irnet_moana import io
from irnet_moana.cli import add_config_arguments, load, main_guard
from irnet_moana.stages import eval_wsol
from irnet_moana.wsol.evaluation import CAM_THRESHOLDS, evaluate_scoremap_dir, format_one_line, format_results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--scoremap-root", help="standalone mode: folder of score maps, <image id>.npy")
    parser.add_argument("--centre-baseline", action="store_true",
                        help="standalone mode: evaluate the centre-box baseline (a box over the central half of "
                             "each image) instead")
    parser.add_argument("--metadata-root", default=None,
                        help="metadata folder of the evaluated split (image_ids.txt, class_labels.txt, "
                             "image_sizes.txt, localization.txt), e.g. metadata/CUB/test; required in the "
                             "standalone modes")
    parser.add_argument("--predictions", default=None,
                        help="JSON object: image id -> predicted classes best first (top five); "
                             "enables Top-1 / Top-5 Loc")
    parser.add_argument("--threshold-metadata-root", default=None,
                        help="metadata folder of a held-out split (e.g. metadata/CUB/val) on which to choose "
                             "the localisation threshold")
    parser.add_argument("--threshold-scoremap-root", default=None,
                        help="score maps of the --threshold-metadata-root split")
    parser.add_argument("--threshold", type=float, default=None,
                        help="use this localisation threshold (0, 0.01, ..., 0.99) instead of choosing one")
    parser.add_argument("--threshold-split", default="given",
                        help="with --threshold: name of the split it was chosen on, recorded in the result")
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    modes = [name for name, chosen in (("a setting", args.setting or args.config),
                                       ("--scoremap-root", args.scoremap_root),
                                       ("--centre-baseline", args.centre_baseline)) if chosen]
    if len(modes) != 1:
        parser.error("give one of: a setting name (or --config FILE), --scoremap-root, --centre-baseline"
                     + (f"; got {', '.join(modes)}" if modes else ""))
    if args.setting or args.config:
        standalone = [name for name, value in (("--metadata-root", args.metadata_root),
                                               ("--predictions", args.predictions),
                                               ("--threshold-metadata-root", args.threshold_metadata_root),
                                               ("--threshold-scoremap-root", args.threshold_scoremap_root),
                                               ("--threshold", args.threshold)) if value is not None]
        if standalone:
            parser.error(f"{', '.join(standalone)} belong to the --scoremap-root/--centre-baseline modes; with "
                         "--config the splits come from the wsol section (e.g. --set wsol.threshold_split=val)")
        return
    if args.overrides or args.run_dir:
        parser.error("--set and --run-dir need a setting")
    if not args.metadata_root:
        parser.error("--metadata-root is required with --scoremap-root or --centre-baseline")
    if args.threshold_scoremap_root and not args.threshold_metadata_root:
        parser.error("--threshold-scoremap-root needs --threshold-metadata-root")
    if args.threshold_metadata_root and args.scoremap_root and not args.threshold_scoremap_root:
        parser.error("--threshold-metadata-root needs --threshold-scoremap-root (that split's score maps)")
    if args.threshold is not None:
        if args.threshold_metadata_root:
            parser.error("give either --threshold or --threshold-metadata-root, not both")
        if not any(abs(args.threshold - t) <= 1e-6 for t in CAM_THRESHOLDS):
            parser.error("--threshold must be one of 0, 0.01, ..., 0.99")


def main(argv: Sequence[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    if args.setting or args.config:
        return eval_wsol.run(load(parser, args), out=args.out)
    result = evaluate_scoremap_dir(
        None if args.centre_baseline else args.scoremap_root, args.metadata_root,
        predictions_path=args.predictions,
        threshold_scoremap_root=args.threshold_scoremap_root,
        threshold_metadata_root=args.threshold_metadata_root,
        threshold=args.threshold,
        threshold_split=args.threshold_split if args.threshold is not None else None,
        progress=not args.no_progress)
    print(format_results(result))
    if args.out:
        io.write_json(args.out, result)
        print(f"wrote {args.out}")
    print(format_one_line(result))
    return result


if __name__ == "__main__":
    main_guard(main)

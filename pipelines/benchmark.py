"""CPU timings side by side: make_cams (fp32 / the precision auto picks / reference-style loop), sparse vs dense
random walk, CRF labels with 1 vs all cores, DeepLab inference fp32 vs auto; with the machine (CPU model, its
instruction kind: AVX2, AVX-512, AVX-512 bf16 or AMX) and its load average.

Uses the CAM model of --run-dir (<run_dir>/cam/model.pth) when there is one, else random weights
(the output says which). Defaults take a few minutes on 2 cores.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import _paths  # noqa: F401

from irnet_moana import io
from irnet_moana.benchmark import PARTS, BenchmarkSizes, run_benchmarks
from irnet_moana.cli import main_guard, parse, stage_parser


def main(argv: Sequence[str] | None = None) -> dict:
    defaults = BenchmarkSizes()
    parser = stage_parser(__doc__)
    parser.set_defaults(config="pipelines/configs/demo.yaml")
    parser.add_argument("--only", action="append", choices=PARTS, default=None,
                        help="run only this part (repeatable); default: all")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures to this JSON file")
    parser.add_argument("--cam-images", type=int, default=defaults.cam_images)
    parser.add_argument("--walk-shape", type=int, nargs=2, action="append", default=None, metavar=("H", "W"),
                        help="a size of the sparse vs dense comparison (repeatable; default: "
                             + ", ".join(f"{h} {w}" for h, w in defaults.walk_shapes) + ")")
    parser.add_argument("--walk-classes", type=int, nargs="+", default=list(defaults.walk_classes))
    parser.add_argument("--walk-large", type=int, nargs=2, default=list(defaults.walk_large), metavar=("H", "W"),
                        help="size timed with the sparse walk only")
    parser.add_argument("--walk-repeats", type=int, default=defaults.walk_repeats)
    parser.add_argument("--crf-images", type=int, default=defaults.crf_images)
    parser.add_argument("--deeplab-depths", type=int, nargs="+", default=list(defaults.deeplab_depths),
                        choices=(18, 34, 50, 101))
    parser.add_argument("--deeplab-size", type=int, default=defaults.deeplab_size, help="square input size")
    parser.add_argument("--deeplab-images", type=int, default=defaults.deeplab_images)
    parser.add_argument("--threads", type=int, default=defaults.threads, help="torch intra-op threads")
    cfg, args = parse(parser, argv)
    walk_shapes = tuple(tuple(shape) for shape in args.walk_shape or defaults.walk_shapes)
    sizes = BenchmarkSizes(cam_images=args.cam_images, walk_shapes=walk_shapes,
                           walk_classes=tuple(args.walk_classes), walk_large=tuple(args.walk_large),
                           walk_repeats=args.walk_repeats, crf_images=args.crf_images,
                           deeplab_depths=tuple(args.deeplab_depths), deeplab_size=args.deeplab_size,
                           deeplab_images=args.deeplab_images, threads=args.threads)
    run_dir = Path(args.run_dir) if args.run_dir else None
    report = run_benchmarks(cfg, args.only or PARTS, sizes, run_dir)
    start, end = report["machine_start"], report["machine_end"]
    print(f"machine: {start['cpu']} ({start['cpu_kind']}, torch kernels {start['torch_cpu_capability']}, "
          f"ONEDNN_MAX_CPU_ISA {start['onednn_max_cpu_isa']}), {start['cores']} cores, torch {start['torch']}, "
          f"{start['torch_threads']} threads, allocator {start['allocator']}; "
          f"load average {start['load_average']} at start, {end['load_average']} at end")
    print(f"auto precision: {start['auto_precision']['precision']} ({start['auto_precision']['reason']})")
    for name, met in report["targets"].items():
        print(f"target {name}: {'met' if met else 'NOT met'}")
    if args.out:
        io.write_json(args.out, report)
        print(f"figures written to {args.out}")
    return report


if __name__ == "__main__":
    main_guard(main)

"""Prepare a dataset: check its layout and write lists/labels, download it, or generate the demo sets.

  python pipelines/prepare_data.py demo [--root data/demo]
  python pipelines/prepare_data.py demo-wsol [--root data/demo_cub]
  python pipelines/prepare_data.py voc12 --root data/VOCdevkit/VOC2012 [--sbd data/benchmark_RELEASE] [--download]
  python pipelines/prepare_data.py cub --root data/wsol/CUB_200_2011 [--out data/wsol/metadata/CUB]
  python pipelines/prepare_data.py ilsvrc --root data/wsol/ILSVRC [--out data/wsol/metadata/ILSVRC]
"""
from __future__ import annotations

import argparse
import json
from typing import Sequence

from irnet_moana.cli import main_guard
from irnet_moana.data.prepare import prepare_voc12
from irnet_moana.data.synthetic import generate_voc_demo, prepare_cub_demo
from irnet_moana.wsol.metadata import convert_cub, convert_ilsvrc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="dataset", required=True)
    demo = sub.add_parser("demo", help="synthetic segmentation benchmark in the VOC layout")
    demo.add_argument("--root", default="data/demo")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--num-classes", type=int, default=6)
    demo.add_argument("--image-size", type=int, default=128)
    demo.add_argument("--num-train", type=int, default=120, help="images in train (scored for seeds/pseudo masks)")
    demo.add_argument("--num-train-aug-extra", type=int, default=240, help="further images in train_aug only")
    demo.add_argument("--num-val", type=int, default=60)
    wsol = sub.add_parser("demo-wsol", help="synthetic CUB-style localisation set (+ its WSOL metadata: train, "
                                            "a held-out val split with boxes, test)")
    wsol.add_argument("--root", default="data/demo_cub")
    wsol.add_argument("--out", default=None, help="metadata folder (default: <root>/metadata)")
    wsol.add_argument("--seed", type=int, default=0)
    wsol.add_argument("--num-classes", type=int, default=6)
    wsol.add_argument("--image-size", type=int, default=128)
    wsol.add_argument("--train-per-class", type=int, default=30)
    wsol.add_argument("--val-per-class", type=int, default=10, help="held-out images with boxes that choose the "
                                                                     "localisation threshold")
    wsol.add_argument("--test-per-class", type=int, default=10)
    voc = sub.add_parser("voc12", help="PASCAL VOC 2012 (+ SBD for train_aug)")
    voc.add_argument("--root", default="data/VOCdevkit/VOC2012", help="the VOC2012 folder of the devkit")
    voc.add_argument("--sbd", default=None, help="SBD's benchmark_RELEASE folder (masks for train_aug)")
    voc.add_argument("--download", action="store_true", help="fetch VOC 2012 and SBD (about 3.4 GB) first")
    for name, default_root in (("cub", "data/wsol/CUB_200_2011"), ("ilsvrc", "data/wsol/ILSVRC")):
        parser_ = sub.add_parser(name, help=f"{name.upper()} for WSOL: check and convert to the metadata format")
        parser_.add_argument("--root", default=default_root)
        parser_.add_argument("--out", default=None, help=f"metadata folder (default: data/wsol/metadata/"
                                                          f"{'CUB' if name == 'cub' else 'ILSVRC'})")
        if name == "ilsvrc":
            parser_.add_argument("--val-xml", default=None,
                                 help="folder of validation XML files (default: <root>/Annotations/CLS-LOC/val)")
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.dataset == "demo":
        summary = generate_voc_demo(args.root, seed=args.seed, num_classes=args.num_classes,
                                    image_size=args.image_size, num_train=args.num_train,
                                    num_train_aug_extra=args.num_train_aug_extra, num_val=args.num_val)
    elif args.dataset == "demo-wsol":
        summary = prepare_cub_demo(args.root, args.out or f"{args.root}/metadata", seed=args.seed,
                                   num_classes=args.num_classes, image_size=args.image_size,
                                   train_per_class=args.train_per_class, val_per_class=args.val_per_class,
                                   test_per_class=args.test_per_class)
    elif args.dataset == "voc12":
        summary = prepare_voc12(args.root, args.sbd, args.download)
    elif args.dataset == "cub":
        out = args.out or "data/wsol/metadata/CUB"
        summary = {"metadata_root": out, **{s: len(m.image_ids) for s, m in convert_cub(args.root, out).items()}}
    else:
        out = args.out or "data/wsol/metadata/ILSVRC"
        converted = convert_ilsvrc(f"{args.root}/train", args.val_xml or f"{args.root}/Annotations/CLS-LOC/val", out)
        summary = {"metadata_root": out, **{s: len(m.image_ids) for s, m in converted.items()}}
    print(json.dumps(summary, indent=2))
    print(f"prepared {args.dataset} under {summary.get('root', args.root)}")
    return summary


if __name__ == "__main__":
    main_guard(main)

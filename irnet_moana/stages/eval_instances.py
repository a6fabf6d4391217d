"""Stage 9: instance mAP^r of IRNet's instance masks and of the semantic-component baseline."""
from __future__ import annotations

from .. import io
from ..data.voc import OBJECT_DIR, VOCData
from ..instance_eval import format_ap_table, format_map_line, score_instance_folder, touching_same_class_stems
from ..outputs import EVAL_INSTANCES, INSTANCE_BASELINE, INSTANCE_MASKS, METRICS
from ..run import start_run

OUTPUTS = (f"{METRICS}/{EVAL_INSTANCES}",)


def run(cfg: dict) -> dict | None:
    """mAP^r at IoU 0.25 / 0.5 / 0.75 on the images of ``data.eval_list`` that ``instance.list`` holds.

    Also on those of them in which two instances of one class touch
    (``touching_same_class``), where the semantic-component baseline must merge them.
    """
    run_ = start_run(cfg, "eval_instances")
    data = VOCData(cfg["data"]["root"])
    if not (data.root / OBJECT_DIR).is_dir():
        run_.log.warning("no %s folder under %s: instance masks are not evaluated (the synthetic demo writes it; "
                         "regenerate older demo data with `python pipelines/prepare_data.py demo`)", OBJECT_DIR,
                         data.root)
        run_.finish("skipped: no instance ground truth")
        return None
    made = set(data.split(cfg["instance"]["list"]))
    stems = [s for s in data.split(cfg["data"]["eval_list"]) if s in made]
    touching = touching_same_class_stems(data.root, stems)
    result: dict = {"list": cfg["data"]["eval_list"], "num_images": len(stems)}
    # (name in the result line, where the scores go, images, how the log describes them)
    subsets = [("all", result, stems, "")]
    if touching:
        result["touching_same_class"] = {"num_images": len(touching)}
        subsets.append(("touching same-class", result["touching_same_class"], touching,
                        " with touching instances of one class"))
    for _, into, subset, described in subsets:
        for name, folder in (("irnet", INSTANCE_MASKS), ("baseline", INSTANCE_BASELINE)):
            into[name] = score_instance_folder(run_.path(folder), data.root, subset, data.names)
            run_.log.info(format_ap_table(into[name], f"{name} instances on {len(subset)} "
                                                      f"{cfg['data']['eval_list']} images{described}"))
    out = run_.path(METRICS, EVAL_INSTANCES)
    io.write_json(out, result)
    run_.finish("; ".join(f"{title}: IRNet {format_map_line(into['irnet'])}, semantic components "
                          f"{format_map_line(into['baseline'])}" for title, into, _, _ in subsets), out)
    return result

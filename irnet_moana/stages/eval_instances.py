"""Stage 9: instance mAP^r of IRNet's instance masks and of the semantic-component baseline."""
from __future__ import annotations

from .. import io
from ..data.voc import OBJECT_DIR, VOCData
from ..instance_eval import format_ap_table, format_map_line, score_instance_folder
from ..outputs import EVAL_INSTANCES, INSTANCE_BASELINE, INSTANCE_MASKS, METRICS
from ..run import start_run

OUTPUTS = (f"{METRICS}/{EVAL_INSTANCES}",)


def run(cfg: dict) -> dict | None:
    """mAP^r at IoU 0.25 / 0.5 / 0.75 on the images of ``data.eval_list`` that ``instance.list`` holds."""
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
    result: dict = {"list": cfg["data"]["eval_list"], "num_images": len(stems)}
    for name, folder in (("irnet", INSTANCE_MASKS), ("baseline", INSTANCE_BASELINE)):
        result[name] = score_instance_folder(run_.path(folder), data.root, stems, data.names)
        run_.log.info(format_ap_table(result[name], f"{name} instances on {len(stems)} "
                                                    f"{cfg['data']['eval_list']} images"))
    out = run_.path(METRICS, EVAL_INSTANCES)
    io.write_json(out, result)
    run_.finish(f"IRNet {format_map_line(result['irnet'])}; semantic components "
                f"{format_map_line(result['baseline'])}", out)
    return result

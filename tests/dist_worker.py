"""Run `pretrain` (or `finetune`, or `export`) in one process of a torchrun world (or alone) and
write its result as JSON: the loss trajectory from rank 0, or each rank's export summary. Used by
test_distributed.py and test_export_distributed.py:

    python -m torch.distributed.run --nproc_per_node 2 tests/dist_worker.py DATA OUT CFG RESULT
"""

import json
import os
import sys
from dataclasses import asdict

from argusrec.export import export
from argusrec.finetune import FinetuneConfig, finetune
from argusrec.train import TrainConfig, pretrain


def main() -> None:
    data, out, cfg_json, result = sys.argv[1:5]
    fields = json.loads(cfg_json)
    rank = int(os.environ.get("RANK", "0"))
    run = fields.pop("_export_from", None)  # set: export that run into OUT with these arguments
    if run is not None:
        summary = export(run, out, data=data, progress=False, **fields)
        with open(f"{result}.{rank}", "w") as f:
            json.dump(asdict(summary), f)
        return
    resume = fields.pop("_resume", False)
    stop_after = fields.pop("_stop_after", None)
    pretrained = fields.pop("_finetune_from", None)  # set: fine-tune that run instead
    if pretrained is not None:
        summary = finetune(data, pretrained, out, FinetuneConfig(**fields), resume=resume,
                           progress=False, stop_after=stop_after)
    else:
        summary = pretrain(data, out, TrainConfig(**fields), resume=resume, progress=False,
                           stop_after=stop_after)
    if rank == 0:
        with open(result, "w") as f:
            json.dump({"losses": summary.losses, "steps": summary.steps}, f)


if __name__ == "__main__":
    main()

"""One torchrun process of a multi-GPU ``train`` call (``--gpu TYPE:N``): the same
:func:`.jobs.train_body` in each of N processes; rank 0 (the only one that checkpoints)
commits the volume and writes the summary for the parent.

    python -m torch.distributed.run --standalone --nproc_per_node N \\
        -m tinystories.modal.worker CONFIG.json RESULT.json VOLUME
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..training import exit_process
from . import jobs


def main(argv: list[str]) -> int:
    config_path, result_path, volume_name = argv
    config = json.loads(Path(config_path).read_text())
    main_process = os.environ.get("RANK", "0") == "0"
    commit = jobs.committer(volume_name) if main_process and volume_name else (lambda: None)
    result = jobs.train_body(config, root=jobs.volume_root(), commit=commit)
    if main_process:
        Path(result_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    exit_process(main(sys.argv[1:]))

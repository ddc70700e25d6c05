"""Time a full conversion: full-size MobileBERT (real configuration, random weights) -> 12 layers at rank 64.

    python benchmarks/bench_compress.py [--recipe default|paper] [--repeats 1]

Prints the wall time of `compress()` end to end (reading the source, decomposing, writing the folder) and of the
CP decompositions alone. The target on the 2-core development machine is under 20 s end to end.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from transformers import MobileBertConfig, MobileBertModel

from light_mobilebert.conversion.compress import compress


FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "mobilebert-uncased.config.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=FIXTURE, help="MobileBERT config.json (default: %(default)s)")
    parser.add_argument("--recipe", choices=("default", "paper"), default="default")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    fields = json.loads(args.config.read_text())
    fields = {key: value for key, value in fields.items() if key not in ("architectures", "model_type")}
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        MobileBertModel(MobileBertConfig(**fields)).save_pretrained(Path(tmp) / "source")
        print(f"torch threads: {torch.get_num_threads()}, recipe: {args.recipe}")
        for repeat in range(args.repeats):
            start = time.perf_counter()
            report = compress(Path(tmp) / f"out{repeat}", str(Path(tmp) / "source"), recipe=args.recipe)
            total = time.perf_counter() - start
            decomposition = sum(layer.seconds for layer in report.layers)
            errors = [layer.relative_error for layer in report.layers]
            print(
                f"run {repeat}: end to end {total:.2f} s (CP decompositions {decomposition:.2f} s), "
                f"{len(report.layers)} layers at rank {report.cp_rank}, relative error "
                f"{min(errors):.4f}-{max(errors):.4f}, {report.parameters_after:,} parameters"
            )


if __name__ == "__main__":
    main()

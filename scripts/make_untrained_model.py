"""Write an UNTRAINED LiteNeXt checkpoint (seeded random weights) for trying the pipeline.

Used by scripts/demo.sh while the package ships no trained nuclei model. The model card is named
"untrained" and says so; anything it segments is meaningless.

    python scripts/make_untrained_model.py OUTPUT.pt [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.output.exists():
        raise SystemExit(f"{args.output} exists; choose another path")

    import torch

    from napari_litenext.checkpoint import save_checkpoint
    from napari_litenext.config import InferenceConfig, ModelCard, ModelConfig
    from napari_litenext.model import LiteNeXt

    torch.manual_seed(args.seed)
    model = LiteNeXt(ModelConfig())
    inference = InferenceConfig(normalisation="percentile", mode="tile", tile_size=256)
    card = ModelCard(
        name="untrained",
        description=f"UNTRAINED LiteNeXt: random weights (seed {args.seed}), for trying the pipeline only. "
                    "Its masks are meaningless.",
        data="none", recipe="none", limits="Not trained: do not use its output.",
        trained_by="scripts/make_untrained_model.py")
    digest = save_checkpoint(args.output, model, inference, card)
    print(f"wrote UNTRAINED model {args.output} (sha256 {digest[:12]}...)")


if __name__ == "__main__":
    main()

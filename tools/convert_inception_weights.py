"""Convert torch-fidelity's FID Inception weights (a pickle) to safetensors, once.

    python tools/convert_inception_weights.py weights-inception-2015-12-05-6726825d.pth inception-fid.safetensors
    export DKDM_ZOO_INCEPTION_WEIGHTS=$PWD/inception-fid.safetensors

The .pth is read with torch.load(weights_only=True), which refuses anything but tensors.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dkdm_zoo.evaluation.fid_inception import convert_inception_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="torch-fidelity's weights-inception-2015-12-05-6726825d.pth")
    parser.add_argument("dst", type=Path, help="output .safetensors file")
    args = parser.parse_args()
    print(f"wrote {convert_inception_weights(args.src, args.dst)}")


if __name__ == "__main__":
    main()

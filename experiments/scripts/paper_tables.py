"""Paper Table 3 and Table 7 rows, measured with `scalesearch flops`, beside the paper's FLOPs.

    python experiments/scripts/paper_tables.py        # prints a Markdown table (used in docs/method.md)
"""

from __future__ import annotations

import json
import subprocess
import sys

ROWS = [  # (label, base, d, w, r, paper FLOPs in B)
    ("MobileNetV1 baseline", "mobilenetv1", 1, 1, 1, 0.6),
    ("MobileNetV1 width w=2", "mobilenetv1", 1, 2, 1, 2.2),
    ("MobileNetV1 resolution r=2", "mobilenetv1", 1, 1, 2, 2.2),
    ("MobileNetV1 compound d=1.4 w=1.2 r=1.3", "mobilenetv1", 1.4, 1.2, 1.3, 2.3),
    ("MobileNetV2 baseline", "mobilenetv2", 1, 1, 1, 0.3),
    ("MobileNetV2 depth d=4", "mobilenetv2", 4, 1, 1, 1.2),
    ("MobileNetV2 width w=2", "mobilenetv2", 1, 2, 1, 1.1),
    ("MobileNetV2 resolution r=2", "mobilenetv2", 1, 1, 2, 1.2),
    ("ResNet-50 baseline", "resnet50", 1, 1, 1, 4.1),
    ("ResNet-50 depth d=4", "resnet50", 4, 1, 1, 16.2),
    ("ResNet-50 width w=2", "resnet50", 1, 2, 1, 14.7),
    ("ResNet-50 resolution r=2", "resnet50", 1, 1, 2, 16.4),
    ("EfficientNet-B0 baseline", "efficientnet-b0", 1, 1, 1, 0.4),
    ("EfficientNet-B0 depth d=4", "efficientnet-b0", 4, 1, 1, 1.8),
    ("EfficientNet-B0 width w=2", "efficientnet-b0", 1, 2, 1, 1.8),
    ("EfficientNet-B0 resolution r=2", "efficientnet-b0", 1, 1, 2, 1.9),
    ("EfficientNet-B0 compound d=1.4 w=1.2 r=1.3", "efficientnet-b0", 1.4, 1.2, 1.3, 1.8),
]


def main() -> None:
    print("| model | d | w | r | px | params | measured FLOPs | paper FLOPs | gap |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, base, d, w, r, paper in ROWS:
        out = subprocess.run([sys.executable, "-m", "scalesearch", "flops", "--base", base, "--d", str(d),
                              "--w", str(w), "--r", str(r), "--json"], check=True, capture_output=True, text=True)
        m = json.loads(out.stdout)
        gap = m["flops"] / 1e9 / paper - 1
        print(f"| {label} | {d:g} | {w:g} | {r:g} | {m['resolution']} | {m['params'] / 1e6:.2f}M "
              f"| {m['flops'] / 1e9:.3f}B | {paper}B | {gap:+.1%} |")


if __name__ == "__main__":
    main()

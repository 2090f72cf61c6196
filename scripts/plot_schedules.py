"""Draw DSReLU's built-in slope schedules, s(t) and 1/s(t), into a PNG (docs/schedules.png).

python scripts/plot_schedules.py [docs/schedules.png] [--initial_angle 85 --final_angle 10
    --steepness 5]
"""

from __future__ import annotations

import argparse

from dsrelu_lightning.study.report.figures import save_png
from dsrelu_lightning.study.report.schedule_figure import schedule_shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", default="docs/schedules.png")
    parser.add_argument("--initial_angle", type=float, default=85.0)
    parser.add_argument("--final_angle", type=float, default=10.0)
    parser.add_argument("--steepness", type=float, default=5.0)
    args = parser.parse_args()
    figure = schedule_shapes(args.initial_angle, args.final_angle, args.steepness)
    print(f"wrote {save_png(figure, args.output)}")


if __name__ == "__main__":
    main()

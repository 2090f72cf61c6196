"""The shapes of DSReLU's built-in slope schedules: ``s(t)``, and ``1/s(t)``, the negative
slope of ``leaky_relu_equiv`` (the LeakyReLU that DSReLU equals up to the scale ``s(t)``)."""

from __future__ import annotations

from matplotlib.figure import Figure

from dsrelu_lightning.nn.schedules import SCHEDULES, angle_slope

__all__ = ["schedule_shapes"]


def schedule_shapes(
    initial_angle: float = 85.0, final_angle: float = 10.0, steepness: float = 5.0
) -> Figure:
    """Every built-in schedule's ``s(t)`` and ``1/s(t)`` over ``t`` in [0, 1] (paper's angles
    and steepness by default; ``constant`` at its default, ``a``)."""
    a, b = angle_slope("initial_angle", initial_angle), angle_slope("final_angle", final_angle)
    times = [i / 200 for i in range(201)]
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    slope_ax, negative_ax = fig.subplots(1, 2)
    for name, schedule in SCHEDULES.items():
        slopes = [float(schedule(t, a, b, steepness)) for t in times]
        style = {"label": name, "linestyle": "--" if name == "reverse_sigmoid" else "-"}
        slope_ax.plot(times, slopes, **style)
        negative_ax.plot(times, [1 / s for s in slopes], **style)
    negative_ax.axhline(1.0, color="black", linewidth=0.8, linestyle=":")
    negative_ax.annotate("positive side: slope 1", (0.02, 1.08), fontsize=8)
    title = (
        f"{initial_angle:g} -> {final_angle:g} deg (a = {a:.3g}, b = {b:.3g}), k = {steepness:g}"
    )
    slope_ax.set(
        xlabel="training progress t", ylabel="DSReLU's positive-side slope s(t)", title=title
    )
    negative_ax.set(
        xlabel="training progress t",
        ylabel="negative slope 1/s(t)",
        yscale="log",
        title="leaky_relu_equiv = DSReLU / s(t) (negative_slope 1)",
    )
    slope_ax.legend(fontsize=8)
    return fig

"""Results tables from rows of runs: the mean and spread over seeds, and their markdown.

Pure JSON in, JSON and text out (no torch, no runs): tools/results_digits.py and the docs use it.
"""

from __future__ import annotations

import statistics


def summarise(rows: list[dict]) -> list[dict]:
    by_row: dict[str, list[dict]] = {}
    for r in rows:
        by_row.setdefault(r["row"], []).append(r)
    summary = []
    for name, items in by_row.items():
        entry = {"row": name, "seeds": [i["seed"] for i in items], "commands": items[0]["commands"]}
        for key in ("fd", "precision", "recall", "accuracy"):
            values = [i["metrics"][key] for i in items if i["metrics"].get(key) is not None]
            if values:
                entry[key] = {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}
        values = [i["fd_teacher"] for i in items if i.get("fd_teacher") is not None]
        if values:
            entry["fd_teacher"] = {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}
        for key in ("s_per_image", "nfe_per_image", "train_wall_s", "teacher_forwards"):
            values = [i[key] for i in items if i.get(key) is not None]
            if values:
                entry[key] = statistics.fmean(values)
        summary.append(entry)
    return summary


def markdown(table: str, data: dict) -> str:
    has_acc = any("accuracy" in r for r in data["summary"])
    has_time = any("s_per_image" in r for r in data["summary"])
    has_vs_teacher = any("fd_teacher" in r for r in data["summary"])
    head = ["row", "FD vs data (lower better)"]
    head += ["FD vs teacher DDIM 50"] if has_vs_teacher else []
    head += ["precision", "recall"]
    head += ["class accuracy"] if has_acc else []
    head += ["NFE", "ms/image"] if has_time else []
    has_train = any("train_wall_s" in r for r in data["summary"])
    head += ["train s"] if has_train else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def fmt(entry: dict, key: str) -> str:
        v = entry.get(key)
        return "" if v is None else f"{v['mean']:.3f} ({v['min']:.3f}..{v['max']:.3f})"

    for r in data["summary"]:
        cells = [r["row"], fmt(r, "fd"), *([fmt(r, "fd_teacher")] if has_vs_teacher else []), fmt(r, "precision"),
                 fmt(r, "recall")]  # fmt: skip
        cells += [fmt(r, "accuracy")] if has_acc else []
        if has_time:
            nfe, spi = r.get("nfe_per_image"), r.get("s_per_image")
            cells += ["" if nfe is None else f"{nfe:.0f}", "" if spi is None else f"{1000 * spi:.2f}"]
        if has_train:
            cells += [f"{r['train_wall_s']:.0f}" if "train_wall_s" in r else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)

"""The one aggregate every tier keeps: count, total, minimum and maximum of the samples in a time bucket.

All of Azure Monitor's aggregations follow from it (Average = Total / Count), and two aggregates of disjoint
samples merge exactly, so minutes roll up into hours and partial minutes from two API servers into one.
"""

from __future__ import annotations

from dataclasses import dataclass

# Azure Monitor's aggregation types, in its spelling.
AGGREGATIONS = ("Average", "Minimum", "Maximum", "Total", "Count")


@dataclass(slots=True)
class Stats:
    count: int = 0
    total: float = 0.0
    minimum: float = float("inf")
    maximum: float = float("-inf")

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.minimum = min(self.minimum, value)
        self.maximum = max(self.maximum, value)

    def merge(self, other: Stats) -> None:
        self.count += other.count
        self.total += other.total
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)

    def value(self, aggregation: str) -> float | None:
        """The aggregate named by ``aggregation`` (one of AGGREGATIONS); None for no samples."""
        if self.count == 0:
            return None
        match aggregation:
            case "Average":
                return self.total / self.count
            case "Minimum":
                return self.minimum
            case "Maximum":
                return self.maximum
            case "Total":
                return self.total
            case "Count":
                return float(self.count)
        raise ValueError(f"unknown aggregation {aggregation!r}")

    def dump(self) -> list[float]:
        return [self.count, round(self.total, 6), round(self.minimum, 6), round(self.maximum, 6)]

    @classmethod
    def load(cls, data: list[float]) -> Stats:
        count, total, minimum, maximum = data
        return cls(int(count), float(total), float(minimum), float(maximum))


# metric name -> dimension value ("" for the whole group) -> aggregate
Series = dict[str, dict[str, Stats]]


def merge_into(into: Series, other: Series) -> Series:
    for metric, by_dim in other.items():
        target = into.setdefault(metric, {})
        for dim, stats in by_dim.items():
            if dim in target:
                target[dim].merge(stats)
            else:
                target[dim] = Stats(stats.count, stats.total, stats.minimum, stats.maximum)
    return into


def dump_series(series: Series) -> dict[str, dict[str, list[float]]]:
    return {m: {d: s.dump() for d, s in by_dim.items()} for m, by_dim in series.items()}


def load_series(data: dict[str, dict[str, list[float]]]) -> Series:
    return {m: {d: Stats.load(v) for d, v in by_dim.items()} for m, by_dim in data.items()}

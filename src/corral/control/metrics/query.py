"""The arithmetic of an Azure Monitor metrics query: parsing its parameters, laying out its time buckets,
reading them from the right tier of the history and aggregating.

Everything here is plain functions of their inputs (the history is passed in), so it is unit-tested
without a server. Parameter errors are ``InvalidMetricQuery`` (400) naming the parameter.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol
from urllib.parse import unquote

from corral.control.metrics.definitions import DEFINITIONS, GROUP, MEMBER_NAME, NAMESPACE, MetricDefinition
from corral.control.metrics.rollups import HOUR, MINUTE, MINUTE_RETENTION
from corral.control.metrics.stats import AGGREGATIONS, Series, Stats, merge_into
from corral.errors import InvalidMetricQuery

FULL = "FULL"
# The time grains Azure Monitor offers (metricAvailabilities), in seconds.
GRAINS = {"PT1M": MINUTE, "PT5M": 5 * MINUTE, "PT15M": 15 * MINUTE, "PT30M": 30 * MINUTE, "PT1H": HOUR,
          "PT6H": 6 * HOUR, "PT12H": 12 * HOUR, "P1D": 24 * HOUR}
DEFAULT_SPAN = timedelta(hours=1)
MAX_POINTS = 20160  # two weeks of minutes per time series
MAX_METRICS = 20
DEFAULT_TOP = 10

_DURATION = re.compile(
    r"^P(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$",
    re.IGNORECASE)


# parameters --------------------------------------------------------------------------------------------------------
def parse_duration(text: str, name: str) -> timedelta:
    """An ISO 8601 duration of weeks, days, hours, minutes, seconds (PT15M, P1D, P1DT12H)."""
    m = _DURATION.match(text.strip())
    if not m or not any(m.groupdict().values()) or text.strip().upper().endswith("T"):
        raise InvalidMetricQuery(
            f"'{name}': '{text}' is not an ISO 8601 duration such as PT1M, PT1H or P1D "
            "(years and months are not supported)", target=name)
    g = {k: float(v) if v else 0.0 for k, v in m.groupdict().items()}
    try:
        return timedelta(weeks=g["w"], days=g["d"], hours=g["h"], minutes=g["m"], seconds=g["s"])
    except OverflowError:
        raise InvalidMetricQuery(f"'{name}': '{text}' is longer than any timespan can be", target=name) from None


def format_duration(seconds: int) -> str:
    """ISO 8601 as Azure writes it: P1D, PT6H, PT1H30M, PT45S."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    out = "P" + (f"{days}D" if days else "")
    clock = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "") + (f"{secs}S" if secs else "")
    return out + ("T" + clock if clock else "") if (days or clock) else "PT0S"


def parse_time(text: str, name: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.strip().replace(" ", "+"))  # a '+' left unencoded arrives as a space
    except ValueError:
        raise InvalidMetricQuery(f"'{name}': '{text}' is not an ISO 8601 date and time such as "
                                 "2026-11-22T09:00:00Z", target=name) from None
    return t.astimezone(UTC) if t.tzinfo else t.replace(tzinfo=UTC)


def format_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _decoded(text: str) -> str:
    # `az monitor metrics list` URL-encodes the timespan itself before its HTTP layer encodes it again.
    for _ in range(2):
        if "%" not in text:
            break
        text = unquote(text)
    return text


def _is_duration(part: str) -> bool:
    return part.strip().upper().startswith("P")


def parse_timespan(text: str | None, now: datetime) -> tuple[datetime, datetime]:
    """``start/end``, ``start/duration``, ``duration/end``, or a duration ending now; default: the last hour."""
    if text is None or not text.strip():
        return now - DEFAULT_SPAN, now
    text = _decoded(text)
    try:
        return _timespan(text, now)
    except OverflowError:  # a start or end before year 1 or after 9999
        raise InvalidMetricQuery(f"'timespan': '{text}' reaches outside the years 1 to 9999",
                                 target="timespan") from None


def _timespan(text: str, now: datetime) -> tuple[datetime, datetime]:
    parts = text.split("/")
    if len(parts) == 1:
        if _is_duration(parts[0]):
            return now - parse_duration(parts[0], "timespan"), now
        start, end = parse_time(parts[0], "timespan"), now
    elif len(parts) == 2:
        a, b = parts
        if _is_duration(a) and _is_duration(b):
            raise InvalidMetricQuery("'timespan' must name at least one point in time, e.g. "
                                     "2026-11-22T09:00:00Z/PT1H", target="timespan")
        if _is_duration(b):
            start = parse_time(a, "timespan")
            end = start + parse_duration(b, "timespan")
        elif _is_duration(a):
            end = parse_time(b, "timespan")
            start = end - parse_duration(a, "timespan")
        else:
            start, end = parse_time(a, "timespan"), parse_time(b, "timespan")
    else:
        raise InvalidMetricQuery(f"'timespan': '{text}' must be START/END in ISO 8601, e.g. "
                                 "2026-11-22T09:00:00Z/2026-11-22T10:00:00Z", target="timespan")
    if end <= start:
        raise InvalidMetricQuery(f"'timespan': the end ({format_time(end)}) is not after the start "
                                 f"({format_time(start)})", target="timespan")
    return start, end


@dataclass(frozen=True)
class Interval:
    seconds: int  # bucket width; for FULL the whole (aligned) span
    full: bool = False

    @property
    def label(self) -> str:
        return format_duration(self.seconds)


def parse_interval(text: str | None, start: datetime, end: datetime, auto_adjust: bool = False) -> Interval:
    """PT1M (default), one of Azure's grains, or FULL (one bucket for the whole timespan). With
    ``auto_adjust`` another duration becomes the nearest grain instead of a 400."""
    if text is None or not text.strip():
        return Interval(MINUTE)
    if text.strip().upper() == FULL:
        first = _floor(int(start.timestamp()), MINUTE)
        return Interval(max(MINUTE, _ceil(int(end.timestamp()), MINUTE) - first), full=True)
    seconds = int(parse_duration(text, "interval").total_seconds())
    if seconds in GRAINS.values():
        return Interval(seconds)
    if auto_adjust and seconds > 0:
        return Interval(min(GRAINS.values(), key=lambda g: (abs(g - seconds), g)))
    raise InvalidMetricQuery(f"'interval': {text} is not a supported time grain; use one of "
                             f"{', '.join(GRAINS)} or FULL (or set AutoAdjustTimegrain=true)", target="interval")


def parse_aggregations(text: str | None, default: str) -> list[str]:
    if text is None or not text.strip():
        return [default]
    canonical = {a.lower(): a for a in AGGREGATIONS}
    out: list[str] = []
    for part in text.split(","):
        a = canonical.get(part.strip().lower())
        if a is None:
            raise InvalidMetricQuery(f"'aggregation': '{part.strip()}' is not an aggregation; use "
                                     f"{', '.join(AGGREGATIONS)}", target="aggregation")
        if a not in out:
            out.append(a)
    return out


def parse_metric_names(text: str | None, definitions: tuple[MetricDefinition, ...] = DEFINITIONS,
                       namespace: str = NAMESPACE) -> list[MetricDefinition]:
    """The metrics asked for, in order; none named: the first (CpuUsage), as Azure picks a default."""
    if text is None or not text.strip():
        return [definitions[0]]
    by_name = {d.name.lower(): d for d in definitions}
    out: list[MetricDefinition] = []
    for part in text.split(","):
        d = by_name.get(part.strip().lower())
        if d is None:
            raise InvalidMetricQuery(
                f"'metricnames': the metric '{part.strip()}' does not exist for {namespace}; valid metrics: "
                f"{', '.join(x.name for x in definitions)}", target="metricnames")
        if d not in out:
            out.append(d)
    if len(out) > MAX_METRICS:
        raise InvalidMetricQuery(f"'metricnames': at most {MAX_METRICS} metrics per query", target="metricnames")
    return out


_CLAUSE = re.compile(r"^\s*(?P<dim>[A-Za-z][\w.]*)\s+eq\s+'(?P<value>(?:[^']|'')*)'\s*$", re.IGNORECASE)


def _split_outside_quotes(text: str, word: str) -> list[str]:
    """``text`` split at `` and ``/`` or `` (case-insensitive) where not inside '...'."""
    out, depth_quote, cur, i = [], False, [], 0
    pat = re.compile(rf"\s+{word}\s+", re.IGNORECASE)
    while i < len(text):
        if text[i] == "'":
            depth_quote = not depth_quote
        if not depth_quote and (m := pat.match(text, i)):
            out.append("".join(cur))
            cur, i = [], m.end()
            continue
        cur.append(text[i])
        i += 1
    out.append("".join(cur))
    return out


def parse_filter(text: str | None, dimensions: tuple[str, ...] = ("containerName",)) -> dict[str, set[str] | None]:
    """``$filter`` as dimension -> the values asked for (None: every value, '*').

    Clauses joined by ``and``; a clause is ``dim eq 'value'`` or a parenthesized ``or`` of such for one
    dimension: ``containerName eq '*'``, ``(containerName eq 'web' or containerName eq 'sidecar')``.
    """
    if text is None or not text.strip():
        return {}
    canonical = {d.lower(): d for d in dimensions}
    out: dict[str, set[str] | None] = {}
    for clause in _split_outside_quotes(text.strip(), "and"):
        clause = clause.strip()
        if clause.startswith("(") and clause.endswith(")"):
            clause = clause[1:-1]
        dims: set[str] = set()
        values: set[str] | None = set()
        for term in _split_outside_quotes(clause, "or"):
            m = _CLAUSE.match(term.strip().strip("()"))
            if m is None:
                raise InvalidMetricQuery(
                    f"'$filter': cannot read '{term.strip()}'; write dimension eq 'value' clauses joined by "
                    "'and' / 'or', e.g. containerName eq '*'", target="$filter")
            dim = canonical.get(m["dim"].lower())
            if dim is None:
                raise InvalidMetricQuery(f"'$filter': '{m['dim']}' is not a dimension of these metrics; "
                                         f"dimensions: {', '.join(dimensions)}", target="$filter")
            dims.add(dim)
            value = m["value"].replace("''", "'")
            if value == "*":
                values = None
            elif values is not None:
                values.add(value)
        if len(dims) != 1:
            raise InvalidMetricQuery("'$filter': 'or' may only join values of one dimension", target="$filter")
        dim = dims.pop()
        if dim in out:
            raise InvalidMetricQuery(f"'$filter': '{dim}' is named in more than one 'and' clause", target="$filter")
        out[dim] = values
    return out


def parse_orderby(text: str | None, aggregations: list[str]) -> tuple[str, bool] | None:
    """``average desc`` -> ("Average", descending); the aggregation must be one the query asks for."""
    if text is None or not text.strip():
        return None
    parts = text.split()
    canonical = {a.lower(): a for a in aggregations}
    agg = canonical.get(parts[0].lower())
    direction = parts[1].lower() if len(parts) > 1 else "asc"
    if agg is None or len(parts) > 2 or direction not in ("asc", "desc"):
        raise InvalidMetricQuery(f"'orderby': '{text}' must be one of the query's aggregations "
                                 f"({', '.join(aggregations)}) and optionally asc or desc", target="orderby")
    return agg, direction == "desc"


def parse_top(text: str | None) -> int:
    if text is None or not text.strip():
        return DEFAULT_TOP
    try:
        top = int(text)
    except ValueError:
        top = 0
    if top < 1:
        raise InvalidMetricQuery(f"'top': '{text}' must be a whole number of at least 1", target="top")
    return top


# buckets -----------------------------------------------------------------------------------------------------------
def _floor(t: int, grain: int) -> int:
    return t - t % grain


def _ceil(t: int, grain: int) -> int:
    return -(-t // grain) * grain


def bucket_starts(start: datetime, end: datetime, interval: Interval) -> list[int]:
    """Epoch seconds of each bucket: aligned to the grain (UTC), from the one holding ``start`` to before ``end``."""
    s, e = int(start.timestamp()), int(end.timestamp())
    if interval.full:
        return [_floor(s, MINUTE)]
    starts = range(_floor(s, interval.seconds), e, interval.seconds)
    if len(starts) > MAX_POINTS:
        raise InvalidMetricQuery(f"the query asks for {len(starts)} points per time series (timespan / "
                                 f"interval); at most {MAX_POINTS}: use a larger interval or a shorter timespan",
                                 target="interval")
    return list(starts)


class HistoryReader(Protocol):
    def minutes(self, uid: str, start: int, end: int) -> dict[int, Series]: ...

    def hours(self, uid: str, start: int, end: int) -> dict[int, Series]: ...


def read_buckets(history: HistoryReader, uids: list[str], starts: list[int], interval: Interval,
                 now: datetime) -> list[Series]:
    """The merged aggregates of each bucket over the groups ``uids`` (one group, or an NGroup's members), read
    from hour rollups when the buckets are whole hours (or a FULL span older than the minutes kept), else from
    minute rollups."""
    out: list[Series] = [{} for _ in starts]
    if not starts:
        return out
    width = interval.seconds
    end = starts[-1] + width
    old = starts[0] < int(now.timestamp()) - MINUTE_RETENTION
    use_hours = (width % HOUR == 0 and starts[0] % HOUR == 0) or (interval.full and old)
    for uid in uids:
        if use_hours:
            tier = history.hours(uid, _floor(starts[0], HOUR), _ceil(end, HOUR))
        else:
            tier = history.minutes(uid, starts[0], end)
        for t, series in tier.items():
            i = 0 if interval.full else (t - starts[0]) // width
            if 0 <= i < len(starts):
                merge_into(out[i], series)
    return out


def merge_buckets(parts: Iterable[list[Series]], count: int) -> list[Series]:
    """The bucket-by-bucket merge of several groups' buckets (an NGroup's members), ``count`` buckets each."""
    out: list[Series] = [{} for _ in range(count)]
    for buckets in parts:
        for into, series in zip(out, buckets, strict=True):
            merge_into(into, series)
    return out


# series ------------------------------------------------------------------------------------------------------------
@dataclass
class TimeSeries:
    dimension: str | None  # the containerName value, None for the whole group
    buckets: list[Stats] = field(default_factory=list)
    member: str | None = None  # the containerGroupName value of an NGroup's series split by member

    def overall(self) -> Stats:
        total = Stats()
        for b in self.buckets:
            if b.count:
                total.merge(b)
        return total


def timeseries(buckets: list[Series], metric: MetricDefinition, split: dict[str, set[str] | None],
               top: int | None = DEFAULT_TOP, orderby: tuple[str, bool] | None = None) -> list[TimeSeries]:
    """The metric's time series: one for the whole group, or one per dimension value the filter splits by
    (values with data in the timespan, at most ``top``, ordered by ``orderby`` or by name)."""
    dim = next((d for d in split if d in metric.dimensions), None)
    if dim is None:
        return [TimeSeries(None, [b.get(metric.name, {}).get(GROUP) or Stats() for b in buckets])]
    wanted = split[dim]
    values = sorted({v for b in buckets for v in b.get(metric.name, {}) if v != GROUP
                     and (wanted is None or v in wanted)})
    out = [TimeSeries(v, [b.get(metric.name, {}).get(v) or Stats() for b in buckets]) for v in values]
    return _ordered(out, orderby)[:top]


def member_timeseries(per_member: dict[str, list[Series]], count: int, metric: MetricDefinition,
                      split: dict[str, set[str] | None], top: int = DEFAULT_TOP,
                      orderby: tuple[str, bool] | None = None) -> list[TimeSeries]:
    """An NGroup's time series over ``count`` buckets of its members'. Unless ``split`` names
    ``containerGroupName``, the members' samples pooled (Average: the average member, Maximum: the busiest
    member's peak, Total: their sum); else one series per member with samples in the timespan (and per
    container, if the split names containerName too), ordered and cut to ``top`` as ``timeseries`` does."""
    if MEMBER_NAME not in split:
        return timeseries(merge_buckets(per_member.values(), count), metric, split, top, orderby)
    wanted = split[MEMBER_NAME]
    rest = {d: v for d, v in split.items() if d != MEMBER_NAME}
    out: list[TimeSeries] = []
    for member in sorted(per_member):
        if wanted is not None and member not in wanted:
            continue
        for ts in timeseries(per_member[member], metric, rest, top=None):
            if ts.overall().count:
                ts.member = member
                out.append(ts)
    return _ordered(out, orderby)[:top]


def _ordered(series: list[TimeSeries], orderby: tuple[str, bool] | None) -> list[TimeSeries]:
    if orderby is None:
        return series
    agg, descending = orderby
    sign = -1.0 if descending else 1.0

    def key(ts: TimeSeries) -> tuple[bool, float]:
        v = ts.overall().value(agg)
        return v is None, sign * (v or 0.0)

    return sorted(series, key=key)

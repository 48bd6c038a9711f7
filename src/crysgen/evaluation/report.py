"""The HTML page of an evaluation: metrics table, K-S tables and plots, rendered through jinja2.

Every value that enters the page (the title, which names the user's sample path; metric names;
property names; values) is HTML-escaped by the template engine (``autoescape``), so a path such
as ``runs/<script>`` shows as text and cannot change the page.
"""

from __future__ import annotations

from typing import Any

from jinja2 import Environment

_PAGE = """<!doctype html><html><head><meta charset='utf-8'><title>{{ title }}</title>
<style>body{font-family:sans-serif;max-width:1200px}td{padding:2px 10px}</style></head>
<body><h1>{{ title }}</h1>
<table><tr><th>metric</th><th>value</th><th>n</th><th>spread over draws</th></tr>
{%- for name, value, n, spread in table %}
<tr><td>{{ name }}</td><td>{{ value }}</td><td>{{ n }}</td><td>{{ spread }}</td></tr>
{%- endfor %}
</table>
{%- for name, rows in ks %}
<h3>K-S: {{ name }}</h3><table>
{%- for prop, statistic in rows %}<tr><td>{{ prop }}</td><td>{{ statistic }}</td></tr>{% endfor -%}
</table>
{%- endfor %}
{%- for name, png in plots %}
<h2>{{ name }}</h2><img src="data:image/png;base64,{{ png }}">
{%- endfor %}
<p>Per structure: structures.csv. Timings (s): {{ seconds }}</p>
</body></html>
"""


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def spread_text(metric: dict[str, Any]) -> str:
    """A Wasserstein distance's spread over further draws, in words ("" for a metric without one)."""
    sp = metric.get("spread")
    if not sp:
        return ""
    return (f"± {sp['sd']:.2g} over {sp['draws']} draws of {sp['n']} "
            f"(mean {sp['mean']:.4g}, range {sp['min']:.4g}–{sp['max']:.4g}; all valid: {sp['all']:.4g})")


def by_sites_text(metric: dict[str, Any]) -> str:
    """COV-P within each site-count bin, in words ("" for a metric without ``by_sites``)."""
    bins = metric.get("by_sites")
    if not bins:
        return ""
    return "by sites: " + ", ".join(f"{b['sites']} {100 * b['precision']:.0f} % of {b['n']}" for b in bins)


def notes(metric: dict[str, Any]) -> str:
    """What a metric's row says beside its value: its spread, its share by cell size."""
    return "; ".join(t for t in (spread_text(metric), by_sites_text(metric)) if t)


def render_html(metrics: dict[str, dict[str, Any]], plots: dict[str, str], seconds: dict[str, float],
                *, title: str) -> str:
    """The report page.

    Args:
        metrics: name -> ``{"value": number or {property: {"statistic": ...}}, "n": count}``;
            dict values are the K-S tables.
        plots: name -> base64 PNG.
        seconds: timings per family, in seconds.
        title: page title and heading (plain text; escaped here).

    Returns:
        The HTML text.
    """
    table = [(k, _fmt(v["value"]), v["n"], notes(v)) for k, v in metrics.items()
             if not isinstance(v["value"], dict)]
    ks = [(k, [(n, _fmt(s["statistic"])) for n, s in sorted(v["value"].items())])
          for k, v in metrics.items() if isinstance(v["value"], dict)]
    template = Environment(autoescape=True).from_string(_PAGE)
    return template.render(title=title, table=table, ks=ks, plots=list(plots.items()), seconds=seconds)

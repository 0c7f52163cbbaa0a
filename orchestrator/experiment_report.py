"""`recsys experiments report`: exposures, CTR and conversion per variant, with 95%
Wilson intervals and a two-proportion z-test of each variant against the first.

Attribution: an exposure counts as clicked when the same user later logged an
engagement (click, add_to_cart, purchase, like, rating) with one of the exposed items
carrying the exposure's request_id, and as converted when that interaction was a purchase.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import psycopg

ENGAGEMENT = ("click", "add_to_cart", "purchase", "like", "rating")
CONVERSION = ("purchase",)
Z95 = 1.959963984540054

_SQL = """
SELECT e.variant,
       count(*) AS exposures,
       count(*) FILTER (WHERE EXISTS (
           SELECT 1 FROM interactions i
           WHERE i.request_id = e.request_id AND i.user_id = e.user_id
             AND i.item_id = ANY (e.item_ids) AND i.type = ANY (%(engagement)s))) AS clicked,
       count(*) FILTER (WHERE EXISTS (
           SELECT 1 FROM interactions i
           WHERE i.request_id = e.request_id AND i.user_id = e.user_id
             AND i.item_id = ANY (e.item_ids) AND i.type = ANY (%(conversion)s))) AS converted
FROM exposures e
WHERE e.variant LIKE %(pattern)s
GROUP BY e.variant
ORDER BY e.variant
"""


@dataclass(frozen=True)
class VariantStats:
    variant: str
    exposures: int
    clicked: int
    converted: int

    @property
    def ctr(self) -> float:
        return self.clicked / self.exposures if self.exposures else 0.0

    @property
    def conversion(self) -> float:
        return self.converted / self.exposures if self.exposures else 0.0


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion (sound for small counts and rates near 0 or 1)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportion_z(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float]:
    """z statistic and two-sided p-value for H0: the two rates are equal (pooled variance)."""
    if n1 == 0 or n2 == 0:
        return 0.0, 1.0
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0, 1.0
    z = (k2 / n2 - k1 / n1) / se
    return z, math.erfc(abs(z) / math.sqrt(2))


def collect(database_url: str, experiment: str | None = None) -> list[VariantStats]:
    pattern = f"{experiment}/%" if experiment else "%"
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(_SQL, {"engagement": list(ENGAGEMENT), "conversion": list(CONVERSION),
                                   "pattern": pattern}).fetchall()
    return [VariantStats(v, int(n), int(c), int(k)) for v, n, c, k in rows]


def render(stats: list[VariantStats]) -> str:
    if not stats:
        return "no exposures logged yet"
    lines = [f"{'variant':<28} {'exposures':>9} {'CTR':>7} {'95% CI':>17} {'conv.':>7} {'95% CI':>17}"
             f" {'CTR vs first: z':>15} {'p':>7}"]
    base = stats[0]
    for s in stats:
        lo, hi = wilson(s.clicked, s.exposures)
        clo, chi = wilson(s.converted, s.exposures)
        z, p = two_proportion_z(base.clicked, base.exposures, s.clicked, s.exposures)
        test = f"{z:>15.2f} {p:>7.4f}" if s is not base else f"{'(baseline)':>15} {'':>7}"
        lines.append(f"{s.variant:<28} {s.exposures:>9} {s.ctr:>7.2%} [{lo:>6.2%}, {hi:>6.2%}] {s.conversion:>7.2%}"
                     f" [{clo:>6.2%}, {chi:>6.2%}] {test}")
    return "\n".join(lines)

"""``simlabel audit``: everything wrong with a catalog, from the one graph (issue 27).

:mod:`simlabel.auditing.core` holds the numerical core, one function per issue type; :mod:`simlabel.auditing.run`
runs them over a catalog, its store and its graph (:func:`audit`); :mod:`simlabel.auditing.page` draws the report.
The per-image quality measures are :mod:`simlabel.quality`'s, taken in ``embed``'s decode pass.
"""

from simlabel.auditing.run import ISSUE_TYPES, AuditConfig, AuditResult, audit

__all__ = ["ISSUE_TYPES", "AuditConfig", "AuditResult", "audit"]

"""``simlabel audit``: everything wrong with a catalog, from the one graph (issue 27; in progress).

:mod:`simlabel.audit.core` holds the numerical core, one function per issue type; the per-image quality measures
are :mod:`simlabel.quality`'s.
"""

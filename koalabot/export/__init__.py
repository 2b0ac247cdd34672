"""The export stage: votes in the store → training rows in the format a trainer reads.

`options` (what to export), `view` (the thread as the export sees it, review decisions
applied), `rows` (one layout per format), `pseudonyms` (ids in rows), `summary` (progress and
the counts at the end), `run` (the run), `parallel` (ranges of a SQLite file on forked
workers), `redact` and `dedupe`.
No SQL driver is imported here: the store hands an opaque reader.
"""

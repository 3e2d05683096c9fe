"""The analysis service: read the run store, compare groups of runs, plot, serve gRPC.

No torch and no Ray here. `store` reads runs (JSON only), `stats` and `compare`
compute the numbers, `plots` draws them, `servicer`/`server` serve
`stride.analysis.v1` on services.common; `stride compare` uses the same code.
Definitions: docs/analysis.md.
"""

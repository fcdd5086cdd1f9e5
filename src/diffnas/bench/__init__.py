"""Measurements of the library itself, behind `diffnas bench` and `diffnas latency`.

`quality` (search methods x seeds under a protocol, scored in the NB201 table), `speed`
(search-step time and memory of the engine against the plain supernet), `estimate` (memory
and time of a search before it starts) and `latency` (on-device latency tables and their
predictor). The scripts under the repository's `benchmarks/` folder call into these.
"""

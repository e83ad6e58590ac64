"""Structured pruning, split by job: `graph` (torch-pruning's dependency graph, replay,
counts), `importance` (channel rankings), `pruner` (the cut and `prune()`), `repair`
(refit and BatchNorm repair after the cut)."""

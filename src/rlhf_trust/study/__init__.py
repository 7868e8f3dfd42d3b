"""`rlhf-trust study`: fan the cells of a grid of params overrides out to an existing engine
(submitit for local processes and Slurm, Ray for a Ray cluster), each cell a full pipeline run in its
own git worktree, then pool the finished cells into one report with the two-level statistics.

Modules, one job each: grid (the cells and their overrides), state (studies/<name>/study.json),
cell (what a worker runs for one cell), executors (submitit / Ray), gather (the pooled report),
command (the CLI entry).
"""

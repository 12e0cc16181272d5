"""What the benchmarks share: the machine (cores, /proc CPU and memory accounting), a
gateway process pinned to a core with its config, raw SSE clients, and the report."""

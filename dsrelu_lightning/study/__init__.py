"""The study layer: grid files, the runner, reports, statistics and figures."""

"""Running a benchmark grid: grid files and variants, cells, the runner, locks, progress."""

"""Every plot and report a run writes (pure pandas and matplotlib: no Ray here).

- `plots`: the figures (a run's learning curves, the tuning balance, the comparison),
  drawn with matplotlib's Agg backend and saved by one helper;
- `history`: a train run's history as `learning_curves.png` and TensorBoard event files;
- `tuning`: the tuning job's `trials.csv` and `report.md`, and the headline verdict;
- `comparison`: `alsoview compare`'s `comparison.json`, `comparison.md` and `comparison.png`.
"""

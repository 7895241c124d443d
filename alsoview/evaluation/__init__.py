"""Measuring rankings without Ray: metrics, the baselines and peers, the evaluation protocols, and
every epoch's validation."""

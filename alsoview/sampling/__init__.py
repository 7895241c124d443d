"""Negative mixing without Ray: each positive's negatives (`mixing`), and an epoch's blocks of
positives, which worker gets which, and each block's draw (`blocks`)."""

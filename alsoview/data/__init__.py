"""The data: raw Amazon files parsed and cleaned (pure), the generated dataset, item text
embeddings, the prepared dataset's layout and its in-memory form (`catalog`), and the tables built
from it (`tables`: what mixing reads; `relations`: item graphs and co-occurrences)."""

"""How a model learns: corpora, batches, the train step, runs and exports."""

"""Decoding: greedy and beam search, what search does to the log-probabilities (sampling, blocking, penalties),
the batched Translator API, ensembles, alignments from cross-attention, and texts made of several sentences."""

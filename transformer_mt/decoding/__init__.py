"""Decoding: greedy and beam search, the batched Translator API, and alignments from cross-attention."""

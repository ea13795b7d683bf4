"""Data: the tokenizer, corpora encoded into memory-mapped arrays, and the batches training reads."""

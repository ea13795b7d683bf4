"""Data: the tokenizer, corpora encoded into memory-mapped arrays, the batches training reads, several corpora
mixed, subword regularization, and back-translation into synthetic corpora."""

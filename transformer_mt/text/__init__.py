"""Text: pure text processing around translation (sentences in a line, HTML, documents).

Nothing here imports torch or decoding/: it takes text and gives back the sentences to translate
and a way to put their translations back; the translator and the server compose them.
"""

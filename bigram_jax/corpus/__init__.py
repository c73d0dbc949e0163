"""Corpora: where a corpus comes from, its tokenizer, its token files and text encodings, split and counted."""

"""Text: tokens and vocabulary, the sources, the standard-library corpus, the TextBunch."""

"""Language models: the word n-gram LM stage 3 builds with KenLM for stage 5's beam search."""

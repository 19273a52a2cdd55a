"""Models: wav2vec 2.0 upstream checkpoints, the fast s3prl frontend and the espnet2 model pieces
(identity encoder, CTC model reporting WER) that the recipe registers with espnet2."""

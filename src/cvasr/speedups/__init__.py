"""Training speed-ups over espnet2's defaults, each switched on by a config option: the step
without host syncs, DataLoader workers kept across epochs (loading the next epoch's first batches
ahead), regional torch.compile, a CTC loss in Triton and SpecAugment without host syncs (together
with CUDA graphs: the step with no host sync at all), and the measured alternatives that stay off
by default (the positional convolution through FFTs, the feed-forward GEMMs in float8; the
clipping inside fused Adam, not timed yet)."""

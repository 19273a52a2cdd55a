"""Training speed-ups over espnet2's defaults, each switched on by a config option: the step
without host syncs, DataLoader workers kept across epochs, regional torch.compile, and the
measured alternatives that stay off by default (a CTC loss in Triton, SpecAugment without host
syncs, the positional convolution through FFTs)."""

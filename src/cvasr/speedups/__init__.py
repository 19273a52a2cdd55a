"""Training speed-ups over espnet2's defaults, each switched on by a config option: the step
without host syncs, DataLoader workers kept across epochs, regional torch.compile."""

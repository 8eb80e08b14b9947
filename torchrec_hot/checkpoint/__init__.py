"""Checkpoints in the logical (stock TorchRec) table layout: `gathered` (full tensors on every
rank, small models) and `sharded` (torch.distributed.checkpoint, row blocks, atomic steps).
Public names: `torchrec_hot`."""

"""Training-time work: online counting, re-choosing hot rows, migrating rows between ranks,
and TorchRec train pipelines around a re-plan (public names: `torchrec_hot`)."""

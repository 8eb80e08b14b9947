"""Where each logical row of a DMP model's tables lives (`layout`), and moving rows between
ranks through plan-independent row blocks (`blocks`): shared by migration and DCP checkpoints."""

"""What the coordinator runs: the Flower ServerApp, strategy, checkpoints and federation ledger."""
